"""The synthetic grounding world: determinism, splits, exact masks and boxes, every task, the expression checker,
occlusion, videos, and a PNG grid of samples under tests/_output/ for a person to look at."""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.sample import GroundingSample, GroundRef, RegionRef, Task, Turn
from data.synthetic import (
    COLOUR_BANDS,
    COLOURS,
    All,
    And,
    Category,
    Closest,
    Compare,
    Entering,
    Extreme,
    Leaving,
    Moving,
    Relation,
    Still,
    band_rgb,
    SyntheticGrounding,
    SyntheticVideos,
    The,
    check_sample,
    check_turn,
    check_video,
    mask_to_box,
    parse_expression,
    render_scene,
)

OUTPUT = Path(__file__).parent / "_output"


def _digest(sample: GroundingSample) -> str:
    h = hashlib.sha1(sample.image.tobytes())
    for t in sample.targets:
        h.update(t.mask.tobytes())
        h.update(t.box.tobytes())
    h.update(repr(sample.turns).encode())
    h.update(sample.regions.tobytes())
    return h.hexdigest()


def test_deterministic_per_seed_split_index():
    a = SyntheticGrounding("train", length=6, turns_per_sample=3, seed=3)
    b = SyntheticGrounding("train", length=6, turns_per_sample=3, seed=3)
    # same item in any order, from a fresh dataset -> identical arrays and turns
    assert [_digest(a[i]) for i in range(6)] == [_digest(b[i]) for i in reversed(range(6))][::-1]
    c = SyntheticGrounding("train", length=6, turns_per_sample=3, seed=4)
    assert _digest(a[0]) != _digest(c[0])


def test_splits_are_disjoint():
    images = {}
    for split in ("train", "val", "test"):
        ds = SyntheticGrounding(split, length=25)
        images[split] = {hashlib.sha1(ds[i].image.tobytes()).hexdigest() for i in range(25)}
        assert len(images[split]) == 25
    assert not images["train"] & images["val"]
    assert not images["train"] & images["test"]
    assert not images["val"] & images["test"]
    with pytest.raises(ValueError, match="unknown split"):
        SyntheticGrounding("dev")


