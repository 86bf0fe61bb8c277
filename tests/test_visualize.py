"""demo.visualize: overlays, points, panels, image/video writers and phrase HTML."""

from __future__ import annotations

import colorsys
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from demo import visualize as viz
from demo.visualize import draw_overlay, draw_points, palette, phrase_html, save_image, side_by_side, write_video

REPO = Path(__file__).resolve().parents[1]
OUTPUT = Path(__file__).resolve().parent / "_output"


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=-1)


def _disk(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _blend(img: np.ndarray, color, alpha: float) -> np.ndarray:
    return np.clip(img.astype(np.float64) * (1 - alpha) + np.asarray(color, np.float64) * alpha + 0.5, 0, 255).astype(
        np.uint8
    )


# ------------------------------------------------------------------------------------------------- palette


def test_palette_is_deterministic_distinct_and_vivid():
    assert palette(0) == []
    colors = palette(300)
    assert colors == palette(300)
    assert palette(7) == colors[:7]
    assert len(set(colors)) == 300
    for c in colors:
        assert len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
        _, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
        assert s >= 0.5 and v >= 0.5, c
    with pytest.raises(ValueError):
        palette(-1)


def test_text_color_contrasts_with_the_fill():
    assert viz._text_color((255, 225, 25)) == (0, 0, 0)  # yellow
    assert viz._text_color((255, 255, 255)) == (0, 0, 0)
    assert viz._text_color((0, 0, 0)) == (255, 255, 255)
    assert viz._text_color(palette(1)[0]) == (255, 255, 255)  # the first (red) label reads white


# ------------------------------------------------------------------------------------------------- overlay


def test_no_objects_returns_a_copy():
    img = _noise(20, 30)
    for out in (draw_overlay(img), draw_overlay(img, [], [], []), draw_overlay(img, None, None, None)):
        assert out.dtype == np.uint8 and np.array_equal(out, img)
        assert not np.shares_memory(out, img)


def test_mask_is_blended_exactly_inside_and_nothing_changes_outside():
    img = _noise(60, 80)
    mask = _disk(60, 80, 30, 25, 12)
    out = draw_overlay(img, [mask], alpha=0.45, contour_thickness=0)
    expected = img.copy()
    expected[mask] = _blend(img[mask], palette(1)[0], 0.45)
    assert np.array_equal(out[~mask], img[~mask])
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert _changed(out, img)[mask].mean() > 0.99


def test_contour_is_drawn_in_the_colour_along_the_mask_boundary():
    img = _noise(60, 80)
    mask = _disk(60, 80, 40, 30, 15)
    color = palette(1)[0]
    out = draw_overlay(img, [mask], contour_thickness=3)
    boundary = mask & ~(cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    assert np.all(out[boundary] == color)
    changed = _changed(out, img)
    assert not np.any(changed & ~_dilate(mask, 2))
    assert np.any(changed & ~mask)  # the contour's outer half


def test_mask_with_a_hole_outlines_the_hole_too():
    img = np.zeros((60, 60, 3), np.uint8)
    ring = _disk(60, 60, 30, 30, 20) & ~_disk(60, 60, 30, 30, 8)
    out = draw_overlay(img, [ring], alpha=0.0, contour_thickness=1)
    hole_edge = _dilate(~ring & _disk(60, 60, 30, 30, 10), 1) & ring & _disk(60, 60, 30, 30, 10)
    assert np.any(np.all(out[hole_edge] == palette(1)[0], axis=-1))


def test_box_stroke_lies_exactly_inside_the_box():
    img = _noise(60, 80)
    out = draw_overlay(img, boxes=[[10.0, 12.0, 50.0, 40.0]], box_thickness=3)
    yy, xx = np.mgrid[:60, :80]
    inside = (xx >= 10) & (xx < 50) & (yy >= 12) & (yy < 40)
    core = (xx >= 13) & (xx < 47) & (yy >= 15) & (yy < 37)
    band = inside & ~core
    assert np.array_equal(_changed(out, img), band)
    assert np.all(out[band] == palette(1)[0])


def test_box_corners_in_any_order_and_the_full_image_box():
    img = np.zeros((30, 40, 3), np.uint8)
    a = draw_overlay(img, boxes=[[30, 20, 5, 2]], box_thickness=1)
    b = draw_overlay(img, boxes=[[5, 2, 30, 20]], box_thickness=1)
    assert np.array_equal(a, b)
    full = draw_overlay(img, boxes=[[0, 0, 40, 30]], box_thickness=1)
    color = palette(1)[0]
    for edge in (full[0], full[-1], full[:, 0], full[:, -1]):
        assert np.all(edge == color)
    assert not np.any(full[1:-1, 1:-1])


def test_box_partly_outside_the_image_is_clipped():
    img = np.zeros((30, 40, 3), np.uint8)
    out = draw_overlay(img, boxes=[[-20.0, 10.0, 100.0, 200.0]], labels=["x"], box_thickness=2)
    assert out.shape == img.shape
    assert np.all(out[10:12, 5:35] == palette(1)[0])


def test_colours_follow_the_palette_or_the_given_colours():
    img = np.zeros((40, 120, 3), np.uint8)
    boxes = [[2, 2, 30, 30], [42, 2, 70, 30], [82, 2, 110, 30]]
    out = draw_overlay(img, boxes=boxes, box_thickness=1)
    for (x1, y1, _, _), c in zip(boxes, palette(3)):
        assert tuple(out[y1, x1]) == c
    mine = [(1, 2, 3), (10, 20, 30), (100, 110, 120)]
    out = draw_overlay(img, boxes=boxes, colors=mine, box_thickness=1)
    assert [tuple(out[2, x]) for x in (2, 42, 82)] == mine
    out = draw_overlay(img, boxes=boxes, colors=(9, 8, 7), box_thickness=1)
    assert [tuple(out[2, x]) for x in (2, 42, 82)] == [(9, 8, 7)] * 3
    out = draw_overlay(img, boxes=boxes, colors=np.array(mine), box_thickness=1)
    assert [tuple(out[2, x]) for x in (2, 42, 82)] == mine
    with pytest.raises(ValueError, match="3 objects but only 2 colours"):
        draw_overlay(img, boxes=boxes, colors=mine[:2])
    with pytest.raises(ValueError, match="colour"):
        draw_overlay(img, boxes=boxes, colors=[(0, 0, 300)] * 3)


def test_none_entries_are_skipped_and_objects_matched_by_index():
    img = np.zeros((80, 100, 3), np.uint8)
    m1 = _disk(80, 100, 70, 50, 10)
    cols = palette(3)
    out = draw_overlay(
        img,
        masks=[None, m1],
        boxes=[[20, 40, 40, 70]],
        labels=[None, None, "third"],
        contour_thickness=0,
        box_thickness=1,
    )
    assert tuple(out[40, 20]) == cols[0]  # object 0: box only
    assert np.array_equal(out[m1], np.broadcast_to(_blend(np.zeros(3), cols[1], 0.45), out[m1].shape))
    assert tuple(out[0, 0]) == cols[2]  # object 2: a label without geometry, at the top-left
    only_label = draw_overlay(img, labels=["third"], colors=[cols[2]])
    box_and_mask = draw_overlay(img, masks=[None, m1], boxes=[[20, 40, 40, 70]], colors=cols, contour_thickness=0)
    assert np.array_equal(_changed(out, img), _changed(only_label, img) | _changed(box_and_mask, img))
    # None in every list: nothing drawn
    assert np.array_equal(draw_overlay(img, [None], [None], [None]), img)
    assert np.array_equal(draw_overlay(img, labels=["", "   "]), img)


def test_single_mask_and_single_box_and_stacked_arrays():
    img = _noise(40, 50)
    m = _disk(40, 50, 20, 20, 8)
    assert np.array_equal(draw_overlay(img, m), draw_overlay(img, [m]))
    assert np.array_equal(draw_overlay(img, boxes=[1, 2, 30, 20]), draw_overlay(img, boxes=[[1, 2, 30, 20]]))
    masks = np.stack([m, _disk(40, 50, 35, 30, 5)])
    boxes = np.array([[5.0, 5.0, 30.0, 30.0], [28.0, 22.0, 45.0, 38.0]])
    assert np.array_equal(draw_overlay(img, masks, boxes), draw_overlay(img, list(masks), list(boxes)))
    assert np.array_equal(draw_overlay(img, [m.astype(np.uint8)]), draw_overlay(img, [m]))
    assert np.array_equal(draw_overlay(img, [m[None]]), draw_overlay(img, [m]))
    with pytest.raises(TypeError, match="single string"):
        draw_overlay(img, [m], labels="cat")


def test_label_sits_above_its_box():
    img = np.zeros((200, 300, 3), np.uint8)
    out = draw_overlay(img, boxes=[[100, 100, 180, 150]], labels=["cat"], box_thickness=0)
    x0, y0, x1, y1 = _bbox(_changed(out, img))
    assert (x0, y1) == (100, 99)
    assert np.all(out[y1, x0:x1] == palette(1)[0])  # the label box's bottom padding row is its fill colour
    dark = out[y0 : y1 + 1, x0 : x1 + 1].min(axis=-1)
    assert dark.max() > 240  # white (anti-aliased) text on the red fill


@pytest.mark.parametrize("box", [[260, 170, 300, 200], [0, 0, 30, 10], [280, 0, 300, 200], [-50, 190, 10, 260]])
def test_label_near_the_border_stays_whole_inside_the_image(box):
    img = np.zeros((200, 300, 3), np.uint8)
    label = "a fairly long label"
    centred = draw_overlay(img, boxes=[[130, 100, 170, 130]], labels=[label], box_thickness=0)
    cx0, cy0, cx1, cy1 = _bbox(_changed(centred, img))
    out = draw_overlay(img, boxes=[box], labels=[label], box_thickness=0)
    x0, y0, x1, y1 = _bbox(_changed(out, img))
    assert (x1 - x0, y1 - y0) == (cx1 - cx0, cy1 - cy0)  # same size: not cut by the border
    assert 0 <= x0 and x1 < 300 and 0 <= y0 and y1 < 200
    fill = palette(1)[0]
    for edge in (out[y0, x0 : x1 + 1], out[y1, x0 : x1 + 1], out[y0 : y1 + 1, x0], out[y0 : y1 + 1, x1]):
        assert np.all(edge == fill)  # the label box's padding is whole on all four sides


def test_long_label_is_shortened_to_the_image_width():
    img = np.zeros((40, 60, 3), np.uint8)
    out = draw_overlay(
        img, boxes=[[10, 20, 50, 38]], labels=["an extremely long referring expression"], box_thickness=0
    )
    x0, _, x1, _ = _bbox(_changed(out, img))
    assert x0 >= 0 and x1 < 60
    assert np.all(out[:, x1][_changed(out, img)[:, x1]] == palette(1)[0])  # right padding column intact
    fitted = viz._fit_text("an extremely long referring expression", 50, 0.3, 1)
    assert fitted.endswith("...") and cv2.getTextSize(fitted, viz._FONT, 0.3, 1)[0][0] <= 50


def test_labels_of_overlapping_objects_do_not_overlap():
    img = np.zeros((200, 200, 3), np.uint8)
    boxes = [[60, 80, 140, 160]] * 3
    out = draw_overlay(img, boxes=boxes, labels=["first", "second", "third"], box_thickness=0)
    rects = []
    for c in palette(3):
        rects.append(_bbox(np.all(out == c, axis=-1)))
    for i in range(3):
        for j in range(i + 1, 3):
            a, b = rects[i], rects[j]
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)


def test_label_text_colour_is_readable_on_light_fills():
    img = np.full((100, 100, 3), 128, np.uint8)
    out = draw_overlay(img, boxes=[[20, 50, 80, 90]], labels=["sun"], colors=[(255, 225, 25)], box_thickness=0)
    x0, y0, x1, y1 = _bbox(_changed(out, img))
    assert out[y0 : y1 + 1, x0 : x1 + 1].max(axis=-1).min() < 60  # dark text on yellow


def test_non_ascii_labels_are_drawn_as_ascii():
    assert viz._ascii_text("café  au\nlait 猫") == "cafe au lait ?"
    img = np.zeros((60, 100, 3), np.uint8)
    assert draw_overlay(img, boxes=[[10, 30, 50, 50]], labels=["café 猫"]).shape == (60, 100, 3)


def test_grayscale_rgba_float_and_pil_inputs():
    from PIL import Image

    gray = _noise(30, 40)[..., 0]
    mask = _disk(30, 40, 10, 10, 5)
    out = draw_overlay(gray, [mask], contour_thickness=0)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert np.array_equal(out[~mask], np.repeat(gray[..., None], 3, axis=2)[~mask])

    rgb = _noise(30, 40, seed=1)
    rgba = np.concatenate([rgb, np.full((30, 40, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(draw_overlay(rgba, [mask]), draw_overlay(rgb, [mask]))
    assert np.array_equal(draw_overlay(gray[..., None], [mask]), draw_overlay(gray, [mask]))
    assert np.array_equal(draw_overlay(rgb.astype(np.float32) / 255, [mask]), draw_overlay(rgb, [mask]))
    assert np.array_equal(draw_overlay(Image.fromarray(rgb), [mask]), draw_overlay(rgb, [mask]))
    assert np.array_equal(draw_overlay(Image.fromarray(rgba, "RGBA"), [mask]), draw_overlay(rgb, [mask]))
    assert np.array_equal(draw_overlay(rgb.astype(np.int64), [mask]), draw_overlay(rgb, [mask]))
    with pytest.raises(ValueError, match="outside 0..255"):
        draw_overlay(rgb.astype(np.uint16) * 256, [mask])
    with pytest.raises(ValueError, match="H x W"):
        draw_overlay(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        draw_overlay(np.zeros((0, 5, 3), np.uint8))


def test_inputs_are_not_modified_and_read_only_inputs_work():
    img = _noise(50, 60)
    mask = _disk(50, 60, 30, 25, 10)
    box = np.array([10.0, 10.0, 40.0, 40.0])
    for a in (img, mask, box):
        a.setflags(write=False)
    before = (img.copy(), mask.copy(), box.copy())
    out = draw_overlay(img, [mask], [box], ["obj"])
    assert out.flags.writeable and not np.shares_memory(out, img)
    assert np.array_equal(img, before[0]) and np.array_equal(mask, before[1]) and np.array_equal(box, before[2])
    strided = _noise(50, 120)[:, ::2]  # non-contiguous input
    assert draw_overlay(strided, [mask], [box], ["obj"]).shape == (50, 60, 3)


def test_tiny_and_non_square_images():
    tiny = _noise(8, 8)
    out = draw_overlay(tiny, [_disk(8, 8, 4, 4, 2)], [[1, 1, 7, 7]], ["a long label on a tiny image"])
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert draw_points(tiny, [[4, 4]]).shape == (8, 8, 3)
    assert draw_overlay(np.zeros((1, 1), np.uint8), [np.ones((1, 1), bool)], [[0, 0, 1, 1]], ["x"]).shape == (1, 1, 3)

    wide = _noise(30, 90)
    mask = np.zeros((30, 90), bool)
    mask[5:25, 60:85] = True
    out = draw_overlay(wide, [mask], contour_thickness=0)
    assert np.array_equal(_changed(out, wide), mask)
    with pytest.raises(ValueError, match="object 0: mask is 90 x 30"):
        draw_overlay(wide, [mask.T])


def test_bad_masks_boxes_and_settings_raise_naming_the_object():
    img = _noise(20, 30)
    ok = np.zeros((20, 30), bool)
    with pytest.raises(ValueError, match=r"object 1: mask is 20 x 20 \(H x W\) but the image is 20 x 30"):
        draw_overlay(img, [ok, np.zeros((20, 20), bool)])
    with pytest.raises(ValueError, match="object 2: a mask must be H x W"):
        draw_overlay(img, [ok, None, np.zeros((2, 20, 30), bool)])
    with pytest.raises(ValueError, match="object 1: a box is 4 finite numbers"):
        draw_overlay(img, boxes=[[0, 0, 5, 5], [0, 0, 5]])
    with pytest.raises(ValueError, match="object 0: a box"):
        draw_overlay(img, boxes=[[0, 0, np.nan, 5]])
    with pytest.raises(ValueError, match="alpha"):
        draw_overlay(img, [ok], alpha=1.5)
    with pytest.raises(ValueError, match="thickness"):
        draw_overlay(img, [ok], box_thickness=-1)


def test_default_line_width_and_font_scale_grow_with_the_image():
    def stroke_width(side: int) -> int:
        img = np.zeros((side, side, 3), np.uint8)
        out = draw_overlay(img, boxes=[[side * 0.25, side * 0.25, side * 0.75, side * 0.75]])
        return int(np.all(out[side // 2] == palette(1)[0], axis=-1).sum() // 2)

    def label_height(side: int) -> int:
        img = np.zeros((side, side, 3), np.uint8)
        out = draw_overlay(
            img, boxes=[[side * 0.25, side * 0.5, side * 0.75, side * 0.75]], labels=["Hg"], box_thickness=0
        )
        _, y0, _, y1 = _bbox(_changed(out, img))
        return y1 - y0 + 1

    assert stroke_width(64) == 1 and stroke_width(512) == 2 and stroke_width(2000) == 8
    assert 10 <= label_height(64) <= 16  # readable on a thumbnail, still fits
    assert label_height(2000) > 3 * label_height(64)


# -------------------------------------------------------------------------------------------------- points


def test_points_positive_and_negative_markers():
    img = _noise(100, 100)
    pts = [[20.5, 20.5], [70, 70], [50, 10]]
    out = draw_points(img, pts, labels=[1, 0, -1], radius=10)
    changed = _changed(out, img)
    near = _disk(100, 100, 20, 20, 15) | _disk(100, 100, 70, 70, 15)
    assert changed.any() and not np.any(changed & ~near)  # the -1 (padding) point is not drawn
    assert np.any(np.all(out == viz._POSITIVE, axis=-1) & _disk(100, 100, 20, 20, 10))
    assert np.any(np.all(out == viz._NEGATIVE, axis=-1) & _disk(100, 100, 70, 70, 10))
    assert tuple(out[20 - 4, 20]) == (255, 255, 255)  # the "+" has a vertical bar
    assert tuple(out[70 - 4, 70]) == viz._NEGATIVE  # the "-" has none
    assert tuple(out[70, 70 - 4]) == (255, 255, 255)


def test_points_defaults_colours_and_errors():
    img = _noise(64, 64)
    assert np.array_equal(draw_points(img, [[10, 10]]), draw_points(img, [[10, 10]], labels=[1]))
    assert np.array_equal(draw_points(img, [10, 10]), draw_points(img, [[10, 10]]))
    assert np.array_equal(draw_points(img, np.zeros((0, 2))), img)
    out = draw_points(img, [[30, 30]], colors=[(0, 0, 255)], radius=10)
    assert tuple(out[33, 33]) == (0, 0, 255)
    assert draw_points(img, [[-5, 200]]).shape == (64, 64, 3)  # outside the image: nothing visible, no error
    with pytest.raises(ValueError, match="N x 2"):
        draw_points(img, [[1, 2, 3]])
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        draw_points(img, [[1, 2], [3, 4]], labels=[1])


# -------------------------------------------------------------------------------------------------- panels


def test_side_by_side_pads_to_one_height():
    a = _noise(30, 40)
    b = _noise(50, 20)[..., 0]
    out = side_by_side([a, b], gap=3)
    assert out.shape == (50, 63, 3)
    assert np.array_equal(out[:30, :40], a)
    assert np.all(out[30:, :40] == 255) and np.all(out[:, 40:43] == 255)
    assert np.array_equal(out[:, 43:], np.repeat(b[..., None], 3, axis=2))
    titled = side_by_side([a, b], ["an image", None], gap=3)
    strip = titled.shape[0] - 50
    assert strip > 0 and np.array_equal(titled[strip:], out)
    assert np.any(titled[:strip, :40] < 128) and np.all(titled[:strip, 43:] == 255)
    dark = side_by_side([a], ["t"], background=(0, 0, 0))
    assert dark[: dark.shape[0] - 30].max() > 128  # white title on a black background
    with pytest.raises(ValueError, match="2 images but 1 titles"):
        side_by_side([a, b], ["one"])
    with pytest.raises(ValueError, match="at least one"):
        side_by_side([])


# --------------------------------------------------------------------------------------------------- files


def test_save_image_round_trips_rgb(tmp_path):
    img = _noise(20, 30)
    img[0, 0] = (255, 0, 0)
    path = tmp_path / "nested" / "dir" / "x.png"
    save_image(path, img)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, img)
    smooth = np.zeros((32, 32, 3), np.uint8)
    smooth[..., 0] = 200
    save_image(tmp_path / "x.JPG", smooth)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "x.JPG")), cv2.COLOR_BGR2RGB)
    assert np.abs(back.astype(int) - smooth).max() <= 3
    save_image(tmp_path / "gray.png", img[..., 0])
    assert cv2.imread(str(tmp_path / "gray.png")).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="format"):
        save_image(tmp_path / "x.gif", img)


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi"])
def test_write_video_round_trips(tmp_path, name):
    def frames():
        for i in range(7):
            f = np.zeros((48, 64, 3), np.uint8)
            f[..., 0] = 200  # red
            f[:, : 8 * (i + 1), 2] = 200
            yield f

    path = tmp_path / "sub" / name
    assert write_video(path, frames(), fps=5) == 7
    back = _read_video(path)
    assert len(back) == 7 and back[0].shape == (48, 64, 3)
    assert back[0][..., 0].mean() > 150 and back[0][:, 32:, 2].mean() < 50  # RGB order kept


def test_write_video_pads_odd_sizes_and_accepts_grayscale(tmp_path):
    path = tmp_path / "odd.mp4"
    assert write_video(path, [np.full((47, 63), 100, np.uint8)] * 3) == 3
    back = _read_video(path)
    assert len(back) == 3 and back[0].shape == (48, 64, 3)


def test_write_video_rejects_a_frame_of_another_size(tmp_path):
    frames = [np.zeros((32, 32, 3), np.uint8)] * 2 + [np.zeros((32, 48, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"frame 2 is 32 x 48 \(H x W\) but frame 0 is 32 x 32"):
        write_video(tmp_path / "bad.mp4", frames)
    assert len(_read_video(tmp_path / "bad.mp4")) == 2  # the writer was closed: earlier frames are readable


def test_write_video_edge_cases(tmp_path):
    assert write_video(tmp_path / "none.mp4", []) == 0
    assert not (tmp_path / "none.mp4").exists()
    with pytest.raises(ValueError, match="mp4 or .avi"):
        write_video(tmp_path / "x.gif", [np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "x.mp4", [np.zeros((8, 8, 3), np.uint8)], fps=0)


def test_write_video_falls_back_to_mjpg_avi_when_mp4_cannot_open(tmp_path, monkeypatch):
    real = cv2.VideoWriter

    def no_mp4(path, fourcc, fps, size):
        if str(path).endswith(".mp4"):
            return real()  # never opened
        return real(path, fourcc, fps, size)

    monkeypatch.setattr(viz.cv2, "VideoWriter", no_mp4)
    with pytest.warns(RuntimeWarning, match="Motion-JPEG"):
        n = write_video(tmp_path / "v.mp4", [np.zeros((16, 16, 3), np.uint8)] * 4)
    assert n == 4 and not (tmp_path / "v.mp4").exists()
    assert len(_read_video(tmp_path / "v.avi")) == 4


# ---------------------------------------------------------------------------------------------------- HTML


def test_phrase_html_colours_each_phrase_like_its_mask():
    cols = palette(3)
    html_text = phrase_html("The cat sat on the <mat> & the cat's toy.", ["cat", None, "<mat>"])
    assert html_text.count("<span") == 2
    assert f"background-color:#{cols[0][0]:02x}{cols[0][1]:02x}{cols[0][2]:02x}" in html_text
    assert "#{:02x}{:02x}{:02x}".format(*cols[2]) in html_text
    assert "&lt;mat&gt;</span>" in html_text and "&amp;" in html_text and "<mat>" not in html_text
    assert html_text.startswith("The <span")


def test_phrase_html_matching_rules():
    # in order, after the previous phrase; whole words first; case-insensitive; repeated phrases distinct
    text = "Concatenate: a Dog chases a dog near the cat."
    out = phrase_html(text, ["a dog", "a dog", "cat", "unicorn", ""], colors=[(255, 255, 0)] * 5)
    assert out.count("<span") == 3
    assert ">a Dog</span>" in out and ">a dog</span>" in out
    assert out.startswith("Concatenate:")  # "cat" matched the whole word, not inside "Concatenate"
    assert "color:#000000" in out  # black text on yellow
    assert phrase_html("no phrases here", []) == "no phrases here"
    with pytest.raises(TypeError):
        phrase_html("a cat", "cat")


# ------------------------------------------------------------------------------------------ module boundary


def test_visualize_imports_none_of_the_model_packages():
    code = (
        "import sys, demo.visualize; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'grounding', 'heads', 'data', 'torch'}); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ------------------------------------------------------------------------------------------------- example


def test_example_overlay_on_astronaut():
    """Writes tests/_output/overlay_example.png to look at: two masks with labels, a box-only object, points."""
    from skimage import data as skdata

    img = skdata.astronaut()
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    face = ((xx - 222) / 78) ** 2 + ((yy - 118) / 98) ** 2 <= 1
    helmet = ((xx - 405) / 125) ** 2 + ((yy - 455) / 115) ** 2 <= 1
    out = draw_overlay(
        img,
        masks=[face, helmet, None],
        boxes=[None, None, [352, 0, 470, 280]],
        labels=["the astronaut's face", "the helmet on her lap", "a rocket model"],
    )
    out = draw_points(out, [[222, 118], [405, 455], [60, 300]], labels=[1, 1, 0])
    panel = side_by_side([img, out], ["input", "grounded answer"])
    OUTPUT.mkdir(parents=True, exist_ok=True)
    save_image(OUTPUT / "overlay_example.png", panel)
    back = cv2.imread(str(OUTPUT / "overlay_example.png"))
    assert back is not None and back.shape == panel.shape
    far = ~_dilate(face | helmet, 4)
    far[:40] = False  # labels
    far[:, 340:] = False  # the box and its label
    far[300:340, 270:] = False  # the helmet's label
    far[280:320, 40:80] = False  # the negative point
    assert np.array_equal(out[far], img[far])
