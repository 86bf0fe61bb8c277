"""Referring video object segmentation and tracking: the vision-LLM grounds, a tracker carries the masks.

    from grounding import GroundingPredictor
    from grounding.tracking import track_video
    predictor = GroundingPredictor.from_pretrained("default")
    result = track_video(predictor, "clip.mp4", "Please segment the red circle.", keyframe=0)
    result.frames[t].objects[0].mask        # bool H x W, or None while the object is not visible
    result.to_dict()                        # per-frame COCO RLE masks, JSON-ready

The vision-LLM answers the prompt about the keyframe; each segment it grounds (one or several, or none) becomes
an object (``obj_id`` 1, 2, ...), tracked forwards to the end of the video and, from a keyframe in the middle,
backwards to frame 0. Interactive use needs no LLM: give ``boxes`` / ``points`` / ``masks`` on the keyframe
(``predictor`` may then be None if a ``tracker`` is given). Optionally the LLM grounds the prompt again every
k frames or when an object is lost (``reground_every``, ``reground_when_lost``).

Frames are streamed (a video file, a folder of frames or a list of arrays, see ``grounding.video``); the result
keeps masks as COCO RLE, so it stays small for long videos (``.mask`` decodes on access).

:func:`evaluate_tracking` scores J&F (DAVIS) per referring expression, on the union of the objects it refers
to, over ``VideoSample`` datasets (``SyntheticVideos``, ``RefYouTubeVOS``, ``MeViS``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data.masks import decode_rle, encode_rle
from grounding.errors import InvalidPromptError, InvalidRegionError
from grounding.video import FrameSource, InvalidVideoError, open_frames
from heads.tracking.base import FrameError, FrameOutput, Prompt, ReacquirePolicy, Tracker, mask_to_xyxy

log = logging.getLogger(__name__)

__all__ = [
    "TrackFrame",
    "TrackResult",
    "TrackedObject",
    "evaluate_tracking",
    "make_tracker",
    "track_video",
]

ENGINES = ("flow", "sam2")


# ---------------------------------------------------------------------------------------------- results


@dataclass
class TrackedObject:
    """One object on one frame: the client's ``obj_id``; ``box`` xyxy float (original pixels) or None;
    ``score`` in [0, 1]; the mask is kept as COCO ``rle`` and decoded by :attr:`mask` (None when not visible)."""

    obj_id: int
    rle: dict | None
    box: np.ndarray | None
    score: float = 0.0

    @property
    def visible(self) -> bool:
        return self.rle is not None

    @property
    def mask(self) -> np.ndarray | None:
        """bool H x W at the original resolution, or None while the object is not visible."""
        return None if self.rle is None else decode_rle(self.rle)

    def to_dict(self) -> dict:
        return {
            "obj_id": int(self.obj_id),
            "box": None if self.box is None else [round(float(v), 2) for v in self.box],
            "mask": self.rle,
            "score": round(float(self.score), 4),
        }


@dataclass
class TrackFrame:
    """All objects on one frame (one entry per object, visible or not)."""

    frame_idx: int
    objects: list[TrackedObject]

    def __getitem__(self, obj_id: int) -> TrackedObject:
        for o in self.objects:
            if o.obj_id == obj_id:
                return o
        raise KeyError(f"no object {obj_id} on frame {self.frame_idx}")

    def to_dict(self) -> dict:
        return {"frame_idx": int(self.frame_idx), "objects": [o.to_dict() for o in self.objects]}


@dataclass
class TrackResult:
    """Tracks of one video. ``frames``: processed frames in frame order; ``obj_ids`` with their ``phrases``
    (the grounded phrase or the expression; None for interactive prompts); ``video_size`` (H, W);
    ``keyframe``; ``text``: the vision-LLM's answer on the keyframe ("" without the LLM)."""

    frames: list[TrackFrame]
    obj_ids: list[int]
    video_size: tuple[int, int]
    keyframe: int = 0
    phrases: dict[int, str | None] = field(default_factory=dict)
    text: str = ""
    fps: float | None = None
    engine: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def masks(self, obj_id: int) -> np.ndarray:
        """T x H x W bool masks of one object over the processed frames (all False where not visible)."""
        out = np.zeros((len(self.frames), *self.video_size), bool)
        for t, f in enumerate(self.frames):
            o = f[obj_id]
            if o.rle is not None:
                out[t] = decode_rle(o.rle)
        return out

    def union_masks(self) -> np.ndarray:
        """T x H x W bool: per frame, the union of every object's mask (how RVOS scores an expression)."""
        out = np.zeros((len(self.frames), *self.video_size), bool)
        for t, f in enumerate(self.frames):
            for o in f.objects:
                if o.rle is not None:
                    out[t] |= decode_rle(o.rle)
        return out

    def to_dict(self) -> dict:
        return {
            "video_size": [int(v) for v in self.video_size],
            "num_frames": len(self.frames),
            "fps": self.fps,
            "keyframe": int(self.keyframe),
            "engine": self.engine,
            "text": self.text,
            "objects": [{"obj_id": int(i), "phrase": self.phrases.get(i)} for i in self.obj_ids],
            "frames": [f.to_dict() for f in self.frames],
        }