@pytest.mark.parametrize("size", [256, (160, 288)])
def test_masks_boxes_and_pixels_are_exact(size):
    ds = SyntheticGrounding("val", length=20, image_size=size, turns_per_sample=2)
    h, w = (size, size) if isinstance(size, int) else size
    for i in range(len(ds)):
        scene, sample = ds.generate(i)
        assert sample.image.shape == (h, w, 3) and sample.size == (h, w)
        union = np.zeros((h, w), int)
        for k, (t, obj) in enumerate(zip(sample.targets, scene.objects)):
            assert t.mask.shape == (h, w) and t.mask.dtype == bool and t.mask.any()
            ys, xs = np.nonzero(t.mask)
            np.testing.assert_array_equal(t.box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            np.testing.assert_array_equal(t.box, scene.boxes[k])
            # the visible mask is exactly the pixels painted with the object's colour, last
            assert (sample.image[t.mask] == np.asarray(obj.rgb, np.uint8)).all()
            assert t.label == f"{obj.colour} {obj.shape}"
            union += t.mask
        assert union.max() <= 1, "visible masks overlap"
        check_sample(scene, sample)


def test_occlusion_leaves_visible_pixels_only():
    rng = np.random.default_rng(7)
    occluded = 0
    for _ in range(40):
        scene = render_scene(rng, 128, num_objects=5, textures=False)
        for i in range(len(scene.objects)):
            vis, full = scene.masks[i], scene.full_masks[i]
            assert not (vis & ~full).any()
            later = scene.full_masks[i + 1 :].any(0) if i + 1 < len(scene.objects) else np.zeros_like(vis)
            np.testing.assert_array_equal(vis, full & ~later)
            assert vis.sum() >= 0.5 * full.sum()
            hidden = full & ~vis
            if hidden.any():
                occluded += 1
                # every hidden pixel shows an occluder (same-colour objects never overlap), not this object
                assert (scene.image[hidden] != np.asarray(scene.objects[i].rgb, np.uint8)).any(axis=1).all()
                assert scene.masks[i + 1 :].any(0)[hidden].all()
                np.testing.assert_array_equal(mask_to_box(vis), scene.boxes[i])
    assert occluded >= 10


def test_every_task_is_produced_and_checked():
    ds = SyntheticGrounding("train", length=140, turns_per_sample=1, seed=1)
    seen: dict[Task, int] = {}
    for i in range(len(ds)):
        scene, sample = ds.generate(i)
        assert len(sample.turns) == 1
        turn = sample.turns[0]
        seen[turn.task] = seen.get(turn.task, 0) + 1
        check_sample(scene, sample)
        n = len(turn.target_indices)
        if turn.task == Task.RES:
            assert n == 1
        elif turn.task == Task.RES_MULTI:
            assert n >= 2
        elif turn.task == Task.RES_NONE:
            assert n == 0 and "no " in turn.answer[0]
        elif turn.task == Task.REC:
            assert turn.grounds == [GroundRef(turn.target_indices[0], box=True, seg=False)]
        elif turn.task == Task.GCG:
            assert sorted(turn.target_indices) == list(range(len(sample.targets)))
            assert all(g.phrase and g.seg for g in turn.grounds)
        elif turn.task == Task.REGION:
            assert any(isinstance(p, RegionRef) for p in turn.prompt) and not turn.grounds
    assert seen == {t: 20 for t in Task}


def test_single_task_datasets():
    assert SyntheticGrounding(tasks=["rec", "RES_MULTI"]).tasks == (Task.REC, Task.RES_MULTI)
    with pytest.raises(ValueError, match="unknown task"):
        SyntheticGrounding(tasks=["segment"])
    ds = SyntheticGrounding("test", length=12, tasks=[Task.REC], turns_per_sample=2)
    for i in range(len(ds)):
        scene, sample = ds.generate(i)
        assert [t.task for t in sample.turns] == [Task.REC, Task.REC]
        assert sample.turns[0].expression != sample.turns[1].expression
        check_sample(scene, sample)


def test_checker_passes_on_many_samples():
    ds = SyntheticGrounding("train", length=250, turns_per_sample=7, seed=11, min_objects=2, max_objects=6)
    kinds = set()
    for i in range(len(ds)):
        scene, sample = ds.generate(i)
        assert {t.task for t in sample.turns} == set(Task)
        check_sample(scene, sample)
        for t in sample.turns:
            if t.task in (Task.REASON, Task.REC, Task.RES_MULTI):
                kinds.add(type(parse_expression(t.expression)).__name__)
    assert kinds >= {"Extreme", "Compare", "Relation", "Closest", "All", "And", "The"}


def test_checker_rejects_wrong_turns():
    ds = SyntheticGrounding("train", length=30, turns_per_sample=7, seed=5)
    rejected = 0
    for i in range(len(ds)):
        scene, sample = ds.generate(i)
        n = len(scene.objects)
        for t in sample.turns:
            if t.task in (Task.RES, Task.REASON) and n >= 2:
                wrong = (t.target_indices[0] + 1) % n
                bad = replace(t, answer=("Sure, it is ", GroundRef(wrong), "."))
                with pytest.raises(ValueError, match="selects"):
                    check_turn(scene, bad, sample.regions)
                rejected += 1
            if t.task == Task.REGION:
                other = next(o for o in COLOURS if o not in t.answer[0])
                bad = replace(t, answer=(f"It is a {other} circle.",))
                with pytest.raises(ValueError):
                    check_turn(scene, bad, sample.regions)
    assert rejected >= 20
    with pytest.raises(ValueError, match="not an expression"):
        parse_expression("the thing over there")


def test_parse_round_trip():
    red_circle, blue = Category("circle", "red"), Category(colour="blue")
    queries = [
        The(Category("star", "green", "small")),
        The(Category(size="medium")),
        All(Category(shape="hexagon")),
        All(red_circle, both=True),
        And((The(red_circle), The(blue))),
        And((The(red_circle), The(blue), The(Category("square")))),
        Extreme("largest", Category(colour="red")),
        Extreme("bottommost", Category()),
        Compare("smaller", Category("triangle")),
        Relation("left of", Category(), red_circle, 1),
        Relation("right of", Category("star"), blue, 0),
        Relation("above", Category(), blue),
        Closest(Category(colour="orange"), red_circle),
        Moving("up", Category()),
        Entering(Category("circle")),
        Leaving(blue),
        Still(Category()),
    ]
    for q in queries:
        assert parse_expression(q.phrase()) == q, q.phrase()
        if hasattr(q, "question"):
            assert parse_expression(q.question()) == q, q.question()


def test_reasoning_answers_follow_geometry():
    # hand-made scene: three circles in a row, sizes increasing to the right
    from data.synthetic import Scene, ShapeObject

    objs, fulls = [], []
    for x, r, colour, size in [(40, 12, "red", "small"), (110, 22, "blue", "medium"), (200, 36, "green", "large")]:
        o = ShapeObject("circle", colour, size, (x, 100), r, 0, COLOURS[colour])
        objs.append(o)
        fulls.append(o.draw_mask((200, 256)))
    scene = Scene(np.zeros((200, 256, 3), np.uint8), objs, np.stack(fulls), np.stack(fulls))
    ev = lambda text: parse_expression(text).evaluate(scene.objects, scene.facts)  # noqa: E731
    assert ev("the largest circle") == (2,)
    assert ev("the smallest shape") == (0,)
    assert ev("the leftmost shape") == (0,)
    assert ev("the shape left of the blue circle") == (0,)
    assert ev("Which shape is to the right of the blue circle?") == (2,)
    assert ev("the shape above the blue circle") == ()
    assert ev("the shape closest to the red circle") == (1,)
    assert ev("all the circles") == (0, 1, 2)
    assert ev("the circle") is None  # three circles: ambiguous
    assert ev("the topmost shape") is None  # all at the same height: too close to call


def test_relations_need_a_mostly_aligned_displacement():
    from data.synthetic import ObjectFacts, relation_holds

    def box(cx, cy, r=10):
        return ObjectFacts(cx - r, cy - r, cx + r, cy + r, 4 * r * r, 4 * r * r)

    anchor = box(100, 100)
    assert relation_holds("left of", box(50, 100), anchor) is True
    assert relation_holds("left of", box(50, 130), anchor) is True  # 50 left, 30 down: mostly left
    assert relation_holds("left of", box(50, 160), anchor) is None  # 50 left, 60 down: too close to call
    assert relation_holds("left of", box(50, 210), anchor) is False  # mostly below
    assert relation_holds("left of", box(150, 100), anchor) is False
    assert relation_holds("left of", box(95, 100), anchor) is None  # overlapping, barely left
    assert relation_holds("below", box(100, 150), anchor) is True
    assert relation_holds("above", box(100, 150), anchor) is False
    assert relation_holds("right of", box(160, 90), anchor) is True


def test_videos_enter_leave_and_masks():
    ds = SyntheticVideos("train", length=24, num_frames=8, image_size=128)
    entering = leaving = hidden = 0
    for i in range(len(ds)):
        video, sample = ds.generate(i)
        check_video(video, sample)
        assert len(sample.frames) == 8 and sample.frames[0].shape == (128, 128, 3)
        assert sample.expressions
        for k, tg in enumerate(sample.targets):
            assert tg.masks.shape == (8, 128, 128)
            vis = tg.visible
            assert vis.sum() >= 2
            inside = video.in_frame[k]
            # outside the frame -> all-False mask; a visible mask is always inside the frame
            assert not vis[~inside].any()
            if not inside[0] and inside.any():
                entering += 1
            if inside[0] and not inside[-1]:
                leaving += 1
            # occlusion: pixels of the whole shape that a later object covers are not in the visible mask
            covered = video.full_masks[k] & ~tg.masks
            assert not (tg.masks & ~video.full_masks[k]).any()
            hidden += int(covered.any())
            boxes = tg.boxes()
            assert np.isnan(boxes[~vis]).all() and not np.isnan(boxes[vis]).any()
            for f in np.flatnonzero(vis):
                assert (sample.frames[f][tg.masks[f]] == np.asarray(video.objects[k].rgb, np.uint8)).all()
        union = np.stack([t.masks for t in sample.targets]).sum(0)
        assert union.max() <= 1
    assert entering >= 3 and leaving >= 3
    assert hidden >= 3, "objects should occlude each other"
    # determinism
    again = SyntheticVideos("train", length=24, num_frames=8, image_size=128)[5]
    first = ds[5]
    assert all(np.array_equal(a, b) for a, b in zip(again.frames, first.frames))
    assert again.expressions == first.expressions


def test_video_expressions_cover_motion():
    ds = SyntheticVideos("val", length=40, num_frames=6, image_size=(96, 144), min_objects=3, max_objects=4)
    kinds = set()
    for i in range(len(ds)):
        video, sample = ds.generate(i)
        assert sample.frames[0].shape == (96, 144, 3) and sample.targets[0].masks.shape == (6, 96, 144)
        check_video(video, sample)
        kinds |= {type(parse_expression(e.text)).__name__ for e in sample.expressions}
    assert kinds >= {"The", "All", "Moving", "Entering", "Leaving"}


# ------------------------------------------------------------------------------------------------------------------
# A picture for a person: samples with their grounded masks, boxes and text
# ------------------------------------------------------------------------------------------------------------------

_PALETTE = [(255, 255, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 255, 0), (255, 128, 0)]


def _answer_text(turn: Turn) -> str:
    out = []
    for p in turn.answer:
        if isinstance(p, str):
            out.append(p)
        else:
            tag = "<box>" if p.box else ""
            tag += f"<p>{p.phrase}</p>" if p.phrase else ""
            tag += f"[SEG{p.index}]" if p.seg else f"#{p.index}"
            out.append(tag)
    return "".join(out)


def _outline(img: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw ``mask``'s outline on ``img`` in place: black under ``colour``, so it shows on any background."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(img, contours, -1, (0, 0, 0), 3)
    cv2.drawContours(img, contours, -1, colour, 1)


def _panel(sample: GroundingSample, turn: Turn, width: int = 256) -> np.ndarray:
    img = sample.image.copy()
    if turn.task != Task.REC:  # masks as outlines (REC answers are boxes only)
        for k, idx in enumerate(turn.target_indices):
            _outline(img, sample.targets[idx].mask, _PALETTE[k % len(_PALETTE)])
    for k, idx in enumerate(turn.target_indices):
        x1, y1, x2, y2 = sample.targets[idx].box.astype(int)
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), _PALETTE[k % len(_PALETTE)], 1)
        cv2.putText(img, str(k), (x1 + 2, y1 + 11), cv2.FONT_HERSHEY_PLAIN, 0.9, _PALETTE[k % len(_PALETTE)], 1)
    for r in [p for p in turn.prompt if isinstance(p, RegionRef)]:
        x1, y1, x2, y2 = sample.regions[r.index].astype(int)
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 0), 2)
    img = cv2.resize(img, (width, int(round(img.shape[0] * width / img.shape[1]))), interpolation=cv2.INTER_NEAREST)
    lines = [f"[{turn.task.value}]"]
    lines += textwrap.wrap("Q: " + turn.prompt_text(), 44) + textwrap.wrap("A: " + _answer_text(turn), 44)
    text = np.full((12 * len(lines) + 6, width, 3), 255, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(text, line, (3, 12 * k + 12), cv2.FONT_HERSHEY_PLAIN, 0.75, (0, 0, 0), 1)
    return np.concatenate([img, text], 0)


def _grid(panels: list[np.ndarray], cols: int) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    w = panels[0].shape[1]
    rows = []
    for r in range(0, len(panels), cols):
        row = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels[r : r + cols]]
        row += [np.full((h, w, 3), 255, np.uint8)] * (cols - len(row))
        rows.append(np.concatenate([np.pad(p, ((2, 2), (2, 2), (0, 0))) for p in row], 1))
    return np.concatenate(rows, 0)


