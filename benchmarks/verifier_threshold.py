"""How the mask verifier's presence threshold trades absent against present objects (``heads.verifier_threshold``).

Teacher-forces every question of held-out scenes as ``grounding fit-verifier`` does (a no-target question answered
"Sure, it is [SEG]."), scores the decoder's candidate parts of each [SEG] with the model's verifier, and prints, for
each threshold, the share of absent objects whose best probability stays at or below it (``absent``) and of one-target,
relation and box questions whose object is there that it calls present (``present/<task>``), plus the mean IoU of
the part the verifier picks (``pick/<task>``) against the highest-mean-logit part (``decoder/<task>``) and the best
part among the candidates (``oracle/<task>``).

    python benchmarks/verifier_threshold.py --model default --split val --scenes 40

Choose the threshold here on validation scenes, then measure it once on the test split with ``grounding test``.
"""

from __future__ import annotations

import argparse

import torch

from data.synthetic import SyntheticGrounding
from grounding.predictor import GroundingPredictor
from grounding.verifier_fit import TASKS, collect, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="a trained-parts folder with a verifier, or default")
    p.add_argument("--split", default="val")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    args = p.parse_args()
    predictor = GroundingPredictor.from_pretrained(args.model)
    model = predictor.model
    if model.mask_verifier is None:
        raise SystemExit(f"{args.model} has no mask verifier (heads.verifier); fit one with grounding fit-verifier")
    ds = SyntheticGrounding(args.split, length=args.scenes, turns_per_sample=len(TASKS), tasks=list(TASKS))
    with torch.no_grad():
        data = collect(model, predictor.processor, (ds[i] for i in range(args.scenes)))
        for t in args.thresholds:
            report = evaluate(model.mask_verifier, data, t)
            if t == args.thresholds[0]:
                print(f"{len(data)} [SEG] states, {len(data.labels)} candidates; mean IoU of the part picked / of the part of"
                      " highest mean logit / of the best part:")
                for k, v in report.items():
                    if k.startswith("pick/"):
                        task = k[5:]
                        print(f"  {task}: {v:.3f} / {report['decoder/' + task]:.3f} / {report['oracle/' + task]:.3f}")
            print(f"threshold {t:.2f}: " + "  ".join(f"{k} {v:.2f}" for k, v in report.items() if k == "absent" or k.startswith("present/")))


if __name__ == "__main__":
    main()
