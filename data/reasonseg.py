"""ReasonSeg (LISA): reasoning segmentation with implicit queries.

On disk::

    <root>/{train,val,test}/<stem>.jpg
    <root>/{train,val,test}/<stem>.json   {"text": [question, ...], "is_sentence": bool,
                                          "shapes": [{"label": "target" | "ignore" | "flag",
                                                      "points": [[x, y], ...], ...}, ...]}   (labelme style)

Masks are painted exactly as LISA's ``get_mask_from_json`` does, so scores match the published evaluation:
polygons sorted by filled area, largest first, each drawn with ``cv2.fillPoly`` plus a 1-pixel outline at
int32-truncated vertices; a label containing "ignore" paints the ignore value, "flag" shapes are skipped, any
other label paints the target. Smaller polygons drawn later overwrite larger ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from data.errors import DatasetError, load_json, read_rgb, require_dir
from data.masks import mask_to_box
from data.sample import GroundingSample, Target, Task
from data.templates import reasoning_turn, referring_turn

REASONSEG_SPLITS = ("train", "val", "test")

_TARGET, _IGNORE = 1, 255


@dataclass
class ReasonSegItem:
    """One ReasonSeg image with its questions.

    ``image``: H x W x 3 uint8 RGB. ``mask``: H x W bool, the union of the target polygons. ``ignore``: H x W bool,
    pixels that evaluation leaves out. ``questions``: all texts of the image, or one in the per-question view.
    ``is_sentence``: the texts are full sentences (long queries) rather than short phrases.
    """

    image: np.ndarray
    questions: list[str]
    is_sentence: bool
    mask: np.ndarray
    ignore: np.ndarray
    file: str = ""
    source: str = ""

    @property
    def box(self) -> np.ndarray:
        """(4,) xyxy float32 box of the target mask (absolute pixels; zeros when empty)."""
        return mask_to_box(self.mask)


def paint_reasonseg_shapes(shapes: Any, height: int, width: int) -> np.ndarray:
    """LISA's label map: uint8 ``H x W`` with 0 background, 1 target, 255 ignore. Raises ``ValueError``."""
    if not isinstance(shapes, list):
        raise ValueError("'shapes' must be a list")
    polys: list[tuple[int, np.ndarray, int]] = []  # (area, points, value)
    for k, shape in enumerate(shapes):
        if not isinstance(shape, dict) or "label" not in shape or "points" not in shape:
            raise ValueError(f"shape {k} needs 'label' and 'points'")
        label = str(shape["label"]).lower()
        if label == "flag":  # deprecated, meaningless annotations (skipped by LISA too)
            continue
        try:
            pts = np.asarray(shape["points"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"shape {k} ({label!r}) has non-numeric points") from e
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3 or not np.isfinite(pts).all():
            raise ValueError(f"shape {k} ({label!r}) is not a polygon of >= 3 [x, y] points: shape {pts.shape}")
        pts = pts.astype(np.int32)
        tmp = np.zeros((height, width), np.uint8)
        cv2.polylines(tmp, [pts], True, 1, 1)
        cv2.fillPoly(tmp, [pts], 1)
        polys.append((int(tmp.sum()), pts, _IGNORE if "ignore" in label else _TARGET))
    label_map = np.zeros((height, width), np.uint8)
    order = np.argsort([a for a, _, _ in polys], kind="stable")[::-1]
    for i in order:
        _, pts, value = polys[int(i)]
        cv2.polylines(label_map, [pts], True, value, 1)
        cv2.fillPoly(label_map, [pts], value)
    return label_map


class ReasonSeg(Dataset):
    """ReasonSeg images of one split (``train``, ``val`` or ``test``), sorted by file name.

    ``per_question``: one item per (image, question); otherwise one per image with all its questions. Each image
    must have its same-stem ``.json`` (checked at construction); annotations are parsed on access.
    """

    def __init__(self, root: str | os.PathLike, split: str = "val", per_question: bool = False):
        if split not in REASONSEG_SPLITS:
            raise DatasetError(f"unknown ReasonSeg split {split!r}; expected one of {list(REASONSEG_SPLITS)}", root)
        self.root = Path(root)
        self.split = split
        self.per_question = per_question
        folder = require_dir(self.root / split, f"ReasonSeg {split} folder")
        self.images = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not self.images:
            raise DatasetError("no images found", folder)
        for p in self.images:
            if not p.with_suffix(".json").is_file():
                raise DatasetError("missing annotation file for image", p.with_suffix(".json"), p.name)
        self._index: list[tuple[int, int | None]] = [(i, None) for i in range(len(self.images))]
        if per_question:
            self._index = [(i, k) for i in range(len(self.images)) for k in range(len(self._load(i)[0]))]

    def _load(self, i: int) -> tuple[list[str], bool, Any, Path]:
        path = self.images[i].with_suffix(".json")
        anno = load_json(path, "ReasonSeg annotation")
        try:
            texts = anno["text"]
            texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
            is_sentence = bool(anno["is_sentence"])
            shapes = anno["shapes"]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"malformed annotation ({e!r})", path, self.images[i].name) from e
        if not texts:
            raise DatasetError("annotation has no text", path, self.images[i].name)
        return texts, is_sentence, shapes, path

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> ReasonSegItem:
        i, k = self._index[index]
        texts, is_sentence, shapes, path = self._load(i)
        image = read_rgb(self.images[i], self.images[i].name)
        h, w = image.shape[:2]
        try:
            label_map = paint_reasonseg_shapes(shapes, h, w)
        except ValueError as e:
            raise DatasetError(f"broken polygon: {e}", path, self.images[i].name) from e
        return ReasonSegItem(
            image=image,
            questions=texts if k is None else [texts[k]],
            is_sentence=is_sentence,
            mask=label_map == _TARGET,
            ignore=label_map == _IGNORE,
            file=str(self.images[i]),
            source=f"reasonseg {self.split} {self.images[i].stem}" + ("" if k is None else f" q{k}"),
        )

    def to_sample(self, item: ReasonSegItem, rng: np.random.Generator, max_turns: int | None = None) -> GroundingSample:
        """One turn per question (at most ``max_turns``, drawn with ``rng``): REASON turns for sentences, RES
        turns for short phrases, RES_NONE if the image has no target pixels. The ignore region travels as
        ``GroundingSample.ignore``: evaluation leaves those pixels out; training treats them as background, as
        LISA does."""
        questions = item.questions
        if max_turns is not None and len(questions) > max_turns:
            questions = [questions[int(j)] for j in np.sort(rng.choice(len(questions), max_turns, replace=False))]
        has_target = bool(item.mask.any())
        targets = [Target(box=item.box, mask=item.mask, label="target")] if has_target else []
        idx = [0] if has_target else []
        if item.is_sentence:
            turns = [reasoning_turn(q, idx, rng) for q in questions]
        else:
            turns = [referring_turn(q, idx, rng, task=Task.REASON if has_target else Task.RES_NONE) for q in questions]
        ignore = item.ignore if item.ignore is not None and item.ignore.any() else None
        return GroundingSample(image=item.image, turns=turns, targets=targets, source=item.source, ignore=ignore)


__all__ = ["REASONSEG_SPLITS", "ReasonSeg", "ReasonSegItem", "paint_reasonseg_shapes"]
