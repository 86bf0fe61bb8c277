"""The ``grounding track`` and ``grounding track-eval`` commands (the dispatcher is ``grounding.cli``).

    grounding track --video clip.mp4 --prompt "Please segment the person on the bike." --out outputs/track
    grounding track --video frames/ --box "[[120, 40, 260, 300]]" --keyframe 10 --out outputs/track
    grounding track-eval --dataset synthetic --num-videos 20 --prompt-source gt-box
    grounding track-eval --dataset mevis --root data/mevis --split valid_u --model default --out mevis.json

``track`` writes ``DIR/overlay.mp4`` (every frame with the tracked masks, contours, boxes and labels; Motion-JPEG
``.avi`` where this OpenCV cannot write mp4) and ``DIR/tracks.json`` (``TrackResult.to_dict()``: per-frame boxes
and COCO RLE masks, plus the request and timings), with a progress bar on stderr. ``--box`` / ``--points``
prompt objects on the keyframe without the vision-LLM.

``track-eval`` scores J&F (DAVIS) per referring expression (the union of the referred objects) on the synthetic
world's videos, Ref-YouTube-VOS or MeViS (official layouts, see ``data.video_datasets``), and prints a summary;
``--out`` writes every expression's scores as JSON. ``--prompt-source gt-box`` prompts the tracker with the
ground-truth boxes instead of the vision-LLM (evaluates the tracker alone).

Bad input (an unreadable or empty video, frames of different sizes, malformed boxes, an unknown model or dataset)
is reported in one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from grounding.commands import EXIT_BAD_INPUT, _Parser, _stderr, load_predictor, parse_regions
from grounding.errors import GroundingError

DATASETS = ("synthetic", "ref-youtube-vos", "mevis")


# ------------------------------------------------------------------------------------------------ track


def track_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grounding track",
        description="Ground a prompt on a keyframe and track the objects through a video: writes DIR/overlay.mp4 "
        "and DIR/tracks.json (per-frame boxes and COCO RLE masks).",
    )
    p.add_argument("--video", required=True, help="a video file (anything OpenCV reads) or a folder of frame images")
    p.add_argument("--prompt", default=None, help='the request, e.g. "Please segment the red circle."')
    p.add_argument("--box", default=None,
                   help="track without the LLM: JSON boxes [[x1, y1, x2, y2], ...] on the keyframe (pixels)")
    p.add_argument("--points", default=None,
                   help='track without the LLM: JSON points, one list per object: [[[x, y], ...], ...] (foreground)')
    p.add_argument("--keyframe", type=int, default=0, help="frame the objects are grounded on (default: 0)")
    p.add_argument("--model", default="default", help="default | tiny | an exported folder | a .ckpt (default: default)")
    p.add_argument("--engine", default="flow", choices=("flow", "sam2"), help="tracking engine (default: flow)")
    p.add_argument("--sam2-model", default=None, help="local folder with Sam2VideoModel weights (--engine sam2)")
    p.add_argument("--reground-every", type=int, default=None, help="ground the prompt again every K frames")
    p.add_argument("--reground-when-lost", action="store_true", help="ground the prompt again when an object is lost")
    p.add_argument("--max-frames", type=int, default=None, help="track at most N frames each way from the keyframe")
    p.add_argument("--fps", type=float, default=None, help="frame rate of the overlay video (default: the input's, or 10)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", required=True, help="output folder (created)")
    return p


def track_main(argv: list[str] | None = None) -> int:
    """``grounding track``; returns the exit status (0 ok, 2 bad input)."""
    if argv is not None and any(a in ("-h", "--help") for a in argv):
        track_parser().print_help()
        return 0
    try:
        return _track(track_parser().parse_args(argv))
    except (GroundingError, OSError) as e:
        _stderr(f"grounding track: error: {e}")
        return EXIT_BAD_INPUT


def _parse_points(text: str | None) -> list | None:
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise GroundingError(f"--points must be JSON like [[[x, y], ...], ...]: {e}") from None
    ok = isinstance(value, list) and value and all(
        isinstance(obj, list) and obj and all(isinstance(pt, list) and len(pt) == 2 for pt in obj) for obj in value)
    if not ok:
        raise GroundingError("--points must be one list of [x, y] points per object, e.g. [[[120, 80]], [[30, 40]]]")
    return value


def _track(args) -> int:
    from grounding.tracking import track_video
    from grounding.video import open_frames

    t0 = time.perf_counter()
    boxes = parse_regions(args.box, allow_file=False)
    points = _parse_points(args.points)
    interactive = boxes is not None or points is not None
    if args.prompt is not None and not args.prompt.strip():
        raise GroundingError("the prompt is empty")
    if (args.prompt is None) == (not interactive):
        raise GroundingError("give --prompt (the vision-LLM grounds it) or --box / --points (no LLM), not both")
    if args.engine == "sam2" and not args.sam2_model:
        raise GroundingError("--engine sam2 needs --sam2-model DIR (a local folder with Sam2VideoModel weights)")
    for name in ("reground_every", "max_frames"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise GroundingError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    # everything about the request is checked before the (slow) model load
    source = open_frames(args.video)
    n = len(source)
    h, w = source.size
    if not 0 <= args.keyframe < n:
        raise GroundingError(f"--keyframe {args.keyframe} is outside the video ({n} frames)")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _stderr(f"video {args.video}: {n} frames of {w} x {h}" + (f" at {source.fps:g} fps" if source.fps else ""))

    _stderr(f"loading model {args.model!r} ...")
    t1 = time.perf_counter()
    predictor = load_predictor(args.model, args.device)
    tracker = "flow"
    if args.engine == "sam2":
        from grounding.tracking import make_tracker

        tracker = make_tracker("sam2", predictor, sam2_model=args.sam2_model)
    t2 = time.perf_counter()
    _stderr(f"loaded in {t2 - t1:.1f} s; tracking with the {args.engine} engine ...")

    result = track_video(
        predictor, source, args.prompt, keyframe=args.keyframe, boxes=boxes, points=points, engine=tracker,
        reground_every=args.reground_every, reground_when_lost=args.reground_when_lost,
        max_frames=args.max_frames, progress=True,
    )
    t3 = time.perf_counter()
    if args.prompt is not None:
        _stderr(f"answer on frame {args.keyframe}: {result.text!r}")
    visible = {i: sum(f[i].visible for f in result.frames) for i in result.obj_ids}
    _stderr(f"{len(result.obj_ids)} object(s) tracked over {result.num_frames} frames in {t3 - t2:.1f} s "
            f"({result.num_frames / max(t3 - t2, 1e-9):.2f} frames/s); visible on "
            + (", ".join(f"object {i}: {v} frames" for i, v in visible.items()) or "no frame"))

    fps = args.fps or source.fps or 10.0
    video_path = write_overlay_video(out_dir / "overlay.mp4", source, result, fps)
    payload = {"video": str(args.video), "prompt": args.prompt, "boxes": boxes, "points": points,
               "model": args.model, "engine": args.engine}
    payload.update(result.to_dict())
    timings = dict(result.timings, load_model=t2 - t1, wall=time.perf_counter() - t0)
    payload["timings"] = {k: round(float(v), 4) for k, v in timings.items()}
    js = out_dir / "tracks.json"
    js.write_text(json.dumps(payload) + "\n")
    _stderr(f"wrote {video_path} and {js} ({time.perf_counter() - t0:.1f} s in all)")
    print(result.text)
    return 0


def write_overlay_video(path: Path, source, result, fps: float) -> Path:
    """Draw every tracked frame (masks, contours, boxes, labels) and write the video; returns the path written
    (``.avi`` when OpenCV cannot write mp4). Frames are read again from ``source``, one at a time."""
    import warnings

    from demo.visualize import draw_overlay, palette, write_video

    colors = palette(max(1, len(result.obj_ids)))
    color_of = {obj_id: colors[k] for k, obj_id in enumerate(result.obj_ids)}
    by_frame = {f.frame_idx: f for f in result.frames}
    first = min(by_frame) if by_frame else 0

    def frames():
        for t, image in enumerate(source.iter_from(first), start=first):
            tf = by_frame.get(t)
            if tf is None:
                break
            objs = [o for o in tf.objects if o.visible]
            labels = [_label(result, o.obj_id) for o in objs]
            yield draw_overlay(image, masks=[o.mask for o in objs], boxes=[o.box for o in objs], labels=labels,
                               colors=[color_of[o.obj_id] for o in objs] if objs else None)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        write_video(path, frames(), fps=fps)
    for w in caught:
        _stderr(f"note: {w.message}")
        if ".avi" in str(w.message):
            return path.with_suffix(".avi")
    return path


def _label(result, obj_id: int) -> str:
    phrase = result.phrases.get(obj_id)
    return f"{obj_id}: {phrase}" if phrase else str(obj_id)


# -------------------------------------------------------------------------------------------- track-eval


def track_eval_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="grounding track-eval",
        description="J&F (DAVIS) per referring expression, on the union of its objects, over a video dataset.",
    )
    p.add_argument("--dataset", required=True, choices=DATASETS, help="which dataset")
    p.add_argument("--root", default=None, help="dataset folder (Ref-YouTube-VOS / MeViS official layout)")
    p.add_argument("--split", default=None, help="split (synthetic: test; Ref-YouTube-VOS: train; MeViS: valid_u)")
    p.add_argument("--num-videos", type=int, default=20, help="synthetic: number of videos (default: 20)")
    p.add_argument("--num-frames", type=int, default=12, help="synthetic: frames per video (default: 12)")
    p.add_argument("--image-size", type=int, default=256, help="synthetic: frame side in pixels (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="synthetic: seed (default: 0)")
    p.add_argument("--model", default="default", help="default | tiny | an exported folder | a .ckpt (default: default)")
    p.add_argument("--prompt-source", default="llm", choices=("llm", "gt-box"),
                   help="llm: the vision-LLM grounds each expression on frame 0; gt-box: ground-truth boxes")
    p.add_argument("--prompt-template", default="Please segment {expression}.", help="request sent to the LLM")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N expressions")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--out", default=None, help="write per-expression scores as JSON to this file")
    return p


def track_eval_main(argv: list[str] | None = None) -> int:
    """``grounding track-eval``; returns the exit status (0 ok, 2 bad input)."""
    if argv is not None and any(a in ("-h", "--help") for a in argv):
        track_eval_parser().print_help()
        return 0
    try:
        return _track_eval(track_eval_parser().parse_args(argv))
    except (GroundingError, OSError) as e:
        _stderr(f"grounding track-eval: error: {e}")
        return EXIT_BAD_INPUT


def open_dataset(name: str, root: str | None = None, split: str | None = None, num_videos: int = 20,
                 num_frames: int = 12, image_size: int = 256, seed: int = 0):
    """The ``VideoSample`` dataset ``name`` ("synthetic", "ref-youtube-vos", "mevis")."""
    from data.errors import DatasetError

    try:
        if name == "synthetic":
            from data.synthetic import SyntheticVideos

            return SyntheticVideos(split or "test", length=num_videos, num_frames=num_frames, image_size=image_size,
                                   seed=seed)
        if root is None:
            raise GroundingError(f"--dataset {name} needs --root (the dataset folder)")
        if name == "ref-youtube-vos":
            from data.video_datasets import RefYouTubeVOS

            return RefYouTubeVOS(root, split or "train", require_masks=True)
        from data.video_datasets import MeViS

        return MeViS(root, split or "valid_u", require_masks=True)
    except (DatasetError, ValueError) as e:
        if isinstance(e, GroundingError):
            raise
        raise GroundingError(str(e)) from None


def _track_eval(args) -> int:
    from grounding.tracking import evaluate_tracking

    if args.limit is not None and args.limit < 1:
        raise GroundingError(f"--limit must be >= 1, got {args.limit}")
    dataset = open_dataset(args.dataset, args.root, args.split, args.num_videos, args.num_frames, args.image_size,
                           args.seed)
    _stderr(f"dataset {args.dataset}: {len(dataset)} videos; loading model {args.model!r} ...")
    predictor = load_predictor(args.model, args.device)
    scores = evaluate_tracking(
        (dataset[i] for i in range(len(dataset))), predictor, prompt_source=args.prompt_source,
        prompt_template=args.prompt_template, limit=args.limit, progress=True,
    )
    summary = (f"{args.dataset}: J&F {scores.JF:.4f} (J {scores.J:.4f}, F {scores.F:.4f}) over {scores.count} "
               f"expressions, {scores.frames} frames, {scores.seconds:.1f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {"dataset": args.dataset, "split": args.split, "root": args.root, "model": args.model,
                   "prompt_source": args.prompt_source, **scores.to_dict()}
        out.write_text(json.dumps(payload, indent=1) + "\n")
        _stderr(f"wrote {out}")
    print(summary)
    return 0
