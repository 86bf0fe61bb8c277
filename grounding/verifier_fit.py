"""Fit the mask verifier (``heads.MaskVerifier``) on a frozen model's own candidates: ``grounding fit-verifier``.

    grounding fit-verifier --model outputs/default/model --out outputs/default/verified --context 2   # the shipped recipe, ~97 min on 2 CPU cores
    grounding fit-verifier --model outputs/default/model --out outputs/verified_p --context 2 --presence-verifier 0.5   # + a presence verifier (tried, not shipped)
    grounding fit-verifier --model outputs/default/model --scenes 300 --out outputs/verifier   # fewer scenes: ~30 min
    grounding fit-verifier --model outputs/default/model --out outputs/verified_c --context 2 --colour   # + pixel colour (tried, not shipped)
    grounding fit-verifier --model outputs/default/model --out outputs/verified_pa --context 2 --plural-absent   # absent plurals as two [SEG]
    grounding fit-verifier --model outputs/default/model --out outputs/verified_b --context 2 --colours bands --plain-greys range \
        --scenes 400 --add-candidates outputs/candidates_palette.pt   # + candidates of another collection (configs/default_colours.yaml)

Two passes. *Collect*: every question of each scene is teacher-forced with its own answer (a question about an
absent object with a one-target answer, "Sure, it is [SEG].", so that its [SEG] state asks for something that
is not there); the decoder's mask of each [SEG] is cut into candidates (``heads.mask_parts`` at
``HeadOptions.verify_thresholds``, exactly as generation cuts them) and each candidate's inputs are computed
once (``MaskVerifier.features``). A candidate is positive when its IoU with the [SEG]'s target is >= 0.5 (for
several targets, with any target of the question) and negative otherwise; every candidate of an absent object's
[SEG] is negative. *Fit*: the verifier alone trains on those (BCE, AdamW, a few epochs over the cached inputs);
the rest of the model is frozen and unchanged. The verifiers start from scratch, whatever verifier the source has.

The scenes must be new to the model (the default ``--start`` is past the 800 training scenes of
``configs/default.yaml``): the decoder is surer on scenes it was trained on, and the verifier must learn from
candidates like those it will see. The output is a trained-parts folder: the source model's trained parts plus
the verifier, with ``heads.verifier: true`` and ``heads.verifier_threshold`` in its config. The shipped default
model also fuses the verifier's presence call with the presence head (``heads.verifier_fusion``), whose weights
``benchmarks/verifier_threshold.py --fit`` fits on validation scenes.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from data.sample import GroundingSample, GroundRef, Task
from data.synthetic import COLOURINGS, check_aspect
from data.textures import PLAIN_GREYS
from data.templates import is_plural, segmentation_answer
from grounding.losses import presence_scores
from grounding.metrics import mask_iou_matrix
from heads import MaskVerifier, mask_parts

log = logging.getLogger(__name__)

POSITIVE_IOU = 0.5  # a candidate is the [SEG]'s object when its IoU with the target reaches this (Acc@0.5's bar)


@dataclass
class VerifierData:
    """Candidates of N teacher-forced [SEG] states. ``features``: K x F (``MaskVerifier.features``), ``owner``: K
    (the state each candidate came from), ``labels``: K (1 = the state's object), ``target_iou``: K (IoU with the
    state's own target), ``states``: N x D, ``tasks``: N task names, ``absent``: N (the question's object is not
    in the image), ``head``: N presence-head logits of each state's question (None: no presence head). States whose
    mask has no candidate are left out."""

    features: torch.Tensor
    owner: torch.Tensor
    labels: torch.Tensor
    target_iou: torch.Tensor
    states: torch.Tensor
    tasks: list[str]
    absent: torch.Tensor
    head: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @classmethod
    def concat(cls, parts: "Sequence[VerifierData]") -> "VerifierData":
        """The states and candidates of several collections, in order (owners renumbered)."""
        widths = {int(p.features.shape[1]) for p in parts}
        if len(widths) > 1:
            raise ValueError(f"candidates of different verifier inputs ({sorted(widths)} features a candidate) cannot be "
                             "fitted together (one was collected with --colour, the other without?)")
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        heads = [torch.full((len(p),), float("nan")) if p.head is None else p.head for p in parts]
        head = torch.cat(heads)
        return cls(torch.cat([p.features for p in parts]), torch.cat([p.owner + int(o) for p, o in zip(parts, offsets)]),
                   torch.cat([p.labels for p in parts]), torch.cat([p.target_iou for p in parts]),
                   torch.cat([p.states for p in parts]), [t for p in parts for t in p.tasks],
                   torch.cat([p.absent for p in parts]), None if torch.isnan(head).all() else head)

    def rows_of(self, states: np.ndarray) -> torch.Tensor:
        """Candidate rows of the given states."""
        pick = torch.zeros(len(self), dtype=torch.bool)
        pick[torch.as_tensor(states)] = True
        return pick[self.owner].nonzero()[:, 0]

    def subset(self, states: np.ndarray) -> "VerifierData":
        """The given states (in that order) and their candidates, renumbered."""
        rows = self.rows_of(states)
        remap = torch.full((len(self),), -1, dtype=torch.long)
        remap[torch.as_tensor(states)] = torch.arange(len(states))
        return VerifierData(self.features[rows], remap[self.owner[rows]], self.labels[rows], self.target_iou[rows],
                            self.states[states], [self.tasks[i] for i in states], self.absent[states],
                            None if self.head is None else self.head[states])

    @torch.no_grad()
    def scores(self, verifier: MaskVerifier, chunk: int = 256) -> torch.Tensor:
        """K logits of ``verifier`` for every candidate, ``chunk`` states at a time (a context verifier's attention
        within one call is K x K: thousands of states at once would not fit; its candidates only see their own
        state's, so the chunks change nothing)."""
        verifier.eval()
        out = torch.empty(len(self.labels))
        for start in range(0, len(self), chunk):
            states = np.arange(start, min(len(self), start + chunk))
            rows = self.rows_of(states)
            out[rows] = verifier(self.states[states], self.features[rows].float(), self.owner[rows] - start).float()
        return out

    def best(self, values: torch.Tensor) -> torch.Tensor:
        """N: the largest of K per-candidate ``values`` over each state's candidates."""
        return torch.full((len(self),), float("-inf")).scatter_reduce(0, self.owner, values.float(), "amax")


def _with_absent_seg(sample: GroundingSample, plural: bool = False) -> tuple[GroundingSample, list[bool]]:
    """The sample with every no-target question answered "Sure, it is [SEG]." (about target 0: only the state
    matters) and, per turn, whether its object is absent. ``plural``: a question about several things ("all the
    blue shapes", ``data.templates.is_plural``) is answered "Sure, they are [SEG] and [SEG]." instead, as the
    language model answers it when it wrongly finds them, so that its two states are fitted as absent too."""
    turns, absent = [], []
    for t in sample.turns:
        if t.task == Task.RES_NONE and not t.target_indices:
            several = plural and is_plural(t.expression or "")
            t = dataclasses.replace(t, answer=segmentation_answer([0, 0] if several else [0], t.expression or ""))
            absent.append(True)
        else:
            absent.append(False)
        turns.append(t)
    return dataclasses.replace(sample, turns=tuple(turns)), absent


@torch.no_grad()
def collect(model, processor, samples: Iterable[GroundingSample], log_every: int = 20,
            plural_absent: bool = False) -> VerifierData:
    """Teacher-force every question of each sample and cut each [SEG]'s decoded mask into the verifier's
    candidates (see the module docstring). Samples without targets are skipped. ``plural_absent``: absent things
    asked about in the plural get a two-[SEG] answer (``_with_absent_seg``)."""
    verifier: MaskVerifier = model.mask_verifier
    feats, owner, labels, own_iou, states, tasks, absent_flags, head = [], [], [], [], [], [], [], []
    started = time.monotonic()
    for n, sample in enumerate(samples):
        if not sample.targets or not sample.turns:
            continue
        forced, absent = _with_absent_seg(sample, plural_absent)
        batch = processor.collate([processor.encode(forced)])
        f = model(batch)
        if f.mask_logits is None:
            continue
        geo = batch.geometries[0]
        heads = None  # the presence head's logit of each question (it reads the question, not the forced answer)
        if f.presence_logits is not None:
            valid = batch.image_valid_masks[:1].expand(len(f.presence_logits), -1, -1)
            heads = presence_scores(f.presence_logits.float(), valid.to(f.presence_logits.device)).cpu()
        gts = torch.from_numpy(np.stack([geo.mask_to_input(t.mask) for t in sample.targets]))  # O x S x S
        seg_turn = [(k, g.index) for k, t in enumerate(forced.turns) for g in processor._seg_parts(t, forced)]
        cands = mask_parts(f.mask_logits, model.options.verify_thresholds)
        if len(cands) == 0:
            continue
        o = cands.owner
        x = verifier.features(cands.masks, f.image_embeddings, torch.zeros_like(o), f.mask_logits[o],
                              None if f.prior_logits is None else f.prior_logits[o], images=batch.sam_images)
        low = cands.masks.shape[-1]
        gt_low = F.interpolate(gts[:, None].float(), (low, low), mode="nearest")[:, 0].bool() if gts.shape[-1] != low else gts
        ious = torch.from_numpy(mask_iou_matrix(cands.masks.cpu().numpy(), gt_low.cpu().numpy())).float()  # K x O
        for j, (k, target) in enumerate(seg_turn):
            turn = forced.turns[k]
            rows = (o == j).nonzero()[:, 0]
            if len(rows) == 0:
                continue
            if absent[k]:
                lab = torch.zeros(len(rows))
            elif turn.task == Task.RES_MULTI:
                lab = (ious[rows][:, list(turn.target_indices)].amax(1) >= POSITIVE_IOU).float()
            else:
                lab = (ious[rows, target] >= POSITIVE_IOU).float()
            feats.append(x[rows].half())
            owner.append(torch.full((len(rows),), len(states), dtype=torch.long))
            labels.append(lab)
            own_iou.append(torch.zeros(len(rows)) if absent[k] else ious[rows, target])
            states.append(f.seg_hidden[j].float())
            tasks.append(turn.task.value)
            absent_flags.append(absent[k])
            head.append(float(heads[k]) if heads is not None and k < len(heads) else float("nan"))
        if log_every and (n + 1) % log_every == 0:
            log.info("collected %d scenes, %d [SEG] states (%.0f s)", n + 1, len(states), time.monotonic() - started)
    if not states:
        raise ValueError("no candidates collected: the samples have no [SEG] answers whose masks have parts")
    return VerifierData(torch.cat(feats), torch.cat(owner), torch.cat(labels), torch.cat(own_iou),
                        torch.stack(states), tasks, torch.tensor(absent_flags),
                        None if all(math.isnan(h) for h in head) else torch.tensor(head))


def fit(verifier: MaskVerifier, data: VerifierData, epochs: int = 15, lr: float = 1e-3, weight_decay: float = 0.01,
        states_per_step: int = 64, seed: int = 0, on_epoch=None, presence_weight: float = 0.0) -> list[float]:
    """Train the verifier on collected candidates (BCE); returns the mean loss of each epoch. ``on_epoch(epoch,
    loss)`` is called after each (say, to evaluate). ``presence_weight`` > 0 adds a multiple-instance term with that
    weight: BCE of each state's best candidate logit against "one of its candidates is positive" (0 for an absent
    object), which makes the best logit a presence call (``HeadOptions.presence_verifier``)."""
    if presence_weight < 0:
        raise ValueError(f"presence_weight must be >= 0, got {presence_weight}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(verifier.parameters(), lr=lr, weight_decay=weight_decay)
    present = data.best(data.labels)  # N: 1 where a candidate is positive (every state has candidates)
    losses = []
    for epoch in range(epochs):
        verifier.train()
        order = torch.randperm(len(data), generator=gen).numpy()
        total, steps = 0.0, 0
        for start in range(0, len(order), states_per_step):
            chosen = np.sort(order[start : start + states_per_step])
            rows = data.rows_of(chosen)
            local = torch.full((len(data),), -1, dtype=torch.long)
            local[torch.as_tensor(chosen)] = torch.arange(len(chosen))
            owner = local[data.owner[rows]]
            logit = verifier(data.states[chosen], data.features[rows].float(), owner)
            loss = F.binary_cross_entropy_with_logits(logit, data.labels[rows])
            if presence_weight:
                best = torch.full((len(chosen),), -1e4).scatter_reduce(0, owner, logit, "amax", include_self=False)
                loss = loss + presence_weight * F.binary_cross_entropy_with_logits(best, present[torch.as_tensor(chosen)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        losses.append(total / max(1, steps))
        verifier.eval()
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses


@torch.no_grad()
def evaluate(verifier: MaskVerifier, data: VerifierData, threshold: float = 0.5,
             presence_verifier: MaskVerifier | None = None) -> dict[str, float]:
    """On collected candidates: the mean IoU with the target of the candidate the verifier picks (``pick/<task>``)
    and of the candidate of highest mean decoder logit (``decoder/<task>``, the rule of ``heads.keep_one_part``) and
    the best candidate's (``oracle/<task>``: what a perfect choice would get), for questions whose object is there; the share of one-[SEG] questions whose object is there (one target, relations,
    boxes) that the verifier's best probability calls present at ``threshold`` (``present/<task>``), and of absent
    objects called absent (``absent``): the trade-off ``HeadOptions.verifier_threshold`` sets in generation.
    ``presence_verifier``: the presence calls are its best probabilities (``HeadOptions.presence_verifier``)."""
    scores = data.scores(verifier)
    calls = scores if presence_verifier is None else data.scores(presence_verifier)
    mean_logit = data.features[:, -3].float()  # MaskVerifier.features' evidence: mean decoder logit (scaled)
    cut = math.log(threshold / (1.0 - threshold))
    out: dict[str, list[float]] = {}
    for i in range(len(data)):
        rows = (data.owner == i).nonzero()[:, 0]
        best = float(calls[rows].max())
        if bool(data.absent[i]):
            out.setdefault("absent", []).append(best <= cut)
            continue
        task = data.tasks[i]
        if task in (Task.RES.value, Task.REASON.value, Task.REC.value):
            out.setdefault(f"present/{task}", []).append(best > cut)
        iou = data.target_iou[rows]
        out.setdefault(f"pick/{task}", []).append(float(iou[scores[rows].argmax()]))
        out.setdefault(f"decoder/{task}", []).append(float(iou[mean_logit[rows].argmax()]))
        out.setdefault(f"oracle/{task}", []).append(float(iou.max()))
    return {k: float(np.mean(v)) for k, v in sorted(out.items())}


def fit_verifier_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="grounding fit-verifier", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="a trained-parts folder, or default (the shipped model)")
    p.add_argument("--out", required=True, help="the trained-parts folder to write (source parts + the verifier)")
    p.add_argument("--scenes", type=int, default=1000,
                   help="synthetic scenes to collect candidates from (default 1000: the shipped verifier's; 600 gave it "
                        "0.03-0.07 lower held-out picks)")
    p.add_argument("--start", type=int, default=10000,
                   help="first scene index of the train split (default 10000: past configs/default.yaml's 800)")
    p.add_argument("--val-scenes", type=int, default=40, help="validation-split scenes to report on after each epoch")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--context", type=int, default=None,
                   help="heads.verifier_context: transformer blocks in which one [SEG]'s candidates attend to each other "
                        "(default: the source config's, 0 if it has none)")
    p.add_argument("--colour", action=argparse.BooleanOptionalAction, default=None,
                   help="heads.verifier_colour: the verifiers also read each candidate's pixel colour (mean and spread "
                        "of each channel under it; default: the source config's, off if it has none)")
    p.add_argument("--candidates", default=None,
                   help="a file of collected candidates: read from it when it exists (the frozen model's candidates "
                        "are collected once: it must be the same --model, --scenes and --start), else written to it "
                        "after collecting, so that later fits (other --epochs, --lr, verifier sizes) skip the collection")
    p.add_argument("--add-candidates", nargs="+", default=[], metavar="FILE",
                   help="candidate files of other collections (--candidates files of other scenes or colourings, say "
                        "of an earlier model's palette scenes) whose training candidates are fitted on with this run's (placed before them); "
                        "their validation scenes are not used")
    p.add_argument("--colours", choices=COLOURINGS, default="palette",
                   help="how the scenes' colour names become fills (data.synthetic.SyntheticGrounding colours): the "
                        "palette (the shipped model's world) or bands (each name anywhere in its hue band); match the "
                        "stage-1 data's")
    p.add_argument("--plain-greys", choices=PLAIN_GREYS, default="levels",
                   help="the grey levels of the scenes' plain backgrounds (SyntheticGrounding plain_greys); match the "
                        "stage-1 data's")
    p.add_argument("--aspect", type=float, default=1.0,
                   help="the scenes' largest frame ratio, longer over shorter side (SyntheticGrounding aspect; default 1: "
                        "square frames); match the stage-1 data's")
    p.add_argument("--plural-absent", action="store_true",
                   help="absent things asked about in the plural (\"all the blue shapes\") are teacher-forced with a "
                        "two-[SEG] answer, not a one-[SEG] one, so that the verifier learns plural absence too "
                        "(for heads.verifier_presence_multi)")
    p.add_argument("--presence-verifier", type=float, default=None, metavar="WEIGHT",
                   help="also fit a presence verifier (heads.presence_verifier) on the same candidates, with a "
                        "multiple-instance term of this weight (0.5 was tried: docs/default-model.md), whose best logit "
                        "decides presence while the mask verifier picks the part; ~7 min more")
    p.add_argument("--presence-threshold", type=float, default=0.3,
                   help="written as heads.verifier_threshold: the verifier probability a one-[SEG] answer must exceed "
                        "to ground something (default 0.3, chosen on validation scenes; README)")
    return p


TASKS = ("res", "res", "res", "rec", "rec", "reason", "reason", "res_none", "res_none", "res_multi", "gcg", "region")
"""The question mix of configs/default.yaml's training data (one scene, twelve questions)."""


def _read_candidates(path: str) -> VerifierData:
    """The training candidates of a file ``--candidates`` wrote."""
    try:
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        return VerifierData(**saved["train"])
    except Exception as e:  # not a torch file, or not one of candidates
        raise ValueError(f"{path} is not a candidates file of grounding fit-verifier --candidates ({type(e).__name__}: {e})") from e


def _collected(args, model, processor, train, val) -> tuple[VerifierData, VerifierData | None]:
    """The training and held-out candidates: read from ``--candidates`` if it exists (it holds both, and names the
    scenes they came from: a file of other scenes is refused), else collected (and written there if given)."""
    key = {"model": str(args.model), "start": args.start, "scenes": args.scenes, "val_scenes": args.val_scenes}
    if model.options.verifier_colour:  # (the features differ; keys of files written without colour stay as they were)
        key["colour"] = True
    if args.plural_absent:
        key["plural_absent"] = True
    if args.colours != "palette":
        key["colours"] = args.colours
    if args.plain_greys != "levels":
        key["plain_greys"] = args.plain_greys
    if args.aspect != 1.0:
        key["aspect"] = args.aspect
    path = Path(args.candidates) if args.candidates else None
    if path is not None and path.is_file():
        saved = torch.load(str(path), map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            raise ValueError(f"{path} holds the candidates of {saved.get('key')}, not of {key}: remove it to collect again")
        log.info("candidates read from %s", path)
        return VerifierData(**saved["train"]), (VerifierData(**saved["val"]) if saved.get("val") else None)
    data = collect(model, processor, (train[i] for i in range(args.start, args.start + args.scenes)),
                   plural_absent=args.plural_absent)
    held = (collect(model, processor, (val[i] for i in range(args.val_scenes)), plural_absent=args.plural_absent)
            if args.val_scenes else None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "train": dataclasses.asdict(data), "val": None if held is None else dataclasses.asdict(held)},
                   str(path))
        log.info("candidates written to %s", path)
    return data, held


def fit_verifier_main(argv: list[str] | None = None) -> int:
    import yaml

    from data.synthetic import SyntheticGrounding
    from grounding.checkpoint import CONFIG_FILE, MANIFEST_FILE, TRAINED_FILE, build_lit_from_config, load_trained_weights, save_trained_folder
    from grounding.hub import DEFAULT_MODEL_DIR

    args = fit_verifier_parser().parse_args(argv)
    if not log.handlers:  # progress lines on stderr, whatever logging the libraries set up
        log.addHandler(logging.StreamHandler())
    log.setLevel(logging.INFO)
    src = DEFAULT_MODEL_DIR if args.model == "default" else Path(args.model)
    for name in (CONFIG_FILE, TRAINED_FILE):
        if not (src / name).is_file():
            print(f"grounding fit-verifier: {src} is not a trained-parts folder ({name} is missing)", file=sys.stderr)
            return 2
    if args.scenes < 1 or args.epochs < 1:
        print("grounding fit-verifier: --scenes and --epochs must be >= 1", file=sys.stderr)
        return 2
    if args.presence_verifier is not None and args.presence_verifier <= 0:
        print(f"grounding fit-verifier: --presence-verifier must be > 0, got {args.presence_verifier}", file=sys.stderr)
        return 2
    try:
        check_aspect(args.aspect)
    except ValueError as e:
        print(f"grounding fit-verifier: --{e}", file=sys.stderr)
        return 2
    if args.context is not None and args.context < 0:
        print(f"grounding fit-verifier: --context must be >= 0, got {args.context}", file=sys.stderr)
        return 2
    if not 0.0 < args.presence_threshold < 1.0:
        print(f"grounding fit-verifier: --presence-threshold must be in (0, 1), got {args.presence_threshold}", file=sys.stderr)
        return 2
    missing = [f for f in args.add_candidates if not Path(f).is_file()]
    if missing:  # before the collection, not after it
        print(f"grounding fit-verifier: --add-candidates: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    config = yaml.safe_load((src / CONFIG_FILE).read_text())
    heads = dict(config.get("heads") or {})
    heads["verifier"] = True
    heads["verifier_threshold"] = args.presence_threshold
    if args.context is not None:
        heads["verifier_context"] = args.context
    heads["presence_verifier"] = args.presence_verifier is not None
    if args.colour is not None:
        heads["verifier_colour"] = args.colour
    config["heads"] = heads
    torch.manual_seed(args.seed)  # (the verifiers' initial weights)
    lit = build_lit_from_config(config)
    # the verifiers are fitted from scratch, whatever verifiers the source has (a source with a presence verifier,
    # fitted again without one: its presence verifier is left out)
    fresh = {name: {k: v.clone() for k, v in m.state_dict().items()}
             for name, m in (("mask_verifier", lit.model.mask_verifier), ("presence_verifier", lit.model.presence_verifier))
             if m is not None}
    load_trained_weights(lit, src / TRAINED_FILE, leave_out=("model.mask_verifier.", "model.presence_verifier."))
    for name, state in fresh.items():
        getattr(lit.model, name).load_state_dict(state)
    lit.eval()
    model, processor = lit.model, lit.processor
    torch.manual_seed(args.seed)
    scenes = dict(turns_per_sample=len(TASKS), tasks=list(TASKS), colours=args.colours, plain_greys=args.plain_greys,
                  aspect=args.aspect)
    train = SyntheticGrounding("train", length=args.start + args.scenes, **scenes)
    val = SyntheticGrounding("val", length=args.val_scenes, **scenes)
    try:
        data, held = _collected(args, model, processor, train, val)
        if args.add_candidates:
            added = [_read_candidates(f) for f in args.add_candidates]
            log.info("added %d [SEG] states of %s", sum(len(a) for a in added), ", ".join(args.add_candidates))
            data = VerifierData.concat([*added, data])  # (the added first: the fitting order of the shipped verifier)
    except ValueError as e:
        print(f"grounding fit-verifier: {e}", file=sys.stderr)
        return 2
    print(f"{len(data.labels)} candidates of {len(data)} [SEG] states from {args.scenes} scenes"
          f"{' and ' + ', '.join(args.add_candidates) if args.add_candidates else ''} "
          f"({data.labels.mean():.1%} positive) in {(time.monotonic() - started) / 60:.1f} min", flush=True)

    def reporter(verifier, name):
        def report(epoch, loss):
            line = f"{name} epoch {epoch + 1}: train loss {loss:.3f}"
            if held is not None:
                line += "  val " + "  ".join(f"{k} {v:.3f}" for k, v in evaluate(verifier, held, args.presence_threshold).items())
            print(line, flush=True)
        return report

    fit(model.mask_verifier, data, epochs=args.epochs, lr=args.lr, seed=args.seed, on_epoch=reporter(model.mask_verifier, "verifier"))
    if args.presence_verifier is not None:
        fit(model.presence_verifier, data, epochs=args.epochs, lr=args.lr, seed=args.seed,
            on_epoch=reporter(model.presence_verifier, "presence verifier"), presence_weight=args.presence_verifier)
    manifest = {}
    if (src / MANIFEST_FILE).is_file():
        import json

        manifest = json.loads((src / MANIFEST_FILE).read_text())
    manifest["verifier"] = {
        "recipe": "grounding fit-verifier " + " ".join(argv if argv is not None else sys.argv[2:]),
        "scenes": args.scenes, "start": args.start, "epochs": args.epochs, "presence_weight": args.presence_verifier,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    dtype = manifest.get("dtype")
    save_trained_folder(lit, args.out, config, manifest, dtype=dtype)
    print(f"wrote {args.out} ({(time.monotonic() - started) / 60:.1f} min)")
    return 0
