"""Box codecs: boxes <-> text, one class per text format.

Every codec speaks ``xyxy`` boxes in absolute pixels of the frame given by ``image_size = (width, height)``
(the original image frame, except for ``PixelJsonBoxCodec`` whose models reason in their own resized frame:
pass that frame's size). Decoding never raises on malformed or truncated model output: it returns the boxes
it could read, with their character spans, and reports what it skipped and why.

The delimiters are constructor arguments; ``grounding.box_codecs`` builds the codecs with the project's tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

_NUM = r"[-+]?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class BoxSpan:
    """One box read from text: ``box`` xyxy absolute pixels; ``start:end`` its character span in the text."""

    box: np.ndarray
    start: int
    end: int
    label: str | None = None


@dataclass
class DecodedBoxes:
    """What a codec could read: ``spans`` in text order, and ``skipped`` as (start, end, reason)."""

    spans: list[BoxSpan] = field(default_factory=list)
    skipped: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def boxes(self) -> np.ndarray:
        """N x 4 float32 xyxy, absolute pixels."""
        if not self.spans:
            return np.zeros((0, 4), np.float32)
        return np.stack([s.box for s in self.spans]).astype(np.float32)


def _check_size(image_size) -> tuple[float, float]:
    w, h = (float(v) for v in image_size)
    if not (w > 0 and h > 0):
        raise ValueError(f"image_size must be positive (width, height), got {image_size!r}")
    return w, h


def _as_box(box) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.all(np.isfinite(b)):
        raise ValueError(f"a box is 4 finite numbers x1, y1, x2, y2; got {box!r}")
    return b


def _ordered(vals: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = vals
    return np.array([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], dtype=np.float32)


class _DelimitedCodec:
    """Shared reading logic for codecs that wrap numbers in start/end delimiters."""

    start: str
    end: str

    def _parse_inner(self, inner: str) -> np.ndarray | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _to_pixels(self, vals: np.ndarray, image_size) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, text: str, image_size) -> DecodedBoxes:
        """Read every delimited box in ``text``; malformed or truncated ones go to ``skipped``."""
        w, h = _check_size(image_size)
        out = DecodedBoxes()
        pos = 0
        while True:
            s = text.find(self.start, pos)
            if s < 0:
                break
            inner_start = s + len(self.start)
            e = text.find(self.end, inner_start)
            nxt = text.find(self.start, inner_start)
            if e < 0 or (0 <= nxt < e):
                stop = nxt if nxt >= 0 else len(text)
                out.skipped.append((s, stop, "box not closed"))
                pos = stop
                continue
            vals = self._parse_inner(text[inner_start:e])
            if vals is None:
                out.skipped.append((s, e + len(self.end), "box text is not four numbers"))
            else:
                box = self._to_pixels(vals, (w, h))
                box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
                box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
                out.spans.append(BoxSpan(_ordered(box), s, e + len(self.end)))
            pos = e + len(self.end)
        return out


class TextBoxCodec(_DelimitedCodec):
    """``<box>[x1, y1, x2, y2]</box>`` with integers in ``0..scale`` normalised to the image (default 0..999)."""

    def __init__(self, start: str = "<box>", end: str = "</box>", scale: int = 999):
        self.start, self.end, self.scale = start, end, int(scale)

    def quantize(self, box, image_size) -> np.ndarray:
        """The integers this codec writes for ``box`` (xyxy pixels)."""
        w, h = _check_size(image_size)
        b = _as_box(box) / np.array([w, h, w, h]) * self.scale
        return np.clip(np.rint(b), 0, self.scale).astype(np.int64)

    def encode(self, box, image_size) -> str:
        q = self.quantize(box, image_size)
        return f"{self.start}[{q[0]}, {q[1]}, {q[2]}, {q[3]}]{self.end}"

    def _parse_inner(self, inner: str) -> np.ndarray | None:
        nums = re.findall(_NUM, inner)
        if len(nums) != 4 or re.sub(rf"{_NUM}|[\s,\[\]()]", "", inner):
            return None
        return np.array([float(n) for n in nums])

    def _to_pixels(self, vals, image_size) -> np.ndarray:
        w, h = image_size
        v = np.clip(vals, 0, self.scale)
        return v / self.scale * np.array([w, h, w, h])


class Qwen2VLBoxCodec(TextBoxCodec):
    """Qwen2-VL's native ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` in 0..1000 normalised coordinates."""

    def __init__(self, start: str = "<|box_start|>", end: str = "<|box_end|>", scale: int = 1000):
        super().__init__(start, end, scale)

    def encode(self, box, image_size) -> str:
        q = self.quantize(box, image_size)
        return f"{self.start}({q[0]},{q[1]}),({q[2]},{q[3]}){self.end}"


class PixelJsonBoxCodec:
    """Qwen2.5-VL's native JSON: ``{"bbox_2d": [x1, y1, x2, y2], "label": "..."}`` in absolute pixels.

    The model reasons in the frame of the image it was fed (its resized input): pass that frame's size as
    ``image_size`` and rescale to the original frame yourself.
    """

    _pattern = re.compile(r'"bbox_2d"\s*:\s*\[([^\]\[]*)(\]?)')
    _label = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')

    def encode(self, box, image_size, label: str | None = None) -> str:
        w, h = _check_size(image_size)
        b = _as_box(box)
        b = np.clip(np.rint(b), 0, [w, h, w, h]).astype(np.int64)
        rec = {"bbox_2d": [int(v) for v in b]}
        if label is not None:
            rec["label"] = label
        return json.dumps(rec)

    def decode(self, text: str, image_size) -> DecodedBoxes:
        w, h = _check_size(image_size)
        out = DecodedBoxes()
        for m in self._pattern.finditer(text):
            if not m.group(2):
                out.skipped.append((m.start(), m.end(), "box not closed"))
                continue
            nums = re.findall(_NUM, m.group(1))
            if len(nums) != 4:
                out.skipped.append((m.start(), m.end(), "box text is not four numbers"))
                continue
            b = np.array([float(n) for n in nums])
            b = np.clip(b, 0, [w, h, w, h])
            # the label, if any, is the nearest "label" in the same JSON object
            obj_start = text.rfind("{", 0, m.start())
            obj_end = text.find("}", m.end())
            obj = text[obj_start if obj_start >= 0 else m.start() : obj_end if obj_end >= 0 else len(text)]
            lab = self._label.search(obj)
            out.spans.append(BoxSpan(_ordered(b), m.start(), m.end(), lab.group(1) if lab else None))
        return out
