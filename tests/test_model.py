"""The grounding model core on tiny random configs of the real architectures."""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from conftest import build_tiny, tiny_lit, two_squares_sample
from data import GroundingSample, GroundRef, Target, Task, Turn
from grounding.model import seg_state_positions
from grounding.processor import IGNORE_INDEX


def _count_encoder_calls(model):
    enc = model.mask_head.image_encoder
    calls = {"n": 0, "images": 0}
    orig = enc.forward

    def wrapped(x, *a, **k):
        calls["n"] += 1
        calls["images"] += x.shape[0]
        return orig(x, *a, **k)

    enc.forward = wrapped
    return calls


def test_labels_only_on_answers_and_seg_targets_in_order(tiny_kind, sample):
    model, proc = build_tiny(tiny_kind)
    enc = proc.encode(sample)
    ids, labels = enc.input_ids, enc.labels
    labelled = ids[labels != IGNORE_INDEX]
    text = proc.tokenizer.decode(labelled)
    # every answer (with its end-of-turn token) is labelled, and nothing of the prompts
    assert "Sure, it is [SEG]." in text and "There is no green star" in text
    assert "Please segment" not in text and "<region>" not in text
    assert text.count(proc.tokenizer.eos_token) == len(sample.turns)
    # [SEG] order: RES target 0, then GCG targets 0 and 1
    assert enc.seg_masks.shape[0] == 3
    m = [enc.geometry.mask_to_input(sample.targets[i].mask) for i in (0, 0, 1)]
    assert all(np.array_equal(a.numpy(), b) for a, b in zip(enc.seg_masks, m))
    assert int((ids == model.tokens.region).sum()) == 1


class ForceAt(LogitsProcessor):
    """Force token ``steps[k]`` at new-token step k (the model's hidden states are untouched)."""

    def __init__(self, prompt_len, steps):
        self.prompt_len, self.steps = prompt_len, steps

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.prompt_len
        if k in self.steps:
            scores = torch.full_like(scores, -1e9)
            scores[:, self.steps[k]] = 0
        return scores


@pytest.mark.parametrize("seg_layer", [-1, 1])
def test_seg_state_is_the_same_in_training_and_generation(tiny_kind, sample, seg_layer):
    """Teacher-forcing the generated sequence gives the [SEG] states generate() used (last or a middle layer)."""
    model, proc = build_tiny(tiny_kind, seg_layer=seg_layer)
    seg = model.tokens.seg
    req = proc.collate([proc.encode_request(sample.image, "Please segment the red square.")], padding_side="left")
    emb = model.encode_images(req.sam_images)
    gen = model.vision_llm.generate(
        req.input_ids, req.attention_mask, req.image_inputs, req.token_fields,
        image_features=emb if model.vision_llm.uses_mask_head_features else None,
        max_new_tokens=12,
        suppress_tokens=[proc.tokenizer.eos_token_id, proc.tokenizer.pad_token_id],
        logits_processor=LogitsProcessorList([ForceAt(req.input_ids.shape[1], {3: seg, 7: seg})]),
    )
    new = gen.sequences[0]
    assert int((new == seg).sum()) >= 2
    prompt_len = req.input_ids.shape[1]
    full = torch.cat([req.input_ids[0], new])[None]
    fields = {k: torch.cat([v, torch.zeros(1, len(new), dtype=v.dtype)], 1) for k, v in req.token_fields.items()}
    tf = model.vision_llm(full, torch.ones_like(full), req.image_inputs, fields,
                          image_features=emb if model.vision_llm.uses_mask_head_features else None)
    pos = seg_state_positions(full, seg)
    pos[:, : prompt_len - 1] = False
    # training takes the state at p-1 for a [SEG] at p; generation keeps the state that predicted each token
    assert torch.allclose(tf.hidden[pos], gen.hidden[0][new == seg], atol=1e-4)
    states = tf.hidden[0, prompt_len - 1 : prompt_len - 1 + len(new)]
    assert torch.allclose(gen.hidden[0], states, atol=1e-4)