def test_render_grid_png():
    OUTPUT.mkdir(exist_ok=True)
    ds = SyntheticGrounding("val", length=21, seed=0)
    panels = []
    for i in range(len(ds)):
        sample = ds[i]
        panels.append(_panel(sample, sample.turns[0]))
    wide = SyntheticGrounding("val", length=7, image_size=(160, 288), seed=1)
    panels += [_panel(wide[i], wide[i].turns[0]) for i in range(7)]
    grid = _grid(panels, cols=7)
    path = OUTPUT / "synthetic_grid.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    videos = SyntheticVideos("val", length=4, num_frames=8, image_size=128)
    rows = []
    for i in range(len(videos)):
        v = videos[i]
        e = v.expressions[i % len(v.expressions)]
        frames = []
        for f, frame in enumerate(v.frames):
            img = frame.copy()
            for k, oid in enumerate(e.obj_ids):
                _outline(img, v.target(oid).masks[f], _PALETTE[k % len(_PALETTE)])
            frames.append(np.pad(img, ((1, 1), (1, 1), (0, 0))))
        strip = np.concatenate(frames, 1)
        text = np.full((16, strip.shape[1], 3), 255, np.uint8)
        cv2.putText(text, f"{e.text} -> objects {list(e.obj_ids)}", (3, 12), cv2.FONT_HERSHEY_PLAIN, 0.9, (0, 0, 0), 1)
        rows.append(np.concatenate([strip, text], 0))
    assert cv2.imwrite(str(OUTPUT / "synthetic_videos.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    assert path.stat().st_size > 10_000


def test_any_size_and_seed_gives_checked_samples():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=25, deadline=None)
    @given(
        seed=st.integers(0, 2**31),
        h=st.integers(40, 200),
        w=st.integers(40, 200),
        index=st.integers(0, 10**6),
        split=st.sampled_from(["train", "val", "test"]),
    )
    def check(seed, h, w, index, split):
        ds = SyntheticGrounding(split, length=10**6 + 1, image_size=(h, w), turns_per_sample=7, seed=seed)
        scene, sample = ds.generate(index)
        assert sample.image.shape == (h, w, 3)
        check_sample(scene, sample)

    check()


def test_phrasing_restyles_prompts_only():
    plain = SyntheticGrounding("val", length=8, turns_per_sample=7, tasks=list(Task))
    styled = SyntheticGrounding("val", length=8, turns_per_sample=7, tasks=list(Task), phrasing=1.0)
    changed = 0
    for i in range(len(plain)):
        scene, a = plain.generate(i)
        _, b = styled.generate(i)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.regions, b.regions)
        assert [(t.answer, t.task, t.expression) for t in a.turns] == [(t.answer, t.task, t.expression) for t in b.turns]
        changed += sum(x.prompt != y.prompt for x, y in zip(a.turns, b.turns))
        check_sample(scene, b)
    assert changed >= 50  # a reasoning question asked bare may already be its own prompt
    half = SyntheticGrounding("val", length=8, turns_per_sample=7, tasks=list(Task), phrasing=0.5)
    n_half = sum(x.prompt != y.prompt for i in range(8) for x, y in zip(plain[i].turns, half[i].turns))
    assert 10 < n_half < 46
    with pytest.raises(ValueError, match="phrasing"):
        SyntheticGrounding(phrasing=1.5)


