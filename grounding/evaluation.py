"""Generation-based evaluation: greedy answers, the model's own [SEG] / box tokens, published metrics.

Every turn of every sample is asked on its own (its prompt, the image, the regions it points at); the answer
is generated greedily and scored by its task:

- segmentation (res, reason, multi, none): the union of the answer's [SEG] masks (logits > 0, original
  resolution) against the union of the turn's targets: gIoU / cIoU (LISA); N-acc / T-acc from whether the
  answer has any [SEG] (gRefCOCO); for several targets also the share of answers with the right [SEG] count;
- rec: the first box written in the answer, Acc@0.5 (a missing box is wrong);
- gcg: (phrase, mask) pairs against the ground truth: mIoU, recall, AP50 (GLaMM);
- region: the answer names every word of the region's label (e.g. colour and shape).

Distributed runs (DDP, FSDP, DeepSpeed): every process scores its own share; ``compute`` (called on every
process) all-reduces the sums and counts and gathers the GCG pairs before anything is averaged, so the
result equals a single-process evaluation of the same samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data.sample import GroundingSample, RegionRef, Task, Turn
from grounding.describe import check_by_description, describe_phrases
from grounding.metrics import NoTargetAccuracy, RecAccuracy, SegmentationIoU, gcg_scores, rec_ious
from grounding.model import GeneratedAnswer, GroundingModel
from grounding.processor import GroundingProcessor

SEG_GROUPS = {Task.RES: "res", Task.REASON: "reason", Task.RES_MULTI: "multi", Task.RES_NONE: "none"}


@dataclass
class EvalConfig:
    """Generation-based metrics during validation / test."""

    generate: bool = True
    """Generate answers and compute task metrics (False: teacher-forced losses only)."""
    max_new_tokens: int = 64
    max_turns_per_epoch: int | None = None
    """Stop generating after this many turns per epoch on each process (None: all)."""
    results_file: str | None = None
    """Write every evaluated turn as one JSON line here at the end of each validation / test epoch (task, prompt,
    answer, reference, per-turn scores, the presence probability): for finding which questions fail. In a
    distributed run each process writes its own share to ``<name>.rank<N><suffix>``. None: no file."""


@dataclass
class TurnResult:
    """One evaluated turn (kept for reports)."""

    task: Task
    prompt: str
    answer: str
    reference: str
    scores: dict[str, float]
    presence: float | None = None

    def as_dict(self) -> dict:
        return {"task": self.task.value, "prompt": self.prompt, "answer": self.answer, "reference": self.reference,
                "scores": self.scores, "presence": self.presence}


def _union(masks: list[np.ndarray], hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(hw, bool)
    for m in masks:
        out |= m
    return out


def _turn_regions(sample: GroundingSample, turn: Turn) -> np.ndarray | None:
    """The R x 4 boxes of a turn's ``<region>`` prompt parts, or None."""
    idx = [p.index for p in turn.prompt if isinstance(p, RegionRef)]
    return sample.regions[idx] if idx else None


def region_answer_correct(answer: str, label: str) -> bool:
    """True when every word of ``label`` appears as a word of ``answer`` (case-insensitive)."""
    words = set(re.findall(r"[a-z]+", answer.lower()))
    need = re.findall(r"[a-z]+", label.lower())
    return bool(need) and all(w in words for w in need)


