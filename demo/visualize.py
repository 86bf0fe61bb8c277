"""Drawing helpers for grounding results: mask overlays with contours, boxes and labels, prompt points,
side-by-side panels, image and video writers, and grounded phrases coloured like their masks (HTML).

Frames and conventions, shared by every function here:

- Images are ``H x W`` (grayscale), ``H x W x 3`` (RGB) or ``H x W x 4`` (RGBA: alpha is dropped), or a PIL
  image. ``uint8`` is read as is, ``bool`` as 0/255, floats as 0..1 (clipped), other integers must lie in
  0..255. Every function returns a new ``H x W x 3`` ``uint8`` RGB array; inputs are never modified.
- Boxes are ``xyxy`` floats in absolute pixels of that image, in continuous coordinates: pixel ``(x, y)``
  covers ``[x, x + 1) x [y, y + 1)``, so ``[0, 0, W, H]`` is the whole image. A box's stroke is drawn inside it.
- Masks are boolean ``H x W`` at the same size as the image (a leading or trailing axis of size 1 is
  squeezed; non-boolean masks are read as ``mask != 0``, so threshold probabilities yourself).
- Points are ``xy`` in absolute pixels of the image, same frame as boxes.
- Colours are RGB tuples of ints in 0..255; object ``i`` gets ``colors[i]`` (default ``palette(n)[i]``), so
  ``phrase_html`` and ``draw_overlay`` agree when given the same colours.

OpenCV's Hershey fonts only draw ASCII: accented letters lose their accents and other characters are drawn
as ``?`` in images (``phrase_html`` keeps the full text).

This module depends only on numpy and OpenCV (PIL is used only when handed a PIL image); it never imports
``grounding``, ``heads`` or ``data``, so the CLI, the server and the notebooks can all use it.
"""

from __future__ import annotations

import colorsys
import html
import math
import numbers
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike

Color = tuple[int, int, int]
ColorsLike = Sequence[Sequence[int]] | Sequence[int] | None

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE: Color = (255, 255, 255)
_BLACK: Color = (0, 0, 0)

# Vivid, mutually distinct colours (after Sasha Trubetskoy's list of 20 distinct colours), in an order
# where neighbours contrast; palette() extends them with golden-ratio hues.
_BASE_COLORS: tuple[Color, ...] = (
    (230, 25, 75),  # red
    (0, 130, 200),  # blue
    (60, 180, 75),  # green
    (255, 225, 25),  # yellow
    (145, 30, 180),  # purple
    (245, 130, 48),  # orange
    (70, 240, 240),  # cyan
    (240, 50, 230),  # magenta
    (210, 245, 60),  # lime
    (0, 128, 128),  # teal
)
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}

_POSITIVE: Color = (30, 160, 50)
_NEGATIVE: Color = (230, 30, 40)


# --------------------------------------------------------------------------------------------------- colours


def palette(n: int) -> list[Color]:
    """``n`` distinct, vivid RGB colours, the same on every call.

    The first ten come from a fixed table of well-separated colours; later ones step the hue by the golden
    ratio with alternating saturation and brightness, so any prefix is spread over the colour wheel.
    """
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    colors: list[Color] = list(_BASE_COLORS[:n])
    seen = set(colors)
    k = 0
    while len(colors) < n:
        hue = (0.05 + k * _GOLDEN) % 1.0
        sat = (0.90, 0.70, 0.80)[k % 3]
        val = (0.95, 0.80, 0.88)[(k // 3) % 3]
        k += 1
        rgb = tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val))
        if rgb not in seen:
            seen.add(rgb)
            colors.append(rgb)  # type: ignore[arg-type]
    return colors