def _hsv(rgb) -> tuple[float, float, float]:
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360, s, v


def _in_band(rgb, name: str) -> bool:
    (h0, h1), (s0, s1), (v0, v1) = COLOUR_BANDS[name]
    h, s, v = _hsv(rgb)
    hue_ok = any(h0 - 1 <= x <= h1 + 1 for x in (h, h - 360))  # one degree and 0.02: rounding to 8 bits
    return hue_ok and s0 - 0.02 <= s <= s1 + 0.02 and v0 - 0.02 <= v <= v1 + 0.02


def test_colour_bands_hold_the_palette_and_pure_colours():
    for name, rgb in COLOURS.items():
        assert _in_band(rgb, name), name
    pure = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
            "orange": (255, 165, 0), "purple": (128, 0, 128)}
    for name, rgb in pure.items():
        assert _in_band(rgb, name) and [n for n in COLOUR_BANDS if _in_band(rgb, n)] == [name], name
    rng = np.random.default_rng(0)
    for name in COLOUR_BANDS:
        draws = [band_rgb(name, rng.random(3)) for _ in range(300)]
        _, sat, val = _hsv(band_rgb(name, (0.5, 1.0, 1.0)))  # the far corner: full saturation, the band's top value
        assert sat == 1.0 and abs(val - COLOUR_BANDS[name][2][1]) < 0.005
        assert all(_in_band(c, name) for c in draws), name
        assert all(not _in_band(c, other) for c in draws for other in COLOUR_BANDS if other != name)
        assert len(set(draws)) > 250  # a band, not a point