class Evaluator:
    """Accumulates task metrics over batches of ``GroundingSample``s (see module docstring)."""

    def __init__(self, model: GroundingModel, processor: GroundingProcessor, config: EvalConfig | None = None):
        self.model = model
        self.processor = processor
        self.config = config or EvalConfig()
        self.keep_results = False
        self.reset()

    def reset(self, device=None) -> None:
        """Clear every state; ``device``: where metric states live (the process's device, for NCCL reductions)."""
        self.seg = {name: SegmentationIoU() for name in SEG_GROUPS.values()}
        self.seg_all = SegmentationIoU()
        self.empty = NoTargetAccuracy()
        self.rec = RecAccuracy()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if device is not None:
            for m in self._metrics():
                m.to(self.device)
        self.count_ok = 0
        self.count_total = 0
        self.region_ok = 0
        self.region_total = 0
        self.gcg_pred: list[list[tuple[str, np.ndarray]]] = []
        self.gcg_gt: list[list[tuple[str, np.ndarray]]] = []
        self.gcg_keys: list[str] = []
        self.turns_seen = 0
        self.results: list[TurnResult] = []

    # ------------------------------------------------------------------ generation
    def _requests(self, samples: list[GroundingSample]):
        reqs, owners = [], []
        for b, s in enumerate(samples):
            for t in s.turns:
                if self.config.max_turns_per_epoch is not None and self.turns_seen >= self.config.max_turns_per_epoch:
                    return reqs, owners
                reqs.append(self.processor.encode_request(s.image, t, _turn_regions(s, t)))
                owners.append((b, t))
                self.turns_seen += 1
        return reqs, owners

    @torch.no_grad()
    def answer(self, samples: list[GroundingSample], image_embeddings=None, keys=None):
        """Generate an answer for every turn: list of (sample index, turn, GeneratedAnswer, masks)."""
        reqs, owners = self._requests(samples)
        if not reqs:
            return []
        batch = self.processor.collate(reqs, padding_side="left")
        dev = next(self.model.parameters()).device
        batch = batch.to(dev)
        emb = None
        if image_embeddings is not None:
            emb = image_embeddings[[b for b, _ in owners]]
        describe = self.model.options.describe_phrases
        check = self.model.options.check_by_description is not None
        if (describe or check) and emb is None:  # generate would encode the images itself; the region questions need them too
            emb = self.model.encode_images(batch.sam_images, batch.image_keys)
        answers = self.model.generate(batch, max_new_tokens=self.config.max_new_tokens, image_embeddings=emb)
        images = [samples[b].image for b, _ in owners]
        if check:
            check_by_description(self.model, self.processor, images, [t for _, t in owners],
                                 [_turn_regions(samples[b], t) for b, t in owners], answers, batch.geometries, emb,
                                 self.config.max_new_tokens)
        if describe:
            describe_phrases(self.model, self.processor, images, answers, batch.geometries, emb)
        out = []
        for (b, turn), ans, geo in zip(owners, answers, batch.geometries):
            masks = []
            if ans.mask_logits is not None:
                full = geo.logits_to_original(ans.mask_logits.float())
                masks = [m[0].cpu().numpy() > 0 for m in full]
            out.append((b, turn, ans, masks))
        return out

    def update(self, samples: list[GroundingSample], image_embeddings=None, keys=None) -> None:
        for b, turn, ans, masks in self.answer(samples, image_embeddings, keys):
            self.score(samples[b], turn, ans, masks)

    # ------------------------------------------------------------------ scoring
    def score(self, sample: GroundingSample, turn: Turn, ans: GeneratedAnswer, masks: list[np.ndarray]) -> dict:
        hw = sample.size
        scores: dict[str, float] = {}
        task = turn.task
        if task in SEG_GROUPS:
            gt = _union([sample.targets[i].mask for i in turn.target_indices if sample.targets[i].mask is not None], hw)
            pred = _union(masks, hw)
            metric = self.seg[SEG_GROUPS[task]]
            ignore = None if sample.ignore is None else [sample.ignore]
            metric.update([pred], [gt], ignore)
            self.seg_all.update([pred], [gt], ignore)
            target_empty = len(turn.target_indices) == 0
            pred_empty = ans.parsed.num_seg == 0
            self.empty.update([pred_empty], [target_empty])
            inter, union = np.logical_and(pred, gt).sum(), np.logical_or(pred, gt).sum()
            scores["iou"] = float(inter / union) if union else 1.0
            scores["grounded"] = float(not pred_empty)
            if task == Task.RES_MULTI:
                ok = ans.parsed.num_seg == len(turn.target_indices)
                self.count_ok += int(ok)
                self.count_total += 1
                scores["count_ok"] = float(ok)
        elif task == Task.REC:
            boxes = [s.box for s in ans.parsed.segments if s.box is not None]
            idx = turn.target_indices
            if idx:
                gt_box = sample.targets[idx[0]].box
                self.rec.update([boxes[0] if boxes else None], [gt_box])
                iou = float(rec_ious([boxes[0] if boxes else None], [gt_box])[0])
                scores["iou"], scores["correct"] = iou, float(iou >= self.rec.iou_threshold)
            else:  # REC about something absent: correct when no box is written
                self.empty.update([not boxes], [True])
                scores["correct"] = float(not boxes)
        elif task == Task.GCG:
            grounds = [g for g in turn.grounds if g.seg]
            gt = [(g.phrase or sample.targets[g.index].label, sample.targets[g.index].mask) for g in grounds]
            segs = [s for s in ans.parsed.segments if s.seg_index is not None and s.seg_index < len(masks)]
            pred = [(s.phrase or "", masks[s.seg_index]) for s in segs]
            self.gcg_gt.append(gt)
            self.gcg_pred.append(pred)
            self.gcg_keys.append(_turn_key(sample, turn))
        elif task == Task.REGION:
            label = _region_label(sample, turn)
            ok = region_answer_correct(ans.parsed.clean_text, label)
            self.region_ok += int(ok)
            self.region_total += 1
            scores["correct"] = float(ok)
        if self.keep_results or self.config.results_file:
            self.results.append(
                TurnResult(task, self.processor.render_prompt(turn), ans.text, self.processor.render_answer(turn, sample),
                           scores, ans.presence)
            )
        return scores

    def _metrics(self) -> list:
        return [*self.seg.values(), self.seg_all, self.empty, self.rec]

    def write_results(self, path: str | Path | None = None) -> Path | None:
        """Write the kept turns (``TurnResult.as_dict``) as JSON lines to ``path`` (default
        ``EvalConfig.results_file``; in a distributed run each process to ``<name>.rank<N><suffix>``). Returns the
        file written, or None when there is no path."""
        path = path or self.config.results_file
        if not path:
            return None
        path = Path(path)
        if _distributed():
            path = path.with_name(f"{path.stem}.rank{torch.distributed.get_rank()}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in self.results))
        return path

    def compute(self) -> dict[str, float]:
        """Task metrics over every turn scored since ``reset``, on all processes of a distributed run.

        In a distributed run every process must call this (it holds collectives): the torchmetrics states
        (sums and counts) are synced by each metric's ``compute``, the plain counters all-reduced and the GCG
        pairs gathered (as RLE), then averaged once. GCG images are ordered by content, so the result does
        not depend on how samples were split across processes.
        """
        out: dict[str, float] = {}
        with warnings.catch_warnings():  # a process that scored nothing still takes part in the sync
            warnings.filterwarnings("ignore", message=".*was called before the ``update`` method.*")
            # every metric computed on every process, in the same order (each compute is a collective)
            seg = {name: metric.compute() for name, metric in self.seg.items()}
            seg_all = self.seg_all.compute()
            empty = self.empty.compute()
            rec = float(self.rec.compute())
        counts = [self.count_ok, self.count_total, self.region_ok, self.region_total]
        count_ok, count_total, region_ok, region_total = _all_reduce_ints(counts, self.device)
        gcg_keys, gcg_pred, gcg_gt = _gather_gcg(self.gcg_keys, self.gcg_pred, self.gcg_gt)
        for name, r in seg.items():
            if not math.isnan(float(r["giou"])):
                out[f"{name}/giou"] = float(r["giou"])
                out[f"{name}/ciou"] = float(r["ciou"])
        if not math.isnan(float(seg_all["giou"])):
            out["seg/giou"], out["seg/ciou"] = float(seg_all["giou"]), float(seg_all["ciou"])
        for k in ("n_acc", "t_acc"):
            if not math.isnan(float(empty[k])):
                out[k] = float(empty[k])
        if not math.isnan(rec):
            out["rec/acc50"] = rec
        if count_total:
            out["multi/count_acc"] = count_ok / count_total
        if region_total:
            out["region/acc"] = region_ok / region_total
        if gcg_gt:
            order = sorted(range(len(gcg_keys)), key=lambda i: gcg_keys[i])
            g = gcg_scores([gcg_pred[i] for i in order], [gcg_gt[i] for i in order])
            for k, v in g.items():
                if not math.isnan(v):
                    out[f"gcg/{k}"] = float(v)
        return out


def _region_label(sample: GroundingSample, turn: Turn) -> str:
    """The label of the object the region question points at: the target whose box is the region's."""
    idx = [p.index for p in turn.prompt if isinstance(p, RegionRef)]
    if not idx:
        return ""
    region = sample.regions[idx[0]]
    best, best_d = "", math.inf
    for t in sample.targets:
        d = float(np.abs(t.box - region).sum())
        if d < best_d:
            best, best_d = t.label, d
    return best



# ---------------------------------------------------------------------- distributed reduction
def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _all_reduce_ints(values: list[int], device) -> list[int]:
    """Sums of integer counters over all processes (the values themselves outside a distributed run)."""
    if not _distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t)
    return [int(v) for v in t.tolist()]


