"""Grounded captions (GCG / phrase grounding): a caption whose phrases each have a mask, in GLaMM's formats.

Two public layouts are read (the files GLaMM's GranD-f release ships under ``GranDf/annotations/train/``):

``GranDfGCG`` - ``GranDf_HA_GCG_train.json``, ``OpenPsgGCG_{train,val}.json``: a JSON list of records::

    {"file_name": "sa_123.jpg",                      # relative to image_dir
     "caption": "A man rides a horse on a beach.",
     "groundings": {"A man":   {"token_positives": [0, 5],   "rle_masks": [<COCO RLE>, ...]},
                    "a horse": {"token_positives": [12, 19], "rle_masks": [<COCO RLE>]}}}

  ``token_positives`` are character offsets ``[start, end)`` into ``caption``; a phrase's mask is the union of
  its RLEs (``{"size": [H, W], "counts": str}``), which must match the image size.

``FlickrGCG`` - ``flickr_mergedGT_GCG_{train,val}.json`` (MDETR's merged Flickr30k-Entities in COCO layout, with
SAM masks)::

    {"images": [{"id", "file_name", "height", "width", "caption"}, ...],
     "annotations": [{"id", "image_id", "bbox": [x, y, w, h], "tokens_positive": [[start, end], ...],
                      "sam_mask": <COCO RLE>}, ...]}

  A phrase is an annotation's first ``tokens_positive`` span (as GLaMM uses it); annotations sharing that span
  are one phrase whose mask and box are their union.

Overlapping phrase spans, spans outside the caption, missing or empty masks and size mismatches raise
``DatasetError`` naming the file and record.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset

from data.errors import DatasetError, load_json, read_rgb, require_dir
from data.masks import decode_rle, mask_to_box, union_box, xywh_to_xyxy
from data.sample import GroundingSample, Target
from data.templates import caption_turn


@dataclass
class CaptionPhrase:
    """A grounded phrase: ``caption[start:end] == text``; ``mask`` H x W bool; ``box`` (4,) xyxy float32,
    absolute pixels (the box annotation where the format has one, else the mask's tight box)."""

    text: str
    start: int
    end: int
    mask: np.ndarray
    box: np.ndarray
    label: str = ""


@dataclass
class GroundedCaption:
    """An image, its caption and the grounded phrases sorted by position. ``image``: H x W x 3 uint8 RGB."""

    image: np.ndarray
    caption: str
    phrases: list[CaptionPhrase] = field(default_factory=list)
    source: str = ""

    def parts(self) -> list[str | tuple[str, int]]:
        """The caption as ``caption_turn`` parts: plain text between ``(phrase, phrase index)`` pairs."""
        out: list[str | tuple[str, int]] = []
        pos = 0
        for i, p in enumerate(self.phrases):
            if p.start > pos:
                out.append(self.caption[pos : p.start])
            out.append((p.text, i))
            pos = p.end
        if pos < len(self.caption):
            out.append(self.caption[pos:])
        return out


def _check_spans(caption: str, spans: Sequence[tuple[int, int]], file: Path, record: str) -> None:
    prev_end, prev = 0, None
    for s, e in sorted(spans):
        if not 0 <= s < e <= len(caption):
            raise DatasetError(f"phrase span [{s}, {e}) is outside the caption (length {len(caption)})", file, record)
        if prev is not None and s < prev_end:
            raise DatasetError(f"phrase spans {list(prev)} and {[s, e]} overlap", file, record)
        prev_end, prev = e, (s, e)


class _GroundedCaptions(Dataset):
    """Shared by the caption formats: records are parsed on access; ``to_sample`` makes one GCG turn."""

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike):
        self.ann_file = Path(ann_file)
        self.image_dir = require_dir(image_dir, "caption image folder")

    def _check_images(self, names: Sequence[str], records: Sequence[str]) -> None:
        missing = [(n, r) for n, r in zip(names, records) if not (self.image_dir / n).is_file()]
        if missing:
            n, r = missing[0]
            raise DatasetError(
                f"{len(missing)} image file(s) named in {self.ann_file.name} are missing, e.g. {[m for m, _ in missing[:3]]}",
                self.image_dir / n,
                r,
            )

    def to_sample(self, item: GroundedCaption, rng: np.random.Generator) -> GroundingSample:
        """One GCG turn: the caption with each phrase grounded to its own target."""
        targets = [Target(box=p.box, mask=p.mask, label=p.label or p.text) for p in item.phrases]
        return GroundingSample(image=item.image, turns=[caption_turn(item.parts(), rng)], targets=targets, source=item.source)


