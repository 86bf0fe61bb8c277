"""Typed records that flow from datasets to the model.

Frames: boxes are ``xyxy`` float, absolute pixels of the original image; masks are boolean ``H x W`` at the
original resolution. A sample's text is *structured*: prompts and answers are sequences of plain strings and
references (``RegionRef`` in prompts, ``GroundRef`` in answers). How a reference is written as tokens
(``<region>``, ``<p>..</p>``, a box codec, ``[SEG]``) is decided by the model's processor in ``grounding``,
so datasets never depend on the token vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence, Union

import numpy as np


class Task(str, Enum):
    """What a turn asks for (used by templates, samplers and evaluation)."""

    RES = "res"  # referring segmentation, one target
    RES_MULTI = "res_multi"  # several targets, one [SEG] each
    RES_NONE = "res_none"  # no target: the answer has no [SEG]
    REASON = "reason"  # reasoning-style description (relations, superlatives)
    REC = "rec"  # referring expression comprehension: box as text
    GCG = "gcg"  # grounded caption / phrase grounding
    REGION = "region"  # question about a user-given region


@dataclass(frozen=True)
class RegionRef:
    """A user-given region in a prompt: ``index`` into ``GroundingSample.regions``."""

    index: int


@dataclass(frozen=True)
class GroundRef:
    """A grounded object in an answer: ``index`` into ``GroundingSample.targets``.

    ``phrase``: written as a phrase span (``<p>phrase</p>``) if not None; ``box``: the target's box is written
    as text; ``seg``: a ``[SEG]`` token is emitted whose hidden state decodes the target's mask.
    """

    index: int
    phrase: str | None = None
    box: bool = False
    seg: bool = True


PromptPart = Union[str, RegionRef]
AnswerPart = Union[str, GroundRef]


@dataclass(frozen=True)
class Turn:
    """One user prompt and the assistant's answer."""

    prompt: tuple[PromptPart, ...]
    answer: tuple[AnswerPart, ...]
    task: Task = Task.RES
    expression: str | None = None
    """The referring expression alone (e.g. "the red circle"), when the prompt has one: exporters write it
    as the ref's sentence, and predictors use it as the phrase of segments that have no ``<p>`` phrase."""

    def __post_init__(self):
        if isinstance(self.prompt, str) or isinstance(self.answer, str):
            raise TypeError("Turn.prompt and Turn.answer are sequences of parts, not strings: wrap them in a tuple")
        object.__setattr__(self, "prompt", tuple(self.prompt))
        object.__setattr__(self, "answer", tuple(self.answer))
        object.__setattr__(self, "task", Task(self.task))

    @property
    def grounds(self) -> list[GroundRef]:
        return [p for p in self.answer if isinstance(p, GroundRef)]

    @property
    def target_indices(self) -> list[int]:
        """Indices of the targets this turn's answer grounds, in answer order."""
        return [g.index for g in self.grounds]

    def prompt_text(self, region_token: str = "<region>") -> str:
        return "".join(p if isinstance(p, str) else region_token for p in self.prompt)


@dataclass
class Target:
    """One object with exact ground truth. ``box`` xyxy absolute pixels; ``mask`` bool H x W or None."""

    box: np.ndarray
    mask: np.ndarray | None = None
    label: str = ""

    def __post_init__(self):
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)


