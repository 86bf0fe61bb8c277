"""Result containers of the inference API (boxes ``xyxy`` float, absolute pixels of the original image;
masks bool ``H x W`` at the original resolution; JSON masks as COCO RLE from pycocotools)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from data.masks import decode_rle, dominant_box, encode_rle, mask_to_box  # noqa: F401  (the one RLE codec)


def mask_box(mask: np.ndarray | None) -> np.ndarray | None:
    """xyxy box (x2 = max x + 1) of a predicted mask's main parts (``data.masks.dominant_box``: stray specks of
    the decoder's output left out, the box a written ``<box>[SEG]</box>`` gets too), or None when it is empty."""
    if mask is None or not mask.any():
        return None
    return dominant_box(mask)


@dataclass
class Segment:
    """One grounded object: ``phrase`` (its <p> phrase or the expression, if any), ``box`` xyxy original
    pixels (or None), ``mask`` bool H x W original size (or None for a box-only answer), ``score`` in [0, 1]
    (the mask decoder's predicted IoU; 1.0 for boxes read from text)."""

    phrase: str | None
    box: np.ndarray | None
    mask: np.ndarray | None
    score: float
    source: str = "seg"  # "seg": from a [SEG] token; "box": from box text; "box+sam": box text decoded by SAM

    def to_dict(self) -> dict:
        return {
            "phrase": self.phrase,
            "box": None if self.box is None else [round(float(v), 2) for v in self.box],
            "mask": None if self.mask is None else encode_rle(self.mask),
            "score": round(float(self.score), 4),
            "source": self.source,
        }


@dataclass
class GroundingResult:
    """The answer ``text`` (grounding tokens removed), the ``raw_text`` the model wrote, and its ``segments``.
    ``presence``: the model's probability that the answer should ground something (a presence head,
    ``HeadOptions.presence``), or None. ``refused_by``: where the answer is a refusal that replaced one grounding
    something (``HeadOptions.check_by_description``), the model's own descriptions of that answer's masks, each
    naming another colour or shape than the prompt's ("It is a green circle."); else None."""

    text: str
    segments: list[Segment] = field(default_factory=list)
    raw_text: str = ""
    image_size: tuple[int, int] = (0, 0)  # (height, width)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    presence: float | None = None
    refused_by: list[str] | None = None

    @property
    def boxes(self) -> np.ndarray:
        """N x 4 xyxy of the segments that have a box."""
        b = [s.box for s in self.segments if s.box is not None]
        return np.stack(b).astype(np.float32) if b else np.zeros((0, 4), np.float32)

    @property
    def masks(self) -> list[np.ndarray]:
        return [s.mask for s in self.segments if s.mask is not None]

    def union_mask(self) -> np.ndarray:
        """bool H x W: the union of all masks (all False when there is none)."""
        out = np.zeros(self.image_size, bool)
        for m in self.masks:
            out |= m
        return out

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "raw_text": self.raw_text,
            "image_size": list(self.image_size),
            "segments": [s.to_dict() for s in self.segments],
            "skipped": list(self.skipped),
            "presence": None if self.presence is None else round(float(self.presence), 4),
            "refused_by": None if self.refused_by is None else list(self.refused_by),
        }

    def labels(self) -> list[str]:
        """One label per segment: its phrase (or ``#i``), with the mask score for masks from ``[SEG]``/SAM."""
        out = []
        for i, s in enumerate(self.segments):
            name = s.phrase or f"#{i + 1}"
            out.append(name if s.mask is None else f"{name} {s.score:.2f}")
        return out

    def draw(self, image, alpha: float = 0.45, **kwargs) -> np.ndarray:
        """``image`` (H x W x 3 uint8 RGB, the original frame) with every segment drawn by
        ``demo.visualize.draw_overlay``: masks blended and outlined, boxes, labels; a new RGB array."""
        from demo.visualize import draw_overlay

        img = np.asarray(image)
        if img.shape[:2] != tuple(self.image_size):
            raise ValueError(f"the image is {img.shape[:2]} (H, W) but the result is for {tuple(self.image_size)}")
        return draw_overlay(
            img,
            masks=[s.mask for s in self.segments],
            boxes=[s.box for s in self.segments],
            labels=self.labels(),
            alpha=alpha,
            **kwargs,
        )

    def to_coco(self, image_id: int = 0, category_id: int = 1) -> list[dict]:
        """COCO result records: one per segment (``segmentation`` RLE when there is a mask, ``bbox`` xywh)."""
        out = []
        for s in self.segments:
            rec = {"image_id": image_id, "category_id": category_id, "score": float(s.score)}
            if s.box is not None:
                x1, y1, x2, y2 = (float(v) for v in s.box)
                rec["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            if s.mask is not None:
                rec["segmentation"] = encode_rle(s.mask)
            if s.phrase:
                rec["phrase"] = s.phrase
            out.append(rec)
        return out