def test_seg_layer_picks_that_layers_states(sample):
    model, proc = build_tiny("composed", seg_layer=1)
    batch = proc.collate([proc.encode(sample)])
    with torch.no_grad():
        fwd = model(batch)
    assert model.vision_llm.hidden_layer == 1
    last, _ = build_tiny("composed")
    with torch.no_grad():
        fwd_last = last(batch)
    # same weights (same seed), another layer: other [SEG] states, and the same logits
    torch.testing.assert_close(fwd.logits, fwd_last.logits)
    assert fwd.seg_hidden.shape == fwd_last.seg_hidden.shape and not torch.allclose(fwd.seg_hidden, fwd_last.seg_hidden)


@pytest.mark.parametrize("seg_layer", [5, -6])
def test_seg_layer_out_of_range_is_refused(seg_layer):
    with pytest.raises(ValueError, match=f"seg_layer {seg_layer} is out of range"):
        build_tiny("composed", seg_layer=seg_layer)


def test_image_encoder_runs_once_per_image(sample):
    model, proc = build_tiny("composed")
    calls = _count_encoder_calls(model)
    # three questions about one image, one about another: two encoder images
    other = two_squares_sample(40, 40, "other")
    reqs = [proc.encode_request(sample.image, p) for p in ("Segment the red square.", "Segment the blue square.", "Where is it?")]
    reqs.append(proc.encode_request(other.image, "Segment the red square."))
    batch = proc.collate(reqs, padding_side="left")
    model.generate(batch, max_new_tokens=4)
    assert calls["images"] == 2 and calls["n"] == 1
    # training forward with several [SEG] in one sample: still once per image
    calls["n"] = calls["images"] = 0
    model(proc.collate([proc.encode(sample)]))
    assert calls["images"] == 1


def test_answer_without_seg_and_batch_with_empty_samples(tiny_kind):
    model, proc = build_tiny(tiny_kind)
    s = two_squares_sample()
    no_seg = GroundingSample(s.image, [s.turns[4]], s.targets, source="none")  # RES_NONE only
    batch = proc.collate([proc.encode(no_seg), proc.encode(s)])
    out = model(batch)
    assert out.seg_hidden.shape[0] == 3 and out.mask_logits.shape[0] == 3
    only_empty = proc.collate([proc.encode(no_seg)])
    out = model(only_empty)
    assert out.seg_hidden.shape[0] == 0 and out.mask_logits is None
    from grounding.losses import LossWeights, grounding_loss

    loss, parts = grounding_loss(out, only_empty, LossWeights())
    assert torch.isfinite(loss) and "bce" not in parts


def test_seg_count_mismatch_is_a_clear_error(sample):
    model, proc = build_tiny("llava")
    batch = proc.collate([proc.encode(sample)])
    batch.seg_masks = batch.seg_masks[:1]
    with pytest.raises(ValueError, match=r"\[SEG\] tokens but 1 mask targets"):
        model(batch)


def test_llava_path_equals_transformers_forward(sample):
    model, proc = build_tiny("llava", region_encoder=False)
    enc = proc.encode(GroundingSample(sample.image, sample.turns[:1], sample.targets))
    batch = proc.collate([enc])
    ours = model.vision_llm(batch.input_ids, batch.attention_mask, batch.image_inputs, batch.token_fields)
    ref = model.vision_llm.hf_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **batch.image_inputs)
    assert torch.allclose(ours.logits, ref.logits, atol=1e-5)


