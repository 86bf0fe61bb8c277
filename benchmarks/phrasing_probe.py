"""How much does the way a prompt is typed cost the model? Each question asked as the templates write it and in every
``data.templates.PROMPT_STYLES`` style, on the same held-out scenes.

    python benchmarks/phrasing_probe.py --scenes 15                      # the shipped default model (~12 min)
    python benchmarks/phrasing_probe.py --scenes 15 --prompt-case keep   # as typed: without processor.prompt_case

For each scene, one one-target question (gIoU), one no-target question (N-acc) and one box question (Acc@0.5) are
asked with the template's prompt and restyled (``restyle_prompt``: the bare expression, lower case, UPPER CASE,
Title Case, no final mark; same answers), greedy, and scored by the project's ``Evaluator`` (the published metric
definitions ``grounding test`` uses), one evaluator per style. ``--prompt-case`` overrides the model's
``processor.prompt_case``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from data.synthetic import SyntheticGrounding
from data.templates import PROMPT_STYLES, restyle_prompt
from grounding.evaluation import EvalConfig, Evaluator
from grounding.predictor import GroundingPredictor

MEASURES = {"one target (gIoU)": "res/giou", "no target (N-acc)": "n_acc", "box (Acc@0.5)": "rec/acc50"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenes", type=int, default=15)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--prompt-case", choices=["keep", "sentence"], default=None,
                    help="override the model's processor.prompt_case (default: the model's own)")
    args = ap.parse_args(argv)
    predictor = GroundingPredictor.from_pretrained(args.model)
    if args.prompt_case is not None:
        predictor.processor.config.prompt_case = args.prompt_case
    styles = ("template", *PROMPT_STYLES)
    evaluators = {s: Evaluator(predictor.model, predictor.processor, EvalConfig(max_new_tokens=96)) for s in styles}
    ds = SyntheticGrounding(args.split, length=args.scenes, tasks=["res", "res_none", "rec"], turns_per_sample=3, seed=args.seed)
    started = time.monotonic()
    for i in range(args.scenes):
        sample = ds[i]
        for style, ev in evaluators.items():
            turns = sample.turns if style == "template" else [
                restyle_prompt(t, np.random.default_rng(i), style) for t in sample.turns]
            ev.update([dataclasses.replace(sample, turns=turns)])
    metrics = {s: ev.compute() for s, ev in evaluators.items()}
    print(f"{args.model}, prompt_case {predictor.processor.config.prompt_case}: {args.scenes} {args.split} scenes "
          f"(seed {args.seed}), one question per measure, scene and style, {(time.monotonic() - started) / 60:.1f} min")
    print("| measure | " + " | ".join(styles) + " |")
    print("|---" * (len(styles) + 1) + "|")
    for name, key in MEASURES.items():
        print(f"| {name} | " + " | ".join(f"{metrics[s][key]:.3f}" for s in styles) + " |")


if __name__ == "__main__":
    main()