class GranDfGCG(_GroundedCaptions):
    """GLaMM's "groundings" layout (GranD-f human-annotated, OpenPSG-GCG); see the module docstring."""

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike, check_images: bool = True):
        super().__init__(ann_file, image_dir)
        records = load_json(self.ann_file, "GranD-f GCG annotation file")
        if not isinstance(records, list):
            raise DatasetError("expected a JSON list of caption records", self.ann_file)
        for k, r in enumerate(records):
            if not isinstance(r, dict) or not {"file_name", "caption", "groundings"} <= r.keys():
                raise DatasetError("record needs 'file_name', 'caption' and 'groundings'", self.ann_file, f"#{k}")
        self.records: list[dict] = records
        if check_images:
            self._check_images([r["file_name"] for r in records], [f"#{k}" for k in range(len(records))])

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> GroundedCaption:
        r = self.records[index]
        record = f"#{index} ({r['file_name']})"
        image = read_rgb(self.image_dir / r["file_name"], record)
        h, w = image.shape[:2]
        caption = str(r["caption"])
        phrases = []
        groundings = r["groundings"]
        if not isinstance(groundings, dict):
            raise DatasetError("'groundings' must map phrase -> {token_positives, rle_masks}", self.ann_file, record)
        for key, g in groundings.items():
            try:
                s, e = (int(v) for v in g["token_positives"])
                rles = g["rle_masks"]
                if not isinstance(rles, list) or not rles:
                    raise ValueError("no rle_masks")
                mask = np.zeros((h, w), bool)
                for rle in rles:
                    mask |= decode_rle(rle, h, w)
            except (KeyError, TypeError, ValueError) as err:
                raise DatasetError(f"broken grounding {key!r}: {err}", self.ann_file, record) from err
            if not mask.any():
                raise DatasetError(f"grounding {key!r} has an empty mask", self.ann_file, record)
            phrases.append(CaptionPhrase(caption[s:e], s, e, mask, mask_to_box(mask), label=str(key)))
        _check_spans(caption, [(p.start, p.end) for p in phrases], self.ann_file, record)
        phrases.sort(key=lambda p: p.start)
        return GroundedCaption(image, caption, phrases, source=f"{self.ann_file.stem} {record}")


class FlickrGCG(_GroundedCaptions):
    """GLaMM's Flickr30k-Entities GCG file (COCO layout, captions on images, SAM masks); see the module docstring."""

    def __init__(self, ann_file: str | os.PathLike, image_dir: str | os.PathLike, check_images: bool = True):
        super().__init__(ann_file, image_dir)
        coco = load_json(self.ann_file, "Flickr GCG annotation file")
        try:
            self.images: list[dict] = list(coco["images"])
            by_image: dict[int, list[dict]] = defaultdict(list)
            for a in coco["annotations"]:
                by_image[int(a["image_id"])].append(a)
            ids = {int(im["id"]) for im in self.images}
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"not a COCO-layout caption file ({e!r})", self.ann_file) from e
        for im in self.images:
            if "caption" not in im or "file_name" not in im:
                raise DatasetError("image needs 'file_name' and 'caption'", self.ann_file, f"image_id {im['id']}")
        orphans = sorted(set(by_image) - ids)
        if orphans:
            raise DatasetError(f"annotations refer to unknown image ids {orphans[:5]}", self.ann_file)
        self._anns = by_image
        if check_images:
            self._check_images([im["file_name"] for im in self.images], [f"image_id {im['id']}" for im in self.images])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> GroundedCaption:
        info = self.images[index]
        record = f"image_id {info['id']}"
        size = (int(info["height"]), int(info["width"])) if "height" in info and "width" in info else None
        image = read_rgb(self.image_dir / info["file_name"], record, size)
        h, w = image.shape[:2]
        caption = str(info["caption"])
        groups: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
        for a in self._anns.get(int(info["id"]), []):
            arecord = f"{record} ann {a.get('id')}"
            try:
                s, e = (int(v) for v in a["tokens_positive"][0])
                mask = decode_rle(a["sam_mask"], h, w)
                box = xywh_to_xyxy(a["bbox"])
            except (KeyError, IndexError, TypeError, ValueError) as err:
                raise DatasetError(f"broken annotation: {err!r}", self.ann_file, arecord) from err
            if not mask.any():
                raise DatasetError("sam_mask is empty", self.ann_file, arecord)
            groups[(s, e)].append((mask, box))
        _check_spans(caption, list(groups), self.ann_file, record)
        phrases = [
            CaptionPhrase(
                caption[s:e], s, e, np.logical_or.reduce([m for m, _ in g]), union_box(np.stack([b for _, b in g]))
            )
            for (s, e), g in sorted(groups.items())
        ]
        return GroundedCaption(image, caption, phrases, source=f"{self.ann_file.stem} {record}")


__all__ = ["CaptionPhrase", "FlickrGCG", "GranDfGCG", "GroundedCaption"]
