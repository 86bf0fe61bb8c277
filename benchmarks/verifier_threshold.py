"""How the mask verifier's presence threshold trades absent against present objects (``heads.verifier_threshold``).

Teacher-forces every question of held-out scenes as ``grounding fit-verifier`` does (a no-target question answered
"Sure, it is [SEG]."), scores the decoder's candidate parts of each [SEG] with the model's verifier, and prints, for
each threshold, the share of absent objects whose best probability stays at or below it (``absent``) and of one-target,
relation and box questions whose object is there that it calls present (``present/<task>``), plus the mean IoU of
the part the verifier picks (``pick/<task>``) against the highest-mean-logit part (``decoder/<task>``) and the best
part among the candidates (``oracle/<task>``). A model with a presence verifier (``heads.presence_verifier``) makes
its presence calls, and ``--fit`` its fusion weights, from that verifier's best logit; the picks stay the mask verifier's.

    python benchmarks/verifier_threshold.py --model default --split val --scenes 40
    python benchmarks/verifier_threshold.py --model default --split val --scenes 40 --fit   # heads.verifier_fusion
    python benchmarks/verifier_threshold.py --model DIR --fit --candidates FILE   # the validation states of FILE

``--candidates``: a file ``grounding fit-verifier --candidates`` wrote for this model's verifier; its validation
scenes (the same 40 questions-per-scene mix) are read instead of collected again (5 minutes saved).

Choose the threshold here on validation scenes, then measure it once on the test split with ``grounding test``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from data.synthetic import SyntheticGrounding
from grounding.predictor import GroundingPredictor
from grounding.verifier_fit import TASKS, VerifierData, collect, evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="a trained-parts folder with a verifier, or default")
    p.add_argument("--split", default="val")
    p.add_argument("--scenes", type=int, default=40)
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    p.add_argument("--fit", action="store_true",
                   help="also fit heads.verifier_fusion: logistic regression of 'the object is there' on the presence "
                        "head's logit and the verifier's best logit (--fit-tasks questions vs absent ones)")
    p.add_argument("--fit-tasks", nargs="+", default=["res"],
                   help="present questions the fusion is fitted on (default res: one-target questions, phrased like "
                        "the absent ones, so the fit cannot learn the question type instead of the image)")
    p.add_argument("--candidates", default=None,
                   help="read the validation states from this grounding fit-verifier --candidates file (its "
                        "--val-scenes must equal --scenes; --split val) instead of collecting them")
    args = p.parse_args()
    predictor = GroundingPredictor.from_pretrained(args.model)
    model = predictor.model
    if model.mask_verifier is None:
        raise SystemExit(f"{args.model} has no mask verifier (heads.verifier); fit one with grounding fit-verifier")
    ds = SyntheticGrounding(args.split, length=args.scenes, turns_per_sample=len(TASKS), tasks=list(TASKS))
    with torch.no_grad():
        if args.candidates:
            saved = torch.load(args.candidates, map_location="cpu", weights_only=True)
            if args.split != "val" or (saved.get("key") or {}).get("val_scenes") != args.scenes or not saved.get("val"):
                raise SystemExit(f"{args.candidates} holds no validation states of {args.scenes} {args.split} scenes")
            data = VerifierData(**saved["val"])
            if data.features.shape[1] != model.mask_verifier.n_inputs:
                raise SystemExit(f"{args.candidates} was collected for another verifier ({data.features.shape[1]} inputs "
                                 f"a candidate, the model's takes {model.mask_verifier.n_inputs})")
        else:
            data = collect(model, predictor.processor, (ds[i] for i in range(args.scenes)))
        for t in args.thresholds:
            report = evaluate(model.mask_verifier, data, t, model.presence_verifier)
            if t == args.thresholds[0]:
                print(f"{len(data)} [SEG] states, {len(data.labels)} candidates; mean IoU of the part picked / of the part of"
                      " highest mean logit / of the best part:")
                for k, v in report.items():
                    if k.startswith("pick/"):
                        task = k[5:]
                        print(f"  {task}: {v:.3f} / {report['decoder/' + task]:.3f} / {report['oracle/' + task]:.3f}")
            print(f"threshold {t:.2f}: " + "  ".join(f"{k} {v:.2f}" for k, v in report.items() if k == "absent" or k.startswith("present/")))
        if args.fit:
            fit_fusion(model, data, args.thresholds, args.fit_tasks)


def fit_fusion(model, data, thresholds, fit_tasks) -> None:
    """Fit (w_head, w_verifier, bias) on the collected states and print the presence rates of the fused probability."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    if data.head is None:
        raise SystemExit("the model has no presence head: nothing to fuse")
    verifier = model.presence_verifier or model.mask_verifier  # the one whose best logit decides presence
    best = data.best(data.scores(verifier))
    keep = [i for i in range(len(data)) if bool(data.absent[i]) or data.tasks[i] in ("res", "reason", "rec")]
    x = torch.stack([data.head[keep], best[keep]], 1).numpy()
    y = (~data.absent[keep]).numpy().astype(int)
    on = np.array([bool(data.absent[i]) or data.tasks[i] in fit_tasks for i in keep])
    lr = LogisticRegression(class_weight="balanced").fit(x[on], y[on])
    w = (*lr.coef_[0].tolist(), float(lr.intercept_[0]))
    fused = x @ lr.coef_[0] + lr.intercept_[0]
    auc = lambda z: roc_auc_score(y[on], z[on])  # noqa: E731
    print(f"fusion on {'+'.join(fit_tasks)} vs absent (w_head, w_verifier, bias) = [{w[0]:.3f}, {w[1]:.3f}, {w[2]:.3f}]; "
          f"ROC AUC there: fused {auc(fused):.3f}, verifier {auc(x[:, 1]):.3f}, head {auc(x[:, 0]):.3f}")
    tasks = [data.tasks[i] if y[j] else "absent" for j, i in enumerate(keep)]
    for t in thresholds:
        cut = float(np.log(t / (1 - t)))
        rates = {k: np.mean([(f > cut) if k != "absent" else (f <= cut) for f, kk in zip(fused, tasks) if kk == k])
                 for k in ("absent", "res", "reason", "rec")}
        print(f"fused, threshold {t:.2f}: " + "  ".join(f"{k} {v:.2f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