def _relative_luminance(color: Sequence[int]) -> float:
    """WCAG relative luminance of an sRGB colour in 0..255."""

    def lin(c: float) -> float:
        c = c / 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(c)) for c in color[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _text_color(background: Sequence[int]) -> Color:
    """Black or white text for ``background``: black only on light colours (relative luminance above 0.3).

    The pure WCAG contrast ratio crosses over at 0.18 and so puts black on saturated reds and blues, where
    white reads better (as newer contrast models, e.g. APCA, agree); 0.3 keeps white on those and black on
    yellow, cyan, lime and light greys."""
    return _BLACK if _relative_luminance(background) > 0.3 else _WHITE


def _as_color(color: Sequence[int], what: str) -> Color:
    vals = np.asarray(color).reshape(-1)
    if vals.shape != (3,) or not np.all(np.isfinite(vals)) or np.any(vals < 0) or np.any(vals > 255):
        raise ValueError(f"{what}: a colour is 3 RGB values in 0..255, got {color!r}")
    return tuple(int(round(float(v))) for v in vals)  # type: ignore[return-value]


def _is_scalar_seq(x: object, length: int) -> bool:
    """True when ``x`` is one flat sequence of ``length`` numbers (one colour / one box, not a list of them)."""
    if isinstance(x, (str, bytes)):
        return False
    if isinstance(x, np.ndarray):
        return x.shape == (length,)
    try:
        items = list(x)  # type: ignore[call-overload]
    except TypeError:
        return False
    return len(items) == length and all(isinstance(v, (numbers.Number, np.number)) for v in items)


def _resolve_colors(colors: ColorsLike, n: int) -> list[Color]:
    """One colour per object: ``palette(n)``, one colour for all, or a list with at least ``n`` colours."""
    if colors is None:
        return palette(n)
    if _is_scalar_seq(colors, 3):
        return [_as_color(colors, "colors")] * n  # type: ignore[arg-type]
    resolved = [_as_color(c, f"colors[{i}]") for i, c in enumerate(colors)]  # type: ignore[union-attr]
    if len(resolved) < n:
        raise ValueError(f"{n} objects but only {len(resolved)} colours given")
    return resolved


# ---------------------------------------------------------------------------------------------- conversions


def _as_rgb(image: object, what: str = "image") -> np.ndarray:
    """A new contiguous ``H x W x 3`` uint8 RGB copy of ``image`` (see the module docstring for inputs)."""
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        image = image.convert("RGB")  # type: ignore[union-attr]
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = arr[:, :, :3]
    else:
        raise ValueError(f"{what} must be H x W, H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        return np.array(arr, dtype=np.uint8, order="C", copy=True)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        return np.ascontiguousarray(np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{what} has integer values outside 0..255 (dtype {arr.dtype}); convert it to uint8 first")
        return np.ascontiguousarray(arr.astype(np.uint8))
    raise TypeError(f"{what} has unsupported dtype {arr.dtype}")


def _as_mask(mask: ArrayLike, index: int, hw: tuple[int, int]) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    elif m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise ValueError(f"object {index}: a mask must be H x W, got shape {m.shape}")
    if m.shape != hw:
        raise ValueError(
            f"object {index}: mask is {m.shape[0]} x {m.shape[1]} (H x W) but the image is {hw[0]} x {hw[1]}; "
            "masks must be at the image's resolution"
        )
    return m if m.dtype == np.bool_ else m != 0


def _as_box(box: ArrayLike, index: int) -> tuple[float, float, float, float]:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"object {index}: a box is 4 finite numbers x1, y1, x2, y2 (xyxy pixels); got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in b)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _round(v: float) -> int:
    return int(math.floor(v + 0.5))


def _box_pixels(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """Inclusive pixel bounds ``(x0, y0, x1, y1)`` of a continuous xyxy box (at least one pixel)."""
    x0, y0 = _round(box[0]), _round(box[1])
    x1, y1 = max(x0, _round(box[2]) - 1), max(y0, _round(box[3]) - 1)
    return x0, y0, x1, y1


def _mask_pixels(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _as_sequence(items: object, name: str, single_ndim: int, single_len: int | None = None) -> list:
    """``items`` as a list of per-object entries; a single mask (2-D array) or box (4 numbers) is one object."""
    if items is None:
        return []
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{name} is a sequence with one entry per object; got a single string {items!r}")
    if isinstance(items, np.ndarray) and items.ndim == single_ndim:
        return [items]
    if single_len is not None and _is_scalar_seq(items, single_len):
        return [items]
    return list(items)  # type: ignore[call-overload]


# ------------------------------------------------------------------------------------------------- drawing


def _default_sizes(h: int, w: int) -> tuple[int, float]:
    """(line thickness, font scale) proportional to the image's short side: 1 px / 0.3 at 64 px,
    2 px / 0.6 at 512 px, 8 px / 1.7 at 2000 px."""
    side = min(h, w)
    return max(1, _round(side / 256)), 0.25 + side / 1400


def _text_thickness(font_scale: float) -> int:
    return max(1, _round(font_scale * 1.6))


def _ascii_text(text: str) -> str:
    """What Hershey fonts can draw: whitespace collapsed, accents stripped, other non-ASCII as ``?``."""
    out = []
    for ch in " ".join(str(text).split()):
        if ch.isascii():
            out.append(ch)
        elif not unicodedata.combining(ch):
            ascii_part = "".join(c for c in unicodedata.normalize("NFKD", ch) if c.isascii())
            out.append(ascii_part or "?")
    return "".join(out)


def _fit_text(text: str, max_width: int, font_scale: float, thickness: int) -> str:
    """``text`` shortened with ``...`` so that it is at most ``max_width`` pixels wide (if it can be)."""

    def width(s: str) -> int:
        return cv2.getTextSize(s, _FONT, font_scale, thickness)[0][0]

    if width(text) <= max_width:
        return text
    lo, hi = 0, len(text)  # longest prefix that fits with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if width(text[:mid].rstrip() + "...") <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "..." if lo > 0 else text[:1]


def _fill_rect(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
    """Fill inclusive pixel rectangle ``[x0, x1] x [y0, y1]``, clipped to the image."""
    h, w = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if xa <= xb and ya <= yb:
        img[ya : yb + 1, xa : xb + 1] = color


def _draw_box(img: np.ndarray, bounds: tuple[int, int, int, int], color: Color, thickness: int) -> None:
    """A rectangle stroke of ``thickness`` pixels lying inside the inclusive pixel ``bounds``."""
    x0, y0, x1, y1 = bounds
    t = thickness
    _fill_rect(img, x0, y0, x1, min(y0 + t - 1, y1), color)  # top
    _fill_rect(img, x0, max(y1 - t + 1, y0), x1, y1, color)  # bottom
    _fill_rect(img, x0, y0, min(x0 + t - 1, x1), y1, color)  # left
    _fill_rect(img, max(x1 - t + 1, x0), y0, x1, y1, color)  # right


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """Overlap area of two ``(x, y, w, h)`` rectangles."""
    dx = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    dy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(dx, 0) * max(dy, 0)


def _place_label(
    anchor: tuple[int, int, int, int] | None,
    size: tuple[int, int],
    image_hw: tuple[int, int],
    placed: list[tuple[int, int, int, int]],
) -> tuple[int, int, int, int]:
    """Top-left ``(x, y, w, h)`` of a label box: above the object's box, else inside its top, below it, or
    inside its bottom (the first that overlaps no label already placed, else the least overlapping), always
    moved inside the image. Labels without geometry stack down the image's left edge."""
    lw, lh = size
    h, w = image_hw
    if anchor is None:
        tops = [(0, y) for y in range(0, max(h - lh, 0) + 1, max(lh, 1))]
    else:
        x0, y0, x1, y1 = anchor
        tops = [(x0, y0 - lh), (x0, y0), (x0, y1 + 1), (x0, y1 - lh + 1)]
    candidates = [(min(max(x, 0), max(w - lw, 0)), min(max(y, 0), max(h - lh, 0)), lw, lh) for x, y in tops]
    costs = [sum(_overlap(c, p) for p in placed) for c in candidates]
    return candidates[int(np.argmin(costs))]


def _label_metrics(text: str, font_scale: float, thickness: int) -> tuple[int, int, int, int]:
    """(label box width, label box height, padding, text height above the baseline)."""
    (tw, th), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
    pad = max(1, _round(0.3 * th))
    return tw + 2 * pad, th + baseline + 2 * pad, pad, th


def _draw_label(
    img: np.ndarray,
    text: str,
    anchor: tuple[int, int, int, int] | None,
    color: Color,
    font_scale: float,
    placed: list[tuple[int, int, int, int]],
) -> None:
    h, w = img.shape[:2]
    thickness = _text_thickness(font_scale)
    pad = _label_metrics(text, font_scale, thickness)[2]
    text = _fit_text(text, w - 2 * pad, font_scale, thickness)
    lw, lh, pad, th = _label_metrics(text, font_scale, thickness)
    x, y, lw, lh = _place_label(anchor, (lw, lh), (h, w), placed)
    placed.append((x, y, lw, lh))
    _fill_rect(img, x, y, x + lw - 1, y + lh - 1, color)
    cv2.putText(img, text, (x + pad, y + pad + th), _FONT, font_scale, _text_color(color), thickness, cv2.LINE_AA)


def draw_overlay(
    image: ArrayLike,
    masks: Sequence[ArrayLike | None] | None = (),
    boxes: Sequence[ArrayLike | None] | None = (),
    labels: Sequence[str | None] | None = (),
    colors: ColorsLike = None,
    alpha: float = 0.45,
    contour_thickness: int | None = None,
    box_thickness: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Draw grounded objects on a copy of ``image``; returns a new ``H x W x 3`` uint8 RGB image.

    Object ``i`` is ``(masks[i], boxes[i], labels[i])`` in colour ``colors[i]``; any of the three sequences may
    be shorter than the others or hold ``None``, and that part of the object is then not drawn. Each mask
    (bool ``H x W``, the image's size) is blended with its colour at ``alpha`` and outlined (outer and hole
    contours); each box (xyxy, absolute pixels of ``image``) is drawn as a stroke inside it; each label sits in
    a filled box of the object's colour above its box (or the mask's bounding box), with black or white text,
    whichever contrasts more, shortened with ``...`` and moved so that it stays inside the image. Labels
    without a box or mask stack down the left edge. All masks are blended first, then contours, boxes and
    labels are drawn on top, in object order.

    Args:
        image: ``H x W``, ``H x W x 3`` RGB or ``H x W x 4`` RGBA (alpha dropped), uint8 or floats in 0..1.
        masks: per-object bool ``H x W`` masks (a single 2-D array is one object; ``N x H x W`` works).
        boxes: per-object xyxy boxes in absolute pixels (an ``N x 4`` array works).
        labels: per-object label strings.
        colors: ``None`` for ``palette(n)``, one RGB colour for all objects, or one per object.
        alpha: mask opacity in 0..1.
        contour_thickness, box_thickness: pixels; ``None`` scales with the image (1 px at 64 px, 2 px at
            512 px, 8 px at 2000 px); ``0`` draws no contours / boxes (a box still places its label).
        font_scale: OpenCV font scale; ``None`` scales with the image (0.3 at 64 px, 1.7 at 2000 px).

    Raises:
        ValueError: a mask whose size is not the image's, or a malformed box, naming the object's index;
            too few colours; ``alpha`` outside 0..1; negative thicknesses.
    """
    out = _as_rgb(image)
    h, w = out.shape[:2]
    mask_list = _as_sequence(masks, "masks", single_ndim=2)
    box_list = _as_sequence(boxes, "boxes", single_ndim=1, single_len=4)
    label_list = _as_sequence(labels, "labels", single_ndim=0)
    n = max(len(mask_list), len(box_list), len(label_list))
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    line, default_font = _default_sizes(h, w)
    contour_t = line if contour_thickness is None else int(contour_thickness)
    box_t = line if box_thickness is None else int(box_thickness)
    font = default_font if font_scale is None else float(font_scale)
    if contour_t < 0 or box_t < 0 or font <= 0:
        raise ValueError("thicknesses must be >= 0 and font_scale > 0")
    if n == 0:
        return out
    cols = _resolve_colors(colors, n)

    def entry(seq: list, i: int):
        return seq[i] if i < len(seq) else None

    objects_masks = [None if entry(mask_list, i) is None else _as_mask(mask_list[i], i, (h, w)) for i in range(n)]
    objects_boxes = [None if entry(box_list, i) is None else _as_box(box_list[i], i) for i in range(n)]

    for m, color in zip(objects_masks, cols):
        if m is not None and alpha > 0 and m.any():
            blended = out[m].astype(np.float32) * (1.0 - alpha) + np.float32(alpha) * np.float32(color)
            out[m] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if contour_t > 0:
        for m, color in zip(objects_masks, cols):
            if m is not None and m.any():
                contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(out, contours, -1, color, contour_t, cv2.LINE_8)
    if box_t > 0:
        for b, color in zip(objects_boxes, cols):
            if b is not None:
                _draw_box(out, _box_pixels(b), color, box_t)
    placed: list[tuple[int, int, int, int]] = []
    for i in range(n):
        label = entry(label_list, i)
        if label is None or not _ascii_text(label):
            continue
        if objects_boxes[i] is not None:
            anchor = _box_pixels(objects_boxes[i])  # type: ignore[arg-type]
        elif objects_masks[i] is not None:
            anchor = _mask_pixels(objects_masks[i])  # type: ignore[arg-type]
        else:
            anchor = None
        _draw_label(out, _ascii_text(label), anchor, cols[i], font, placed)
    return out


def draw_points(
    image: ArrayLike,
    points: ArrayLike,
    labels: ArrayLike | None = None,
    colors: ColorsLike = None,
    radius: int | None = None,
) -> np.ndarray:
    """Draw prompt points (e.g. clicks for SAM) on a copy of ``image``; returns a new ``H x W x 3`` uint8 RGB image.

    Args:
        image: as in ``draw_overlay``.
        points: ``N x 2`` ``xy`` in absolute pixels of ``image``; each marker is centred on the pixel holding it.
        labels: SAM's point labels, one per point: ``> 0`` (1) positive / foreground, drawn as a green disc with
            a white ``+``; ``0`` negative / background, a red disc with a white ``-``; ``< 0`` (SAM's padding
            value -1) not drawn. ``None`` makes every point positive.
        colors: ``None`` for green / red by label, one RGB colour for all points, or one per point (e.g. the
            colour of the object each click belongs to); the ``+`` / ``-`` still tells the label apart.
        radius: disc radius in pixels; ``None`` scales with the image (3 px at 64 px, 11 px at 512 px).
    """
    out = _as_rgb(image)
    h, w = out.shape[:2]
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return out
    pts = pts.reshape(-1, 2) if pts.ndim == 1 and pts.size == 2 else pts
    if pts.ndim != 2 or pts.shape[1] != 2 or not np.all(np.isfinite(pts)):
        raise ValueError(f"points must be N x 2 finite xy pixels; got shape {pts.shape}")
    n = pts.shape[0]
    lab = np.ones(n, dtype=np.int64) if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
    if lab.shape != (n,):
        raise ValueError(f"{n} points but {lab.shape[0]} labels")
    if colors is None:
        cols = [_POSITIVE if v > 0 else _NEGATIVE for v in lab]
    else:
        cols = _resolve_colors(colors, n)
    r = max(3, _round(min(h, w) / 45)) if radius is None else int(radius)
    if r < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    ring = max(1, _round(r / 4))
    stroke = max(1, _round(r / 4))
    arm = _round(r * 0.55)
    for (x, y), v, color in zip(pts, lab, cols):
        if v < 0:
            continue
        cx, cy = int(math.floor(x)), int(math.floor(y))
        cv2.circle(out, (cx, cy), r + ring, _WHITE, -1, cv2.LINE_AA)
        cv2.circle(out, (cx, cy), r, color, -1, cv2.LINE_AA)
        if r >= 4:  # a crisp "+" or "-" so that the label does not rest on colour alone
            glyph = _text_color(color)
            lo, hi = stroke // 2, (stroke - 1) // 2
            _fill_rect(out, cx - arm, cy - lo, cx + arm, cy + hi, glyph)
            if v > 0:
                _fill_rect(out, cx - lo, cy - arm, cx + hi, cy + arm, glyph)
    return out


def side_by_side(
    images: Sequence[ArrayLike],
    titles: Sequence[str | None] | None = None,
    gap: int | None = None,
    background: Sequence[int] = _WHITE,
) -> np.ndarray:
    """Images in one row, for notebooks and reports; returns a new uint8 RGB image.

    Shorter images are padded at the bottom with ``background`` to the tallest height (no resizing), and
    ``gap`` pixels of ``background`` separate them (``None``: about 1% of the height, at least 2). With
    ``titles`` (one per image, ``None`` or ``""`` for none), a strip above the row holds each title, left-aligned
    over its image and shortened with ``...`` to its width.
    """
    panels = [_as_rgb(im, f"images[{i}]") for i, im in enumerate(images)]
    if not panels:
        raise ValueError("side_by_side needs at least one image")
    if isinstance(titles, (str, bytes)):
        raise TypeError("titles is a sequence with one title per image; got a single string")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"{len(panels)} images but {len(titles)} titles")
    bg = _as_color(background, "background")
    height = max(p.shape[0] for p in panels)
    g = max(2, _round(height / 100)) if gap is None else int(gap)
    if g < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    width = sum(p.shape[1] for p in panels) + g * (len(panels) - 1)

    texts = [_ascii_text(t) if t else "" for t in (titles or [""] * len(panels))]
    strip = 0
    if any(texts):
        font = _default_sizes(height, height)[1]
        thickness = _text_thickness(font)
        _, lh, pad, th = _label_metrics("Ag", font, thickness)
        strip = lh
    out = np.empty((strip + height, width, 3), np.uint8)
    out[:] = bg
    x = 0
    for panel, text in zip(panels, texts):
        ph, pw = panel.shape[:2]
        out[strip : strip + ph, x : x + pw] = panel
        if text:
            text = _fit_text(text, pw - 2 * pad, font, thickness)
            cv2.putText(out, text, (x + pad, pad + th), _FONT, font, _text_color(bg), thickness, cv2.LINE_AA)
        x += pw + g
    return out


# ---------------------------------------------------------------------------------------------------- files


def save_image(path: str | PathLike, image_rgb: ArrayLike, jpeg_quality: int = 95) -> None:
    """Write an RGB image (any input ``draw_overlay`` accepts) to ``path``; the format follows the extension
    (``.png``, ``.jpg``/``.jpeg``, ``.bmp``, ``.webp``, ``.tif``/``.tiff``). Parent folders are created.

    This is the one place that converts RGB to OpenCV's BGR for writing.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _IMAGE_EXTS:
        raise ValueError(f"cannot tell the image format of {str(path)!r}; use one of {', '.join(_IMAGE_EXTS)}")
    bgr = cv2.cvtColor(_as_rgb(image_rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"OpenCV could not encode an image as {ext} for {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def _open_video(path: Path, fps: float, size_wh: tuple[int, int]) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*_VIDEO_CODECS[suffix]), fps, size_wh)
    if writer.isOpened():
        return writer
    writer.release()
    if suffix == ".mp4":
        fallback = path.with_suffix(".avi")
        warnings.warn(
            f"OpenCV could not open an mp4 ('mp4v') writer for {str(path)!r} (this OpenCV build may lack an "
            f"mp4 encoder); writing Motion-JPEG to {str(fallback)!r} instead",
            RuntimeWarning,
            stacklevel=3,
        )
        writer = cv2.VideoWriter(str(fallback), cv2.VideoWriter_fourcc(*"MJPG"), fps, size_wh)
        if writer.isOpened():
            return writer
        writer.release()
    raise OSError(f"OpenCV could not open a video writer for {str(path)!r}")


def write_video(path: str | PathLike, frames: Iterable[ArrayLike], fps: float = 10.0) -> int:
    """Write RGB frames (any input ``draw_overlay`` accepts, all of one size) to a video; returns the number
    of frames written.

    ``.mp4`` is written with the ``mp4v`` codec; where this OpenCV build cannot open an mp4 writer, a
    ``RuntimeWarning`` says so and the video goes to the same path with ``.avi`` (Motion-JPEG) instead.
    ``.avi`` is written as Motion-JPEG. Both codecs need even sizes: a frame with an odd width or height is
    padded by one replicated pixel column / row. ``frames`` is consumed lazily (a generator works); with no
    frames nothing is written and 0 is returned. Parent folders are created.

    Raises:
        ValueError: a frame whose size differs from the first frame's (naming both; the frames before it
            are already in the file), a bad ``fps`` or an unsupported extension.
        OSError: no video writer could be opened.
    """
    path = Path(path)
    if path.suffix.lower() not in _VIDEO_CODECS:
        raise ValueError(f"write_video writes {' or '.join(_VIDEO_CODECS)}; got {str(path)!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    writer = None
    first_hw: tuple[int, int] | None = None
    count = 0
    try:
        for i, frame in enumerate(frames):
            rgb = _as_rgb(frame, f"frame {i}")
            hw = (rgb.shape[0], rgb.shape[1])
            if first_hw is None:
                first_hw = hw
                writer = _open_video(path, float(fps), (hw[1] + hw[1] % 2, hw[0] + hw[0] % 2))
            elif hw != first_hw:
                raise ValueError(
                    f"frame {i} is {hw[0]} x {hw[1]} (H x W) but frame 0 is {first_hw[0]} x {first_hw[1]}; "
                    "all frames of a video must have one size"
                )
            if hw[0] % 2 or hw[1] % 2:
                rgb = np.pad(rgb, ((0, hw[0] % 2), (0, hw[1] % 2), (0, 0)), mode="edge")
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # type: ignore[union-attr]
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count


# ----------------------------------------------------------------------------------------------------- HTML


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _find_phrase(text: str, phrase: str, start: int, taken: list[tuple[int, int]]) -> tuple[int, int] | None:
    """First occurrence of ``phrase`` (case-insensitive, whole words preferred) overlapping no taken span,
    searching from ``start`` first and then from the beginning."""
    escaped = re.escape(phrase)
    whole = ("(?<!\\w)" if phrase[0].isalnum() else "") + escaped + ("(?!\\w)" if phrase[-1].isalnum() else "")
    for pattern in (whole, escaped):
        for origin in (start, 0):
            for m in re.finditer(pattern, text[origin:], flags=re.IGNORECASE):
                s, e = m.start() + origin, m.end() + origin
                if all(e <= a or s >= b for a, b in taken):
                    return s, e
    return None


def phrase_html(text: str, phrases: Sequence[str | None], colors: ColorsLike = None) -> str:
    """``text`` as HTML (escaped) with each grounded phrase highlighted in its object's colour.

    Phrase ``i`` gets ``colors[i]`` (default ``palette(len(phrases))[i]``, as in ``draw_overlay``), with black
    or white text for contrast. Phrases are matched case-insensitively, preferring whole words, in order:
    each is searched after the previous match first (grounded captions name objects in order), then from the
    start; matches never overlap. ``None``, empty and unmatched phrases are skipped. Show it in a notebook
    with ``IPython.display.HTML`` or in Gradio with ``gr.HTML``.
    """
    if isinstance(phrases, (str, bytes)):
        raise TypeError("phrases is a sequence with one phrase per object; got a single string")
    cols = _resolve_colors(colors, len(phrases))
    spans: list[tuple[int, int, int]] = []
    cursor = 0
    for i, phrase in enumerate(phrases):
        if not phrase or not phrase.strip():
            continue
        found = _find_phrase(text, phrase.strip(), cursor, [(s, e) for s, e, _ in spans])
        if found is not None:
            spans.append((found[0], found[1], i))
            cursor = found[1]
    parts = []
    pos = 0
    for s, e, i in sorted(spans):
        parts.append(html.escape(text[pos:s]))
        style = (
            f"background-color:{_hex(cols[i])};color:{_hex(_text_color(cols[i]))};"
            "padding:0 0.2em;border-radius:0.25em"
        )
        parts.append(f'<span style="{style}">{html.escape(text[s:e])}</span>')
        pos = e
    parts.append(html.escape(text[pos:]))
    return "".join(parts)