def _turn_key(sample: GroundingSample, turn: Turn) -> str:
    """A content key of one evaluated turn (image bytes + prompt): orders gathered results independently of
    which process scored them."""
    h = hashlib.sha1(np.ascontiguousarray(sample.image).tobytes())
    h.update(repr(turn.prompt).encode())
    return h.hexdigest()


def _encode_pairs(items: list[tuple[str, np.ndarray | None]]):
    from pycocotools import mask as mask_utils

    out = []
    for phrase, m in items:
        rle = None if m is None else mask_utils.encode(np.asfortranarray(np.asarray(m, dtype=np.uint8)))
        out.append((phrase, rle))
    return out


def _decode_pairs(items):
    from pycocotools import mask as mask_utils

    return [(phrase, None if rle is None else mask_utils.decode(rle).astype(bool)) for phrase, rle in items]


def _gather_gcg(keys: list[str], preds: list, gts: list):
    """GCG (key, prediction, ground truth) of all processes, in rank order (masks travel as RLE)."""
    if not _distributed():
        return keys, preds, gts
    mine = [(k, _encode_pairs(p), _encode_pairs(g)) for k, p, g in zip(keys, preds, gts)]
    everyone: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, mine)
    flat = [item for part in everyone for item in part]
    return [k for k, _, _ in flat], [_decode_pairs(p) for _, p, _ in flat], [_decode_pairs(g) for _, _, g in flat]
