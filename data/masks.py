"""Mask codecs shared by the loaders and the exporter: COCO polygons and RLE through pycocotools.

Frames: masks are boolean ``H x W`` at the original image resolution; boxes are ``xyxy`` float, absolute pixels,
with the exclusive right/bottom edge of the mask's pixels (a single pixel at (x, y) has box (x, y, x+1, y+1)).
The helpers raise ``ValueError`` with a short reason; loaders wrap it in ``DatasetError`` naming file and record.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v)


def check_polygons(polygons: Any) -> list[list[float]]:
    """Validate COCO polygons (a list of flat ``[x1, y1, x2, y2, ...]`` lists) and return the proper ones.

    Parts with fewer than 3 points (a few COCO annotations have them) cover no area and are dropped, but at least
    one part must be a proper polygon: pycocotools would otherwise read a 4-number "polygon" as a box. Odd
    lengths and non-numbers raise ``ValueError``.
    """
    if not isinstance(polygons, (list, tuple)) or len(polygons) == 0:
        raise ValueError("empty polygon list")
    out = []
    for k, poly in enumerate(polygons):
        if not isinstance(poly, (list, tuple)) or not all(_is_number(v) for v in poly):
            raise ValueError(f"polygon {k} is not a flat list of numbers")
        if len(poly) % 2:
            raise ValueError(f"polygon {k} has an odd number of coordinates ({len(poly)})")
        if len(poly) >= 6:
            out.append([float(v) for v in poly])
    if not out:
        raise ValueError(f"no polygon has the 6 or more coordinates of 3 points (lengths {[len(p) for p in polygons]})")
    return out


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (absolute pixels, the union of all parts) to an ``H x W`` bool mask."""
    polys = check_polygons(polygons)
    rles = mask_utils.frPyObjects(polys, int(height), int(width))
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def decode_rle(rle: Mapping[str, Any], height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode one COCO RLE (compressed ``counts`` string/bytes, or uncompressed ``counts`` list) to bool ``H x W``.

    ``height``/``width``: the expected size; a different ``rle["size"]`` raises ``ValueError``.
    """
    if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
        raise ValueError("RLE must be a dict with 'size' and 'counts'")
    size = [int(v) for v in rle["size"]]
    if len(size) != 2:
        raise ValueError(f"RLE size must be [height, width], got {rle['size']}")
    if height is not None and width is not None and size != [int(height), int(width)]:
        raise ValueError(f"RLE size {size} does not match the image size [{height}, {width}]")
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(int(c) for c in counts) != size[0] * size[1]:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, not {size[0]} x {size[1]}")
        obj = mask_utils.frPyObjects({"size": size, "counts": [int(c) for c in counts]}, size[0], size[1])
    elif isinstance(counts, (str, bytes)):
        obj = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"RLE counts must be a string or a list, got {type(counts).__name__}")
    m = mask_utils.decode(obj)
    if m.shape != tuple(size):
        raise ValueError(f"RLE decodes to {m.shape}, expected {tuple(size)}")
    return m.astype(bool)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO ``segmentation`` field (polygon list or RLE dict) to a bool ``height x width`` mask."""
    if isinstance(segmentation, Mapping):
        return decode_rle(segmentation, height, width)
    return polygons_to_mask(segmentation, height, width)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a bool ``H x W`` mask as compressed COCO RLE, JSON-ready (``counts`` as a str)."""
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_area(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight ``xyxy`` float32 box of a bool mask (exclusive right/bottom); all zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def dominant_box(mask: np.ndarray, keep: float = 0.2) -> np.ndarray:
    """``xyxy`` float32 box of a predicted mask's main parts: its largest 8-connected part and every part at
    least ``keep`` times that size (an occluded object split in two keeps both halves; stray specks of a
    mask decoder's output, which would stretch a tight box across the image, are left out). All zeros for an
    empty mask."""
    import cv2

    n, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(4, np.float32)
    stats = stats[1:]
    areas = stats[:, cv2.CC_STAT_AREA]
    big = stats[areas >= keep * areas.max()]
    x1, y1 = big[:, cv2.CC_STAT_LEFT], big[:, cv2.CC_STAT_TOP]
    x2, y2 = x1 + big[:, cv2.CC_STAT_WIDTH], y1 + big[:, cv2.CC_STAT_HEIGHT]
    return np.array([x1.min(), y1.min(), x2.max(), y2.max()], np.float32)


def xywh_to_xyxy(box: Sequence[float]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` float32 (absolute pixels)."""
    if len(box) != 4 or not all(_is_number(v) for v in box):
        raise ValueError(f"bbox must be 4 numbers [x, y, w, h], got {box!r}")
    x, y, w, h = (float(v) for v in box)
    if w < 0 or h < 0:
        raise ValueError(f"bbox has a negative width or height: {box!r}")
    return np.array([x, y, x + w, y + h], np.float32)


def xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    """``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h]`` (plain floats, JSON-ready)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def union_box(boxes: np.ndarray) -> np.ndarray:
    """The ``xyxy`` box enclosing ``N x 4`` xyxy boxes (N >= 1)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.array([b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()], np.float32)


__all__ = [
    "check_polygons",
    "decode_rle",
    "decode_segmentation",
    "encode_rle",
    "mask_area",
    "mask_to_box",
    "polygons_to_mask",
    "union_box",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
]