def test_band_colouring_draws_the_same_world_in_other_fills():
    palette = SyntheticGrounding("val", length=6, turns_per_sample=4, seed=2)
    bands = SyntheticGrounding("val", length=6, turns_per_sample=4, seed=2, colours="bands")
    far = 0
    for i in range(6):
        scene, sample = bands.generate(i)
        check_sample(scene, sample)
        p_scene, p_sample = palette.generate(i)  # the same scene, questions and answers; other fills
        assert [t.prompt for t in sample.turns] == [t.prompt for t in p_sample.turns]
        assert all(np.array_equal(m, n) for m, n in zip(scene.masks, p_scene.masks))
        for obj, mask in zip(scene.objects, scene.masks):
            fill = tuple(int(c) for c in sample.image[mask].mean(0).round())
            assert _in_band(fill, obj.colour), (obj.colour, fill)
            far += int(np.abs(np.subtract(fill, COLOURS[obj.colour])).max() > 12)
        for obj, mask in zip(p_scene.objects, p_scene.masks):  # the default world is unchanged
            assert np.abs(p_scene.image[mask].astype(int) - COLOURS[obj.colour]).max() <= 12
    assert far >= 5  # most band fills are outside the palette's +- 12
    with pytest.raises(ValueError, match="colouring"):
        SyntheticGrounding(colours="rainbow")