def _tracked(out: FrameOutput) -> TrackFrame:
    objs = [
        TrackedObject(o.obj_id, None if o.mask is None else encode_rle(o.mask), o.box, o.score if o.visible else 0.0)
        for o in out.objects
    ]
    return TrackFrame(out.frame_idx, objs)


# ---------------------------------------------------------------------------------------------- tracking


def make_tracker(engine: str | Tracker = "flow", predictor=None, mask_head=None, sam2_model: str | None = None,
                 **config) -> Tracker:
    """A tracker: an engine name or a ready ``Tracker`` (returned as is).

    ``"flow"``: :class:`heads.tracking.FlowTracker` on ``mask_head`` (default: the predictor's mask decoder);
    ``"sam2"``: :class:`heads.tracking.Sam2Tracker` loaded from the local folder ``sam2_model``.
    ``config``: fields of the engine's config dataclass.
    """
    if isinstance(engine, Tracker):
        return engine
    if engine == "flow":
        from heads.tracking.flow import FlowTracker, FlowTrackerConfig

        head = mask_head if mask_head is not None else (predictor.model.mask_head if predictor is not None else None)
        if head is None:
            raise ValueError("the flow engine needs a mask head: pass a predictor or mask_head")
        return FlowTracker(head, FlowTrackerConfig(**config))
    if engine == "sam2":
        from heads.tracking.sam2 import Sam2Tracker, Sam2TrackerConfig

        if not sam2_model:
            raise ValueError("the sam2 engine needs sam2_model: a local folder with Sam2VideoModel weights")
        device = str(getattr(predictor, "device", "cpu"))
        return Sam2Tracker.from_pretrained(sam2_model, device=device, config=Sam2TrackerConfig(**config))
    raise ValueError(f"unknown tracking engine {engine!r}; choose one of {ENGINES} or pass a Tracker")


def _interactive_prompts(boxes, points, point_labels, masks, obj_ids) -> list[tuple[int, Prompt]]:
    items: list[dict[str, Any]] = []
    if boxes is not None:
        b = np.asarray(boxes, dtype=np.float32)
        for box in b.reshape(-1, 4):
            items.append({"box": box})
    if points is not None:
        pts = list(points)
        if len(pts) and np.asarray(pts[0]).ndim == 1:  # one object's K x 2 given flat
            pts = [np.asarray(pts, np.float32)]
        labels = list(point_labels) if point_labels is not None else [None] * len(pts)
        if len(labels) != len(pts):
            raise InvalidRegionError(f"{len(pts)} point sets but {len(labels)} label sets")
        if items and len(items) != len(pts):
            raise InvalidRegionError(f"{len(items)} boxes but {len(pts)} point sets: give one of each per object")
        if not items:
            items = [{} for _ in pts]
        for it, p, lab in zip(items, pts, labels):
            it["points"], it["point_labels"] = p, lab
    if masks is not None:
        if items:
            raise InvalidRegionError("give masks alone, not with boxes or points")
        items = [{"mask": m} for m in masks]
    ids = list(obj_ids) if obj_ids is not None else list(range(1, len(items) + 1))
    if len(ids) != len(items) or len(set(ids)) != len(ids):
        raise InvalidRegionError(f"obj_ids {ids} must be {len(items)} distinct ids, one per prompted object")
    out = []
    for obj_id, it in zip(ids, items):
        try:
            out.append((int(obj_id), Prompt(**it)))
        except ValueError as e:
            raise InvalidRegionError(f"object {obj_id}: {e}") from None
    return out


