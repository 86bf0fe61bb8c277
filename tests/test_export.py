"""``write_refer`` round-trips through the refer-layout loaders (``RefCOCO``, ``GRefCOCO``)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from data import GRefCOCO, GroundingSample, RefCOCO, Target, Task, write_refer
from data.masks import mask_to_box
from data.templates import caption_turn, reasoning_turn, rec_turn, referring_turn, region_turn

H, W = 24, 40


def _disk(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def hand_sample(seed: int) -> GroundingSample:
    """Three objects (two disks and a box-only target), referring turns of every kind, plus non-referring turns."""
    g = np.random.default_rng(seed)
    image = g.integers(0, 256, (H, W, 3), dtype=np.uint8)
    m0, m1 = _disk(8 + seed, 10, 5), _disk(28, 12 + seed % 3, 6)
    targets = [
        Target(box=mask_to_box(m0), mask=m0, label="red circle"),
        Target(box=mask_to_box(m1), mask=m1, label="blue circle"),
        Target(box=[1.5, 2.0, 6.0, 7.25], mask=None, label="hint"),
    ]
    turns = [
        referring_turn("the red circle", [0], g),
        referring_turn("the left circle", [0], g),  # same target: one ref, two sentences
        reasoning_turn("the bluest shape", [1], g),
        referring_turn("all the circles", [0, 1], g),
        referring_turn("the green square", [], g),
        rec_turn("the blue circle", 1, g),
        caption_turn([("a red circle", 0), " next to ", ("a blue circle", 1)], g),
        region_turn(0, "A red circle.", g),
    ]
    return GroundingSample(image=image, turns=turns, targets=targets, regions=[[0, 0, 5, 5]], source=f"hand {seed}")


def test_write_refer_round_trip_through_refcoco_and_grefcoco(tmp_path):
    samples = [hand_sample(s) for s in range(3)]
    summary = write_refer(samples, tmp_path, name="synthetic", split="train")
    assert (summary.images, summary.annotations, summary.skipped_targets) == (3, 6, 3)
    assert (summary.refs, summary.grefs, summary.skipped_turns) == (6, 12, 9)

    ds = RefCOCO(tmp_path, name="synthetic", split_by="unc", split="train")
    assert len(ds) == 6
    for k, s in enumerate(samples):
        red, blue = ds[2 * k], ds[2 * k + 1]
        assert np.array_equal(red.image, s.image)  # PNG: exact pixels
        assert red.sentences == ["the red circle", "the left circle"] and blue.sentences == ["the bluest shape"]
        for item, t in ((red, s.targets[0]), (blue, s.targets[1])):
            assert np.array_equal(item.mask, t.mask)
            np.testing.assert_array_equal(item.box, t.box)
        assert red.category == "red circle"
    per_sentence = RefCOCO(tmp_path, name="synthetic", split="train", per_sentence=True)
    assert len(per_sentence) == 9

    gds = GRefCOCO(tmp_path, name="synthetic", split="train")
    assert len(gds) == 12
    multi, none = gds[2], gds[3]
    assert multi.sentences == ["all the circles"] and len(multi.masks) == 2
    assert np.array_equal(multi.masks[1], samples[0].targets[1].mask)
    assert none.no_target and none.masks == [] and none.sentences == ["the green square"]
    tasks = [t.task for t in gds.to_sample(gds[2], np.random.default_rng(0)).turns]
    assert tasks == [Task.RES_MULTI]


def test_write_refer_appends_splits_and_takes_a_mapping(tmp_path):
    write_refer([hand_sample(0)], tmp_path, split="train")
    write_refer([hand_sample(1), hand_sample(2)], tmp_path, split="val")
    write_refer({"testA": [hand_sample(3)], "testB": [hand_sample(4)]}, tmp_path)
    sizes = {split: len(RefCOCO(tmp_path, name="synthetic", split=split)) for split in ("train", "val", "testA", "testB")}
    assert sizes == {"train": 2, "val": 4, "testA": 2, "testB": 2}
    inst = json.loads((tmp_path / "synthetic" / "instances.json").read_text())
    ids = [im["id"] for im in inst["images"]]
    assert ids == sorted(set(ids)) and len(ids) == 5
    assert len({a["id"] for a in inst["annotations"]}) == len(inst["annotations"]) == 10
    assert [c["name"] for c in inst["categories"]] == ["red circle", "blue circle"]
    refs = pickle.loads((tmp_path / "synthetic" / "refs(unc).p").read_bytes())
    sent_ids = [s["sent_id"] for r in refs for s in r["sentences"]]
    assert len({r["ref_id"] for r in refs}) == len(refs) and len(set(sent_ids)) == len(sent_ids)
    assert np.array_equal(RefCOCO(tmp_path, name="synthetic", split="val")[2].image, hand_sample(2).image)


def test_write_refer_jpeg_keeps_masks_exact(tmp_path):
    s = hand_sample(0)
    write_refer([s], tmp_path, name="jpg", image_format="jpg")
    item = RefCOCO(tmp_path, name="jpg", split="train")[0]
    assert item.image.shape == s.image.shape and np.array_equal(item.mask, s.targets[0].mask)
    with pytest.raises(ValueError, match="image_format"):
        write_refer([s], tmp_path, image_format="bmp")


def test_synthetic_world_round_trips_through_the_refer_loaders(tmp_path):
    from data.synthetic import SyntheticGrounding

    world = SyntheticGrounding(
        split="val", length=6, image_size=64, tasks=[Task.RES, Task.RES_MULTI, Task.RES_NONE, Task.REASON, Task.REC],
        turns_per_sample=3, seed=0,
    )
    samples = [world[i] for i in range(len(world))]
    summary = write_refer(samples, tmp_path, name="synthetic", split="val")
    expected = []  # (sample, target indices, sentences) in the order write_refer groups them
    for s in samples:
        groups: dict[tuple[int, ...], list[str]] = {}
        for t in s.turns:
            if t.task in (Task.RES, Task.RES_MULTI, Task.RES_NONE, Task.REASON) and t.expression:
                groups.setdefault(tuple(dict.fromkeys(t.target_indices)), []).append(t.expression)
        expected += [(s, k, v) for k, v in groups.items()]
    assert summary.grefs == len(expected) > 0 and summary.images == len(samples)

    gds = GRefCOCO(tmp_path, name="synthetic", split="val")
    assert len(gds) == len(expected)
    for k, (s, idx, sentences) in enumerate(expected):
        item = gds[k]
        assert np.array_equal(item.image, s.image) and item.sentences == sentences
        assert item.no_target == (len(idx) == 0) and len(item.masks) == len(idx)
        for m, b, t in zip(item.masks, item.boxes, idx):
            assert np.array_equal(m, s.targets[t].mask)
            np.testing.assert_array_equal(b, s.targets[t].box)

    single = [e for e in expected if len(e[1]) == 1]
    ds = RefCOCO(tmp_path, name="synthetic", split="val")
    assert len(ds) == len(single) > 0
    for k, (s, (t,), sentences) in enumerate(single):
        item = ds[k]
        assert item.sentences == sentences and np.array_equal(item.mask, s.targets[t].mask)
        np.testing.assert_array_equal(item.box, s.targets[t].box)
        back = ds.to_sample(item, np.random.default_rng(k))
        assert [turn.expression for turn in back.turns] == sentences
