"""RefCOCO / RefCOCO+ / RefCOCOg and gRefCOCO in the ``refer`` layout.

On disk (``root`` is the refer data folder)::

    <root>/<name>/instances.json          COCO instances: images {id, file_name, height, width},
                                          annotations {id, image_id, category_id, bbox [x, y, w, h],
                                          segmentation (polygons or RLE)}, categories {id, name}
    <root>/<name>/refs(<split_by>).p      RefCOCO*: a pickled list of refs {ref_id, ann_id, image_id, split,
                                          category_id, sentences [{sent, tokens, sent_id, raw}], ...}
    <root>/<name>/grefs(<split_by>).json  gRefCOCO: the same refs as JSON, but ``ann_id`` is a list and
                                          no-target refs have ``no_target: true`` and ``ann_id: [-1]``
    <root>/images/mscoco/images/train2014/COCO_train2014_%012d.jpg   (the image's ``file_name``)

Names and splits of the public files: ``refcoco`` (``unc``: train/val/testA/testB; ``google``), ``refcoco+``
(``unc``), ``refcocog`` (``umd``: train/val/test; ``google``: train/val), ``grefcoco`` (``unc``:
train/val/testA/testB). Any other name (e.g. one written by ``data.export.write_refer``) is read the same way.

The refs file is a pickle: load only files you trust (it is the format the datasets ship in).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset

from data.errors import DatasetError, load_json, read_rgb, require_dir, require_file
from data.masks import decode_segmentation, xywh_to_xyxy
from data.sample import GroundingSample, Target, Task
from data.templates import rec_turn, referring_turn

COCO_IMAGE_DIR = Path("images", "mscoco", "images", "train2014")
"""Where the refer layout keeps the COCO train2014 images, relative to ``root``."""


def coco_train2014_name(image_id: int) -> str:
    """``COCO_train2014_%012d.jpg``: the COCO file name of a train2014 image id."""
    return f"COCO_train2014_{int(image_id):012d}.jpg"


@dataclass
class RefItem:
    """One RefCOCO reference: an object and the sentences that describe it.

    ``image``: H x W x 3 uint8 RGB. ``mask``: H x W bool. ``box``: (4,) xyxy float32, absolute pixels of the
    original image (COCO's ``[x, y, w, h]`` converted). ``sentences``: all of the ref's sentences, or one in the
    per-sentence view (``sent_ids`` parallel).
    """

    image: np.ndarray
    sentences: list[str]
    sent_ids: list[int]
    mask: np.ndarray
    box: np.ndarray
    ref_id: int
    ann_id: int
    image_id: int
    category: str = ""
    source: str = ""


@dataclass
class GRefItem:
    """One gRefCOCO reference: zero, one or several objects and the sentences that describe them together.

    ``masks``: one H x W bool mask per referred object (empty list for a no-target ref). ``boxes``: K x 4 xyxy
    float32 (absolute pixels). ``categories``: one name per object.
    """

    image: np.ndarray
    sentences: list[str]
    sent_ids: list[int]
    masks: list[np.ndarray]
    boxes: np.ndarray
    ref_id: int
    ann_ids: tuple[int, ...]
    image_id: int
    no_target: bool
    categories: list[str] = field(default_factory=list)
    source: str = ""


@dataclass(frozen=True)
class _Ref:
    """A ref as the loader indexes it (validated at construction)."""

    ref_id: int
    image_id: int
    ann_ids: tuple[int, ...]
    sentences: tuple[str, ...]
    sent_ids: tuple[int, ...]
    no_target: bool


class _ReferDataset(Dataset):
    """Shared by ``RefCOCO`` and ``GRefCOCO``: the instances index, image lookup, mask decoding, the views."""

    _refs_pattern: str = "refs({}).p"
    _multi: bool = False

    def __init__(
        self,
        root: str | os.PathLike,
        name: str,
        split_by: str,
        split: str,
        per_sentence: bool = False,
        image_dir: str | os.PathLike | None = None,
        check_images: bool = True,
    ):
        self.root = Path(root)
        self.name = name
        self.split_by = split_by
        self.split = split
        self.per_sentence = per_sentence
        data_dir = require_dir(self.root / name, f"{name} annotation folder")
        self.refs_file = data_dir / self._refs_pattern.format(split_by)
        if not self.refs_file.is_file():
            present = sorted(p.name for p in data_dir.iterdir() if p.name.startswith(("refs(", "grefs(")))
            raise DatasetError(f"missing refs file for split_by={split_by!r} (present: {present})", self.refs_file)
        self.instances_file = require_file(data_dir / "instances.json", "COCO instances file")
        self.image_dir = Path(image_dir) if image_dir is not None else self.root / COCO_IMAGE_DIR

        instances = load_json(self.instances_file, "COCO instances file")
        try:
            self._images: dict[int, dict] = {int(im["id"]): im for im in instances["images"]}
            self._anns: dict[int, dict] = {int(a["id"]): a for a in instances["annotations"]}
            self._categories: dict[int, str] = {int(c["id"]): str(c.get("name", "")) for c in instances.get("categories", [])}
        except (KeyError, TypeError) as e:
            raise DatasetError(f"not a COCO instances file ({e!r})", self.instances_file) from e

        raw_refs = self._load_refs()
        for k, r in enumerate(raw_refs):
            if not isinstance(r, dict):
                raise DatasetError(f"ref #{k} is a {type(r).__name__}, not a dict", self.refs_file)
        splits = sorted({str(r.get("split")) for r in raw_refs})
        if split not in splits:
            raise DatasetError(f"unknown split {split!r}; this refs file has splits {splits}", self.refs_file)
        self._refs: list[_Ref] = [self._check_ref(r) for r in raw_refs if r.get("split") == split]
        self._index: list[tuple[int, int | None]] = (
            [(i, k) for i, r in enumerate(self._refs) for k in range(len(r.sentences))]
            if per_sentence
            else [(i, None) for i in range(len(self._refs))]
        )
        if check_images:
            self._check_images()

    # -- construction-time checks ------------------------------------------------------------------------------

    def _load_refs(self) -> list[dict]:
        try:
            with open(self.refs_file, "rb") as f:
                try:
                    refs = pickle.load(f)
                except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII bytes
                    f.seek(0)
                    refs = pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise DatasetError(f"cannot unpickle refs: {e}", self.refs_file) from e
        if not isinstance(refs, list):
            raise DatasetError(f"refs must be a list of dicts, got {type(refs).__name__}", self.refs_file)
        return refs

    def _check_ref(self, r: dict) -> _Ref:
        record = f"ref_id {r.get('ref_id')}"
        try:
            ann = r["ann_id"]
            ann_ids = tuple(int(a) for a in ann) if isinstance(ann, (list, tuple)) else (int(ann),)
            sents = r["sentences"]
            sentences = tuple(str(s["sent"]) for s in sents)
            sent_ids = tuple(int(s.get("sent_id", k)) for k, s in enumerate(sents))
            image_id = int(r["image_id"])
            ref_id = int(r["ref_id"])
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"malformed ref ({e!r})", self.refs_file, record) from e
        if not sentences:
            raise DatasetError("ref has no sentences", self.refs_file, record)
        no_target = bool(r.get("no_target", False)) or ann_ids == (-1,)
        if no_target:
            if not self._multi:
                raise DatasetError("no-target ref in a single-target refs file", self.refs_file, record)
            if any(a != -1 for a in ann_ids):
                raise DatasetError(f"ref is marked no_target but lists annotations {list(ann_ids)}", self.refs_file, record)
            ann_ids = ()
        if not self._multi and len(ann_ids) != 1:
            raise DatasetError(f"RefCOCO refs have one ann_id, got {list(ann_ids)}", self.refs_file, record)
        if image_id not in self._images:
            raise DatasetError(f"image_id {image_id} is not in {self.instances_file.name}", self.refs_file, record)
        for a in ann_ids:
            if a not in self._anns:
                raise DatasetError(f"ann_id {a} is not in {self.instances_file.name}", self.refs_file, record)
            if int(self._anns[a]["image_id"]) != image_id:
                raise DatasetError(f"ann_id {a} belongs to another image than {image_id}", self.refs_file, record)
        return _Ref(ref_id, image_id, ann_ids, sentences, sent_ids, no_target)

    def _check_images(self) -> None:
        require_dir(self.image_dir, "image folder")
        present = set(os.listdir(self.image_dir))
        missing = sorted({self._file_name(r.image_id) for r in self._refs} - present)
        if missing:
            first = next(r for r in self._refs if self._file_name(r.image_id) in missing)
            raise DatasetError(
                f"{len(missing)} image file(s) of split {self.split!r} are missing from {self.image_dir}, "
                f"e.g. {missing[:3]}",
                self.image_dir / missing[0],
                f"ref_id {first.ref_id}",
            )

    # -- access ------------------------------------------------------------------------------------------------

    def _file_name(self, image_id: int) -> str:
        return str(self._images[image_id].get("file_name") or coco_train2014_name(image_id))

    def _read_image(self, ref: _Ref) -> np.ndarray:
        info = self._images[ref.image_id]
        size = (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else None
        return read_rgb(self.image_dir / self._file_name(ref.image_id), f"ref_id {ref.ref_id}", size)

    def _decode(self, ann_id: int, ref: _Ref, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        ann = self._anns[ann_id]
        record = f"ann_id {ann_id} (ref_id {ref.ref_id})"
        try:
            mask = decode_segmentation(ann["segmentation"], height, width)
            box = xywh_to_xyxy(ann["bbox"])
        except (KeyError, ValueError, TypeError) as e:
            raise DatasetError(f"broken annotation: {e}", self.instances_file, record) from e
        if not mask.any():
            raise DatasetError("segmentation decodes to an empty mask", self.instances_file, record)
        return mask, box

    def _category(self, ann_id: int) -> str:
        return self._categories.get(int(self._anns[ann_id].get("category_id", -1)), "")

    def _source(self, ref: _Ref) -> str:
        return f"{self.name}({self.split_by}) {self.split} ref {ref.ref_id}"

    def _sentences(self, ref: _Ref, k: int | None) -> tuple[list[str], list[int]]:
        if k is None:
            return list(ref.sentences), list(ref.sent_ids)
        return [ref.sentences[k]], [ref.sent_ids[k]]

    def __len__(self) -> int:
        return len(self._index)

    @property
    def num_refs(self) -> int:
        return len(self._refs)

    @staticmethod
    def _pick_sentences(sentences: Sequence[str], rng: np.random.Generator, max_turns: int | None) -> list[str]:
        if max_turns is None or len(sentences) <= max_turns:
            return list(sentences)
        keep = np.sort(rng.choice(len(sentences), size=max_turns, replace=False))
        return [sentences[int(i)] for i in keep]


class RefCOCO(_ReferDataset):
    """RefCOCO / RefCOCO+ / RefCOCOg references of one split, indexable per ref (or per sentence).

    ``per_sentence``: one item per (ref, sentence), as the published metrics count; otherwise one per ref with
    all its sentences. ``task``: what ``to_sample`` asks, ``Task.RES`` (mask) or ``Task.REC`` (box as text).
    ``image_dir``: the COCO train2014 folder, default ``<root>/images/mscoco/images/train2014``.
    ``check_images``: list the image folder once at construction and fail if any image of the split is missing.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        name: str = "refcoco",
        split_by: str = "unc",
        split: str = "val",
        per_sentence: bool = False,
        task: Task = Task.RES,
        image_dir: str | os.PathLike | None = None,
        check_images: bool = True,
    ):
        self.task = Task(task)
        if self.task not in (Task.RES, Task.REC):
            raise ValueError(f"RefCOCO task must be {Task.RES.value!r} or {Task.REC.value!r}, got {self.task.value!r}")
        super().__init__(root, name, split_by, split, per_sentence, image_dir, check_images)

    def __getitem__(self, index: int) -> RefItem:
        i, k = self._index[index]
        ref = self._refs[i]
        image = self._read_image(ref)
        (ann_id,) = ref.ann_ids
        mask, box = self._decode(ann_id, ref, image.shape[0], image.shape[1])
        sentences, sent_ids = self._sentences(ref, k)
        return RefItem(
            image=image,
            sentences=sentences,
            sent_ids=sent_ids,
            mask=mask,
            box=box,
            ref_id=ref.ref_id,
            ann_id=ann_id,
            image_id=ref.image_id,
            category=self._category(ann_id),
            source=self._source(ref),
        )

    def to_sample(self, item: RefItem, rng: np.random.Generator, max_turns: int | None = None) -> GroundingSample:
        """One turn per sentence (at most ``max_turns``, drawn with ``rng``), all about target 0."""
        target = Target(box=item.box, mask=item.mask, label=item.category)
        sentences = self._pick_sentences(item.sentences, rng, max_turns)
        if self.task == Task.REC:
            turns = [rec_turn(s, 0, rng) for s in sentences]
        else:
            turns = [referring_turn(s, [0], rng, task=Task.RES) for s in sentences]
        return GroundingSample(image=item.image, turns=turns, targets=[target], source=item.source)


