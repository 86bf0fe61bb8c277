"""Write ``GroundingSample``s in the ``refer`` layout, so the real loaders read them (``RefCOCO``, ``GRefCOCO``).

Written under ``root`` (the layout ``data.refcoco`` documents)::

    <root>/<name>/instances.json          images, annotations (segmentation as COCO RLE, bbox [x, y, w, h]),
                                          categories (one per distinct ``Target.label``; "object" if empty)
    <root>/<name>/refs(<split_by>).p      single-target referring turns, read by ``RefCOCO``
    <root>/<name>/grefs(<split_by>).json  every referring turn, multi-target and no-target too, read by ``GRefCOCO``
    <root>/images/mscoco/images/train2014/<name>_%012d.png   (the image's ``file_name`` in instances.json)

Exported turns: tasks RES, REASON, RES_MULTI and RES_NONE with a ``Turn.expression``; turns of one sample that
ground the same targets become one ref with several sentences. Other turns (REC, GCG, REGION) and targets without
a mask are counted in the returned ``ReferExport``, not written. Writing again into the same ``root``/``name``
appends (new image, annotation, ref and sentence ids continue after the existing ones), so several splits can
share one refs file; or pass a mapping ``{split: samples}``.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from data.errors import DatasetError
from data.masks import encode_rle, mask_area, xyxy_to_xywh
from data.refcoco import COCO_IMAGE_DIR
from data.sample import GroundingSample, Task

REFERRING_TASKS = (Task.RES, Task.REASON, Task.RES_MULTI, Task.RES_NONE)


@dataclass
class ReferExport:
    """What ``write_refer`` wrote (counts of this call) and what it left out."""

    root: Path
    name: str
    split_by: str
    images: int = 0
    annotations: int = 0
    refs: int = 0
    """Single-target refs (in both refs files)."""
    grefs: int = 0
    """All refs written to the gRefCOCO file (single-, multi- and no-target)."""
    sentences: int = 0
    skipped_turns: int = 0
    """Turns that are not referring turns with an expression (REC, GCG, REGION, ...)."""
    skipped_targets: int = 0
    """Targets without a mask (box-only), not written as annotations."""


class _ReferFiles:
    """The three annotation files of one ``root/name``, loaded if present, written back atomically."""

    def __init__(self, root: Path, name: str, split_by: str):
        self.dir = root / name
        self.instances_file = self.dir / "instances.json"
        self.refs_file = self.dir / f"refs({split_by}).p"
        self.grefs_file = self.dir / f"grefs({split_by}).json"
        self.instances = {"images": [], "annotations": [], "categories": []}
        self.refs: list[dict] = []
        self.grefs: list[dict] = []
        if self.instances_file.is_file():
            with open(self.instances_file, encoding="utf-8") as f:
                self.instances = json.load(f)
        if self.refs_file.is_file():
            with open(self.refs_file, "rb") as f:
                self.refs = pickle.load(f)
        if self.grefs_file.is_file():
            with open(self.grefs_file, encoding="utf-8") as f:
                self.grefs = json.load(f)
        self.next_image = 1 + max((int(i["id"]) for i in self.instances["images"]), default=0)
        self.next_ann = 1 + max((int(a["id"]) for a in self.instances["annotations"]), default=0)
        self.next_ref = 1 + max((int(r["ref_id"]) for r in self.grefs + self.refs), default=-1)
        sents = [s["sent_id"] for r in self.grefs + self.refs for s in r["sentences"]]
        self.next_sent = 1 + max(sents, default=-1)
        self.category_ids = {c["name"]: int(c["id"]) for c in self.instances["categories"]}

    def category(self, label: str) -> int:
        label = label or "object"
        if label not in self.category_ids:
            cid = 1 + max(self.category_ids.values(), default=0)
            self.category_ids[label] = cid
            self.instances["categories"].append({"id": cid, "name": label, "supercategory": "object"})
        return self.category_ids[label]

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic(self.instances_file, json.dumps(self.instances).encode("utf-8"))
        _atomic(self.refs_file, pickle.dumps(self.refs, protocol=4))
        _atomic(self.grefs_file, json.dumps(self.grefs).encode("utf-8"))


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_refer(
    samples: Iterable[GroundingSample] | Mapping[str, Iterable[GroundingSample]],
    root: str | os.PathLike,
    name: str = "synthetic",
    split: str = "train",
    split_by: str = "unc",
    image_format: str = "png",
) -> ReferExport:
    """Write ``samples`` (or ``{split: samples}``) into ``root`` in the refer layout; see the module docstring.

    ``image_format``: ``"png"`` (lossless: masks and pixels round-trip exactly) or ``"jpg"`` (quality 95).
    """
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = Path(root)
    by_split = dict(samples) if isinstance(samples, Mapping) else {split: samples}
    files = _ReferFiles(root, name, split_by)
    image_dir = root / COCO_IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    out = ReferExport(root=root, name=name, split_by=split_by)
    for split_name, split_samples in by_split.items():
        for sample in split_samples:
            _write_sample(sample, str(split_name), files, image_dir, image_format, name, out)
    files.save()
    return out


def _write_sample(
    sample: GroundingSample, split: str, files: _ReferFiles, image_dir: Path, fmt: str, name: str, out: ReferExport
) -> None:
    sample.validate()
    h, w = sample.size
    image_id = files.next_image
    files.next_image += 1
    file_name = f"{name}_{image_id:012d}.{fmt}"
    im = Image.fromarray(sample.image)
    im.save(image_dir / file_name, **({"quality": 95} if fmt == "jpg" else {}))
    files.instances["images"].append({"id": image_id, "file_name": file_name, "height": h, "width": w})
    out.images += 1

    ann_of: dict[int, int] = {}  # target index -> ann id
    cat_of: dict[int, int] = {}
    for t, target in enumerate(sample.targets):
        if target.mask is None:
            out.skipped_targets += 1
            continue
        ann_id = files.next_ann
        files.next_ann += 1
        cat_of[t] = files.category(target.label)
        files.instances["annotations"].append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": cat_of[t],
                "segmentation": encode_rle(target.mask),
                "area": mask_area(target.mask),
                "bbox": xyxy_to_xywh(target.box),
                "iscrowd": 0,
            }
        )
        ann_of[t] = ann_id
        out.annotations += 1

    groups: dict[tuple[int, ...], list[str]] = {}
    for turn in sample.turns:
        if turn.task not in REFERRING_TASKS or not turn.expression:
            out.skipped_turns += 1
            continue
        targets = tuple(dict.fromkeys(turn.target_indices))
        missing = [t for t in targets if t not in ann_of]
        if missing:
            raise DatasetError(f"a referring turn grounds targets {missing}, which have no mask", record=sample.source)
        groups.setdefault(targets, []).append(turn.expression)

    for targets, sentences in groups.items():
        sents = []
        for s in sentences:
            sents.append({"sent": s, "raw": s, "tokens": s.split(), "sent_id": files.next_sent})
            files.next_sent += 1
        ref = {
            "ref_id": files.next_ref,
            "image_id": image_id,
            "split": split,
            "sentences": sents,
            "sent_ids": [s["sent_id"] for s in sents],
            "file_name": file_name,
        }
        files.next_ref += 1
        files.grefs.append(
            {
                **ref,
                "ann_id": [ann_of[t] for t in targets] or [-1],
                "category_id": [cat_of[t] for t in targets],
                "no_target": not targets,
            }
        )
        out.grefs += 1
        out.sentences += len(sents)
        if len(targets) == 1:
            files.refs.append({**ref, "ann_id": ann_of[targets[0]], "category_id": cat_of[targets[0]]})
            out.refs += 1


__all__ = ["REFERRING_TASKS", "ReferExport", "write_refer"]