def test_plain_grey_range_reaches_black_and_white_in_the_same_scenes():
    from data.textures import PLAIN_BACKGROUNDS, plain_background

    greys = {int(plain_background(np.random.default_rng(s), (4, 4), "range").image[0, 0, 0]) for s in range(3000)}
    assert min(greys) == 0 and max(greys) == 255 and len(greys) == 17 * len(PLAIN_BACKGROUNDS)
    levels = {int(plain_background(np.random.default_rng(s), (4, 4)).image[0, 0, 0]) for s in range(3000)}
    assert min(levels) == 4 and max(levels) == 253  # the default world: 12 - 8 .. 245 + 8
    black = next(b for s in range(3000) if (b := plain_background(np.random.default_rng(s), (4, 4), "range")).image.max() == 0)
    assert black.name == "plain black" and not black.texture
    levels_ds = SyntheticGrounding("val", length=12, turns_per_sample=3, seed=4)
    range_ds = SyntheticGrounding("val", length=12, turns_per_sample=3, seed=4, plain_greys="range")
    changed = 0
    for i in range(12):
        (scene, a), (other, b) = levels_ds.generate(i), range_ds.generate(i)
        check_sample(other, b)
        assert [t.prompt for t in a.turns] == [t.prompt for t in b.turns]
        assert all(np.array_equal(m, n) for m, n in zip(scene.masks, other.masks))
        changed += not np.array_equal(a.image, b.image)
    assert changed >= 2  # the plain backgrounds (textures stay as they were)
    with pytest.raises(ValueError, match="plain greys"):
        SyntheticGrounding(plain_greys="colour")


def test_aspect_draws_landscape_and_portrait_frames_of_checked_scenes():
    square = SyntheticGrounding("val", length=10, turns_per_sample=3, seed=2)
    same = SyntheticGrounding("val", length=10, turns_per_sample=3, seed=2, aspect=1.0)
    for i in range(3):  # aspect 1 (the default) is the world as it was
        assert np.array_equal(square[i].image, same[i].image)
    ds = SyntheticGrounding("val", length=40, turns_per_sample=3, seed=2, aspect=2.0, image_size=128, scenes=20)
    frames = [ds.frame_of(i) for i in range(20)]
    assert all(max(f) == 128 and 64 <= min(f) <= 128 for f in frames)
    assert any(h < w for h, w in frames) and any(h > w for h, w in frames)  # landscape and portrait
    for i in (0, 1, 20):
        scene, sample = ds.generate(i)
        assert sample.image.shape[:2] == frames[i % 20]  # a revisited scene keeps its frame
        assert sample.targets[0].mask.shape == frames[i % 20]
        check_sample(scene, sample)
    assert np.array_equal(ds[3].image, ds[3].image)
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="aspect"):
            SyntheticGrounding(aspect=bad)
