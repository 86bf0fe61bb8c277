"""HeadOptions.describe_phrases: caption phrases named again by region questions about their own masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build_tiny
from grounding.describe import answer_phrase, check_by_description, contradicts, describe_phrases
from grounding.evaluation import Evaluator
from grounding.model import GeneratedAnswer
from grounding.parse import parse_answer
from grounding.tokens import REGION


@pytest.mark.parametrize(
    "text, want",
    [
        ("It is a red circle.", "a red circle"),
        ("it's a small blue star!", "a small blue star"),
        ("This is the large hexagon", "the large hexagon"),
        ("A yellow square.", "a yellow square"),
        ("UFO", "UFO"),
        ("It is.", None),
        ("  ", None),
        ("It is <p>a red circle</p>", None),
    ],
)
def test_answer_phrase_keeps_the_noun_phrase(text, want):
    assert answer_phrase(text) == want


def _caption(model, geo, empty_second: bool = False) -> GeneratedAnswer:
    """A caption of two phrases with their [SEG] masks: the first over input pixels 2..5 x 3..9 (rows x cols), the
    second over 10..13 x 8..15, or empty."""
    s = geo.input_size
    logits = torch.full((2, 1, s, s), -8.0)
    logits[0, 0, 2:6, 3:10] = 5.0
    if not empty_second:
        logits[1, 0, 10:14, 8:16] = 5.0
    text = "The image shows <p>a green triangle</p> [SEG] and <p>a green triangle</p> [SEG] on a plain background."
    h, w = geo.original_hw
    return GeneratedAnswer(text, parse_answer(text, model.box_codec, (w, h)), [], logits, torch.ones(2))


def _fake_region_answers(model, replies, seen):
    def generate(batch, max_new_tokens=64, image_embeddings=None, **kw):
        seen["regions"] = [r.clone() for r in batch.regions]
        seen["prompts"] = [model.tokenizer.decode(ids) for ids in batch.input_ids]
        seen["emb"] = image_embeddings
        h, w = batch.geometries[0].original_hw
        return [GeneratedAnswer(t, parse_answer(t, model.box_codec, (w, h)), [], None, None) for t in replies[: batch.batch_size]]

    return generate


def test_each_grounded_phrase_is_named_from_the_region_of_its_own_mask(monkeypatch, sample):
    model, proc = build_tiny("composed")
    req = proc.encode_request(sample.image, "Describe the image with grounded phrases.")
    geo = req.geometry
    ans = _caption(model, geo)
    masks_before = ans.mask_logits.clone()
    seen = {}
    monkeypatch.setattr(model, "generate", _fake_region_answers(model, ["It is a red square.", "It is a blue square."], seen))
    emb = torch.randn(1, 4, 2, 2)
    n = describe_phrases(model, proc, [sample.image], [ans], [geo], emb)
    assert n == 2
    # one region question per phrase, each about the box of its own mask (in the model's input frame)
    assert all(f"What is in {REGION}?" in p for p in seen["prompts"])
    got = torch.cat(seen["regions"]).numpy()
    full = geo.logits_to_original(masks_before.float()).numpy()[:, 0] > 0
    for k in range(2):
        ys, xs = np.nonzero(full[k])
        box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        np.testing.assert_allclose(got[k], geo.boxes_to_input(box)[0], atol=1e-4)
    assert seen["emb"].shape[0] == 2  # the answer's image embedding, once per question
    assert ans.text == "The image shows <p>a red square</p> [SEG] and <p>a blue square</p> [SEG] on a plain background."
    assert [s.phrase for s in ans.parsed.segments] == ["a red square", "a blue square"]
    assert [s.seg_index for s in ans.parsed.segments] == [0, 1]
    assert torch.equal(ans.mask_logits, masks_before)


def test_a_phrase_whose_mask_is_empty_or_whose_answer_names_nothing_is_kept(monkeypatch, sample):
    model, proc = build_tiny("composed")
    geo = proc.encode_request(sample.image, "Describe the image.").geometry
    ans = _caption(model, geo, empty_second=True)
    seen = {}
    monkeypatch.setattr(model, "generate", _fake_region_answers(model, ["It is."], seen))
    assert describe_phrases(model, proc, [sample.image], [ans], [geo], torch.randn(1, 4, 2, 2)) == 1
    assert [s.phrase for s in ans.parsed.segments] == ["a green triangle", "a green triangle"]
    # answers without phrases (referring segmentation) ask nothing
    plain = GeneratedAnswer("Sure, it is [SEG].", parse_answer("Sure, it is [SEG].", model.box_codec, (64, 48)), [],
                            torch.zeros(1, 1, geo.input_size, geo.input_size), torch.ones(1))
    assert describe_phrases(model, proc, [sample.image], [plain], [geo], torch.randn(1, 4, 2, 2)) == 0


def test_the_evaluator_scores_the_described_phrases(monkeypatch, sample):
    """With the option on, the evaluator's GCG pairs carry the region answers' phrases (what the predictor returns)."""
    model, proc = build_tiny("composed", describe_phrases=True)
    gcg = [t for t in sample.turns if t.task.value == "gcg"][0]
    one = type(sample)(sample.image, [gcg], sample.targets, sample.regions, source=sample.source)
    geo = proc.encode_request(sample.image, gcg).geometry
    calls = []
    region = _fake_region_answers(model, ["It is a red square.", "It is a blue square."], {})

    def generate(batch, max_new_tokens=64, image_embeddings=None, **kw):
        calls.append(batch.batch_size)
        if len(calls) == 1:
            return [_caption(model, geo)]
        return region(batch, max_new_tokens, image_embeddings)

    monkeypatch.setattr(model, "generate", generate)
    ev = Evaluator(model, proc)
    ev.update([one])
    assert calls == [1, 2]
    assert [p for p, _ in ev.gcg_pred[0]] == ["a red square", "a blue square"]


def test_describe_phrases_needs_the_region_encoder():
    with pytest.raises(ValueError, match="describe_phrases.*region encoder"):
        build_tiny("composed", describe_phrases=True, region_encoder=False)


def test_the_predictor_returns_the_described_phrases(monkeypatch, sample):
    """GroundingPredictor (API, CLI, server) asks the same region questions and returns their phrases with the masks."""
    from grounding.predictor import GroundingPredictor

    model, proc = build_tiny("composed", describe_phrases=True)
    pred = GroundingPredictor(model, proc)
    geo = proc.encode_request(sample.image, "Describe the image.").geometry
    region = _fake_region_answers(model, ["It is a red square.", "It is a blue square."], {})
    calls = []

    def generate(batch, max_new_tokens=64, image_embeddings=None, **kw):
        calls.append(batch.batch_size)
        return [_caption(model, geo)] if len(calls) == 1 else region(batch, max_new_tokens, image_embeddings)

    monkeypatch.setattr(model, "generate", generate)
    r = pred.predict(sample.image, "Describe the image with grounded phrases.")
    assert calls == [1, 2]
    assert [s.phrase for s in r.segments] == ["a red square", "a blue square"]
    assert r.text == "The image shows a red square and a blue square on a plain background."
    assert all(s.mask is not None and s.mask.any() for s in r.segments)


COLOURS_SHAPES = (("red", "green", "blue"), ("circle", "square", "star"))


@pytest.mark.parametrize(
    "prompt, description, want",
    [
        ("Segment the blue circle.", "It is a green circle.", True),  # another colour
        ("Please segment the BLUE circle.", "It is a blue square.", True),  # another shape; case does not matter
        ("Where is the blue circle?", "It is a blue circle.", False),
        ("Segment the blue shape.", "It is a blue star.", False),  # no shape asked
        ("Segment the circle.", "It is a red circle.", False),
        ("Segment the circle left of the square.", "It is a red star.", False),  # two shapes named: not compared
        ("Segment the circle left of the red square.", "It is a blue circle.", True),  # (one colour named)
        ("Segment the blue circle.", "It is an object.", False),  # the description names no word of a group
        ("Segment the dog.", "It is a red circle.", False),
        ("Segment the reddish circle.", "It is a green circle.", False),  # whole words only
    ],
)
def test_contradicts_compares_the_words_of_each_group(prompt, description, want):
    assert contradicts(prompt, description, COLOURS_SHAPES) is want


def _one_seg(model, geo, presence: float) -> GeneratedAnswer:
    s = geo.input_size
    logits = torch.full((1, 1, s, s), -8.0)
    logits[0, 0, 2:6, 3:10] = 5.0
    h, w = geo.original_hw
    return GeneratedAnswer("Sure, it is [SEG].", parse_answer("Sure, it is [SEG].", model.box_codec, (w, h)), [], logits,
                           torch.ones(1), presence=presence)


def test_check_by_description_refuses_unsure_answers_whose_mask_is_described_otherwise(monkeypatch, sample):
    """Of one-[SEG] answers under the option's presence, the one whose mask the region question names in another
    colour is generated again with ``refuse``; sure answers, prompts naming no word of a group and agreeing
    descriptions keep theirs."""
    model, proc = build_tiny("composed", presence=True, check_by_description=0.9, description_words=COLOURS_SHAPES)
    geo = proc.encode_request(sample.image, "Segment the blue circle.").geometry
    prompts = ["Segment the blue circle.", "Segment the red square.", "Segment the blue circle.", "Segment the dog."]
    answers = [_one_seg(model, geo, p) for p in (0.7, 0.8, 0.95, 0.6)]
    calls = []

    def generate(batch, max_new_tokens=64, image_embeddings=None, refuse=(), **kw):
        calls.append((batch.batch_size, list(refuse), [model.tokenizer.decode(ids) for ids in batch.input_ids]))
        h, w = batch.geometries[0].original_hw
        if not refuse:  # the region questions: rows 0 and 1 (unsure, naming a colour and a shape)
            texts = ["It is a green circle.", "It is a red square."]
        else:
            texts = ["There is no blue circle in the image."]
        return [GeneratedAnswer(t, parse_answer(t, model.box_codec, (w, h)), [], None, None) for t in texts[: batch.batch_size]]

    monkeypatch.setattr(model, "generate", generate)
    emb = torch.randn(4, 4, 2, 2)
    got = check_by_description(model, proc, [sample.image] * 4, prompts, [None] * 4, answers, [geo] * 4, emb)
    assert got == [0]
    assert calls[0][0] == 2 and all(f"What is in {REGION}?" in p for p in calls[0][2])
    assert calls[1][:2] == (1, [0]) and "blue circle" in calls[1][2][0]
    assert answers[0].text == "There is no blue circle in the image." and answers[0].parsed.num_seg == 0
    assert answers[0].refused_by == ["It is a green circle."]
    assert [a.text for a in answers[1:]] == ["Sure, it is [SEG]."] * 3
    # where generation finds no answer without [SEG], the answer stays
    answers = [_one_seg(model, geo, 0.7)]
    monkeypatch.setattr(model, "generate", lambda batch, max_new_tokens=64, image_embeddings=None, refuse=(), **kw: [
        GeneratedAnswer(t, parse_answer(t, model.box_codec, (64, 48)), [], None, None)
        for t in (["It is a red circle."] if not refuse else ["Sure, it is [SEG]."])])
    assert check_by_description(model, proc, [sample.image], prompts[:1], [None], answers, [geo], emb[:1]) == []
    assert answers[0].text == "Sure, it is [SEG]."


def test_check_by_description_options_are_checked():
    with pytest.raises(ValueError, match="check_by_description.*presence"):
        build_tiny("composed", check_by_description=0.9, description_words=COLOURS_SHAPES)
    with pytest.raises(ValueError, match="description_words"):
        build_tiny("composed", presence=True, check_by_description=0.9)
    with pytest.raises(ValueError, match="probability"):
        build_tiny("composed", presence=True, check_by_description=1.5, description_words=COLOURS_SHAPES)


def test_the_evaluator_and_predictor_run_the_check(monkeypatch, sample):
    """What ``grounding test`` measures is what users get: both refuse the answer the check contradicts."""
    from grounding.predictor import GroundingPredictor

    model, proc = build_tiny("composed", presence=True, check_by_description=0.9, description_words=COLOURS_SHAPES)
    res = [t for t in sample.turns if t.task.value == "res"][0]
    one = type(sample)(sample.image, [res], sample.targets, sample.regions, source=sample.source)
    geo = proc.encode_request(sample.image, res).geometry
    assert res.prompt_text() == "Please segment the red square."
    def generate(batch, max_new_tokens=64, image_embeddings=None, refuse=(), **kw):
        h, w = batch.geometries[0].original_hw
        if refuse:
            t = "There is nothing."
        elif f"What is in {REGION}?" in model.tokenizer.decode(batch.input_ids[0]):
            t = "It is a green square."
        else:
            return [_one_seg(model, geo, 0.7) for _ in range(batch.batch_size)]
        return [GeneratedAnswer(t, parse_answer(t, model.box_codec, (w, h)), [], None, None)] * batch.batch_size

    monkeypatch.setattr(model, "generate", generate)
    ev = Evaluator(model, proc)
    out = ev.answer([one])
    assert out[0][2].text == "There is nothing." and out[0][3] == []
    r = GroundingPredictor(model, proc).predict(sample.image, res.prompt_text())
    assert r.text == "There is nothing." and r.segments == []
    assert r.refused_by == ["It is a green square."] and r.to_dict()["refused_by"] == ["It is a green square."]


def test_an_answer_with_several_seg_is_refused_only_when_every_mask_is_described_otherwise(monkeypatch, sample):
    """"Segment all the blue shapes." answered with two masks: refused when both are described in another colour,
    kept when one of them is blue; a caption's phrases are never checked."""
    model, proc = build_tiny("composed", presence=True, check_by_description=0.9, description_words=COLOURS_SHAPES)
    geo = proc.encode_request(sample.image, "Segment all the blue shapes.").geometry
    two = _caption(model, geo)  # two masks with phrases: a caption
    h, w = geo.original_hw
    text = "Sure, they are [SEG] and [SEG]."

    def plural():
        return GeneratedAnswer(text, parse_answer(text, model.box_codec, (w, h)), [], two.mask_logits.clone(),
                               torch.ones(2), presence=0.7)

    for descriptions, refused in ((["It is a red circle.", "It is a green star."], [0]),
                                  (["It is a red circle.", "It is a blue star."], [])):
        calls = []

        def generate(batch, max_new_tokens=64, image_embeddings=None, refuse=(), **kw):
            calls.append(batch.batch_size)
            texts = ["There are no blue shapes in the image."] if refuse else descriptions
            return [GeneratedAnswer(t, parse_answer(t, model.box_codec, (w, h)), [], None, None) for t in texts]

        monkeypatch.setattr(model, "generate", generate)
        answers = [plural()]
        got = check_by_description(model, proc, [sample.image], ["Segment all the blue shapes."], [None], answers, [geo],
                                   torch.randn(1, 4, 2, 2))
        assert got == refused and calls[0] == 2  # one region question per mask
        assert (answers[0].parsed.num_seg == 0) == bool(refused)
    caption = _caption(model, geo)
    caption.presence = 0.7
    assert check_by_description(model, proc, [sample.image], ["Describe the blue shapes."], [None], [caption], [geo],
                                torch.randn(1, 4, 2, 2)) == []
