"""HeadOptions.seg_prior: a [SEG] state's similarity map over the image embedding, supervised and fed to SAM's
decoder as its mask input."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import tiny_lit, two_images_batch, two_squares_sample
from grounding.export import export_model, load_exported
from grounding.losses import LossWeights, grounding_loss, mask_bce, upsample_to
from grounding.model import HeadOptions
from heads import SegPrior


def test_seg_prior_maps_each_state_against_its_own_image():
    torch.manual_seed(0)
    prior = SegPrior(in_dim=12, embed_dim=8, dim=16)
    emb = torch.randn(3, 8, 5, 6)
    hidden = torch.randn(4, 12)
    index = torch.tensor([2, 0, 2, 1])
    out = prior(hidden, emb, index)
    assert out.shape == (4, 1, 5, 6)
    # the same state against one image alone gives the same map: keys come from that image only
    for i in range(4):
        alone = prior(hidden[i : i + 1], emb[index[i] : index[i] + 1], torch.tensor([0]))
        torch.testing.assert_close(alone, out[i : i + 1], rtol=1e-5, atol=1e-5)
    # the map follows the image: moving a patch of features moves the high-logit cells with it
    emb2 = emb.clone()
    emb2[0] = torch.roll(emb[0], shifts=(1, 2), dims=(1, 2))
    rolled = prior(hidden[1:2], emb2[0:1], torch.tensor([0]))
    torch.testing.assert_close(rolled, torch.roll(out[1:2], shifts=(1, 2), dims=(2, 3)), rtol=1e-4, atol=1e-4)


def test_context_keys_see_the_neighbourhood_and_start_as_per_cell_keys():
    torch.manual_seed(0)
    plain = SegPrior(in_dim=12, embed_dim=8, dim=16)
    ctx = SegPrior(in_dim=12, embed_dim=8, dim=16, context=3)  # dilations 1, 2, 4: 15 x 15 cells
    ctx.load_state_dict(plain.state_dict(), strict=False)  # the per-cell layers are the same modules
    emb, hidden, index = torch.randn(1, 8, 20, 20), torch.randn(1, 12), torch.tensor([0])
    # the blocks start as the identity (zero pointwise mix), so a new head starts from the per-cell map
    torch.testing.assert_close(ctx(hidden, emb, index), plain(hidden, emb, index))
    for block in ctx.context:
        torch.nn.init.normal_(block.mix.weight, std=0.2)

    def keys(x):
        for block in ctx.context:
            x = block(x)
        return x[0, :, 10, 10]

    x = torch.randn(1, 16, 20, 20)
    near, far = x.clone(), x.clone()
    near[0, :, 10, 16] += 3.0  # 6 cells right of (10, 10): inside 15 x 15, outside a single cell
    far[0, :, 10, 18] += 3.0  # 8 cells away: outside the receptive field
    assert (keys(near) - keys(x)).abs().max() > 1e-3
    torch.testing.assert_close(keys(far), keys(x))
    with pytest.raises(ValueError, match="context must be >= 0"):
        SegPrior(in_dim=12, embed_dim=8, context=-1)


@pytest.mark.parametrize(
    "hidden, emb, index, match",
    [
        (torch.randn(2, 11), torch.randn(1, 8, 4, 4), torch.tensor([0, 0]), "hidden must be N x 12"),
        (torch.randn(2, 12), torch.randn(1, 7, 4, 4), torch.tensor([0, 0]), "image_embeddings must be B x 8"),
        (torch.randn(2, 12), torch.randn(1, 8, 4, 4), torch.tensor([0]), r"image_index must be \(2,\)"),
    ],
)
def test_seg_prior_rejects_bad_shapes(hidden, emb, index, match):
    with pytest.raises(ValueError, match=match):
        SegPrior(in_dim=12, embed_dim=8)(hidden, emb, index)


def _lit(seg_prior: bool, **heads):
    return tiny_lit(seg_prior=seg_prior, **heads)


_batch = two_images_batch


def test_forward_loss_and_gradients_with_seg_prior():
    lit = _lit(True)
    names = {n for n, p in lit.named_parameters() if p.requires_grad}
    assert any(n.startswith("model.seg_prior.") for n in names)
    assert any(n.startswith("model.mask_head.prompt_encoder.mask_downscaling.") for n in names)
    assert not any(n.startswith("model.mask_head.prompt_encoder.point_embeddings") for n in names)
    batch = _batch(lit)
    lit.train()
    fwd = lit.model(batch)
    n = fwd.mask_logits.shape[0]
    h, w = fwd.image_embeddings.shape[-2:]
    assert fwd.prior_logits is not None and fwd.prior_logits.shape == (n, 1, h, w)
    loss, parts = grounding_loss(fwd, batch, LossWeights())
    assert {"prior_bce", "prior_dice", "prior_iou"} <= set(parts)
    _, no_prior_parts = grounding_loss(fwd, batch, LossWeights(prior=0.0))
    assert "prior_bce" not in no_prior_parts
    loss.backward()
    for prefix in ("model.seg_prior.", "model.mask_head.prompt_encoder.mask_downscaling."):
        grads = [p.grad for n_, p in lit.named_parameters() if n_.startswith(prefix) and p.requires_grad]
        assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads), prefix
    # the decoder reads the prior: shifting the prior's bias changes the masks
    lit.eval()
    with torch.no_grad():
        a = lit.model(batch).mask_logits
        lit.model.seg_prior.bias.add_(5.0)
        b = lit.model(batch).mask_logits
    assert not torch.allclose(a, b)


def test_seg_prior_maps_every_seg_when_training_decodes_a_subset():
    """max_train_masks decodes a random subset; the prior (cheap) still maps and supervises every [SEG], and each
    decoded mask reads its own [SEG]'s prior."""
    lit = _lit(True, max_train_masks=1)
    batch = _batch(lit)
    n = batch.seg_masks.shape[0]
    assert n >= 2
    lit.train()
    torch.manual_seed(3)
    fwd = lit.model(batch)
    assert fwd.mask_logits.shape[0] == 1 and fwd.mask_index is not None
    assert fwd.prior_logits.shape[0] == n
    # the decoded mask equals decoding that [SEG] alone (its own prior as the decoder's mask input)
    i = fwd.mask_index
    alone, _, alone_prior = lit.model.decode_masks(
        fwd.image_embeddings, fwd.seg_hidden[i], batch.seg_image_index[i], batch.seg_boxes[i]
    )
    torch.testing.assert_close(alone_prior, fwd.prior_logits[i], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alone, fwd.mask_logits, rtol=1e-4, atol=1e-4)
    # the prior's loss is over all n targets, the decoder's over the decoded one
    _, parts = grounding_loss(fwd, batch, LossWeights())
    S = batch.seg_masks.shape[-1]
    prior_all = upsample_to(fwd.prior_logits.float(), S)
    torch.testing.assert_close(parts["prior_bce"], mask_bce(prior_all, batch.seg_masks, batch.valid_masks))
    assert not torch.allclose(parts["prior_bce"], mask_bce(prior_all[i], batch.seg_masks[i], batch.valid_masks[i]))
    torch.testing.assert_close(
        parts["bce"],
        mask_bce(upsample_to(fwd.mask_logits.float(), S), batch.seg_masks[i], batch.valid_masks[i]),
    )


