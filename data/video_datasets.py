"""Referring video object segmentation: Ref-YouTube-VOS and MeViS, as ``VideoSample``s with lazily read frames.

Ref-YouTube-VOS (``RefYouTubeVOS``)::

    <root>/meta_expressions/<split>/meta_expressions.json   (the official release; or <root>/<split>/meta_expressions.json)
        {"videos": {<vid>: {"expressions": {<exp_id>: {"exp": str, "obj_id": "1"}, ...},
                            "frames": ["00000", "00005", ...]}}}
    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/Annotations/<vid>/<frame>.png             palette PNG: pixel value = object id, 0 = background

MeViS (``MeViS``)::

    <root>/<split>/meta_expressions.json
        {"videos": {<vid>: {"expressions": {<exp_id>: {"exp": str, "obj_id": [int, ...], "anno_id": [int, ...]}},
                            "frames": [...]}}}
    <root>/<split>/mask_dict.json   {<anno_id>: [<COCO RLE> or null, one per frame of the sorted frame list]}
    <root>/<split>/JPEGImages/<vid>/<frame>.jpg

``obj_id`` and ``anno_id`` lists are parallel: ``anno_id[k]`` holds the masks of object ``obj_id[k]``.
Splits without masks (Ref-YouTube-VOS ``valid``/``test``, MeViS ``valid``) load with ``require_masks=False``:
the samples then have no targets and expressions with empty ``obj_ids``.

Frames are listed in sorted order. An item is one video: its frames (read from disk on access), the referred
objects' ``T x H x W`` masks and all its expressions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from data.errors import DatasetError, load_json, read_rgb, require_dir, require_file
from data.masks import decode_rle
from data.sample import VideoExpression, VideoSample, VideoTarget


class LazyFrames(Sequence):
    """A read-only sequence of video frames that reads each ``H x W x 3`` uint8 RGB frame from disk on access.

    ``size``: the (height, width) every frame must have (``DatasetError`` otherwise). Slicing gives another
    ``LazyFrames``; ``np.stack(list(frames))`` materialises them.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], size: tuple[int, int] | None = None, record: str = ""):
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.record = record

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> "LazyFrames": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyFrames(self.paths[index], self.size, self.record)
        p = self.paths[index]
        return read_rgb(p, f"{self.record} frame {p.stem}".strip(), self.size)

    def __repr__(self) -> str:
        return f"LazyFrames({len(self)} frames, size={self.size}, record={self.record!r})"


def _image_size(path: Path, record: str) -> tuple[int, int]:
    """(height, width) from the image header, without decoding the pixels."""
    require_file(path, "frame image", record)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except OSError as e:
        raise DatasetError(f"cannot read image header: {e}", path, record) from e
    return h, w


def _videos(meta: Any, file: Path) -> dict[str, dict]:
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise DatasetError("expected {'videos': {video_id: {...}}}", file)
    for vid, v in meta["videos"].items():
        if not isinstance(v, dict) or not isinstance(v.get("frames"), list) or not isinstance(v.get("expressions"), dict):
            raise DatasetError("video needs 'frames' (list) and 'expressions' (dict)", file, f"video {vid}")
        if not v["frames"]:
            raise DatasetError("video has no frames", file, f"video {vid}")
        for exp_id, e in v["expressions"].items():
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise DatasetError("expression needs an 'exp' string", file, f"video {vid} expression {exp_id}")
    return meta["videos"]


class _VideoDataset(Dataset):
    """Shared: the video list, frame folders, lazy frames."""

    def __init__(self, root: str | os.PathLike, split: str, meta_file: Path):
        self.root = Path(root)
        self.split = split
        self.meta_file = meta_file
        self.videos = _videos(load_json(meta_file, "meta_expressions file"), meta_file)
        self.video_ids = sorted(self.videos)
        self.frame_root = require_dir(self.root / split / "JPEGImages", f"{split} JPEGImages folder")
        for vid in self.video_ids:
            if not (self.frame_root / vid).is_dir():
                raise DatasetError("missing frame folder of a video", self.frame_root / vid, f"video {vid}")

    def __len__(self) -> int:
        return len(self.video_ids)

    def _frames(self, vid: str) -> tuple[list[str], LazyFrames]:
        names = sorted(str(f) for f in self.videos[vid]["frames"])
        paths = [self.frame_root / vid / f"{n}.jpg" for n in names]
        record = f"video {vid}"
        for p in paths:
            require_file(p, "frame image", record)
        return names, LazyFrames(paths, _image_size(paths[0], record), record)

    def _source(self, vid: str) -> str:
        return f"{type(self).__name__} {self.split} {vid}"


