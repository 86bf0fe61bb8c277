"""Region encoder (RoIAlign + MLP) and seg projector."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from heads.region_encoder import RegionEncoder
from heads.seg_projector import SegProjector


@pytest.fixture
def encoder() -> RegionEncoder:
    torch.manual_seed(0)
    return RegionEncoder(feature_dim=8, out_dim=16, output_size=4)


def test_shapes_and_order(encoder):
    features = torch.randn(2, 8, 16, 16)
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [10.0, 20.0, 60.0, 50.0]]), torch.tensor([[5.0, 5.0, 20.0, 30.0]])]
    out = encoder(features, boxes, input_size=64)
    assert out.shape == (3, 16)
    # order: image 0's boxes first; each row depends only on its own box
    assert torch.allclose(out[2:], encoder(features[1:], boxes[1:], input_size=64))
    assert torch.allclose(out[:2], encoder(features[:1], boxes[:1], input_size=(64, 64)))


def test_matches_roi_align_with_spatial_scale(encoder):
    """Boxes in the input frame, features at 1/4: same as roi_align(spatial_scale=h / input height)."""
    features = torch.randn(1, 8, 16, 16)
    boxes = torch.tensor([[3.0, 7.0, 41.0, 60.0]])
    pooled = roi_align(features, [boxes], output_size=4, spatial_scale=16 / 64, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(encoder(features, [boxes], 64), encoder.mlp(pooled.flatten(1)))


def test_non_square_input_frame(encoder):
    features = torch.randn(1, 8, 8, 16)  # h=8, w=16 for a 32 x 64 (h x w) input
    box = torch.tensor([[0.0, 0.0, 64.0, 32.0]])
    pooled = roi_align(features, [box / 4], output_size=4, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(encoder(features, [box], (32, 64)), encoder.mlp(pooled.flatten(1)))


def test_empty_inputs(encoder):
    features = torch.randn(2, 8, 16, 16, requires_grad=True)
    out = encoder(features, [torch.zeros(0, 4), torch.zeros(0, 4)], 64)
    assert out.shape == (0, 16)
    out = encoder(features, [torch.zeros(0, 4), torch.tensor([[1.0, 1.0, 9.0, 9.0]])], 64)
    assert out.shape == (1, 16)
    with pytest.raises(ValueError, match="box tensors"):
        encoder(features, [torch.zeros(0, 4)], 64)


def test_gradient_flows(encoder):
    features = torch.randn(1, 8, 16, 16, requires_grad=True)
    out = encoder(features, [torch.tensor([[4.0, 4.0, 40.0, 40.0]])], 64)
    out.pow(2).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


def test_distinct_regions_give_distinct_embeddings(encoder):
    features = torch.zeros(1, 8, 16, 16)
    features[:, :4, :8, :8] = 1.0  # top-left quadrant carries channels 0-3
    features[:, 4:, 8:, 8:] = 1.0  # bottom-right carries channels 4-7
    top_left = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    bottom_right = torch.tensor([[32.0, 32.0, 64.0, 64.0]])
    inner_top_left = torch.tensor([[4.0, 4.0, 28.0, 28.0]])
    a, b, c = (encoder(features, [box], 64)[0] for box in (top_left, bottom_right, inner_top_left))
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(a, c)  # same uniform content -> same embedding


def test_boxes_outside_are_clamped_and_finite(encoder):
    features = torch.randn(1, 8, 16, 16)
    boxes = torch.tensor([[-50.0, -50.0, 500.0, 400.0], [100.0, 100.0, 200.0, 200.0], [40.0, 30.0, 10.0, 5.0]])
    out = encoder(features, [boxes], 64)
    assert out.shape == (3, 16) and torch.isfinite(out).all()
    whole = encoder(features, [torch.tensor([[0.0, 0.0, 64.0, 64.0]])], 64)
    torch.testing.assert_close(out[:1], whole)  # clamped to the frame
    swapped = encoder(features, [torch.tensor([[10.0, 5.0, 40.0, 30.0]])], 64)
    torch.testing.assert_close(out[2:], swapped)  # corners given in the wrong order


@pytest.mark.parametrize("num_tokens", [1, 2])
def test_seg_projector_shapes(num_tokens):
    projector = SegProjector(in_dim=24, out_dim=32, num_tokens=num_tokens, dropout=0.1)
    hidden = torch.randn(5, 24, requires_grad=True)
    out = projector(hidden)
    assert out.shape == (5, num_tokens, 32)
    out.sum().backward()
    assert hidden.grad is not None
    assert projector(torch.randn(0, 24)).shape == (0, num_tokens, 32)
    assert projector(torch.randn(2, 3, 24)).shape == (2, 3, num_tokens, 32)
    assert projector.mlp[0].out_features == 24  # LISA: hidden = in_dim by default
    with pytest.raises(ValueError):
        projector(torch.randn(5, 23))