class GRefCOCO(_ReferDataset):
    """gRefCOCO (generalised referring expressions): refs with several targets or none.

    Same arguments as ``RefCOCO`` (default ``name="grefcoco"``); reads ``grefs(<split_by>).json``.
    """

    _refs_pattern = "grefs({}).json"
    _multi = True

    def __init__(
        self,
        root: str | os.PathLike,
        name: str = "grefcoco",
        split_by: str = "unc",
        split: str = "val",
        per_sentence: bool = False,
        image_dir: str | os.PathLike | None = None,
        check_images: bool = True,
    ):
        super().__init__(root, name, split_by, split, per_sentence, image_dir, check_images)

    def _load_refs(self) -> list[dict]:
        refs = load_json(self.refs_file, "gRefCOCO refs file")
        if not isinstance(refs, list):
            raise DatasetError(f"refs must be a list of dicts, got {type(refs).__name__}", self.refs_file)
        return refs

    def __getitem__(self, index: int) -> GRefItem:
        i, k = self._index[index]
        ref = self._refs[i]
        image = self._read_image(ref)
        decoded = [self._decode(a, ref, image.shape[0], image.shape[1]) for a in ref.ann_ids]
        sentences, sent_ids = self._sentences(ref, k)
        return GRefItem(
            image=image,
            sentences=sentences,
            sent_ids=sent_ids,
            masks=[m for m, _ in decoded],
            boxes=np.array([b for _, b in decoded], np.float32).reshape(-1, 4),
            ref_id=ref.ref_id,
            ann_ids=ref.ann_ids,
            image_id=ref.image_id,
            no_target=ref.no_target,
            categories=[self._category(a) for a in ref.ann_ids],
            source=self._source(ref),
        )

    def to_sample(self, item: GRefItem, rng: np.random.Generator, max_turns: int | None = None) -> GroundingSample:
        """One turn per sentence; the answer grounds every target (RES / RES_MULTI), or none (RES_NONE)."""
        targets = [Target(box=b, mask=m, label=c) for m, b, c in zip(item.masks, item.boxes, item.categories)]
        idx = list(range(len(targets)))
        turns = [referring_turn(s, idx, rng) for s in self._pick_sentences(item.sentences, rng, max_turns)]
        return GroundingSample(image=item.image, turns=turns, targets=targets, source=item.source)


__all__ = ["COCO_IMAGE_DIR", "GRefCOCO", "GRefItem", "RefCOCO", "RefItem", "coco_train2014_name"]
