"""The tracker interface: a typed state, prompts on any frame, and a streaming propagation generator.

Workflow (as sam2's video predictor, with a typed state instead of a dict of string keys)::

    tracker = FlowTracker(mask_head)                       # or Sam2Tracker.from_pretrained(path)
    state = tracker.init_state()
    tracker.add_object(state, frame_idx=0, obj_id=7, box=[x1, y1, x2, y2])
    for out in tracker.propagate(state, frames, start_frame=0):
        out.frame_idx, out[7].mask, out[7].box, out[7].score     # mask None while object 7 is not visible

Frames: every frame is ``H x W x 3`` uint8 RGB and all frames of a video have one size. Boxes are ``xyxy``
float in absolute pixels of the original frame; points are ``xy`` in the same frame; masks are bool ``H x W``
at the original resolution.

Client object ids (any int the caller chooses) are kept apart from internal indices (0, 1, 2, ... in order of
insertion): :class:`TrackingState` maps one to the other, and engines only ever see indices.

Prompts are *lazy*: :meth:`Tracker.add_object` records a prompt for a frame; the prompt is turned into a mask
when propagation reaches that frame (the frame's pixels are only available then, since frames are streamed).
An object is tracked from its prompt frame on, in the direction of propagation; before that it is reported as
not visible. :meth:`Tracker.propagate` holds no frame beyond what the engine needs (the previous one, plus a
small memory), so memory stays bounded however long the video is.

Re-acquisition: ``propagate(..., reacquire=fn)`` calls ``fn(frame_idx, frame, obj_ids)`` when objects are lost
(and/or every k frames, see :class:`ReacquirePolicy`); ``fn`` returns new prompts (e.g. boxes or masks from a
vision-LLM that grounds the expression again), which condition the objects on that frame.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

__all__ = [
    "FrameError",
    "FrameOutput",
    "ObjectOutput",
    "ObjectRecord",
    "Prompt",
    "Reacquire",
    "ReacquirePolicy",
    "Tracker",
    "TrackingState",
    "as_frame",
    "mask_to_xyxy",
]


class FrameError(ValueError):
    """A video frame is not ``H x W x 3`` uint8, or its size differs from the video's."""


def mask_to_xyxy(mask: np.ndarray) -> np.ndarray | None:
    """Tight ``xyxy`` float32 box of a bool mask (right/bottom exclusive), or None when the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def as_frame(frame: Any, frame_idx: int, video_hw: tuple[int, int] | None) -> np.ndarray:
    """Check one video frame: ``H x W x 3`` uint8 RGB of the video's size. ``FrameError`` naming the frame."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise FrameError(f"frame {frame_idx}: expected an H x W x 3 uint8 RGB array, got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FrameError(f"frame {frame_idx} is empty ({arr.shape[0]} x {arr.shape[1]})")
    if video_hw is not None and arr.shape[:2] != tuple(video_hw):
        raise FrameError(
            f"frame {frame_idx} is {arr.shape[0]} x {arr.shape[1]} (H x W) but the video is "
            f"{video_hw[0]} x {video_hw[1]}: all frames of a video must have one size"
        )
    return arr


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Prompt:
    """What the client gives for one object on one frame (original frame coordinates).

    ``box``: (4,) xyxy; ``points``: K x 2 xy with ``point_labels`` K (1 foreground, 0 background; default all 1);
    ``mask``: bool H x W. A mask is taken as the object's mask on that frame and cannot be combined with a box
    or points; a box and points can be combined.
    """

    box: np.ndarray | None = None
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        box, points, labels, mask = self.box, self.points, self.point_labels, self.mask
        if labels is not None and points is None:
            raise ValueError("point_labels given without points")
        if box is None and points is None and mask is None:
            raise ValueError("a prompt needs a box, points or a mask")
        if mask is not None and (box is not None or points is not None):
            raise ValueError("a mask prompt cannot be combined with a box or points")
        if box is not None:
            box = np.asarray(box, dtype=np.float32).reshape(-1)
            if box.shape != (4,) or not np.all(np.isfinite(box)):
                raise ValueError(f"a box is 4 finite numbers x1, y1, x2, y2 (xyxy pixels), got {self.box!r}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box {box.tolist()} is empty (needs x1 < x2 and y1 < y2)")
            object.__setattr__(self, "box", box)
        if points is not None:
            points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            if len(points) == 0 or not np.all(np.isfinite(points)):
                raise ValueError(f"points must be K >= 1 finite xy pairs, got {self.points!r}")
            labels = np.ones(len(points), np.int64) if labels is None else np.asarray(labels).reshape(-1).astype(np.int64)
            if labels.shape != (len(points),):
                raise ValueError(f"{len(points)} points but {labels.size} point labels")
            if not np.isin(labels, (0, 1)).all():
                raise ValueError(f"point labels are 1 (foreground) or 0 (background), got {labels.tolist()}")
            object.__setattr__(self, "points", points)
            object.__setattr__(self, "point_labels", labels)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"a mask prompt is a bool H x W array, got shape {mask.shape}")
            object.__setattr__(self, "mask", mask if mask.dtype == np.bool_ else mask != 0)

    def check_frame(self, video_hw: tuple[int, int], what: str) -> None:
        """``ValueError`` when the prompt does not fit a ``video_hw`` frame (mask size; box/points outside)."""
        h, w = video_hw
        if self.mask is not None and self.mask.shape != (h, w):
            raise ValueError(f"{what}: mask is {self.mask.shape[0]} x {self.mask.shape[1]} but the video is {h} x {w}")
        if self.box is not None:
            b = self.box
            if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
                raise ValueError(f"{what}: box {b.tolist()} lies outside the {w} x {h} frame")
        if self.points is not None:
            p = self.points
            if np.any(p[:, 0] < 0) or np.any(p[:, 1] < 0) or np.any(p[:, 0] > w) or np.any(p[:, 1] > h):
                raise ValueError(f"{what}: points {p.tolist()} lie outside the {w} x {h} frame")


