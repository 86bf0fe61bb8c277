"""How much does the way a prompt is typed cost the model? Each question asked as the templates write it and in every
``data.templates.PROMPT_STYLES`` style, on the same held-out scenes.

    python benchmarks/phrasing_probe.py --scenes 20                      # the shipped default model (~15 min)
    python benchmarks/phrasing_probe.py --scenes 20 --prompt-case keep   # as typed: without processor.prompt_case

For each scene, one one-target question (gIoU of the answer's masks), one no-target question (answered without a
mask: N-acc) and one box question (Acc@0.5 of the first box) are asked with the template's prompt and restyled
(``restyle_prompt``: the bare expression, lower case, UPPER CASE, Title Case, no final mark; same answers), with
``GroundingPredictor.predict``, greedy. ``--prompt-case`` overrides the model's ``processor.prompt_case``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torchvision.ops import box_iou

from data.sample import Task
from data.synthetic import SyntheticGrounding
from data.templates import PROMPT_STYLES, restyle_prompt
from grounding.predictor import GroundingPredictor


def score(sample, turn, result) -> tuple[str, float]:
    """(measure, value) of one answer: "one target" gIoU, "no target" answered without a mask, "box" Acc@0.5."""
    if turn.task == Task.RES_NONE:
        return "no target (N-acc)", float(not result.segments)
    if turn.task == Task.REC:
        if len(result.boxes) == 0:
            return "box (Acc@0.5)", 0.0
        target = torch.as_tensor(sample.targets[turn.target_indices[0]].box)[None]
        return "box (Acc@0.5)", float(box_iou(torch.as_tensor(result.boxes[:1]), target)[0, 0] >= 0.5)
    gt = np.zeros(sample.size, bool)
    for k in turn.target_indices:
        gt |= sample.targets[k].mask
    m = result.union_mask()
    return "one target (gIoU)", float((m & gt).sum() / max((m | gt).sum(), 1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--prompt-case", choices=["keep", "sentence"], default=None,
                    help="override the model's processor.prompt_case (default: the model's own)")
    args = ap.parse_args(argv)
    predictor = GroundingPredictor.from_pretrained(args.model)
    if args.prompt_case is not None:
        predictor.processor.config.prompt_case = args.prompt_case
    styles = ("template", *PROMPT_STYLES)
    ds = SyntheticGrounding(args.split, length=args.scenes, tasks=["res", "res_none", "rec"], turns_per_sample=3, seed=args.seed)
    values: dict[tuple[str, str], list[float]] = {}
    started = time.monotonic()
    for i in range(args.scenes):
        sample = ds[i]
        predictor.set_image(sample.image)
        for turn in sample.turns:
            for style in styles:
                asked = turn if style == "template" else restyle_prompt(turn, np.random.default_rng(i), style)
                measure, v = score(sample, turn, predictor.predict(prompt=asked))
                values.setdefault((measure, style), []).append(v)
    n = len(values[next(iter(values))])
    print(f"{args.model}, prompt_case {predictor.processor.config.prompt_case}: {args.scenes} {args.split} scenes "
          f"(seed {args.seed}), {n} questions per measure and style, {(time.monotonic() - started) / 60:.1f} min")
    print("| measure | " + " | ".join(styles) + " |")
    print("|---" * (len(styles) + 1) + "|")
    for measure in dict.fromkeys(m for m, _ in values):
        print(f"| {measure} | " + " | ".join(f"{np.mean(values[(measure, s)]):.3f}" for s in styles) + " |")


if __name__ == "__main__":
    main()
