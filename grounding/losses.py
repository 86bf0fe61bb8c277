"""Training losses: next-token CE on answer tokens + BCE + Dice on masks (LISA's 1.0 / 2.0 / 0.5 by default).

Mask losses are computed in the mask head's input frame (S x S), on the image pixels only (the padding is
excluded), with the decoder's low-res logits upsampled bilinearly to S.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grounding.processor import IGNORE_INDEX


@dataclass
class LossWeights:
    """Weights of the loss terms."""

    ce: float = 1.0
    """Next-token cross-entropy on answer tokens."""
    bce: float = 2.0
    """Per-pixel binary cross-entropy of each [SEG] mask."""
    dice: float = 0.5
    """Dice loss of each [SEG] mask."""
    iou: float = 0.0
    """MSE between the decoder's predicted IoU and the mask's real IoU (0 freezes the IoU head)."""
    prior: float = 1.0
    """Weight of the seg-prior maps' own mask loss (``HeadOptions.seg_prior``): ``bce`` x BCE + ``dice`` x Dice."""
    presence: float = 1.0
    """Weight of the presence head's loss (``HeadOptions.presence``): its map of each answer against the union of
    that answer's [SEG] masks (``bce`` x BCE + ``dice`` x Dice; empty for an answer without [SEG]) plus the BCE of
    the map's largest logit against "the answer has a [SEG]"."""


def answer_ce(logits: torch.Tensor, labels: torch.Tensor, logits_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token CE over labelled positions (labels are aligned with inputs; shifted here).

    ``logits``: B x L x V, or N x V computed at the True positions of ``logits_mask`` (B x L), which must
    cover every position whose next token is labelled."""
    if logits_mask is not None:
        targets = torch.full_like(labels, IGNORE_INDEX)
        targets[:, :-1] = labels[:, 1:]
        targets = targets[logits_mask]
        if targets.numel() == 0 or (targets != IGNORE_INDEX).sum() == 0:
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    if (shift_labels != IGNORE_INDEX).sum() == 0:
        return shift_logits.sum() * 0.0
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)


def mask_bce(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over masks of the per-pixel BCE averaged over valid pixels. logits/targets/valid: N x H x W."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    v = valid.float()
    return ((per_pixel * v).flatten(1).sum(1) / v.flatten(1).sum(1).clamp_min(1.0)).mean()


def mask_dice(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Mean over masks of 1 - (2 |P.T| + eps) / (|P| + |T| + eps) with soft P = sigmoid(logits), valid pixels."""
    p = torch.sigmoid(logits) * valid
    t = targets.float() * valid
    num = 2 * (p * t).flatten(1).sum(1) + eps
    den = p.flatten(1).sum(1) + t.flatten(1).sum(1) + eps
    return (1 - num / den).mean()


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """N: IoU of (logits > 0) with targets over valid pixels (both empty -> 1)."""
    p = (logits > 0) & valid
    t = targets.bool() & valid
    inter = (p & t).flatten(1).sum(1).float()
    union = (p | t).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def upsample_to(logits: torch.Tensor, size: int) -> torch.Tensor:
    """N x 1 x h x w -> N x size x size (bilinear)."""
    if logits.shape[-1] != size or logits.shape[-2] != size:
        logits = F.interpolate(logits, (size, size), mode="bilinear", align_corners=False)
    return logits[:, 0]


def presence_scores(maps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Presence logits T of T x 1 x h x w presence maps: the largest logit over the image's pixels
    (``valid``: T x S x S bool, False on padding)."""
    up = upsample_to(maps.float(), valid.shape[-1])
    return up.masked_fill(~valid.bool(), float("-inf")).flatten(1).amax(1)


def grounding_loss(forward, batch, weights: LossWeights) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for a ``GroundingForward`` and its ``GroundingBatch``."""
    parts = {"ce": answer_ce(forward.logits, batch.labels, forward.logits_mask)}
    total = weights.ce * parts["ce"]
    if forward.mask_logits is not None and len(forward.mask_logits):
        S = batch.seg_masks.shape[-1]
        logits = upsample_to(forward.mask_logits.float(), S)
        targets = batch.seg_masks
        valid = batch.valid_masks
        if forward.mask_index is not None:  # only a subset of the [SEG] masks was decoded
            targets, valid = targets[forward.mask_index], valid[forward.mask_index]
        parts["bce"] = mask_bce(logits, targets, valid)
        parts["dice"] = mask_dice(logits, targets, valid)
        total = total + weights.bce * parts["bce"] + weights.dice * parts["dice"]
        with torch.no_grad():
            real_iou = mask_iou(logits, targets, valid)
        parts["mask_iou"] = real_iou.mean()
        if weights.iou > 0 and forward.iou is not None:
            parts["iou_mse"] = F.mse_loss(forward.iou[:, 0].float(), real_iou)
            total = total + weights.iou * parts["iou_mse"]
        if forward.prior_logits is not None and weights.prior > 0:
            # the prior maps every [SEG], also those the decoder skipped (forward.mask_index)
            prior = upsample_to(forward.prior_logits.float(), S)
            all_targets, all_valid = batch.seg_masks, batch.valid_masks
            parts["prior_bce"] = mask_bce(prior, all_targets, all_valid)
            parts["prior_dice"] = mask_dice(prior, all_targets, all_valid)
            total = total + weights.prior * (weights.bce * parts["prior_bce"] + weights.dice * parts["prior_dice"])
            with torch.no_grad():
                parts["prior_iou"] = mask_iou(prior, all_targets, all_valid).mean()
    if forward.presence_logits is not None and weights.presence > 0:
        total = total + weights.presence * _presence_loss(forward, batch, weights, parts)
    return total, parts


def answer_targets(batch, answer_image_index: torch.Tensor, seg_answer_index: torch.Tensor | None):
    """Per answer: the union of its [SEG] masks (T x S x S bool), its image's valid pixels, and whether it has a
    [SEG] (T bool)."""
    T, S = len(answer_image_index), batch.seg_masks.shape[-1]
    dev = batch.seg_masks.device
    union = torch.zeros(T, S, S, device=dev)
    has = torch.zeros(T, dtype=torch.bool, device=dev)
    if seg_answer_index is not None and len(seg_answer_index):
        idx = seg_answer_index.to(dev)
        union.index_add_(0, idx, batch.seg_masks.float())
        has[idx] = True
    return union > 0, batch.image_valid_masks.to(dev)[answer_image_index.to(dev)], has


def _presence_loss(forward, batch, weights: LossWeights, parts: dict) -> torch.Tensor:
    union, valid, has = answer_targets(batch, forward.answer_image_index, forward.seg_answer_index)
    maps = upsample_to(forward.presence_logits.float(), union.shape[-1])
    parts["presence_map_bce"] = mask_bce(maps, union, valid)
    parts["presence_map_dice"] = mask_dice(maps, union, valid)
    score = presence_scores(maps[:, None], valid)  # already at S x S: no second upsampling
    parts["presence_bce"] = F.binary_cross_entropy_with_logits(score, has.float())
    with torch.no_grad():
        parts["presence_acc"] = ((score > 0) == has).float().mean()
    return weights.bce * parts["presence_map_bce"] + weights.dice * parts["presence_map_dice"] + parts["presence_bce"]
