"""HeadOptions.complete_captions: a grounded caption gets the objects its presence map finds and its masks miss."""

from __future__ import annotations

import cv2
import pytest
import torch

from conftest import build_tiny
from grounding.model import COMPLETED_PHRASE, GeneratedAnswer
from grounding.parse import parse_answer
from heads import split_peaks, uncovered_parts


def _blobs() -> torch.Tensor:
    """A 32 x 32 map with four blobs above 0: A (rows 2..9, cols 2..9, peak 3), B (rows 2..9, cols 20..29, peak 5),
    C (rows 20..21, cols 2..3: 4 pixels) and D (rows 20..29, cols 20..29, peak 4)."""
    m = torch.full((32, 32), -6.0)
    m[2:10, 2:10] = 3.0
    m[2:10, 20:30] = 5.0
    m[20:22, 2:4] = 2.0
    m[20:30, 20:30] = 4.0
    return m


def test_uncovered_parts_are_the_map_parts_the_masks_miss_strongest_first():
    m = _blobs()
    covered = torch.zeros(32, 32, dtype=torch.bool)
    covered[2:10, 2:10] = True  # A: fully covered -> not a new object
    covered[20:30, 20:23] = True  # D: 30% covered -> a new object, without its covered columns
    parts = uncovered_parts(m, covered, min_fraction=8 / 1024)
    assert len(parts) == 2  # B and D; C (4 pixels) is below 8 / 1024 of the frame
    b, d = parts  # B's peak (5) is above D's (4)
    want_b = torch.zeros(32, 32, dtype=torch.bool)
    want_b[2:10, 20:30] = True
    want_d = torch.zeros(32, 32, dtype=torch.bool)
    want_d[20:30, 23:30] = True
    assert torch.equal(b, want_b) and torch.equal(d, want_d)
    # a part more than half covered is not an object the masks missed
    covered[20:30, 20:27] = True
    assert len(uncovered_parts(m, covered, min_fraction=8 / 1024)) == 1
    # padding never makes a part; a smaller floor keeps C too
    valid = torch.ones(32, 32, dtype=torch.bool)
    valid[:, 16:] = False
    (a,) = uncovered_parts(m, torch.zeros(32, 32, dtype=torch.bool), valid, min_fraction=8 / 1024)
    assert a.sum() == 64 and not a[:, 16:].any()
    assert len(uncovered_parts(m, torch.zeros(32, 32, dtype=torch.bool), valid, min_fraction=1 / 1024)) == 2  # A and C
    assert uncovered_parts(torch.full((8, 8), -1.0), torch.zeros(8, 8, dtype=torch.bool)) == []
    with pytest.raises(ValueError, match="h x w"):
        uncovered_parts(m[None], covered)


def _two_touching_bumps(dip: float) -> torch.Tensor:
    """A 32 x 48 map: two bumps (peaks 10 at columns 12 and 36) joined along row 16 by a ridge whose lowest logit,
    at column 24, is ``dip``; everything else below 0."""
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    bumps = torch.maximum(10 - ((x - 12) ** 2 + (y - 16) ** 2) / 8, 10 - ((x - 36) ** 2 + (y - 16) ** 2) / 8)
    ridge = torch.where((y - 16).abs() <= 3, torch.full_like(x, dip), torch.full_like(x, -5.0))
    return torch.maximum(bumps, ridge)


def test_a_part_with_two_peaks_is_cut_between_them_and_one_with_one_peak_is_not():
    m = _two_touching_bumps(dip=2.0)
    whole = m > 0
    n, _ = cv2.connectedComponents(whole.numpy().astype("uint8"))
    assert n == 2  # one part at 0: the bumps touch
    left, right = split_peaks(m, whole, min_pixels=20)
    assert left[16, 12] and right[16, 36] and not (left & right).any()
    assert torch.equal(left | right, whole)  # every pixel of the part goes to one of them
    assert left[:, 30:].sum() == 0 and right[:, :18].sum() == 0
    # as new objects: two, not one
    assert len(uncovered_parts(m, torch.zeros_like(whole), min_fraction=20 / m.numel())) == 2
    # one bump (the left one's profile along the row, the right one gone): whole
    one = torch.minimum(m, 10 - ((torch.arange(48.0)[None] - 12) ** 2) / 8 + torch.zeros(32, 1))
    single = one > 0
    (got,) = split_peaks(one, single, min_pixels=20)
    assert torch.equal(got, single)


