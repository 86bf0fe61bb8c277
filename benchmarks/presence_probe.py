"""Do the grounding heads know whether the named object exists, without being trained to say so?

The default model decides "Sure, it is [SEG]." vs "There is no ..." in text, from the language model's reading of
the 8 x 8 image tokens. This probe teacher-forces a one-target answer ("Sure, it is [SEG].") on one-target
questions (the object exists) and on no-target questions (it does not) of held-out test-split scenes, and reports
how well each head signal separates the two (ROC AUC; 0.5 = no signal): the seg prior's largest logit, its soft
area, the decoder's IoU prediction and the decoded mask's area; and, for a model with a presence head
(``HeadOptions.presence``, trained for this), that head's score, read from the state before the answer.

    python benchmarks/presence_probe.py --scenes 30 --model default
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from data.sample import GroundRef
from data.synthetic import SyntheticGrounding
from grounding.losses import presence_scores
from grounding.predictor import GroundingPredictor

SIGNALS = ("seg-prior max logit", "seg-prior soft area", "decoder IoU prediction", "decoded mask area", "presence head")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=30)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--split", default="test", help="synthetic split of the scenes (choose thresholds on val)")
    args = ap.parse_args(argv)
    predictor = GroundingPredictor.from_pretrained(args.model)
    model, processor = predictor.model, predictor.processor
    if model.seg_prior is None:
        raise SystemExit(f"{args.model}: this model has no seg prior (HeadOptions.seg_prior)")
    model.eval()
    ds = SyntheticGrounding(args.split, length=args.scenes, tasks=["res", "res_none"], turns_per_sample=4, seed=args.seed)
    rows = []
    for i in range(len(ds)):
        sample = ds[i]
        present = [t for t in sample.turns if t.task.value == "res"]
        if not present or not sample.targets:
            continue
        template = present[0].answer  # a one-target answer of this scene, reused for its no-target questions
        for turn in sample.turns:
            if turn.task.value == "res":
                answer, label = turn.answer, 1
            else:  # any target: only the [SEG] state matters here, not the mask it is scored against
                answer, label = tuple(GroundRef(0) if isinstance(a, GroundRef) else a for a in template), 0
            if sum(isinstance(a, GroundRef) for a in answer) != 1:
                continue
            one = dataclasses.replace(sample, turns=(dataclasses.replace(turn, answer=answer),))
            batch = processor.collate([processor.encode(one)])
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                f = model(batch)
            prior = f.prior_logits.float()
            presence = np.nan
            if f.presence_logits is not None:
                presence = float(presence_scores(f.presence_logits, batch.image_valid_masks)[0])
            rows.append((label, float(prior.max()), float(torch.sigmoid(prior).sum()), float(f.iou[0, 0]),
                         float((f.mask_logits > 0).float().mean()), presence))
    r = np.array(rows)
    print(f"{len(r)} questions of {len(ds)} scenes: {int(r[:, 0].sum())} with the object, {int(len(r) - r[:, 0].sum())} without")
    for j, name in enumerate(SIGNALS, 1):
        if np.isnan(r[:, j]).any():
            continue
        print(f"{name:24s} AUC {roc_auc_score(r[:, 0], r[:, j]):.3f}   mean with {r[r[:, 0] == 1, j].mean():.3f}"
              f"   without {r[r[:, 0] == 0, j].mean():.3f}")
    if not np.isnan(r[:, 5]).any():  # the presence head decides at a probability threshold (HeadOptions.presence_threshold)
        p = 1 / (1 + np.exp(-r[:, 5]))
        present = r[:, 0] == 1
        print("presence head, threshold: share of questions with the object called present / without called absent")
        for t in (0.3, 0.5, 0.7, 0.8, 0.9, 0.95):
            print(f"  {t:.2f}: {np.mean(p[present] > t):.2f} / {np.mean(p[~present] <= t):.2f}")


if __name__ == "__main__":
    main()