def _prompt_from_segment(seg, hw: tuple[int, int]) -> Prompt | None:
    if seg.mask is not None and np.asarray(seg.mask).any():
        return Prompt(mask=np.asarray(seg.mask, bool))
    if seg.box is not None:
        b = np.asarray(seg.box, np.float32)
        h, w = hw
        b = np.clip(b, 0, [w, h, w, h])
        if b[2] > b[0] and b[3] > b[1]:
            return Prompt(box=b)
    return None


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class _Regrounder:
    """The ``reacquire`` callback: ground the prompt again on the frame, and match the new segments to the asked
    objects by their last known boxes (greedy, highest box IoU first, then nearest centre), skipping segments that
    cover objects still visible."""

    def __init__(self, predictor, prompt: str, hw: tuple[int, int]):
        self.predictor, self.prompt, self.hw = predictor, prompt, hw
        self.last_box: dict[int, np.ndarray] = {}
        self.visible_box: dict[int, np.ndarray] = {}
        self.calls = 0

    def observe(self, out: FrameOutput) -> None:
        self.visible_box = {}
        for o in out.objects:
            if o.box is not None:
                self.last_box[o.obj_id] = o.box
                self.visible_box[o.obj_id] = o.box

    def __call__(self, frame_idx: int, frame: np.ndarray, obj_ids: Sequence[int]) -> dict[int, Prompt]:
        self.calls += 1
        result = self.predictor.predict(frame, self.prompt)
        cands = []
        for seg in result.segments:
            p = _prompt_from_segment(seg, self.hw)
            box = seg.box if seg.box is not None else (None if seg.mask is None else mask_to_xyxy(seg.mask))
            if p is None or box is None:
                continue
            box = np.asarray(box, np.float32)
            if any(_box_iou(box, vb) > 0.5 for oid, vb in self.visible_box.items() if oid not in obj_ids):
                continue  # that segment is an object we still track
            cands.append((p, box))
        pairs = []
        for k, (_, box) in enumerate(cands):
            for obj_id in obj_ids:
                ref = self.last_box.get(obj_id)
                if ref is None:
                    pairs.append((0.0, 0.0, k, obj_id))
                    continue
                dist = float(np.hypot(*(((box[:2] + box[2:]) - (ref[:2] + ref[2:])) / 2)))
                pairs.append((-_box_iou(box, ref), dist, k, obj_id))
        out: dict[int, Prompt] = {}
        used = set()
        for _, _, k, obj_id in sorted(pairs):
            if k in used or obj_id in out:
                continue
            used.add(k)
            out[obj_id] = cands[k][0]
        return out


