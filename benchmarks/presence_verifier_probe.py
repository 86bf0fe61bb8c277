"""Which multiple-instance weight makes the best presence verifier (``grounding fit-verifier --presence-verifier W``)?

Reads a file of collected candidates (``grounding fit-verifier --candidates FILE`` writes one: the frozen model's
candidates of its training scenes and of its validation scenes), holds out the last ``--held`` share of the training
scenes' [SEG] states (the last scenes collected), fits one verifier per weight and seed on the rest with
``grounding.verifier_fit.fit`` (weight 0: the mask verifier's plain BCE), and prints for each, on the held-out
states: the ROC AUC of "the object is there" for one-target questions against absent objects from the verifier's
best logit alone and fused with the presence head (weights fitted on the file's validation states, as
``benchmarks/verifier_threshold.py --fit`` does), the shares of absent objects called absent and of one-target objects
called present at the fused threshold, and the mean IoU of the part each verifier picks per task.

    python benchmarks/presence_verifier_probe.py --candidates outputs/verifier_candidates_1000.pt --weights 0 0.15 0.5
    python benchmarks/presence_verifier_probe.py --candidates outputs/candidates_c400.pt --weights 0 --without-colour

A file collected with ``--colour`` (``heads.verifier_colour``) holds each candidate's pixel colour; ``--without-colour``
also fits every variant with those columns dropped (the verifier without colour), so the two compare on the same
candidates.

About 8 minutes a fit on 2 CPU cores (15 epochs over 85% of 1000 scenes' candidates); docs/default-model.md has the
numbers. A weight that sharpens presence costs picks, hence a presence verifier beside the mask verifier
(``heads.presence_verifier``) rather than the term on the one verifier; tried, not shipped (it did not raise generated
N-acc).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import torch

from grounding.verifier_fit import VerifierData, evaluate, fit
from heads import MaskVerifier


def presence_table(scores: torch.Tensor, data: VerifierData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head logit, verifier's best logit, 1 = object there) of the one-target and absent states."""
    best = data.best(scores)
    keep = [i for i in range(len(data)) if bool(data.absent[i]) or data.tasks[i] == "res"]
    return data.head[keep].numpy(), best[keep].numpy(), np.array([0 if data.absent[i] else 1 for i in keep])


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", required=True, help="a file written by grounding fit-verifier --candidates")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--held", type=float, default=0.15, help="share of the training states held out (the last ones)")
    p.add_argument("--context", type=int, default=2, help="the verifier's context blocks (the shipped: 2)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--threshold", type=float, default=0.6, help="the fused presence threshold (heads.verifier_threshold)")
    p.add_argument("--without-colour", action="store_true",
                   help="a file collected with --colour: also fit each variant without the colour columns")
    args = p.parse_args()
    saved = torch.load(args.candidates, map_location="cpu", weights_only=True)
    full, val = VerifierData(**saved["train"]), (VerifierData(**saved["val"]) if saved.get("val") else None)
    if val is None or full.head is None:
        raise SystemExit(f"{args.candidates} needs validation states and presence-head logits (a model with a presence head)")
    cut = int(len(full) * (1 - args.held))
    train, held = full.subset(np.arange(cut)), full.subset(np.arange(cut, len(full)))
    hidden, n_inputs = full.states.shape[1], full.features.shape[1]
    colour = bool((saved.get("key") or {}).get("colour"))
    n_colour = MaskVerifier.n_colour_stats if colour else 0
    embed = n_inputs - n_colour - 32**2 - MaskVerifier.n_geometry - MaskVerifier.n_evidence  # the default 32 x 32 crop
    if args.without_colour and not colour:
        raise SystemExit(f"{args.candidates} was collected without colour (grounding fit-verifier --colour)")

    def without_colour(d: VerifierData) -> VerifierData:
        return dataclasses.replace(d, features=torch.cat([d.features[:, :embed], d.features[:, embed + n_colour:]], 1))

    variants = [("colour" if colour else "", colour, (train, held, val))]
    if args.without_colour:
        variants.append(("no colour", False, tuple(without_colour(d) for d in (train, held, val))))
    print(f"{len(train)} states fitted, {len(held)} held out; presence on held-out one-target vs absent questions, "
          f"fused at {args.threshold}")
    logit_cut = math.log(args.threshold / (1 - args.threshold))
    for name, with_colour, (tr, he, va) in variants:
        for weight in args.weights:
            for seed in args.seeds:
                torch.manual_seed(seed)
                verifier = MaskVerifier(hidden, embed, context=args.context, colour=with_colour)
                started = time.monotonic()
                fit(verifier, tr, epochs=args.epochs, seed=seed, presence_weight=weight)
                hv, bv, yv = presence_table(va.scores(verifier), va)
                fusion = LogisticRegression(class_weight="balanced").fit(np.stack([hv, bv], 1), yv)
                h, b, y = presence_table(he.scores(verifier), he)
                fused = np.stack([h, b], 1) @ fusion.coef_[0] + fusion.intercept_[0]
                pick = "  ".join(f"{k[5:]} {v:.3f}" for k, v in evaluate(verifier, he).items() if k.startswith("pick/"))
                print(f"{name + ', ' if name else ''}weight {weight} seed {seed} ({(time.monotonic() - started) / 60:.1f} "
                      f"min): ROC AUC verifier {roc_auc_score(y, b):.3f} fused {roc_auc_score(y, fused):.3f} head "
                      f"{roc_auc_score(y, h):.3f}; absent {np.mean(fused[y == 0] <= logit_cut):.3f} present "
                      f"{np.mean(fused[y == 1] > logit_cut):.3f}; picks {pick}", flush=True)


if __name__ == "__main__":
    main()
