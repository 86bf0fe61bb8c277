"""How much of an object's shape and colour can be read linearly from the default model's pooled image features?

For each object of the synthetic training scenes: the frozen LiteMedSAM features (per-image standardised, as the
composed vision-LLM standardises them), average-pooled to a ``grid x grid`` map as the image tokens are, then the
3 x 3 cells around the object's centre (and the centre cell alone). A logistic regression is fitted on 70% of the
objects and scored on the rest. Chance is 1 / (number of shapes) and 1 / (number of colours).

    python benchmarks/feature_probe.py --scenes 800 --grids 8 12 16 --cache-dir .cache/features/default

``--across-colourings``: the same scenes drawn with the palette's colours and with ``colours="bands"`` (each name
anywhere in its hue band: the same objects, other fills); a probe fitted on 70% of the scenes in one colouring is
scored on the other 30% in both, so it says whether the features hold what a head trained on band colours would
need, and how far a head trained on the palette alone carries:

    python benchmarks/feature_probe.py --scenes 300 --grids 8 --across-colourings

Features come from the feature cache the training recipe fills (``--cache-dir``, namespace "default"); scenes
that are not cached are encoded (about 0.5 s each on 2 CPU cores) and added to it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from data.synthetic import COLOURS, SHAPES, SyntheticGrounding
from grounding.feature_cache import FeatureCache
from grounding.presets import DefaultPreset


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=800)
    ap.add_argument("--grids", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--cache-dir", default=".cache/features/default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--across-colourings", action="store_true", help="fit on one colouring, score on both")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model, processor = DefaultPreset().build()
    model.feature_cache = FeatureCache(args.cache_dir, namespace="default")
    norm = model.vision_llm.feature_norm  # the composed model's own standardisation (untrained: plain instance norm)

    def collect(colours: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """Features per probe input, labels, and each object's scene index, for the first ``--scenes`` scenes."""
        ds = SyntheticGrounding(split="train", length=args.scenes, scenes=args.scenes, turns_per_sample=1, colours=colours)
        feats: dict[str, list[np.ndarray]] = {}
        labels: dict[str, list[int]] = {"shape": [], "colour": []}
        scene_of: list[int] = []
        for i in range(args.scenes):
            scene, sample = ds.generate(i)
            image = np.asarray(sample.image)
            sam_image, _ = processor.image_transform(image)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                f = model.encode_images(sam_image[None], [processor.image_key(sam_image)])
            with torch.no_grad():
                f = norm(f.float()) if norm is not None else f.float()  # 1 x C x h x w
            h, w = image.shape[:2]
            pooled = {g: F.pad(F.adaptive_avg_pool2d(f, g)[0], (1, 1, 1, 1)) for g in args.grids}
            for obj in scene.objects:
                cx, cy = obj.center
                for g, p in pooled.items():
                    r, c = min(g - 1, int(cy / h * g)) + 1, min(g - 1, int(cx / w * g)) + 1
                    feats.setdefault(f"grid {g:2d}, centre cell", []).append(p[:, r, c].numpy())
                    feats.setdefault(f"grid {g:2d}, 3 x 3 cells", []).append(p[:, r - 1 : r + 2, c - 1 : c + 2].reshape(-1).numpy())
                labels["shape"].append(SHAPES.index(obj.shape))
                labels["colour"].append(list(COLOURS).index(obj.colour))
                scene_of.append(i)
        return {k: np.stack(v) for k, v in feats.items()}, {k: np.asarray(v) for k, v in labels.items()}, np.asarray(scene_of)

    if args.across_colourings:
        data = {c: collect(c) for c in ("palette", "bands")}
        _, labels, scene_of = data["palette"]
        train = scene_of < int(0.7 * args.scenes)  # whole scenes on each side; the two colourings share objects
        print(f"{len(scene_of)} objects of {args.scenes} scenes, each in both colourings; fitted on {train.sum()}")
        for name in sorted(data["palette"][0]):
            for fit_on in ("palette", "bands"):
                for target, y in labels.items():
                    clf = LogisticRegression(max_iter=3000, C=0.1).fit(data[fit_on][0][name][train], y[train])
                    scores = {c: clf.score(data[c][0][name][~train], y[~train]) for c in ("palette", "bands")}
                    print(f"{name}, {target}, fitted on {fit_on}: scored on palette {scores['palette']:.3f}, bands {scores['bands']:.3f}", flush=True)
        return
    feats, labels, _ = collect("palette")
    n = len(labels["shape"])
    cut = int(0.7 * n)
    print(f"{n} objects of {args.scenes} scenes; chance: shape {1 / len(SHAPES):.2f}, colour {1 / len(COLOURS):.2f}")
    for name, x in sorted(feats.items()):
        accs = []
        for target, y in labels.items():
            clf = LogisticRegression(max_iter=3000, C=0.1).fit(x[:cut], y[:cut])
            accs.append(f"{target} {clf.score(x[cut:], y[cut:]):.3f}")
        print(f"{name}: " + ", ".join(accs), flush=True)


if __name__ == "__main__":
    main()