@dataclass
class ObjectOutput:
    """One object on one frame. ``mask`` bool H x W (original frame) or None when the object is not visible
    (not yet prompted, lost, occluded or out of the frame); ``box`` xyxy float32 (None with the mask);
    ``score`` in [0, 1]: the engine's confidence (0 when not visible)."""

    obj_id: int
    mask: np.ndarray | None
    box: np.ndarray | None = None
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.mask is not None and self.box is None:
            self.box = mask_to_xyxy(self.mask)
            if self.box is None:  # an empty mask is "not visible"
                self.mask = None
                self.score = 0.0

    @property
    def visible(self) -> bool:
        return self.mask is not None

    @classmethod
    def absent(cls, obj_id: int) -> ObjectOutput:
        return cls(obj_id, None, None, 0.0)


@dataclass
class FrameOutput:
    """All objects of the state on one frame, in order of insertion (one entry per object, visible or not)."""

    frame_idx: int
    objects: list[ObjectOutput]

    def __getitem__(self, obj_id: int) -> ObjectOutput:
        for o in self.objects:
            if o.obj_id == obj_id:
                return o
        raise KeyError(f"no object {obj_id} on frame {self.frame_idx}")

    @property
    def obj_ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    @property
    def masks(self) -> dict[int, np.ndarray | None]:
        """obj_id -> mask (None when not visible)."""
        return {o.obj_id: o.mask for o in self.objects}


@dataclass
class ObjectRecord:
    """An object of a tracking state: the client's ``obj_id``, its internal ``index`` and its prompts
    (frame index -> :class:`Prompt`)."""

    obj_id: int
    index: int
    prompts: dict[int, Prompt] = field(default_factory=dict)


E = TypeVar("E")


@dataclass
class TrackingState(Generic[E]):
    """Everything one video's tracking needs between calls. ``video_hw`` is set by the first frame (or the
    first mask prompt); ``engine`` holds the engine's own typed memory (indexed by internal object index)."""

    engine: E
    video_hw: tuple[int, int] | None = None
    objects: list[ObjectRecord] = field(default_factory=list)
    _index_of: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def obj_ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    def index_of(self, obj_id: int) -> int:
        """Internal index of a client object id (``KeyError`` if unknown)."""
        try:
            return self._index_of[obj_id]
        except KeyError:
            raise KeyError(f"no object {obj_id} in this tracking state (objects: {self.obj_ids})") from None

    def record(self, obj_id: int) -> ObjectRecord:
        return self.objects[self.index_of(obj_id)]

    def _add(self, obj_id: int) -> ObjectRecord:
        rec = ObjectRecord(obj_id, len(self.objects))
        self.objects.append(rec)
        self._index_of[obj_id] = rec.index
        return rec


# ------------------------------------------------------------------------------------------ re-acquisition


class Reacquire(Protocol):
    """``fn(frame_idx, frame, obj_ids) -> {obj_id: Prompt or None}``: new prompts for (some of) the objects
    asked about, on this frame; a missing or None entry leaves that object as it is."""

    def __call__(self, frame_idx: int, frame: np.ndarray, obj_ids: Sequence[int]) -> Mapping[int, Prompt | None]: ...


@dataclass
class ReacquirePolicy:
    """When :meth:`Tracker.propagate` calls its ``reacquire`` callback."""

    every: int | None = None
    """Ask about every started object (prompted or seen in this propagation) every ``every`` frames after the
    start frame (None: never)."""
    when_lost: bool = True
    """Ask about objects that were visible and are now lost."""
    lost_retry: int = 5
    """While an object stays lost, ask again every ``lost_retry`` frames (each call may run a vision-LLM)."""

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be >= 1 or None, got {self.every}")
        if self.lost_retry < 1:
            raise ValueError(f"lost_retry must be >= 1, got {self.lost_retry}")


