"""Video tracking: frames per second of each engine, and J&F against re-segmenting every frame; prints a table.

    python benchmarks/track_speed.py                 # LiteMedSAM (the README's numbers), ~10 min on 2 idle cores
    python benchmarks/track_speed.py --quick         # a smoke run (2 videos)
    python benchmarks/track_speed.py --sam2 DIR      # also a real SAM 2 checkpoint (local Sam2VideoModel folder)

Every method is prompted with the ground-truth box of each object on its first visible frame (no vision-LLM), on
synthetic-world videos (``SyntheticVideos``):

- ``flow``: ``heads.tracking.FlowTracker`` on LiteMedSAM (the embedded default model's mask decoder);
- ``per-frame box``: re-segmenting every frame independently with LiteMedSAM from the first frame's box (the
  baseline the tracker must beat);
- ``sam2 (tiny, random)``: ``heads.tracking.Sam2Tracker`` on a tiny random ``Sam2VideoModel``: the engine's
  machinery only (its masks are noise, so no J&F), unless ``--sam2 DIR`` gives real weights.

Speed: frames per second over ``--speed-videos`` videos of 256 px and 512 px frames (all objects of a video
tracked together; model loading excluded). Accuracy: DAVIS J&F per object (then averaged) on the held-out
``test`` split, keeping only videos where an object is partly or wholly hidden by another at some frame; at
256 px. For the accuracy part the image encoder's outputs are cached between methods (it is the same for all of
them), so it costs one encoder pass per frame. Other busy processes slow everything down (2 cores): compare
numbers from one quiet run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from data.synthetic import SyntheticVideos  # noqa: E402
from data.transforms import ImageTransform  # noqa: E402
from grounding.metrics import j_and_f  # noqa: E402
from heads.sam import ENCODER_PRECISIONS, SamConfig, SamMaskHead, build_sam_head  # noqa: E402
from heads.tracking import FlowTracker, FlowTrackerConfig, Tracker  # noqa: E402


class CachedEncoder:
    """Caches a mask head's image-encoder outputs by input content (the accuracy part runs several methods on the
    same frames)."""

    def __init__(self, head: SamMaskHead):
        self.head = head
        self.cache: dict[str, torch.Tensor] = {}
        self.misses = 0

    def __enter__(self):
        self._orig = self.head.encode_image

        def encode(x):
            key = hashlib.sha1(x.detach().cpu().numpy().tobytes()).hexdigest()
            if key not in self.cache:
                self.misses += 1
                self.cache[key] = self._orig(x)
            return self.cache[key]

        self.head.encode_image = encode
        return self

    def __exit__(self, *exc):
        self.head.encode_image = self._orig


class PerFrameBox:
    """The baseline: every frame segmented on its own from each object's first box (one decoder call per frame
    for all objects)."""

    name = "per-frame box"

    def __init__(self, head: SamMaskHead):
        self.head = head
        mean = tuple(float(v) for v in head.pixel_mean.flatten())
        std = tuple(float(v) for v in head.pixel_std.flatten())
        self.transform = ImageTransform(head.image_size, mean, std)

    @torch.no_grad()
    def run(self, sample, prompts) -> dict[int, np.ndarray]:
        preds = {obj_id: np.zeros((len(sample.frames), *sample.frames[0].shape[:2]), bool) for obj_id in prompts}
        for t, frame in enumerate(sample.frames):
            ids = [i for i, (f0, _) in prompts.items() if f0 <= t]
            if not ids:
                continue
            x, geo = self.transform(frame)
            emb = self.head.encode_image(x[None])
            boxes = torch.from_numpy(np.concatenate([geo.boxes_to_input(prompts[i][1]) for i in ids]))
            pred = self.head.decode(emb, torch.zeros(len(ids), dtype=torch.long), boxes=boxes)
            masks = geo.logits_to_original(pred.low_res_logits.float())[:, 0].numpy() > 0
            for k, i in enumerate(ids):
                preds[i][t] = masks[k]
        return preds


class Engine:
    """A ``Tracker`` run the way the benchmark needs it (all objects of a video in one state)."""

    def __init__(self, name: str, tracker: Tracker):
        self.name, self.tracker = name, tracker

    def run(self, sample, prompts) -> dict[int, np.ndarray]:
        preds = {obj_id: np.zeros((len(sample.frames), *sample.frames[0].shape[:2]), bool) for obj_id in prompts}
        state = self.tracker.init_state()
        for obj_id, (f0, box) in prompts.items():
            self.tracker.add_object(state, f0, obj_id, box=box)
        start = min(f0 for f0, _ in prompts.values())
        for out in self.tracker.propagate(state, sample.frames, start_frame=start):
            for o in out.objects:
                if o.mask is not None:
                    preds[o.obj_id][out.frame_idx] = o.mask
        return preds


def first_boxes(sample) -> dict[int, tuple[int, np.ndarray]]:
    """obj_id -> (first visible frame, its ground-truth box xyxy)."""
    out = {}
    for tg in sample.targets:
        visible = np.flatnonzero(tg.visible)
        if len(visible):
            f0 = int(visible[0])
            out[tg.obj_id] = (f0, tg.boxes()[f0])
    return out


def occluded_videos(count: int, num_frames: int, size: int, seed: int, split: str = "test", scan: int = 400):
    """The first ``count`` videos of ``split`` in which some object is partly or wholly hidden by another."""
    ds = SyntheticVideos(split, length=scan, num_frames=num_frames, image_size=size, seed=seed)
    out = []
    for i in range(scan):
        video, sample = ds.generate(i)
        hidden = (video.full_masks & ~video.masks).reshape(len(video.objects), -1).any(1)
        if hidden.any():
            out.append(sample)
            if len(out) == count:
                break
    return out


def object_scores(method, samples) -> list[dict[str, float]]:
    rows = []
    for sample in samples:
        prompts = first_boxes(sample)
        preds = method.run(sample, prompts)
        rows += [j_and_f(preds[tg.obj_id], tg.masks) for tg in sample.targets if tg.obj_id in prompts]
    return rows


def frames_per_second(method, samples) -> float:
    frames, seconds = 0, 0.0
    for sample in samples:
        prompts = first_boxes(sample)
        t0 = time.perf_counter()
        method.run(sample, prompts)
        seconds += time.perf_counter() - t0
        frames += len(sample.frames)
    return frames / seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=12, help="videos with occlusions for J&F (default: 12)")
    p.add_argument("--frames", type=int, default=12, help="frames per video (default: 12)")
    p.add_argument("--speed-videos", type=int, default=2, help="videos per size for frames/second (default: 2)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="frame sides for the speed part")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sam2", default=None, help="local folder with Sam2VideoModel weights (default: tiny random)")
    p.add_argument("--quick", action="store_true", help="2 videos of 6 frames, one speed video")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    p.add_argument("--encoder-precision", choices=ENCODER_PRECISIONS, default="auto",
                   help="LiteMedSAM image encoder precision, as GroundingPredictor's (auto: bf16 where native)")
    args = p.parse_args(argv)
    if args.quick:
        args.videos, args.frames, args.speed_videos = 2, 6, 1
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    head = build_sam_head(SamConfig(encoder="lite_medsam", checkpoint="auto")).eval()
    head.set_encoder_precision(args.encoder_precision, "cpu")
    flow = Engine("flow (LiteMedSAM)", FlowTracker(head))
    baseline = PerFrameBox(head)
    baseline.name = "per-frame box (LiteMedSAM)"
    from heads.tracking.sam2 import Sam2Tracker, build_tiny_sam2

    if args.sam2:
        sam2 = Engine("sam2", Sam2Tracker.from_pretrained(args.sam2))
    else:
        sam2 = Engine("sam2 (tiny, random)", Sam2Tracker(*build_tiny_sam2(128)))
    methods = [flow, baseline, sam2]
    print(f"models loaded in {time.perf_counter() - t0:.1f} s; {args.threads} threads; LiteMedSAM image encoder in "
          f"{head.encoder_precision}", file=sys.stderr)

    fps: dict[str, dict[int, float]] = {m.name: {} for m in methods}
    for size in args.sizes:
        samples = [SyntheticVideos("val", length=args.speed_videos, num_frames=args.frames, image_size=size,
                                   seed=args.seed)[i] for i in range(args.speed_videos)]
        for m in methods:
            fps[m.name][size] = frames_per_second(m, samples)
            print(f"speed {m.name} @ {size} px: {fps[m.name][size]:.2f} frames/s", file=sys.stderr)

    samples = occluded_videos(args.videos, args.frames, 256, args.seed)
    n_objects = sum(len(s.targets) for s in samples)
    scores: dict[str, dict[str, float]] = {}
    with CachedEncoder(head):
        for m in [flow, baseline] + ([sam2] if args.sam2 else []):
            rows = object_scores(m, samples)
            scores[m.name] = {k: statistics.fmean(r[k] for r in rows) for k in ("J", "F", "JF")}
            print(f"accuracy {m.name}: J&F {scores[m.name]['JF']:.4f}", file=sys.stderr)

    sizes = args.sizes
    print(f"\nTracking on synthetic videos ({args.frames} frames; prompts: ground-truth box on each object's first "
          f"visible frame). J&F: {len(samples)} held-out videos with occlusions, {n_objects} objects, 256 px.\n")
    header = "| method | " + " | ".join(f"frames/s @ {s} px" for s in sizes) + " | J | F | J&F |"
    print(header)
    print("|" + "---|" * (len(sizes) + 4))
    for m in methods:
        sc = scores.get(m.name)
        acc = " | ".join(f"{sc[k]:.3f}" for k in ("J", "F", "JF")) if sc else "- | - | -"
        print(f"| {m.name} | " + " | ".join(f"{fps[m.name][s]:.2f}" for s in sizes) + f" | {acc} |")
    if flow.name in scores and baseline.name in scores:
        gain = scores[flow.name]["JF"] - scores[baseline.name]["JF"]
        print(f"\nflow - per-frame box: {gain:+.3f} J&F ({'beats' if gain > 0 else 'does NOT beat'} the baseline)")
    print(f"\n({time.perf_counter() - t0:.0f} s in all)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
