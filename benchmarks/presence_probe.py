"""Do the grounding heads know whether the named object exists, without being trained to say so?

The default model decides "Sure, it is [SEG]." vs "There is no ..." in text, from the language model's reading of
the 8 x 8 image tokens. This probe teacher-forces each question's own answer on questions whose object exists
(one-target questions, "Sure, it is [SEG].", or also relation and several-target ones: ``--present-tasks``) and a
one-target answer on as many no-target questions (it does not) of held-out test-split scenes, and reports
how well each head signal separates the two (ROC AUC; 0.5 = no signal), for the answer's strongest [SEG]: the seg
prior's largest logit on the image, its soft
area, the decoder's IoU prediction and the decoded mask's area; and, for a model with a presence head
(``HeadOptions.presence``, trained for this), that head's score, read from the state before the answer.

    python benchmarks/presence_probe.py --scenes 30 --model default
    python benchmarks/presence_probe.py --split val --seed 77 --scenes 40 --fit   # heads.presence_fusion's weights
    python benchmarks/presence_probe.py --split val --seed 77 --scenes 40 --fit --present-tasks res reason res_multi

``--fit`` fits a logistic regression of "the object exists" on the presence head's logit and the seg prior's
largest logit (the two signals ``HeadOptions.presence_fusion`` combines at inference) and prints its weights and
the share of questions the fused probability gets right at several thresholds. Fit on validation scenes, then
measure on the test split with ``grounding test``. The first ``--fit`` line (one-target questions) gives the weights
the README measures; the second shows how the fit and its per-task accuracy change when relation and several-target
answers are included.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
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
    ap.add_argument("--fit", action="store_true", help="fit heads.presence_fusion's weights on these questions")
    ap.add_argument("--present-tasks", nargs="+", default=["res"], choices=["res", "reason", "res_multi"],
                    help="tasks of the questions whose object exists (their own answers are teacher-forced)")
    args = ap.parse_args(argv)
    predictor = GroundingPredictor.from_pretrained(args.model)
    model, processor = predictor.model, predictor.processor
    if model.seg_prior is None:
        raise SystemExit(f"{args.model}: this model has no seg prior (HeadOptions.seg_prior)")
    model.eval()
    present_tasks = list(args.present_tasks)
    # as many no-target questions as questions with objects, about the same scenes
    tasks = present_tasks + ["res_none"] * len(present_tasks)
    ds = SyntheticGrounding(args.split, length=args.scenes, tasks=tasks, turns_per_sample=2 * len(tasks), seed=args.seed)
    rows, row_tasks = [], []
    for i in range(len(ds)):
        sample = ds[i]
        # a one-target answer of this scene ("Sure, it is [SEG]."), reused for its no-target questions
        template = next((t.answer for t in sample.turns if t.task.value == "res" and len(t.grounds) == 1), None)
        if template is None or not sample.targets:
            continue
        for turn in sample.turns:
            if turn.task.value in present_tasks:
                answer, label = turn.answer, 1
            elif turn.task.value == "res_none":  # any target: only the [SEG] state matters, not what it is scored on
                answer, label = tuple(GroundRef(0) if isinstance(a, GroundRef) else a for a in template), 0
            else:
                continue
            if not any(isinstance(a, GroundRef) and a.seg for a in answer):
                continue
            one = dataclasses.replace(sample, turns=(dataclasses.replace(turn, answer=answer),))
            batch = processor.collate([processor.encode(one)])
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                f = model(batch)
            # an answer's [SEG] evidence is its strongest [SEG] (as generate reads it): the largest logit on the image
            peaks = presence_scores(f.prior_logits.float(), batch.image_valid_masks[batch.seg_image_index])
            k = int(peaks.argmax())
            presence = np.nan
            if f.presence_logits is not None:
                presence = float(presence_scores(f.presence_logits, batch.image_valid_masks)[0])
            rows.append((label, float(peaks[k]), float(torch.sigmoid(f.prior_logits[k].float()).sum()), float(f.iou[k, 0]),
                         float((f.mask_logits[k] > 0).float().mean()), presence))
            row_tasks.append(turn.task.value)
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
        if args.fit:
            fit = LogisticRegression().fit(r[:, [5, 1]], r[:, 0])  # presence-head logit, seg-prior max logit
            (w_head, w_prior), bias = fit.coef_[0], fit.intercept_[0]
            fused = fit.predict_proba(r[:, [5, 1]])[:, 1]
            print(f"fused AUC {roc_auc_score(r[:, 0], fused):.3f} (on the questions it was fitted on)")
            print(f"heads.presence_fusion: [{w_head:.3f}, {w_prior:.3f}, {bias:.3f}]")
            tasks = np.array(row_tasks)
            print("fused probability, threshold: share called present with the object (per task) / absent without")
            for t in (0.3, 0.4, 0.5, 0.6, 0.7):
                each = " ".join(f"{name} {np.mean(fused[tasks == name] > t):.2f}" for name in present_tasks)
                print(f"  {t:.2f}: {np.mean(fused[present] > t):.2f} ({each}) / {np.mean(fused[~present] <= t):.2f}")


if __name__ == "__main__":
    main()