class RefYouTubeVOS(_VideoDataset):
    """Ref-YouTube-VOS videos of one split (``train``, ``valid`` or ``test``).

    ``require_masks``: fail if the split has no ``Annotations`` folder; default ``True`` for ``train`` only.
    Targets are the objects that some expression refers to (``obj_id`` = palette value).
    """

    SPLITS = ("train", "valid", "test")

    def __init__(self, root: str | os.PathLike, split: str = "train", require_masks: bool | None = None):
        if split not in self.SPLITS:
            raise DatasetError(f"unknown Ref-YouTube-VOS split {split!r}; expected one of {list(self.SPLITS)}", root)
        root = Path(root)
        official = root / "meta_expressions" / split / "meta_expressions.json"
        meta_file = official if official.is_file() else root / split / "meta_expressions.json"
        if not meta_file.is_file():
            raise DatasetError(f"missing meta_expressions.json (also looked for {official})", meta_file)
        super().__init__(root, split, meta_file)
        self.anno_root = root / split / "Annotations"
        self.has_masks = self.anno_root.is_dir()
        if require_masks is None:
            require_masks = split == "train"
        if require_masks and not self.has_masks:
            raise DatasetError(f"missing Annotations folder of split {split!r}", self.anno_root)
        for vid in self.video_ids:
            for exp_id, e in self.videos[vid]["expressions"].items():
                if self.has_masks and "obj_id" not in e:
                    raise DatasetError("expression needs an 'obj_id'", meta_file, f"video {vid} expression {exp_id}")

    def __getitem__(self, index: int) -> VideoSample:
        vid = self.video_ids[index]
        names, frames = self._frames(vid)
        exps = self.videos[vid]["expressions"]
        record = f"video {vid}"
        try:
            obj_of = {k: int(e["obj_id"]) for k, e in exps.items()} if self.has_masks else {}
        except (TypeError, ValueError) as err:
            raise DatasetError(f"obj_id is not an integer: {err}", self.meta_file, record) from err
        targets = []
        if self.has_masks:
            obj_ids = sorted(set(obj_of.values()))
            palettes = np.stack([self._palette(vid, n, frames.size) for n in names])  # T x H x W
            targets = [VideoTarget(obj_id=o, masks=palettes == o) for o in obj_ids]
        expressions = [
            VideoExpression(str(e["exp"]).strip(), (obj_of[k],) if k in obj_of else (), exp_id=str(k))
            for k, e in sorted(exps.items(), key=lambda kv: _natural(kv[0]))
        ]
        return VideoSample(frames=frames, targets=targets, expressions=expressions, source=self._source(vid))

    def _palette(self, vid: str, frame: str, size: tuple[int, int]) -> np.ndarray:
        path = require_file(self.anno_root / vid / f"{frame}.png", "annotation PNG", f"video {vid} frame {frame}")
        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L"):
                    raise DatasetError(f"annotation must be a palette (P) or L PNG, got mode {im.mode}", path, f"video {vid}")
                arr = np.asarray(im)
        except OSError as e:
            raise DatasetError(f"cannot decode annotation: {e}", path, f"video {vid}") from e
        if arr.shape != tuple(size):
            raise DatasetError(f"mask is {arr.shape} but the frames are {tuple(size)}", path, f"video {vid} frame {frame}")
        return arr