@dataclass
class _ReacquireBook:
    """Per-propagation bookkeeping of re-acquisition (client ids)."""

    started: set[int] = field(default_factory=set)  # objects prompted or visible in this propagation
    seen: set[int] = field(default_factory=set)  # objects visible at least once in this propagation
    last_try: dict[int, int] = field(default_factory=dict)  # obj_id -> step of the last callback about it


# ------------------------------------------------------------------------------------------------ tracker


class Tracker(ABC, Generic[E]):
    """Base class of tracking engines. Subclasses implement :meth:`_new_engine_state`, :meth:`_begin` and
    :meth:`_step`; the workflow (ids, prompts, frame order and checks, re-acquisition) lives here."""

    # ------------------------------------------------------------------ public workflow
    def init_state(self, video_hw: tuple[int, int] | None = None) -> TrackingState[E]:
        """A new, empty tracking state for one video (``video_hw``: (H, W), else taken from the first frame)."""
        hw = None if video_hw is None else (int(video_hw[0]), int(video_hw[1]))
        if hw is not None and (hw[0] <= 0 or hw[1] <= 0):
            raise ValueError(f"video size must be positive, got {hw}")
        return TrackingState(engine=self._new_engine_state(), video_hw=hw)

    def add_object(
        self,
        state: TrackingState[E],
        frame_idx: int,
        obj_id: int,
        box: Any = None,
        points: Any = None,
        point_labels: Any = None,
        mask: Any = None,
    ) -> ObjectRecord:
        """Prompt object ``obj_id`` (new or known) on frame ``frame_idx`` with a box and/or points, or a mask.

        A new prompt on a frame replaces that object's earlier prompt on the same frame. The prompt takes effect
        when propagation reaches ``frame_idx``. Returns the object's record.
        """
        if int(frame_idx) < 0:
            raise ValueError(f"frame_idx must be >= 0, got {frame_idx}")
        prompt = Prompt(box=box, points=points, point_labels=point_labels, mask=mask)
        if state.video_hw is None and prompt.mask is not None:
            state.video_hw = (int(prompt.mask.shape[0]), int(prompt.mask.shape[1]))
        if state.video_hw is not None:
            prompt.check_frame(state.video_hw, f"object {obj_id} on frame {frame_idx}")
        rec = state.record(obj_id) if obj_id in state._index_of else state._add(int(obj_id))
        rec.prompts[int(frame_idx)] = prompt
        self._on_prompt(state, rec.index, int(frame_idx))
        return rec

    def remove_object(self, state: TrackingState[E], obj_id: int) -> None:
        """Forget an object (its prompts and memory); the remaining objects keep their ids."""
        index = state.index_of(obj_id)
        state.objects.pop(index)
        for i, rec in enumerate(state.objects):
            rec.index = i
        state._index_of = {rec.obj_id: rec.index for rec in state.objects}
        self._on_remove(state, index)

    def propagate(
        self,
        state: TrackingState[E],
        frames: Sequence[np.ndarray] | Iterable[np.ndarray],
        start_frame: int = 0,
        reverse: bool = False,
        max_frames: int | None = None,
        reacquire: Reacquire | None = None,
        policy: ReacquirePolicy | None = None,
    ) -> Iterator[FrameOutput]:
        """Track every object from ``start_frame`` forwards (or backwards with ``reverse``), one frame at a time.

        Args:
            frames: either a *sequence* of the video's frames (``len`` and indexing; frame ``t`` is
                ``frames[t]``, read on access, so a lazy sequence keeps memory bounded), or any other *iterable*,
                which must yield the frames in processing order starting at ``start_frame`` (``start_frame``,
                ``start_frame + 1``, ... or, with ``reverse``, ``start_frame``, ``start_frame - 1``, ...).
            start_frame: the first frame processed (and yielded).
            reverse: go towards frame 0.
            max_frames: stop after this many frames (None: to the end of the video / of the iterable).
            reacquire: optional callback for lost objects (see :class:`Reacquire`), called as ``policy`` says.
            policy: when to call ``reacquire`` (default :class:`ReacquirePolicy()`).

        Yields:
            :class:`FrameOutput` for each processed frame, the start frame included.

        Raises:
            FrameError: a frame of another size than the video's, or not ``H x W x 3`` uint8 (a ``ValueError``).
        """
        if start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {start_frame}")
        policy = policy or ReacquirePolicy()
        pairs = self._frame_pairs(frames, int(start_frame), reverse)
        if max_frames is not None:
            pairs = itertools.islice(pairs, max(0, int(max_frames)))
        book = _ReacquireBook()
        started = False
        for step, (t, raw) in enumerate(pairs):
            frame = as_frame(raw, t, state.video_hw)
            if state.video_hw is None:
                state.video_hw = (int(frame.shape[0]), int(frame.shape[1]))
                for rec in state.objects:
                    for f, p in rec.prompts.items():
                        p.check_frame(state.video_hw, f"object {rec.obj_id} on frame {f}")
            if not started:
                self._begin(state, t, reverse)
                started = True
            prompts = {rec.index: rec.prompts[t] for rec in state.objects if t in rec.prompts}
            outputs = self._step(state, t, frame, prompts, None)
            if reacquire is not None and state.objects:
                outputs = self._reacquire(state, t, step, frame, outputs, reacquire, policy, book)
            yield FrameOutput(t, [self._with_id(state, i, outputs.get(i)) for i in range(len(state.objects))])

    # ------------------------------------------------------------------ engine hooks
    @abstractmethod
    def _new_engine_state(self) -> E:
        """The engine's empty memory for a new video."""

    @abstractmethod
    def _begin(self, state: TrackingState[E], start_frame: int, reverse: bool) -> None:
        """A propagation starts at ``start_frame``: reset per-direction memory (keep an object's memory only if it
        holds that object's output on ``start_frame``, so that a propagation can continue where one ended)."""

    @abstractmethod
    def _step(
        self,
        state: TrackingState[E],
        frame_idx: int,
        frame: np.ndarray,
        prompts: Mapping[int, Prompt],
        only: Sequence[int] | None,
    ) -> dict[int, ObjectOutput]:
        """Process one frame: ``prompts`` (internal index -> prompt) condition objects on this frame; the other
        started objects are tracked. Returns internal index -> output (``obj_id`` is filled in by the caller).
        With ``only`` (internal indices), the frame was already processed and is processed again for those
        objects (with their new ``prompts``); other objects' outputs may be omitted."""

    def _on_prompt(self, state: TrackingState[E], index: int, frame_idx: int) -> None:
        """A prompt was added (or replaced) for object ``index`` on ``frame_idx``."""

    def _on_remove(self, state: TrackingState[E], index: int) -> None:
        """Object ``index`` was removed; later indices moved down by one."""

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _with_id(state: TrackingState[E], index: int, out: ObjectOutput | None) -> ObjectOutput:
        obj_id = state.objects[index].obj_id
        if out is None:
            return ObjectOutput.absent(obj_id)
        return ObjectOutput(obj_id, out.mask, out.box, float(out.score) if out.mask is not None else 0.0)

    @staticmethod
    def _frame_pairs(frames, start: int, reverse: bool) -> Iterator[tuple[int, Any]]:
        if isinstance(frames, Sequence) or (hasattr(frames, "__len__") and hasattr(frames, "__getitem__")):
            n = len(frames)
            if n == 0:
                return iter(())
            if start >= n:
                raise ValueError(f"start_frame {start} is past the end of the video ({n} frames)")
            order = range(start, -1, -1) if reverse else range(start, n)
            return ((t, frames[t]) for t in order)
        step = -1 if reverse else 1

        def gen():
            for k, f in enumerate(frames):
                t = start + step * k
                if t < 0:
                    return
                yield t, f

        return gen()

    def _reacquire(self, state, t, step, frame, outputs, reacquire, policy, book) -> dict[int, ObjectOutput]:
        ask: list[int] = []
        for rec in state.objects:
            out = outputs.get(rec.index)
            visible = out is not None and out.mask is not None
            if visible:
                book.seen.add(rec.obj_id)
            if visible or t in rec.prompts:
                book.started.add(rec.obj_id)
            if t in rec.prompts:
                continue  # conditioned on this very frame already
            periodic = (policy.every is not None and step > 0 and step % policy.every == 0
                        and rec.obj_id in book.started)
            lost = policy.when_lost and not visible and rec.obj_id in book.seen
            if lost and step - book.last_try.get(rec.obj_id, -policy.lost_retry) < policy.lost_retry:
                lost = False
            if periodic or lost:
                ask.append(rec.obj_id)
        if not ask:
            return outputs
        for obj_id in ask:
            book.last_try[obj_id] = step
        answers = reacquire(t, frame, list(ask)) or {}
        new: dict[int, Prompt] = {}
        for obj_id, p in answers.items():
            if p is None or obj_id not in ask:
                continue
            if not isinstance(p, Prompt):
                raise TypeError(f"reacquire must return Prompt objects, got {type(p).__name__} for object {obj_id}")
            p.check_frame(state.video_hw, f"re-acquired object {obj_id} on frame {t}")
            rec = state.record(obj_id)
            rec.prompts[t] = p
            self._on_prompt(state, rec.index, t)
            new[rec.index] = p
        if new:
            outputs = dict(outputs)
            outputs.update(self._step(state, t, frame, new, sorted(new)))
        return outputs
