"""Mask verifier: does a candidate mask show what a ``[SEG]`` state asks for? (propose, then verify)

A mask decoder unsure of its object lights several objects at low logits; each 8-connected part of its logits
above a threshold is then a *candidate*. ``keep_one_part`` keeps the part of highest mean logit, which is the
decoder's own (unsure) choice. ``MaskVerifier`` scores every candidate against the ``[SEG]`` state instead, from
what the candidate *is*:

- its appearance: the image embedding averaged over the candidate (what the encoder says is there);
- its shape: the binary mask cropped to its box, padded square and resized to ``crop`` pixels, through a small
  CNN: the decoder draws an object's outline sharply even where the encoder's cells say little of its shape;
- its colour (``colour=True``): the mean and spread of each channel of the input image's pixels under it, for an
  encoder that may keep little of hue (LiteMedSAM was trained on grey medical images); the pixels keep all of it;
- its place and size: the box in the input frame (normalised) and the square root of its area;
- the decoder's and the seg prior's own evidence: mean and largest decoder logit and mean seg-prior logit over it.

With ``context`` > 0 the candidates of one ``[SEG]`` also see each other before they are scored (set context): each
candidate's encoding, with the ``[SEG]``'s query added, passes through ``context`` transformer blocks whose attention
stays within the candidates of its own ``[SEG]``, next to its rank among them from left to right, top to bottom
and small to large. A question about "the largest blue shape" or "the star left of the circle" is about how a
candidate stands among the others, which one candidate alone cannot show.

The score is a logit that the candidate is the ``[SEG]``'s object (trained with BCE against "IoU >= 0.5 with the
target", all candidates negative for questions about absent objects), so its largest value over the candidates
also says whether the object is there at all.

Frames: masks and decoder logits are in the mask head's input frame (S x S); embeddings and prior logits are on
the embedding grid (h x w). Nothing here knows what the objects are: the verifier is trained on the model's own
candidates (``grounding`` collects them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Candidates:
    """Candidate masks of N ``[SEG]`` states. ``masks``: K x S x S bool (input frame); ``owner``: K, the state each
    candidate came from; ``threshold``: K, the logit threshold that cut it."""

    masks: Tensor
    owner: Tensor
    threshold: Tensor

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def mask_parts(logits: Tensor, thresholds: Sequence[float], min_pixels: int = 4, same_iou: float = 0.95) -> Candidates:
    """The 8-connected parts of each of N x 1 x S x S ``logits`` above each threshold (in order), a part that
    repeats one already found for the same row (IoU above ``same_iou``) or has fewer than ``min_pixels`` dropped."""
    import cv2
    import numpy as np

    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"mask_parts takes N x 1 x S x S logits, got shape {tuple(logits.shape)}")
    if not thresholds:
        raise ValueError("mask_parts needs at least one threshold")
    values = logits.detach().float().cpu().numpy()[:, 0]
    masks, owner, cut = [], [], []
    for i, value in enumerate(values):
        found: list[np.ndarray] = []
        for thr in thresholds:
            n, labels = cv2.connectedComponents((value > thr).astype(np.uint8), connectivity=8)
            sizes = np.bincount(labels.ravel(), minlength=n)
            for k in range(1, n):
                if sizes[k] < min_pixels:
                    continue
                part = labels == k
                if any((part & f).sum() > same_iou * (part | f).sum() for f in found):
                    continue
                found.append(part)
                masks.append(part)
                owner.append(i)
                cut.append(float(thr))
    S = logits.shape[-2:]
    stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, *S), dtype=torch.bool)
    return Candidates(stacked.to(logits.device), torch.tensor(owner, dtype=torch.long, device=logits.device),
                      torch.tensor(cut, dtype=torch.float32, device=logits.device))


def square_crops(masks: Tensor, size: int) -> Tensor:
    """K x S x S bool -> K x 1 x size x size float: each mask cropped to its box, centred in a square of the
    box's longer side (so the aspect is kept) and resized (an empty mask gives zeros)."""
    k = masks.shape[0]
    out = masks.new_zeros((k, 1, size, size), dtype=torch.float32)
    if k == 0:
        return out
    ys = masks.any(2)
    xs = masks.any(1)
    boxes = []
    for i in range(k):
        y = ys[i].nonzero()
        x = xs[i].nonzero()
        if len(y) == 0:
            boxes.append([0.0, 0.0, 1.0, 1.0])
            continue
        x1, x2, y1, y2 = float(x[0]), float(x[-1]) + 1, float(y[0]), float(y[-1]) + 1
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        boxes.append([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(k, dtype=torch.float32)[:, None], torch.tensor(boxes)], 1).to(masks.device)
    crops = roi_align(masks[:, None].float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return crops.clamp(0, 1)


class MaskVerifier(nn.Module):
    """``[SEG]`` states x candidate masks -> K logits ("this candidate is the state's object").

    Args:
        in_dim: LLM hidden size (the ``[SEG]`` state).
        embed_dim: channels of the mask head's image embedding.
        dim: width of the matching space.
        crop: side of the shape crop the CNN reads.
        logit_scale: decoder / prior logits are divided by this before use (they run to about +-20).
        context: transformer blocks in which the candidates of one ``[SEG]`` attend to each other (0: each candidate
            is scored on its own).
        colour: also read each candidate's pixel colour (``features(..., images=)``: per channel, mean and standard
            deviation of the input image under the candidate).
    """

    n_geometry = 5  # x1, y1, x2, y2 (normalised), sqrt(area fraction)
    n_evidence = 3  # mean and largest decoder logit, mean seg-prior logit over the candidate
    n_colour_stats = 6  # per channel of the input image: mean and standard deviation under the candidate

    def __init__(self, in_dim: int, embed_dim: int = 256, dim: int = 128, crop: int = 32, logit_scale: float = 10.0,
                 context: int = 0, colour: bool = False) -> None:
        super().__init__()
        if crop % 8:
            raise ValueError(f"crop must be a multiple of 8, got {crop}")
        if context < 0:
            raise ValueError(f"context must be >= 0 blocks, got {context}")
        self.in_dim, self.embed_dim, self.dim, self.crop, self.logit_scale = in_dim, embed_dim, dim, crop, logit_scale
        self.shape = nn.Sequential(
            nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Flatten(), nn.Linear(64 * (crop // 8) ** 2, dim),
        )
        self.appearance = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, dim))
        self.n_colour = self.n_colour_stats if colour else 0
        self.colour = nn.Linear(self.n_colour, dim) if colour else None
        self.extra = nn.Linear(self.n_geometry + self.n_evidence, dim)
        self.candidate = nn.Sequential(nn.GELU(), nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.query = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.score = nn.Sequential(nn.Linear(3 * dim, dim), nn.GELU(), nn.Linear(dim, 1))
        if context:
            self.ranks = nn.Linear(3, dim)
            self.context = nn.ModuleList(
                nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
                for _ in range(context)
            )
        else:
            self.context = None

    def features(self, masks: Tensor, image_embeddings: Tensor, image_index: Tensor, mask_logits: Tensor,
                 prior_logits: Tensor | None, images: Tensor | None = None) -> Tensor:
        """The candidates' inputs, K x ``n_inputs`` float: appearance, colour (with ``colour``), shape crop, geometry,
        evidence.

        masks: K x S x S bool (input frame); image_embeddings: B x C x h x w; image_index: K (each candidate's image);
        mask_logits: K x 1 x s x s decoder logits of each candidate's own [SEG] (any s); prior_logits: K x 1 x h x w
        seg-prior logits of that [SEG] (None: zeros); images: B x 3 x S' x S' the mask head's input images (the
        encoder's normalised pixels, any S'; needed with ``colour``)."""
        if self.colour is not None and images is None:
            raise ValueError("this MaskVerifier reads colour (colour=True): features() needs the input images")
        k = masks.shape[0]
        if k == 0:
            return masks.new_zeros((0, self.n_inputs), dtype=torch.float32)
        h, w = image_embeddings.shape[-2:]
        S = masks.shape[-1]
        m = masks[:, None].float()
        weight = F.adaptive_avg_pool2d(m, (h, w))  # the share of each cell the candidate covers
        area = weight.flatten(1).sum(1).clamp_min(1e-6)
        # (one K_b x hw by hw x C product per image: indexing the embedding per candidate would build K x C x h x w)
        appearance = per_image_sums(weight.flatten(1), image_embeddings.float().flatten(2), image_index) / area[:, None]
        logits = F.interpolate(mask_logits.float(), (h, w), mode="area") if mask_logits.shape[-1] != w else mask_logits.float()
        inside = weight > 0
        mean_logit = (logits * weight).flatten(1).sum(1) / area
        max_logit = logits.masked_fill(~inside, float("-inf")).flatten(1).amax(1)
        max_logit = torch.where(torch.isfinite(max_logit), max_logit, mean_logit)
        mean_prior = torch.zeros_like(mean_logit) if prior_logits is None else (prior_logits.float() * weight).flatten(1).sum(1) / area
        evidence = torch.stack([mean_logit, max_logit, mean_prior], 1) / self.logit_scale
        ys, xs = masks.any(2), masks.any(1)
        idx = torch.arange(S, device=masks.device, dtype=torch.float32)
        big = torch.tensor(float(S), device=masks.device)
        x1 = torch.where(xs, idx, big).amin(1)
        x2 = torch.where(xs, idx + 1, -big).amax(1)
        y1 = torch.where(ys, idx, big).amin(1)
        y2 = torch.where(ys, idx + 1, -big).amax(1)
        frac = masks.flatten(1).float().mean(1)
        geometry = torch.stack([x1, y1, x2, y2], 1).clamp(0, S) / S
        geometry = torch.cat([geometry, frac.sqrt()[:, None]], 1)
        crops = square_crops(masks, self.crop).flatten(1)
        parts = [appearance]
        if self.colour is not None:
            parts.append(colour_stats(masks, images, image_index))
        return torch.cat([*parts, crops, geometry, evidence], 1)

    @property
    def n_inputs(self) -> int:
        return self.embed_dim + self.n_colour + self.crop**2 + self.n_geometry + self.n_evidence

    def forward(self, hidden: Tensor, features: Tensor, owner: Tensor) -> Tensor:
        """hidden N x in_dim ([SEG] states), features K x n_inputs (``features``), owner K (each candidate's
        state) -> K logits."""
        if hidden.dim() != 2 or hidden.shape[-1] != self.in_dim:
            raise ValueError(f"hidden must be N x {self.in_dim}, got {tuple(hidden.shape)}")
        if features.dim() != 2 or features.shape[-1] != self.n_inputs:
            raise ValueError(f"features must be K x {self.n_inputs}, got {tuple(features.shape)}")
        if owner.shape != (features.shape[0],):
            raise ValueError(f"owner must be ({features.shape[0]},), got {tuple(owner.shape)}")
        dtype = self.extra.weight.dtype
        features = features.to(dtype)
        a = self.embed_dim
        c = a + self.n_colour  # where the shape crop starts
        crops = features[:, c : c + self.crop**2].view(-1, 1, self.crop, self.crop)
        cand = self.appearance(features[:, :a]) + self.shape(crops) + self.extra(features[:, c + self.crop**2 :])
        if self.colour is not None:
            cand = cand + self.colour(features[:, a:c])
        cand = self.candidate(cand)
        q = self.query(hidden.to(dtype))[owner]
        if self.context is not None:
            g = features[:, c + self.crop**2 : c + self.crop**2 + self.n_geometry].float()
            keys = torch.stack([(g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2, g[:, 4]], 1)
            x = (cand + q + self.ranks(group_ranks(keys, owner).to(dtype)))[None]
            apart = owner[:, None] != owner[None, :]  # attention stays within one [SEG]'s candidates
            for block in self.context:
                x = block(x, src_mask=apart)
            cand = x[0]
        return self.score(torch.cat([cand, q, cand * q], 1))[:, 0]


def colour_stats(masks: Tensor, images: Tensor, image_index: Tensor) -> Tensor:
    """K x 6: per channel, the mean and standard deviation of ``images`` (B x 3 x S' x S') under each of K x S x S
    ``masks`` (image ``image_index[k]``; the images are resized to S x S first if S' differs: area-averaged down,
    nearest up)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x S x S, got {tuple(images.shape)}")
    img = images.float()
    if img.shape[-2:] != masks.shape[-2:]:
        down = img.shape[-1] > masks.shape[-1]
        img = F.interpolate(img, masks.shape[-2:], mode="area" if down else "nearest")
    img = img.to(masks.device).flatten(2)  # B x 3 x P
    w = masks.flatten(1).float()  # K x P
    sums = per_image_sums(w, img, image_index)
    squares = per_image_sums(w, img**2, image_index)
    n = w.sum(1, keepdim=True).clamp_min(1.0)
    mean = sums / n
    var = squares / n - mean**2
    return torch.cat([mean, var.clamp_min(0).sqrt()], 1)


def per_image_sums(weight: Tensor, values: Tensor, image_index: Tensor) -> Tensor:
    """K x C: for each row of K x P ``weight``, the weighted sum over the P pixels of its own image's ``values`` (B x
    C x P; row k reads image ``image_index[k]``), as one K_b x P @ P x C product per image, in ``weight``'s dtype
    whatever autocast is active (a sum over tens of thousands of pixels in bfloat16 would keep 3 digits)."""
    image_index = image_index.to(weight.device)
    out = weight.new_zeros((weight.shape[0], values.shape[1]))
    with torch.autocast(weight.device.type, enabled=False):
        for b in image_index.unique().tolist():
            rows = (image_index == b).nonzero()[:, 0]
            out[rows] = weight[rows] @ values[b].to(weight.dtype).T
    return out


def group_ranks(values: Tensor, groups: Tensor) -> Tensor:
    """K x F values -> K x F ranks in [0, 1] within each group (0 the smallest, 1 the largest, ties averaged; a
    group of one gets 0.5): where each candidate stands among the candidates of its own [SEG]."""
    same = groups[:, None] == groups[None, :]  # K x K
    below = ((values[None, :, :] < values[:, None, :]) & same[:, :, None]).sum(1).float()  # K x F: smaller others
    equal = ((values[None, :, :] == values[:, None, :]) & same[:, :, None]).sum(1).float() - 1  # ties, not itself
    n = same.sum(1, keepdim=True).float()
    return torch.where(n > 1, (below + equal / 2) / (n - 1).clamp_min(1), torch.full_like(below, 0.5))


def select_parts(logits: Tensor, candidates: Candidates, scores: Tensor, groups: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Each of N x 1 x S x S ``logits`` cut to its best-scored candidate: returns (logits whose ``> 0`` is that
    candidate, N best scores; -inf for a row without candidates, whose mask becomes empty). ``groups``: N ids (the
    answer of each row): the rows of one group stand for different objects, so each takes, in order, its best
    candidate not already taken by an earlier row of its group (half its pixels or more inside), or its best
    where all are taken. A row without candidates keeps its logits, lowered below zero everywhere. Inside the kept candidate the logits are shifted by minus its cut threshold, elsewhere
    they are ``-|logits - threshold|`` (as ``heads.keep_one_part``)."""
    n = logits.shape[0]
    if groups is not None and len(groups) != n:
        raise ValueError(f"select_parts got {len(groups)} groups for {n} masks")
    if scores.shape != (len(candidates),):
        raise ValueError(f"select_parts got {tuple(scores.shape)} scores for {len(candidates)} candidates")
    # a row without candidates: an empty mask that keeps its most confident pixel on top
    out = logits - logits.detach().amax(dim=(2, 3), keepdim=True).clamp_min(0) - 1e-3
    best = torch.full((n,), float("-inf"), device=logits.device)
    taken: dict[int, list[Tensor]] = {}
    owner = candidates.owner.tolist()
    masks = candidates.masks.to(logits.device)
    sizes = masks.flatten(1).sum(1)
    for i in range(n):
        rows = [k for k, o in enumerate(owner) if o == i]
        if not rows:
            continue
        earlier = [] if groups is None else taken.setdefault(int(groups[i]), [])
        s = scores[rows].float().clone()
        if earlier:
            free = torch.tensor([all(2 * int((masks[k] & e).sum()) < int(sizes[k]) for e in earlier) for k in rows],
                                device=s.device)
            if free.any():
                s = torch.where(free, s, torch.full_like(s, float("-inf")))
        j = rows[int(s.argmax())]
        keep = masks[j]
        earlier.append(keep)
        best[i] = scores[j]
        shifted = logits[i, 0] - candidates.threshold[j]
        out[i, 0] = torch.where(keep, shifted, -shifted.abs())
    return out, best
