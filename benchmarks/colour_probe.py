"""How a model grounds shapes in colours it was not drawn with: CSS/web colours on black, grey and white.

The synthetic world paints each colour name with one value (+- 12 per channel) on its own grey levels; a user
draws pure red or dodger blue on black. This probe draws such images itself, with OpenCV (not the world's
renderer): a target shape in a named web colour (three per colour name, e.g. blue = (0, 0, 255), dodger blue,
royal blue) beside a distractor of another colour and shape, on a plain black, mid-grey or white background, and
asks two questions of each, as a user would:

- "Please segment the <colour> <shape>.": ``iou`` is the IoU of the answer's masks (their union) with the drawn
  shape (0 when it answers "There is no ..."), ``found`` the share of answers that ground something;
- "What is in <region>?" with the shape's box: ``region`` is the share of answers naming its colour and shape;
- "Please segment the <absent colour> <shape>.", the target's shape in a colour name neither drawn shape has:
  ``refused`` is the share of answers that ground nothing (N-acc on a near miss).

    python benchmarks/colour_probe.py                                  # the embedded default model, ~6 min
    python benchmarks/colour_probe.py --model outputs/default/verified # a trained-parts folder
    python benchmarks/colour_probe.py --no-check                       # without heads.check_by_description

It prints one line per colour name and per background, then the means.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import cv2
import numpy as np

from grounding.evaluation import region_answer_correct
from grounding.predictor import GroundingPredictor

# three named web colours per colour name (CSS names in the comments)
WEB_COLOURS: dict[str, list[tuple[int, int, int]]] = {
    "red": [(255, 0, 0), (200, 0, 0), (178, 34, 34)],  # red, a darker red, firebrick
    "green": [(0, 128, 0), (0, 255, 0), (34, 139, 34)],  # green, lime, forestgreen
    "blue": [(0, 0, 255), (30, 144, 255), (65, 105, 225)],  # blue, dodgerblue, royalblue
    "yellow": [(255, 255, 0), (255, 215, 0), (230, 230, 20)],  # yellow, gold, a darker yellow
    "purple": [(128, 0, 128), (148, 0, 211), (138, 43, 226)],  # purple, darkviolet, blueviolet
    "orange": [(255, 165, 0), (255, 140, 0), (255, 120, 0)],  # orange, darkorange, a deeper orange
}
BACKGROUNDS: dict[str, int] = {"black": 0, "grey": 128, "white": 255}
SHAPES = ("circle", "square", "triangle")


def draw(canvas: np.ndarray, shape: str, centre: tuple[int, int], radius: int, rgb) -> np.ndarray:
    """Fill ``shape`` on ``canvas`` (H x W x 3, in place); returns its H x W bool mask."""
    mask = np.zeros(canvas.shape[:2], np.uint8)
    x, y = centre
    if shape == "circle":
        cv2.circle(mask, (x, y), radius, 1, -1)
    elif shape == "square":
        cv2.rectangle(mask, (x - radius, y - radius), (x + radius, y + radius), 1, -1)
    else:
        pts = np.array([[x, y - radius], [x - radius, y + radius * 3 // 4], [x + radius, y + radius * 3 // 4]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    canvas[mask.astype(bool)] = rgb
    return mask.astype(bool)


def scenes(size: int = 256, seed: int = 0):
    """Yield (colour name, rgb, background name, image, target mask, target shape, absent colour name): every web
    colour on every background, the target and a distractor (another colour name's first web colour, another shape)
    at random places that do not overlap; the absent colour is a name neither shape is drawn in."""
    rng = np.random.default_rng(seed)
    names = list(WEB_COLOURS)
    for colour, variants in WEB_COLOURS.items():
        for rgb in variants:
            for bg_name, grey in BACKGROUNDS.items():
                image = np.full((size, size, 3), grey, np.uint8)
                shape = SHAPES[int(rng.integers(len(SHAPES)))]
                other_shape = SHAPES[(SHAPES.index(shape) + 1 + int(rng.integers(2))) % len(SHAPES)]
                other_colour = names[(names.index(colour) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
                r, r2 = int(size * rng.uniform(0.1, 0.16)), int(size * rng.uniform(0.08, 0.14))
                # the two shapes in opposite halves (left/right or top/bottom), inside the frame
                lo, hi = r + 4, size // 2 - r - 4
                cx, cy = int(rng.integers(lo, max(lo + 1, hi))), int(rng.integers(r + 4, size - r - 4))
                ox, oy = int(rng.integers(size // 2 + r2 + 4, size - r2 - 4)), int(rng.integers(r2 + 4, size - r2 - 4))
                if rng.random() < 0.5:  # mirror: the target on the right
                    cx, ox = size - 1 - cx, size - 1 - ox
                draw(image, other_shape, (ox, oy), r2, WEB_COLOURS[other_colour][0])
                mask = draw(image, shape, (cx, cy), r, rgb)
                k = names.index(colour)
                absent = next(names[(k + j) % len(names)] for j in (2, 3, 1) if names[(k + j) % len(names)] != other_colour)
                yield colour, rgb, bg_name, image, mask, shape, absent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="default, a trained-parts folder or an exported folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print every answer")
    p.add_argument("--no-check", action="store_true", help="switch heads.check_by_description off")
    args = p.parse_args()
    predictor = GroundingPredictor.from_pretrained(args.model)
    if args.no_check:
        predictor.model.options.check_by_description = None
    by = defaultdict(lambda: defaultdict(list))
    started = time.monotonic()
    for colour, rgb, bg, image, mask, shape, absent in scenes(seed=args.seed):
        res = predictor.predict(image, f"Please segment the {colour} {shape}.")
        pred = np.zeros(mask.shape, bool)
        for s in res.segments:
            if s.mask is not None:
                pred |= s.mask
        iou = float((pred & mask).sum() / max(1, (pred | mask).sum()))
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        reg = predictor.predict(image, "What is in <region>?", regions=[box])
        right = region_answer_correct(reg.text, f"{colour} {shape}")
        miss = predictor.predict(image, f"Please segment the {absent} {shape}.")
        for key in (f"colour {colour}", f"background {bg}", "all"):
            by[key]["iou"].append(iou)
            by[key]["found"].append(float(bool(res.segments)))
            by[key]["region"].append(float(right))
            by[key]["refused"].append(float(not miss.segments))
        if args.verbose:
            print(f"{colour} {rgb} on {bg}: {res.text!r} iou {iou:.2f} | {reg.text!r} | {absent}: {miss.text!r}", flush=True)
    print(f"{len(by['all']['iou'])} images, {(time.monotonic() - started) / 60:.1f} min; model {args.model}")
    print(f"{'':18s} {'iou':>6s} {'found':>6s} {'region':>6s} {'refused':>7s}")
    keys = [f"colour {c}" for c in WEB_COLOURS] + [f"background {b}" for b in BACKGROUNDS] + ["all"]
    for key in keys:
        vals = by[key]
        print(f"{key:18s} " + " ".join(f"{np.mean(vals[m]):6.3f}" for m in ("iou", "found", "region")) + f" {np.mean(vals['refused']):7.3f}")


if __name__ == "__main__":
    main()
