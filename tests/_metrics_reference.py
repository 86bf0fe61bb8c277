"""Independent reference implementations for tests/test_metrics.py.

Written plainly from the published evaluation code, sharing nothing with grounding.metrics:

- LISA's ``intersectionAndUnion`` (histogram over the two classes, 255 = ignore) and its gIoU/cIoU
  bookkeeping (``acc_iou[union == 0] += 1.0``; ``ciou = sum I / (sum U + 1e-10)``).
- GLaMM's ``compute_miou`` (greedy one-to-one on highest IoU, by deleting rows and columns).
- DAVIS-2017 ``db_eval_iou`` and ``db_eval_boundary`` / ``f_measure`` with ``_seg2bmap`` written
  pixel by pixel, and boundary matching done by explicit distances instead of a dilation
  (pixel p is within ``disk(r)`` of q  <=>  (p_y - q_y)^2 + (p_x - q_x)^2 <= r^2).
"""

from __future__ import annotations

import math

import numpy as np


# -------------------------------------------------------------------------------- LISA


def lisa_intersection_and_union(output: np.ndarray, target: np.ndarray, k: int = 2, ignore_index: int = 255):
    """Port of LISA's ``intersectionAndUnionGPU`` (numpy): per-class areas for classes 0..k-1."""
    output = output.astype(np.int64).reshape(-1).copy()
    target = target.astype(np.int64).reshape(-1)
    output[target == ignore_index] = ignore_index
    intersection = output[output == target]
    area_intersection = np.histogram(intersection, bins=k, range=(0, k - 1))[0]
    area_output = np.histogram(output, bins=k, range=(0, k - 1))[0]
    area_target = np.histogram(target, bins=k, range=(0, k - 1))[0]
    area_union = area_output + area_target - area_intersection
    return area_intersection, area_union


def lisa_giou_ciou(preds: list[np.ndarray], targets: list[np.ndarray]) -> tuple[float, float]:
    """LISA's validate(): gIoU = mean of the foreground acc_iou; cIoU = sum I / (sum U + 1e-10)."""
    inter_sum = np.zeros(2)
    union_sum = np.zeros(2)
    acc = []
    for p, t in zip(preds, targets):
        inter, union = lisa_intersection_and_union(p, t)
        inter_sum += inter
        union_sum += union
        acc_iou = inter / (union + 1e-5)
        acc_iou[union == 0] += 1.0
        acc.append(acc_iou[1])
    return float(np.mean(acc)), float(inter_sum[1] / (union_sum[1] + 1e-10))


# -------------------------------------------------------------------------------- GLaMM


def glamm_compute_iou(mask1: np.ndarray, mask2: np.ndarray) -> float:
    inter = np.logical_and(mask1, mask2).sum()
    union = np.logical_or(mask1, mask2).sum()
    return float(inter / union) if union else 0.0  # GLaMM divides directly; its masks are never both empty


def glamm_compute_miou(pred_masks: list[np.ndarray], gt_masks: list[np.ndarray]) -> float:
    iou_matrix = np.zeros((len(pred_masks), len(gt_masks)))
    for i, p in enumerate(pred_masks):
        for j, g in enumerate(gt_masks):
            iou_matrix[i, j] = glamm_compute_iou(p, g)
    paired = []
    while iou_matrix.size > 0 and np.max(iou_matrix) > 0:
        idx = np.unravel_index(np.argmax(iou_matrix, axis=None), iou_matrix.shape)
        paired.append(iou_matrix[idx])
        iou_matrix = np.delete(iou_matrix, idx[0], axis=0)
        iou_matrix = np.delete(iou_matrix, idx[1], axis=1)
    return float(np.mean(paired)) if paired else 0.0


# -------------------------------------------------------------------------------- DAVIS


def davis_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS ``_seg2bmap`` (width/height = the mask's own), one pixel at a time."""
    seg = seg.astype(bool)
    h, w = seg.shape
    b = np.zeros((h, w), dtype=bool)

    def px(y: int, x: int) -> bool:
        return bool(seg[y, x]) if y < h and x < w else False  # zero padding east / south

    for y in range(h):
        for x in range(w):
            here = px(y, x)
            east, south, southeast = px(y, x + 1), px(y + 1, x), px(y + 1, x + 1)
            if y == h - 1 and x == w - 1:
                b[y, x] = False
            elif y == h - 1:
                b[y, x] = here != east
            elif x == w - 1:
                b[y, x] = here != south
            else:
                b[y, x] = (here != east) or (here != south) or (here != southeast)
    return b


def davis_db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray, void_pixels=None) -> np.ndarray:
    annotation = annotation.astype(bool)
    segmentation = segmentation.astype(bool)
    void = np.zeros_like(segmentation) if void_pixels is None else void_pixels.astype(bool)
    inters = np.sum((segmentation & annotation) & ~void, axis=(-2, -1))
    union = np.sum((segmentation | annotation) & ~void, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inters / union
    j = np.atleast_1d(j).astype(np.float64)
    j[np.isclose(np.atleast_1d(union), 0)] = 1
    return j


def _matched(points: np.ndarray, others: np.ndarray, radius: float) -> int:
    """How many of ``points`` (N x 2) lie within distance ``radius`` of some of ``others`` (M x 2)."""
    if len(points) == 0 or len(others) == 0:
        return 0
    d2 = ((points[:, None, :] - others[None, :, :]) ** 2).sum(-1)
    return int((d2.min(axis=1) <= radius * radius).sum())


def davis_f_measure(
    foreground_mask: np.ndarray, gt_mask: np.ndarray, void_pixels=None, bound_th: float = 0.008
) -> float:
    void = np.zeros_like(foreground_mask, dtype=bool) if void_pixels is None else void_pixels.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(foreground_mask.shape))
    fg_boundary = davis_seg2bmap(foreground_mask.astype(bool) & ~void)
    gt_boundary = davis_seg2bmap(gt_mask.astype(bool) & ~void)
    fg_pts = np.argwhere(fg_boundary)
    gt_pts = np.argwhere(gt_boundary)
    n_fg, n_gt = len(fg_pts), len(gt_pts)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = _matched(fg_pts, gt_pts, bound_pix) / n_fg
        recall = _matched(gt_pts, fg_pts, bound_pix) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def davis_j_and_f(pred: np.ndarray, gt: np.ndarray, void=None, bound_th: float = 0.008) -> dict[str, float]:
    """Per-object J, F (mean over frames) and J&F, T x H x W inputs."""
    j = davis_db_eval_iou(gt, pred, void)
    f = np.array([
        davis_f_measure(pred[t], gt[t], None if void is None else void[t], bound_th) for t in range(len(gt))
    ])
    jm, fm = float(j.mean()), float(f.mean())
    return {"J": jm, "F": fm, "JF": (jm + fm) / 2}