def test_region_features_reach_the_region_token(sample):
    model, proc = build_tiny("llava")
    s = GroundingSample(sample.image, [sample.turns[1]], sample.targets, sample.regions)
    b1 = proc.collate([proc.encode(s)])
    s2 = GroundingSample(sample.image, [sample.turns[1]], sample.targets, regions=[[0, 0, 10, 10]])
    b2 = proc.collate([proc.encode(s2)])
    o1, o2 = model(b1, all_logits=True), model(b2, all_logits=True)
    pos = int((b1.input_ids[0] == model.tokens.region).nonzero()[0, 0])
    assert not torch.allclose(o1.logits[0, pos], o2.logits[0, pos])
    assert torch.allclose(o1.logits[0, : pos - 1], o2.logits[0, : pos - 1], atol=1e-6)


def test_box_before_seg_prompts_the_decoder(sample):
    from grounding.processor import ProcessorConfig
    from grounding.presets import TinyPreset
    from grounding.model import HeadOptions

    model, proc = TinyPreset("llava").build(HeadOptions(), ProcessorConfig(seg_with_box=True))
    enc = proc.encode(GroundingSample(sample.image, sample.turns[:1], sample.targets))
    text = proc.tokenizer.decode(enc.input_ids)
    assert "<box>[" in text and "</box> [SEG]" in text
    expected = enc.geometry.boxes_to_input(sample.targets[0].box)[0]
    assert np.allclose(enc.seg_boxes[0].numpy(), expected, atol=64 / 999)


def test_logits_only_where_labelled_give_the_same_loss(tiny_kind, sample):
    from grounding.losses import answer_ce

    model, proc = build_tiny(tiny_kind)
    batch = proc.collate([proc.encode(sample), proc.encode(two_squares_sample(40, 56, "b"))])
    full = model(batch, all_logits=True)
    part = model(batch)
    assert part.logits.shape[0] == int(part.logits_mask.sum()) < full.logits.shape[0] * full.logits.shape[1]
    assert torch.allclose(answer_ce(full.logits, batch.labels), answer_ce(part.logits, batch.labels, part.logits_mask), atol=1e-5)


def test_training_can_decode_a_subset_of_masks(sample):
    from grounding.losses import LossWeights, grounding_loss

    model, proc = build_tiny("composed", max_train_masks=2)
    batch = proc.collate([proc.encode(sample), proc.encode(sample)])  # 6 [SEG]
    model.train()
    out = model(batch)
    assert out.mask_logits.shape[0] == 2 and out.mask_index.tolist() == sorted(out.mask_index.tolist())
    loss, parts = grounding_loss(out, batch, LossWeights())
    assert torch.isfinite(loss) and "bce" in parts
    model.eval()
    assert model(batch).mask_logits.shape[0] == 6  # evaluation decodes every mask


@pytest.mark.parametrize("kind", ["composed", "llava"])
def test_independent_turns_equal_single_turn_chats(kind, sample):
    """Packed independent turns give each turn exactly the logits of asking it alone."""
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset
    from grounding.processor import ProcessorConfig

    model, proc = TinyPreset(kind).build(HeadOptions(), ProcessorConfig(turns="independent"))
    model.eval()
    packed = proc.collate([proc.encode(sample)])
    assert packed.segment_ids is not None and int(packed.segment_ids.max()) == len(sample.turns)
    out = model(packed, all_logits=True)
    n_img = int((packed.segment_ids[0] == 0).sum())
    for k, turn in enumerate(sample.turns, start=1):
        alone = GroundingSample(sample.image, [turn], sample.targets, sample.regions)
        single = proc.collate([proc.encode(alone)])
        ref = model(single, all_logits=True)
        sel = packed.segment_ids[0] == k
        assert torch.equal(packed.input_ids[0, sel], single.input_ids[0, n_img:])
        assert torch.allclose(out.logits[0, sel], ref.logits[0, n_img:], atol=1e-4), f"turn {k}"
    # the [SEG] states and masks are those of the single-turn chats too
    assert out.seg_hidden.shape[0] == packed.seg_masks.shape[0] == 3