def test_model_without_seg_prior_has_none():
    lit = _lit(False)
    assert lit.model.seg_prior is None
    assert not any("seg_prior" in n for n, _ in lit.named_parameters())
    with torch.no_grad():
        assert lit.model(_batch(lit)).prior_logits is None


def test_seg_prior_option_without_module_is_refused():
    lit = _lit(False)
    m = lit.model
    with pytest.raises(ValueError, match="seg_prior"):
        type(m)(m.vision_llm, m.mask_head, m.seg_projector, m.region_encoder, options=HeadOptions(seg_prior=True))


def test_export_round_trip_keeps_the_seg_prior_and_presence_head(tmp_path):
    lit = _lit(True, presence=True, prior_context=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in lit.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    lit.eval()
    sample = two_squares_sample()
    reqs = [lit.processor.encode_request(sample.image, "Please segment the red square.")]
    batch = _batch(lit)
    with torch.no_grad():
        before = lit.model(batch)
    out = export_model(copy.deepcopy(lit.model), lit.processor, tmp_path / "export")
    model, processor = load_exported(out)
    assert model.options.seg_prior and model.seg_prior is not None
    assert model.options.presence and model.presence_head is not None
    assert model.options.prior_context == 2 and len(model.seg_prior.context) == len(model.presence_head.context) == 2
    with torch.no_grad():
        after = model(batch)
    torch.testing.assert_close(after.prior_logits, before.prior_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after.presence_logits, before.presence_logits)
    torch.testing.assert_close(after.mask_logits, before.mask_logits, rtol=1e-4, atol=1e-4)
    a = lit.model.generate(lit.processor.collate(reqs, padding_side="left"), max_new_tokens=12)
    b = model.generate(processor.collate(reqs, padding_side="left"), max_new_tokens=12)
    assert [x.text for x in a] == [x.text for x in b]