@dataclass
class GroundingSample:
    """An image with one or more turns about it.

    ``image``: H x W x 3 uint8 RGB. ``targets``: objects the answers refer to. ``regions``: R x 4 xyxy boxes
    for the ``RegionRef`` parts of the prompts. ``source``: dataset name and record id, for error messages.
    ``ignore``: optional bool H x W of pixels left out of evaluation (e.g. ReasonSeg's "ignore" polygons).
    """

    image: np.ndarray
    turns: list[Turn]
    targets: list[Target] = field(default_factory=list)
    regions: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    source: str = ""
    ignore: np.ndarray | None = None

    def __post_init__(self):
        self.regions = np.asarray(self.regions, dtype=np.float32).reshape(-1, 4)
        self.validate()

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    def validate(self) -> None:
        """Raise ``ValueError`` naming the record if references and ground truth disagree."""
        where = f" in sample {self.source!r}" if self.source else ""
        img = self.image
        if not (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8):
            raise ValueError(f"image must be an H x W x 3 uint8 array{where}, got {getattr(img, 'shape', type(img))}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise ValueError(f"image is empty{where}")
        for t in self.turns:
            for g in t.grounds:
                if not 0 <= g.index < len(self.targets):
                    raise ValueError(f"answer refers to target {g.index} but there are {len(self.targets)}{where}")
                if g.seg and self.targets[g.index].mask is None:
                    raise ValueError(f"answer asks for a mask of target {g.index}, which has none{where}")
            for p in t.prompt:
                if isinstance(p, RegionRef) and not 0 <= p.index < len(self.regions):
                    raise ValueError(f"prompt refers to region {p.index} but there are {len(self.regions)}{where}")
        if self.ignore is not None:
            self.ignore = np.asarray(self.ignore, dtype=bool)
            if self.ignore.shape != img.shape[:2]:
                raise ValueError(f"ignore mask is {self.ignore.shape} but the image is {img.shape[:2]}{where}")
        for i, tg in enumerate(self.targets):
            if tg.mask is not None and tg.mask.shape != img.shape[:2]:
                raise ValueError(
                    f"target {i} mask is {tg.mask.shape} but the image is {img.shape[:2]}{where}"
                )


@dataclass
class VideoTarget:
    """One object through a video. ``masks``: T x H x W bool (all False on frames where it is not visible);
    ``obj_id``: the dataset's / client's object id (not an index)."""

    obj_id: int
    masks: np.ndarray
    label: str = ""

    def __post_init__(self):
        self.masks = np.asarray(self.masks, dtype=bool)
        if self.masks.ndim != 3:
            raise ValueError(f"VideoTarget {self.obj_id}: masks must be T x H x W, got {self.masks.shape}")

    @property
    def visible(self) -> np.ndarray:
        """(T,) bool: frames where the object has at least one pixel."""
        return self.masks.reshape(len(self.masks), -1).any(axis=1)

    def boxes(self) -> np.ndarray:
        """T x 4 xyxy boxes (absolute pixels; NaN where not visible)."""
        out = np.full((len(self.masks), 4), np.nan, np.float32)
        for t, m in enumerate(self.masks):
            ys, xs = np.nonzero(m)
            if len(xs):
                out[t] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return out


@dataclass(frozen=True)
class VideoExpression:
    """A referring expression about one or several objects of a video (``obj_ids`` into its targets)."""

    text: str
    obj_ids: tuple[int, ...]
    exp_id: str = ""


@dataclass
class VideoSample:
    """A video with per-frame instance masks and referring expressions.

    ``frames``: a sequence of H x W x 3 uint8 RGB arrays (a list, or a lazy sequence that reads on access so a
    long video need not sit in memory). ``targets``: the objects, by ``obj_id``.
    """

    frames: "Sequence[np.ndarray]"
    targets: list[VideoTarget]
    expressions: list[VideoExpression] = field(default_factory=list)
    source: str = ""

    def __post_init__(self):
        ids = [t.obj_id for t in self.targets]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate obj_id in video {self.source!r}: {ids}")
        for e in self.expressions:
            unknown = set(e.obj_ids) - set(ids)
            if unknown:
                raise ValueError(f"expression {e.text!r} refers to unknown objects {sorted(unknown)} in {self.source!r}")
        for t in self.targets:
            if len(t.masks) != len(self.frames):
                raise ValueError(
                    f"object {t.obj_id} has {len(t.masks)} mask frames but video {self.source!r} has {len(self.frames)}"
                )

    def target(self, obj_id: int) -> VideoTarget:
        for t in self.targets:
            if t.obj_id == obj_id:
                return t
        raise KeyError(f"no object {obj_id} in video {self.source!r}")