def _answer(model, geo, text, logits, presence_map) -> GeneratedAnswer:
    h, w = geo.original_hw
    n = len(logits)
    return GeneratedAnswer(text, parse_answer(text, model.box_codec, (w, h)), [], logits, torch.ones(n), 0.9, presence_map)


def _masks_and_map(sample, prompt: str, n_masks: int):
    """A tiny model with caption completion, the prompt's geometry, n masks over input pixels 0..3 x 0..3 and a
    presence map (on the embedding grid, 4 x coarser) that finds one more object at cells 2..3 x 2..3."""
    model, proc = build_tiny("composed", presence=True, complete_captions=True)
    geo = proc.encode_request(sample.image, prompt).geometry
    s = geo.input_size
    logits = torch.full((n_masks, 1, s, s), -8.0)
    logits[:, 0, 0:4, 0:4] = 5.0
    pmap = torch.full((1, s // 4, s // 4), -6.0)
    pmap[0, 2:4, 2:4] = 6.0
    return model, geo, logits, pmap, torch.ones(s, s, dtype=torch.bool)


def test_a_caption_gets_a_phrase_and_mask_for_each_object_its_masks_miss(sample):
    model, geo, logits, pmap, valid = _masks_and_map(sample, "Describe the image.", 2)  # two [SEG]s on one object
    s = geo.input_size
    pmap[0, 0:1, 0:1] = 4.0  # the map finds the object the masks found too, and one they missed
    text = "The image shows <p>a red square</p> [SEG] and <p>a red square</p> [SEG] on a plain background."
    ans = _answer(model, geo, text, logits.clone(), pmap)
    model._complete_caption(ans, valid, geo)
    assert ans.text == (f"The image shows <p>a red square</p> [SEG], <p>a red square</p> [SEG] and <p>{COMPLETED_PHRASE}</p> "
                        "[SEG] on a plain background.")  # one list again
    assert [seg.seg_index for seg in ans.parsed.segments] == [0, 1, 2]
    assert ans.mask_logits.shape == (3, 1, s, s)
    torch.testing.assert_close(ans.mask_logits[:2], logits)  # the generated masks are kept
    new = ans.mask_logits[2, 0] > 0
    # the missed object (cells 2..3 of the map, upsampled 4x) and nothing of the object already found
    assert new[9:15, 9:15].all() and not new[:4, :4].any() and not new[20:].any()
    assert ans.scores.shape == (3,) and 0.5 < float(ans.scores[2]) <= 1.0
    # a last [SEG] inside a box: the new phrase comes after the box
    text = "The image shows <p>a red square</p> [SEG] and <p>a red square</p> at <box>[SEG]</box>."
    ans = _answer(model, geo, text, logits.clone(), pmap)
    model._complete_caption(ans, valid, geo)
    assert ans.text.endswith(f"<box>[SEG]</box> and <p>{COMPLETED_PHRASE}</p> [SEG].")
    # a caption pruned to one phrase: the objects added make a list with it again
    text = "The image shows <p>a red square</p> [SEG] on a plain background."
    pmap[0, 0:1, 0:1] = -6.0
    pmap[0, 0:1, 6:8] = 6.0  # a second missed object
    ans = _answer(model, geo, text, logits[:1].clone(), pmap)
    model._complete_caption(ans, valid, geo)
    assert ans.parsed.clean_text == f"The image shows a red square, {COMPLETED_PHRASE} and {COMPLETED_PHRASE} on a plain background."


def test_answers_without_grounded_phrases_or_without_a_miss_are_left_alone(sample):
    model, geo, logits, pmap, valid = _masks_and_map(sample, "Segment the red square.", 1)
    for text in ("Sure, it is [SEG].", "<p>a red square</p> [SEG] [SEG]"):  # no phrase; masks and [SEG]s disagree
        ans = _answer(model, geo, text, logits.clone(), pmap)
        model._complete_caption(ans, valid, geo)
        assert ans.text == text and len(ans.mask_logits) == 1
    pmap[0, 2:4, 2:4] = -1.0  # the map finds nothing the mask misses
    text = "The image shows <p>a red square</p> [SEG]."
    ans = _answer(model, geo, text, logits.clone(), pmap)
    model._complete_caption(ans, valid, geo)
    assert ans.text == text and len(ans.mask_logits) == 1


def test_generate_reports_each_answers_presence_map_and_the_option_needs_the_head(sample):
    model, proc = build_tiny("composed", presence=True, presence_threshold=None, complete_captions=True)
    batch = proc.collate([proc.encode_request(sample.image, "Describe the image.")], padding_side="left")
    (ans,) = model.generate(batch, max_new_tokens=4)
    grid = model.mask_head.embedding_size
    assert ans.presence_map is not None and ans.presence_map.shape == (1, *grid)
    assert 0.0 <= ans.presence <= 1.0
    with pytest.raises(ValueError, match="complete_captions"):
        build_tiny("composed", complete_captions=True)


CAPTION = "The image shows <p>a red square</p> [SEG], <p>a speck</p> [SEG] and <p>a blue circle</p> [SEG] on black."


def _caption_masks(s: int) -> torch.Tensor:
    """Three masks over an s x s input: an object, an empty one, another object."""
    logits = torch.full((3, 1, s, s), -8.0)
    logits[0, 0, 0:4, 0:4] = 5.0
    logits[2, 0, 8:12, 8:12] = 5.0
    return logits


def test_prune_phrases_drops_the_phrases_whose_seg_found_nothing(sample):
    model, proc = build_tiny("composed", prune_phrases=0.01)
    geo = proc.encode_request(sample.image, "Describe the image.").geometry
    logits = _caption_masks(geo.input_size)
    ans = _answer(model, geo, CAPTION, logits.clone(), None)
    model._prune_phrases(ans, None, geo)  # no verifier: only the empty mask goes
    assert ans.text == "The image shows <p>a red square</p> [SEG] and <p>a blue circle</p> [SEG] on black."
    assert [s.phrase for s in ans.parsed.segments] == ["a red square", "a blue circle"]
    assert torch.equal(ans.mask_logits, logits[[0, 2]]) and ans.scores.shape == (2,)
    # with a verifier's best logits: the first phrase's [SEG] scored below 0.01 goes too, the others stay
    ans = _answer(model, geo, CAPTION, logits.clone(), None)
    model._prune_phrases(ans, torch.tensor([-6.0, 2.0, 3.0]), geo)
    assert ans.text == "The image shows <p>a blue circle</p> [SEG] on black."
    assert torch.equal(ans.mask_logits, logits[[2]])
    # an answer with one phrase, or whose masks and [SEG]s disagree, is left alone
    for text, rows in (("There is <p>a speck</p> [SEG].", [1]), (CAPTION, [0, 1])):
        ans = _answer(model, geo, text, logits[rows].clone(), None)
        model._prune_phrases(ans, None, geo)
        assert ans.text == text and len(ans.mask_logits) == len(rows)
    with pytest.raises(ValueError, match="prune_phrases"):
        build_tiny("composed", prune_phrases=1.5)


def test_generate_prunes_with_the_verifiers_best_logits(monkeypatch, sample):
    model, proc = build_tiny("composed", verifier=True, prune_phrases=0.01)
    seq = model.tokenizer.encode(CAPTION, add_special_tokens=False)
    assert seq.count(model.tokens.seg) == 3
    batch = proc.collate([proc.encode_request(sample.image, "Describe the image.")], padding_side="left")
    logits = _caption_masks(batch.geometries[0].input_size)
    logits[1, 0, 20:22, 20:22] = 5.0  # not empty: only the verifier can drop it
    monkeypatch.setattr(model, "_generate_tokens",
                        lambda *a: ([seq], [torch.randn(len(seq) + 1, model.vision_llm.hidden_size)], None))
    monkeypatch.setattr(model, "decode_masks", lambda *a, **k: (logits.clone(), torch.ones(3, 1), None))
    monkeypatch.setattr(model, "verify_masks", lambda emb, states, index, lg, prior, groups=None, images=None: (lg, torch.tensor([4.0, -9.0, 4.0])))
    with torch.no_grad():
        (ans,) = model.generate(batch, max_new_tokens=4)
    assert ans.parsed.clean_text == "The image shows a red square and a blue circle on black."
    assert ans.mask_logits.shape[0] == 2 and torch.equal(ans.mask_logits, logits[[0, 2]])
