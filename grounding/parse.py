"""Read grounding spans out of answer text: ``[SEG]`` tokens, box spans (through a box codec), ``<p>`` phrases.

The same function reads teacher-forced answers in training and generated answers at inference, so a
``[SEG]`` gets the same box prompt in both. It never raises on malformed model output: unreadable pieces go
to ``ParsedAnswer.skipped``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from grounding.tokens import PHRASE_END, PHRASE_START, SEG


@dataclass
class ParsedSegment:
    """One grounded object in an answer.

    ``phrase``: the ``<p>`` phrase right before it, or None; ``box``: xyxy pixels (frame of the codec's
    ``image_size``) when a box span is right before the ``[SEG]`` or stands alone, else None; ``seg_index``:
    index of its ``[SEG]`` among the answer's ``[SEG]`` tokens, or None for a box-only segment.
    """

    phrase: str | None
    box: np.ndarray | None
    seg_index: int | None
    start: int
    end: int


@dataclass
class ParsedAnswer:
    text: str
    segments: list[ParsedSegment] = field(default_factory=list)
    num_seg: int = 0
    skipped: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def clean_text(self) -> str:
        """The answer for people: phrases kept, grounding tokens removed, each box written as its pixel
        coordinates ``[x1, y1, x2, y2]`` (rounded) and malformed box text removed."""
        return clean_answer_text(self.text, self._box_spans)

    _box_spans: list[tuple[int, int, str]] = field(default_factory=list, repr=False)


def _between_is_space(text: str, a: int, b: int) -> bool:
    return a <= b and not text[a:b].strip()


def parse_answer(text: str, codec, image_size) -> ParsedAnswer:
    """Parse ``text`` into segments. ``codec``: a box codec; ``image_size``: (width, height) of its frame."""
    out = ParsedAnswer(text)
    boxes = codec.decode(text, image_size)
    out.skipped.extend(boxes.skipped)
    out._box_spans = [(s.start, s.end, _pixel_box_text(s.box)) for s in boxes.spans]
    out._box_spans += [(a, b, "") for a, b, _ in boxes.skipped]

    phrases: list[tuple[int, int, str]] = []  # (start, end, phrase)
    pos = 0
    while True:
        s = text.find(PHRASE_START, pos)
        if s < 0:
            break
        e = text.find(PHRASE_END, s + len(PHRASE_START))
        nxt = text.find(PHRASE_START, s + len(PHRASE_START))
        if e < 0 or (0 <= nxt < e):
            out.skipped.append((s, nxt if nxt >= 0 else len(text), "phrase not closed"))
            pos = s + len(PHRASE_START)
            continue
        phrases.append((s, e + len(PHRASE_END), text[s + len(PHRASE_START) : e].strip()))
        pos = e + len(PHRASE_END)

    segs = [m.start() for m in re.finditer(re.escape(SEG), text)]
    out.num_seg = len(segs)

    def phrase_before(pos: int) -> tuple[str | None, int]:
        for ps, pe, ph in reversed(phrases):
            if pe <= pos:
                return (ph, ps) if _between_is_space(text, pe, pos) else (None, pos)
        return None, pos

    used_boxes: set[int] = set()
    events: list[ParsedSegment] = []
    for k, s in enumerate(segs):
        box, start = None, s
        for bi, b in enumerate(boxes.spans):
            if bi not in used_boxes and b.end <= s and _between_is_space(text, b.end, s):
                box, start = b.box, b.start
                used_boxes.add(bi)
                break
        phrase, start = phrase_before(start)
        events.append(ParsedSegment(phrase, box, k, start, s + len(SEG)))
    for bi, b in enumerate(boxes.spans):
        if bi in used_boxes:
            continue
        phrase, start = phrase_before(b.start)
        events.append(ParsedSegment(phrase if phrase is not None else b.label, b.box, None, start, b.end))
    out.segments = sorted(events, key=lambda e: e.start)
    return out


_LIST_SEPARATORS = (", and ", ", ", " and ")


def relist_segments(text: str, parsed: ParsedAnswer, drop=()) -> tuple[str, list[int]]:
    """``text`` (whose parse is ``parsed``) with the ``[SEG]``s whose ``seg_index`` is in ``drop`` taken out and every
    list of grounded objects ("<p>A</p> [SEG], <p>B</p> [SEG] and <p>C</p> [SEG]": segments joined by ", ", " and "
    or ", and ") written as one list again: items joined by ", ", the last by " and " (", and " where the list used
    it) if the list had an "and". A dropped item goes with its phrase, box and separator; a list whose every item is
    dropped keeps its first, so the sentence still names something; a dropped segment outside a list keeps its
    phrase's words, ungrounded ("next to <p>a speck</p> [SEG]." -> "next to a speck."). So a caption with items
    taken out, or appended after its last ("A, B and C, D"), reads as one list ("A, B, C and D"). Returns the text
    and the ``seg_index`` of each ``[SEG]`` left in it, in order."""
    drop = set(drop)
    segs = [s for s in parsed.segments if s.seg_index is not None]
    if not segs:
        return text, []
    kept: set[int] = set()
    runs: list[list[ParsedSegment]] = [[segs[0]]]
    for s in segs[1:]:
        if text[runs[-1][-1].end : s.start] in _LIST_SEPARATORS:
            runs[-1].append(s)
        else:
            runs.append([s])
    for run in reversed(runs):  # from the end, so earlier offsets stay valid
        if len(run) == 1:
            s = run[0]
            if s.seg_index in drop:
                text = text[: s.start] + (s.phrase or "") + text[s.end :]
            else:
                kept.add(s.seg_index)
            continue
        gaps = [text[a.end : b.start] for a, b in zip(run, run[1:])]
        keep = [s for s in run if s.seg_index not in drop] or run[:1]
        kept.update(s.seg_index for s in keep)
        items = [text[s.start : s.end] for s in keep]
        if len(items) > 1 and any("and" in g for g in gaps):
            last = ", and " if ", and " in gaps and len(items) > 2 else " and "
            joined = ", ".join(items[:-1]) + last + items[-1]
        else:
            joined = ", ".join(items)
        text = text[: run[0].start] + joined + text[run[-1].end :]
    return text, sorted(kept)


def _pixel_box_text(box) -> str:
    return "[" + ", ".join(str(int(round(float(v)))) for v in box) + "]"


def clean_answer_text(text: str, box_spans: list[tuple[int, int, str]] = ()) -> str:
    """Remove ``[SEG]`` and phrase markers, replace each ``(start, end, replacement)`` box span by its replacement
    ("" removes it); tidy spaces before punctuation."""
    for a, b, replacement in sorted(box_spans, reverse=True):
        text = text[:a] + replacement + text[b:]
    for tok in (SEG, PHRASE_START, PHRASE_END):
        text = text.replace(tok, "")
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r" ([.,;:!?])", r"\1", text)
    return text.strip()