def test_prompt_case_sentence_reads_shouted_prompts_as_the_templates_write_them(sample):
    import dataclasses

    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset
    from grounding.processor import ProcessorConfig

    _, keep = TinyPreset("composed").build(HeadOptions())
    _, folds = TinyPreset("composed").build(HeadOptions(), ProcessorConfig(prompt_case="sentence"))
    ids = lambda proc, p: proc.encode_request(sample.image, p).input_ids.tolist()  # noqa: E731
    plain = "Please segment the red square."
    assert ids(folds, "PLEASE SEGMENT THE RED SQUARE.") == ids(folds, plain) == ids(keep, plain)
    assert ids(keep, "PLEASE SEGMENT THE RED SQUARE.") != ids(keep, plain)  # "keep": as typed
    # in training too: a turn typed in title case is encoded as its template
    turn = sample.turns[0]
    titled = dataclasses.replace(turn, prompt=tuple(p.title() if isinstance(p, str) else p for p in turn.prompt))
    shouted = dataclasses.replace(sample, turns=[titled])
    assert folds.encode(shouted).input_ids.tolist() == folds.encode(dataclasses.replace(sample, turns=[turn])).input_ids.tolist()
    with pytest.raises(ValueError, match="prompt_case"):
        ProcessorConfig(prompt_case="lower")


def test_qwen2vl_refuses_packing(sample):
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset
    from grounding.processor import ProcessorConfig

    model, proc = TinyPreset("qwen2vl").build(HeadOptions(), ProcessorConfig(turns="independent"))
    with pytest.raises(ValueError, match="packed"):
        model(proc.collate([proc.encode(sample)]))


def test_region_features_follow_the_order_of_references(sample):
    from data import RegionRef

    model, proc = build_tiny("composed")
    regions = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)
    turns = [
        Turn(("What is in ", RegionRef(1), "?"), ("It is a blue square.",), Task.REGION),
        Turn(("And in ", RegionRef(0), "?"), ("It is a red square.",), Task.REGION),
    ]
    enc = proc.encode(GroundingSample(sample.image, turns, sample.targets, regions))
    assert np.allclose(enc.regions.numpy(), enc.geometry.boxes_to_input(regions[[1, 0]]))


def test_token_norm_puts_image_tokens_at_the_scale_of_words():
    """With token_norm, projected image tokens start at the LM's word-embedding scale and their position code is
    as large as their content (a plain projector drifts to tokens many times larger, drowning the position)."""
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset

    model, proc = TinyPreset("composed", position_embedding=True, token_norm=True).build(HeadOptions())
    vlm = model.vision_llm
    words = vlm.language_model.get_input_embeddings().weight.norm(dim=-1).mean()
    with torch.no_grad():
        vlm.projector[2].weight.mul_(50.0)  # a projector whose outputs grew large
        feats = torch.randn(2, model.mask_head.embed_dim, 8, 8)
        content = vlm.token_norm(vlm.projector(torch.nn.functional.adaptive_avg_pool2d(feats, vlm.grid).flatten(2).transpose(1, 2)))
        tokens = vlm.image_tokens({}, feats)
    assert tokens.shape == (2 * vlm.grid**2, vlm.hidden_size)
    assert torch.allclose(content.norm(dim=-1).mean(), words, rtol=0.05)
    assert torch.allclose(vlm.position_embedding.norm(dim=-1).mean(), words, rtol=0.15)
    plain, _ = TinyPreset("composed").build(HeadOptions())
    assert plain.vision_llm.token_norm is None