def track_video(
    predictor,
    frames,
    prompt: str | None = None,
    *,
    keyframe: int = 0,
    boxes=None,
    points=None,
    point_labels=None,
    masks=None,
    obj_ids: Sequence[int] | None = None,
    engine: str | Tracker = "flow",
    tracker: Tracker | None = None,
    reground_every: int | None = None,
    reground_when_lost: bool = False,
    max_frames: int | None = None,
    progress: bool | Callable[[int], None] = False,
) -> TrackResult:
    """Ground ``prompt`` on ``frames[keyframe]`` with the vision-LLM and track every grounded object through
    the video (forwards, and backwards from a keyframe in the middle).

    Args:
        predictor: a ``GroundingPredictor`` (its ``predict`` grounds the prompt; its mask head drives the flow
            engine), or None for interactive tracking with a ``tracker``.
        frames: a video file (anything OpenCV reads), a folder of frame images, a list of ``H x W x 3`` arrays,
            or a ``grounding.video.FrameSource``.
        prompt: the request for the vision-LLM (e.g. "Please segment the person on the bike."). Leave it None
            and give ``boxes``, ``points`` or ``masks`` (original pixels, on the keyframe) to track without the LLM.
        keyframe: the frame the objects are grounded / prompted on.
        boxes: N x 4 xyxy; ``points``: one K x 2 xy array per object (``point_labels``: one K array per object,
            1 foreground / 0 background); ``masks``: one bool H x W per object. Object ids are ``obj_ids`` or
            1..N.
        engine: "flow" (optical flow + the predictor's mask decoder) or a ``Tracker`` instance
            (e.g. ``Sam2Tracker.from_pretrained(path)``); ``tracker`` is the same, by keyword.
        reground_every: ground the prompt again every k frames (needs the LLM and a prompt).
        reground_when_lost: ground the prompt again when an object is lost (at most every 5 frames).
        max_frames: track at most this many frames in each direction from the keyframe.
        progress: True for a tqdm bar on stderr, or a callable receiving the number of frames done.

    Returns:
        TrackResult: every processed frame, in frame order. A prompt that grounds nothing gives a result
        with no objects (and every frame empty), not an error.

    Raises:
        InvalidVideoError: unreadable video, no frames, frames of different sizes.
        InvalidPromptError: no prompt and no interactive prompts, or an empty prompt.
        InvalidRegionError: malformed boxes / points / masks.
    """
    t_start = time.perf_counter()
    source: FrameSource = open_frames(frames)
    hw = source.size
    n = len(source)
    if not 0 <= keyframe < n:
        raise InvalidVideoError(f"keyframe {keyframe} is outside the video ({n} frames)")
    interactive = boxes is not None or points is not None or masks is not None
    if prompt is not None and not str(prompt).strip():
        raise InvalidPromptError("the prompt is empty")
    if prompt is None and not interactive:
        raise InvalidPromptError("give a prompt for the vision-LLM, or boxes / points / masks to track")
    if prompt is not None and interactive:
        raise InvalidPromptError("give either a prompt (the LLM grounds it) or boxes / points / masks, not both")
    if prompt is not None and predictor is None:
        raise InvalidPromptError("a text prompt needs a predictor (the vision-LLM)")
    engine_name = engine if tracker is None and isinstance(engine, str) else type(tracker or engine).__name__
    tracker = make_tracker(tracker if tracker is not None else engine, predictor)

    key_image = source[keyframe]
    text, phrases = "", {}
    if prompt is not None:
        grounded = predictor.predict(key_image, prompt)
        text = grounded.text
        start_prompts = []
        for seg in grounded.segments:
            p = _prompt_from_segment(seg, hw)
            if p is not None:
                obj_id = len(start_prompts) + 1
                start_prompts.append((obj_id, p))
                phrases[obj_id] = seg.phrase
    else:
        start_prompts = _interactive_prompts(boxes, points, point_labels, masks, obj_ids)
        phrases = {obj_id: None for obj_id, _ in start_prompts}
    t_grounded = time.perf_counter()

    state = tracker.init_state(hw)
    for obj_id, p in start_prompts:
        try:
            tracker.add_object(state, keyframe, obj_id, box=p.box, points=p.points, point_labels=p.point_labels,
                               mask=p.mask)
        except ValueError as e:
            raise InvalidRegionError(str(e)) from None
    ids = [obj_id for obj_id, _ in start_prompts]

    regrounder = None
    policy = None
    if prompt is not None and (reground_every or reground_when_lost):
        regrounder = _Regrounder(predictor, prompt, hw)
        policy = ReacquirePolicy(every=reground_every, when_lost=reground_when_lost)

    limit_fwd = n - keyframe if max_frames is None else min(n - keyframe, int(max_frames))
    limit_bwd = keyframe if max_frames is None else min(keyframe, int(max_frames))
    bar, tick = _progress(progress, limit_fwd + limit_bwd)
    results: dict[int, TrackFrame] = {}
    try:
        passes = [(False, limit_fwd)] + ([(True, limit_bwd + 1)] if limit_bwd > 0 else [])
        for reverse, count in passes:
            if not ids:  # nothing grounded: every frame is empty
                order = range(keyframe, keyframe - count, -1) if reverse else range(keyframe, keyframe + count)
                for t in order:
                    if t not in results:
                        results[t] = TrackFrame(t, [])
                        tick()
                continue
            stream = source.iter_from(keyframe, reverse=reverse)
            for out in tracker.propagate(state, stream, start_frame=keyframe, reverse=reverse, max_frames=count,
                                         reacquire=regrounder, policy=policy):
                if regrounder is not None:
                    regrounder.observe(out)
                if out.frame_idx not in results:
                    results[out.frame_idx] = _tracked(out)
                    tick()
    except FrameError as e:
        raise InvalidVideoError(f"{source.name}: {e}") from None
    finally:
        if bar is not None:
            bar.close()
    t_done = time.perf_counter()
    timings = {"ground": t_grounded - t_start, "track": t_done - t_grounded, "total": t_done - t_start}
    if regrounder is not None:
        timings["reground_calls"] = float(regrounder.calls)
    return TrackResult(
        frames=[results[t] for t in sorted(results)],
        obj_ids=ids,
        video_size=hw,
        keyframe=keyframe,
        phrases=phrases,
        text=text,
        fps=source.fps,
        engine=str(engine_name),
        timings=timings,
    )


def _progress(progress, total: int):
    if callable(progress):
        done = [0]

        def tick():
            done[0] += 1
            progress(done[0])

        return None, tick
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="frame", desc="tracking", file=sys.stderr)
        return bar, lambda: bar.update(1)
    return None, lambda: None


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class TrackingScores:
    """J&F of a dataset: means over referring expressions, and per-expression rows."""

    J: float
    F: float
    JF: float
    count: int
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0

    def to_dict(self) -> dict:
        return {"J": self.J, "F": self.F, "JF": self.JF, "count": self.count, "frames": self.frames,
                "seconds": round(self.seconds, 2), "rows": self.rows}