class MeViS(_VideoDataset):
    """MeViS videos of one split (``train``, ``valid_u`` or ``valid``); expressions may refer to several objects.

    ``require_masks``: fail without ``mask_dict.json``; default ``True`` except for ``valid`` (no public masks).
    ``mask_dict.json`` is read on first access (it is large) and kept.
    """

    SPLITS = ("train", "valid_u", "valid")

    def __init__(self, root: str | os.PathLike, split: str = "train", require_masks: bool | None = None):
        if split not in self.SPLITS:
            raise DatasetError(f"unknown MeViS split {split!r}; expected one of {list(self.SPLITS)}", root)
        root = Path(root)
        super().__init__(root, split, require_file(root / split / "meta_expressions.json", "meta_expressions.json"))
        self.mask_file = root / split / "mask_dict.json"
        self.has_masks = self.mask_file.is_file()
        if require_masks is None:
            require_masks = split != "valid"
        if require_masks and not self.has_masks:
            raise DatasetError("missing mask_dict.json", self.mask_file)
        self._mask_dict: dict[str, list] | None = None
        self._objects: dict[str, dict[int, str]] = {}  # video -> obj_id -> anno_id
        for vid in self.video_ids:
            self._objects[vid] = self._check_expressions(vid) if self.has_masks else {}

    def _check_expressions(self, vid: str) -> dict[int, str]:
        objects: dict[int, str] = {}
        for exp_id, e in self.videos[vid]["expressions"].items():
            record = f"video {vid} expression {exp_id}"
            try:
                obj_ids = [int(o) for o in e["obj_id"]]
                anno_ids = [str(a) for a in e["anno_id"]]
            except (KeyError, TypeError, ValueError) as err:
                raise DatasetError(f"expression needs 'obj_id' and 'anno_id' lists ({err!r})", self.meta_file, record) from err
            if len(obj_ids) != len(anno_ids):
                raise DatasetError(f"obj_id {obj_ids} and anno_id {anno_ids} differ in length", self.meta_file, record)
            for o, a in zip(obj_ids, anno_ids):
                if objects.setdefault(o, a) != a:
                    raise DatasetError(f"object {o} has two anno_ids ({objects[o]} and {a})", self.meta_file, record)
        return objects

    @property
    def mask_dict(self) -> dict[str, list]:
        if self._mask_dict is None:
            d = load_json(self.mask_file, "mask_dict.json")
            if not isinstance(d, dict):
                raise DatasetError("expected {anno_id: [rle or null per frame]}", self.mask_file)
            self._mask_dict = d
        return self._mask_dict

    def __getitem__(self, index: int) -> VideoSample:
        vid = self.video_ids[index]
        names, frames = self._frames(vid)
        h, w = frames.size
        targets = []
        for obj_id, anno_id in sorted(self._objects[vid].items()):
            record = f"video {vid} anno_id {anno_id}"
            rles = self.mask_dict.get(anno_id)
            if rles is None:
                raise DatasetError("anno_id is not in mask_dict.json", self.mask_file, record)
            if not isinstance(rles, list) or len(rles) != len(names):
                n = len(rles) if isinstance(rles, list) else type(rles).__name__
                raise DatasetError(f"{n} masks for {len(names)} frames", self.mask_file, record)
            masks = np.zeros((len(names), h, w), bool)
            for t, rle in enumerate(rles):
                if rle is not None:
                    try:
                        masks[t] = decode_rle(rle, h, w)
                    except ValueError as err:
                        raise DatasetError(f"frame {names[t]}: {err}", self.mask_file, record) from err
            targets.append(VideoTarget(obj_id=obj_id, masks=masks))
        expressions = []
        for exp_id, e in sorted(self.videos[vid]["expressions"].items(), key=lambda kv: _natural(kv[0])):
            obj_ids = tuple(int(o) for o in e.get("obj_id", ())) if self.has_masks else ()
            expressions.append(VideoExpression(str(e["exp"]).strip(), obj_ids, exp_id=str(exp_id)))
        return VideoSample(frames=frames, targets=targets, expressions=expressions, source=self._source(vid))


def _natural(key: str) -> tuple[int, int | str]:
    """Sort "2" before "10" (expression ids are numeric strings)."""
    return (0, int(key)) if str(key).isdigit() else (1, str(key))


__all__ = ["LazyFrames", "MeViS", "RefYouTubeVOS"]