@pytest.mark.parametrize("projector", ["mlp", "conv"])
def test_conv_projector_sees_the_layout_inside_a_cell(projector):
    """Two feature maps with the same mean in every grid cell but a different layout inside one cell (a
    shape's outline): the "mlp" projector (pooled cells) cannot tell them apart, the "conv" one can, and it
    is trained with the projector and saved with the trained parts."""
    from grounding.lit_module import GroundingLitModule
    from grounding.presets import TinyPreset

    lit = GroundingLitModule(preset=TinyPreset("composed", projector=projector))
    vlm = lit.model.vision_llm
    assert (vlm.abstractor is not None) == (projector == "conv")
    c, n = lit.model.mask_head.embed_dim, vlm.grid * 4  # 4 x 4 feature pixels per cell
    torch.manual_seed(0)
    a = torch.randn(1, c, n, n)
    b = a.clone()
    b[..., :4, :4] = b[..., :4, :4].flip(-1).flip(-2)  # the first cell, turned half round: same mean
    with torch.no_grad():
        ta, tb = vlm.image_tokens({}, a), vlm.image_tokens({}, b)
    assert ta.shape == (vlm.grid**2, vlm.hidden_size)
    assert torch.allclose(ta[0], tb[0], atol=1e-5) == (projector == "mlp")
    if projector == "conv":
        assert all(p.requires_grad for p in vlm.abstractor.parameters())
        assert any(k.startswith("model.vision_llm.abstractor.") for k in lit.trainable_state_dict())
    with pytest.raises(ValueError, match="projector must be one of"):
        TinyPreset("composed", projector="pool").build()


def test_box_from_seg_writes_asked_boxes_as_a_seg(sample):
    """box_from_seg: a box asked for as text becomes "<box>[SEG]</box>" with the object's mask as the [SEG]
    target; a target without a mask keeps its box as digits."""
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset
    from grounding.processor import ProcessorConfig

    model, proc = TinyPreset("composed").build(HeadOptions(), ProcessorConfig(box_from_seg=True))
    rec = sample.turns[2]
    assert rec.task == Task.REC
    enc = proc.encode(GroundingSample(sample.image, [sample.turns[0], rec], sample.targets))
    text = proc.tokenizer.decode(enc.input_ids)
    assert "It is <box>[SEG]</box>." in text and text.count("[SEG]") == 2
    S = enc.geometry.input_size
    assert enc.seg_masks.shape == (2, S, S)
    assert torch.equal(enc.seg_masks[1], torch.from_numpy(enc.geometry.mask_to_input(sample.targets[1].mask)))
    assert torch.isnan(enc.seg_boxes).all()  # nothing written before the [SEG]s: no box prompt
    no_mask = [sample.targets[0], Target(sample.targets[1].box)]
    enc = proc.encode(GroundingSample(sample.image, [rec], no_mask))
    text = proc.tokenizer.decode(enc.input_ids)
    assert "It is <box>[" in text and "[SEG]" not in text and enc.seg_masks.shape[0] == 0


def test_box_from_seg_answers_carry_the_box_of_the_mask():
    """An answer "<box>[SEG]</box>" is rewritten with the box of the [SEG]'s decoded mask, in the original
    image frame, and keeps the [SEG] with its mask; other [SEG]s are left alone; an empty mask still gives a box."""
    from data.transforms import ImageTransform
    from grounding.model import GeneratedAnswer
    from grounding.parse import parse_answer

    model, _ = build_tiny("composed")
    geo = ImageTransform(size=64).geometry((60, 90))  # resized 43 x 64, padded to 64 x 64
    logits = torch.full((3, 1, 16, 16), -5.0)
    logits[0, 0, 4:8, 2:6] = 5.0  # input pixels 16..32 x 8..24 -> original x 11..34, y 22..45 (approx.)
    logits[2, 0, 1, 1] = -1.0  # an all-negative mask: its most confident pixel
    text = "It is at <box>[SEG]</box>, beside <p>it</p> [SEG] and <box>[SEG]</box>."
    ans = GeneratedAnswer(text, parse_answer(text, model.box_codec, (90, 60)), [], logits, torch.ones(3))
    model._write_seg_boxes(ans, geo)
    assert ans.text.startswith("It is at <box>[") and "</box> [SEG], beside <p>it</p> [SEG] and <box>[" in ans.text
    assert ans.parsed.num_seg == 3 and not ans.parsed.skipped
    mask = (geo.logits_to_original(logits[:1])[0, 0] > 0).numpy()
    ys, xs = np.nonzero(mask)
    expected = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    first, second, third = ans.parsed.segments
    assert first.seg_index == 0 and np.allclose(first.box, expected, atol=90 / 999 + 1e-3)
    assert second.box is None and second.phrase == "it"
    assert third.seg_index == 2 and third.box is not None and (third.box[2:] - third.box[:2]).max() <= 2
    # the text for people writes each box in original pixels where the box text was
    px = [[int(round(float(v))) for v in seg.box] for seg in (first, third)]
    assert ans.parsed.clean_text == f"It is at {px[0]}, beside it and {px[1]}."