def evaluate_tracking(
    dataset: Iterable,
    predictor=None,
    *,
    prompt_source: str = "llm",
    prompt_template: str = "Please segment {expression}.",
    engine: str | Tracker = "flow",
    limit: int | None = None,
    progress: bool = False,
    **track_kwargs,
) -> TrackingScores:
    """J&F (DAVIS-2017, as ``grounding.metrics.j_and_f``) per referring expression of ``VideoSample``s.

    The prediction of an expression is the union of its tracked objects' masks on every frame, scored against
    the union of the objects it refers to (how Ref-YouTube-VOS / MeViS papers score video MLLMs). Expressions
    without ground-truth objects (unlabelled splits) are skipped.

    ``prompt_source``: ``"llm"`` grounds ``prompt_template`` on frame 0 with the predictor's vision-LLM;
    ``"gt-box"`` prompts the tracker with each referred object's ground-truth box on its first visible frame
    (evaluates the tracker alone). ``limit``: at most this many expressions.
    """
    from grounding.metrics import JAndF, j_and_f

    if prompt_source not in ("llm", "gt-box"):
        raise ValueError(f"prompt_source must be 'llm' or 'gt-box', got {prompt_source!r}")
    if prompt_source == "llm" and predictor is None:
        raise ValueError("prompt_source='llm' needs a predictor")
    metric = JAndF()
    rows: list[dict] = []
    t0 = time.perf_counter()
    frames_done = 0
    bar = None
    if progress:
        import sys

        from tqdm.auto import tqdm

        bar = tqdm(unit="expression", desc="evaluating", file=sys.stderr, total=limit)
    try:
        for sample in dataset:
            for expr in sample.expressions:
                if limit is not None and len(rows) >= limit:
                    return _scores(metric, rows, t0, frames_done)
                if not expr.obj_ids:
                    continue
                gt = np.zeros((len(sample.frames), *sample.targets[0].masks.shape[1:]), bool)
                for obj_id in expr.obj_ids:
                    gt |= sample.target(obj_id).masks
                if prompt_source == "llm":
                    text = prompt_template.format(expression=expr.text)
                    res = track_video(predictor, sample.frames, text, engine=engine, **track_kwargs)
                    pred = res.union_masks()
                else:
                    pred = _track_from_gt_boxes(sample, expr.obj_ids, predictor, engine, **track_kwargs)
                pred = pred[: len(gt)]
                if len(pred) < len(gt):
                    pred = np.concatenate([pred, np.zeros((len(gt) - len(pred), *gt.shape[1:]), bool)])
                frames_done += len(gt)
                s = j_and_f(pred, gt)
                metric.update(pred, gt)
                rows.append({"video": sample.source, "expression": expr.text, "exp_id": expr.exp_id,
                             "obj_ids": list(expr.obj_ids), **{k: round(v, 4) for k, v in s.items()}})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return _scores(metric, rows, t0, frames_done)


def _scores(metric, rows, t0, frames) -> TrackingScores:
    if not rows:
        return TrackingScores(float("nan"), float("nan"), float("nan"), 0, rows, time.perf_counter() - t0, frames)
    out = {k: float(v) for k, v in metric.compute().items()}
    return TrackingScores(out["J"], out["F"], out["JF"], len(rows), rows, time.perf_counter() - t0, frames)


def _track_from_gt_boxes(sample, obj_ids: Sequence[int], predictor, engine, **track_kwargs) -> np.ndarray:
    """Track the referred objects from their ground-truth boxes on their first visible frames (one tracker
    state, prompts on different frames allowed); returns the T x H x W union of the predicted masks."""
    tracker = make_tracker(engine, predictor, mask_head=track_kwargs.pop("mask_head", None))
    t_len = len(sample.frames)
    h, w = sample.targets[0].masks.shape[1:]
    state = tracker.init_state((h, w))
    first = []
    for obj_id in obj_ids:
        tg = sample.target(obj_id)
        vis = np.flatnonzero(tg.visible)
        if len(vis) == 0:
            continue
        f0 = int(vis[0])
        tracker.add_object(state, f0, obj_id, box=tg.boxes()[f0])
        first.append(f0)
    pred = np.zeros((t_len, h, w), bool)
    if not first:
        return pred
    for out in tracker.propagate(state, sample.frames, start_frame=min(first)):
        for o in out.objects:
            if o.mask is not None:
                pred[out.frame_idx] |= o.mask
    return pred