def test_mask_one_part_cuts_each_generated_mask_to_one_object(monkeypatch, sample):
    """With ``HeadOptions.mask_one_part`` the masks of generated [SEG]s are ``heads.keep_one_part`` of the
    decoder's logits (so a speckled mask across several objects becomes its strongest object); off, untouched."""
    from heads import keep_one_part

    model, proc = build_tiny("composed")
    seg = model.tokens.seg
    decoded = torch.full((1, 1, 16, 16), -3.0)
    decoded[0, 0, 1:4, 1:4] = 0.5  # a weak object and a stronger one
    decoded[0, 0, 9:12, 9:12] = 1.5
    monkeypatch.setattr(model, "_generate_tokens", lambda *a: ([[7, seg]], [torch.randn(2, model.vision_llm.hidden_size)], None))
    monkeypatch.setattr(model, "decode_masks", lambda *a, **k: (decoded.clone(), torch.ones(1, 1), None))
    batch = proc.collate([proc.encode_request(sample.image, "Please segment the red square.")], padding_side="left")
    with torch.no_grad():
        plain = model.generate(batch, max_new_tokens=4)[0].mask_logits
        model.options.mask_one_part = -1.0
        cut = model.generate(batch, max_new_tokens=4)[0].mask_logits
    assert torch.equal(plain, decoded)
    assert torch.equal(cut, keep_one_part(decoded, -1.0))
    assert (cut[0, 0, 9:12, 9:12] > 0).all() and not (cut[0, 0, :8] > 0).any()


def test_generation_merges_the_trainable_token_rows_and_restores_them(sample):
    """``merged_token_rows`` (what generate() runs in) gives the tokens and states of peft's unmerged path (which
    patches the rows into a copy of the vocabulary matrix on every call) and leaves every weight as it was."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from grounding.vision_llm.base import merged_token_rows

    lit = tiny_lit().eval()
    vl = lit.model.vision_llm
    layers = [m for m in vl.hf_model.modules() if isinstance(m, TrainableTokensLayer)]
    assert layers, "the tiny model trains the grounding tokens' rows"
    with torch.no_grad():  # rows unlike the base rows, as after training
        for m in layers:
            for d in m.trainable_tokens_delta.values():
                d.add_(torch.randn_like(d))
    before = {k: v.clone() for k, v in vl.hf_model.state_dict().items()}
    req = lit.processor.collate([lit.processor.encode_request(sample.image, "Please segment the red square.")],
                                padding_side="left")
    kw = vl.model_inputs(req.input_ids, req.attention_mask, req.image_inputs, req.token_fields)
    seg = lit.model.tokens.seg
    args = dict(max_new_tokens=8, do_sample=False, output_hidden_states=True, return_dict_in_generate=True,
                pad_token_id=lit.processor.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([ForceAt(req.input_ids.shape[1], {2: seg})]))
    with torch.no_grad():
        plain = vl.hf_model.generate(**kw, **args)
        with merged_token_rows(vl.hf_model):
            assert all(m.merged for m in layers)
            merged = vl.hf_model.generate(**kw, **args)
    assert not any(m.merged for m in layers)
    assert torch.equal(plain.sequences, merged.sequences) and int((plain.sequences == seg).sum()) >= 1
    assert torch.equal(plain.hidden_states[-1][-1], merged.hidden_states[-1][-1])
    after = vl.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
