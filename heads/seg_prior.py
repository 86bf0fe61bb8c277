"""Seg prior: a ``[SEG]`` state's similarity with every cell of the image embedding, as a coarse mask.

The language model's ``[SEG]`` state prompts SAM's decoder through sparse tokens (``SegProjector``); the decoder
must then learn to find the object those tokens describe, which takes many steps when the decoder was trained
for box prompts. ``SegPrior`` adds a direct path, as in LSeg / CLIPSeg: a query from the ``[SEG]`` state and a
key per embedding cell, their scaled dot product a logit per cell. The map is supervised with the mask target
(a direct gradient to "which cells are the object") and prompts the decoder through SAM's own mask input
(``PromptEncoder.mask_downscaling``), which refines it.

A cell's own features say what is there (colour) more than what object it belongs to (shape: a cell inside a
triangle looks like a cell inside a square). ``context`` > 0 adds residual blocks of dilated depthwise 3 x 3
convolutions over the keys (dilations 1, 2, 4, ...: with 4 blocks each key sees 31 x 31 cells), as LSeg's
spatial regularisation and CLIPSeg's decoder give their per-pixel features the neighbourhood.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SegPrior(nn.Module):
    """``[SEG]`` hidden states x image embeddings -> N x 1 x h x w logits (one map per ``[SEG]``).

    Args:
        in_dim: LLM hidden size.
        embed_dim: channels of the mask head's image embedding (256 for SAM).
        dim: query / key width.
        context: residual dilated depthwise-convolution blocks over the keys (0: each key sees its cell only).
    """

    def __init__(self, in_dim: int, embed_dim: int = 256, dim: int = 256, context: int = 0) -> None:
        super().__init__()
        if context < 0:
            raise ValueError(f"context must be >= 0 blocks, got {context}")
        self.in_dim, self.embed_dim, self.dim = in_dim, embed_dim, dim
        self.query = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, dim))
        # keys: a per-cell MLP (1 x 1 convolutions) over channel-normalised features
        self.key = nn.Sequential(
            nn.GroupNorm(1, embed_dim),
            nn.Conv2d(embed_dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, dim, 1),
        )
        self.context = nn.ModuleList(_ContextBlock(dim, 2**i) for i in range(context))
        self.bias = nn.Parameter(torch.tensor(-2.0))  # objects cover a small part of the image

    def forward(self, hidden: Tensor, image_embeddings: Tensor, image_index: Tensor) -> Tensor:
        """hidden N x in_dim, image_embeddings B x C x h x w, image_index (N,) -> N x 1 x h x w logits."""
        if hidden.dim() != 2 or hidden.shape[-1] != self.in_dim:
            raise ValueError(f"hidden must be N x {self.in_dim}, got {tuple(hidden.shape)}")
        if image_embeddings.dim() != 4 or image_embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"image_embeddings must be B x {self.embed_dim} x h x w, got {tuple(image_embeddings.shape)}")
        if image_index.shape != (hidden.shape[0],):
            raise ValueError(f"image_index must be ({hidden.shape[0]},), got {tuple(image_index.shape)}")
        dtype = self.key[1].weight.dtype
        used, local = torch.unique(image_index, return_inverse=True)  # keys once per image that has a [SEG]
        keys = self.key(image_embeddings[used].to(dtype))  # U x d x h x w
        for block in self.context:
            keys = block(keys)
        q = self.query(hidden.to(dtype))  # N x d
        logits = torch.einsum("nd,ndhw->nhw", q, keys[local]) / math.sqrt(self.dim) + self.bias
        return logits[:, None]


class _ContextBlock(nn.Module):
    """x + pointwise(GELU(depthwise dilated 3 x 3(x))): mixes each cell's key with its neighbourhood."""

    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(dim, dim, 3, padding=dilation, dilation=dilation, groups=dim)
        self.mix = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.mix.weight)  # starts as the identity: the per-cell keys, then learns the context
        nn.init.zeros_(self.mix.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(nn.functional.gelu(self.spatial(x)))


def split_peaks(map_logits: Tensor, part: Tensor, min_pixels: float, levels: int = 9) -> list[Tensor]:
    """A part of a map cut between its peaks: where the map, cut at some fraction of the part's largest logit
    (0.1, 0.2, ... of it), falls apart into several pieces of at least ``min_pixels``, the cut with the most such
    pieces gives the markers, and every pixel of the part goes to one of them (marker watershed on the map): two
    objects that touch, whose map dips between them, come apart. A part with one peak comes back whole."""
    import cv2
    import numpy as np
    from skimage.segmentation import watershed

    values = map_logits.detach().float().cpu().numpy()
    inside = part.cpu().numpy()
    top = float(values[inside].max())
    best, markers = 1, None
    for f in np.arange(1, levels + 1) / (levels + 1):
        n, labels = cv2.connectedComponents(((values > f * top) & inside).astype(np.uint8), connectivity=8)
        sizes = np.bincount(labels.ravel(), minlength=n)
        big = [k for k in range(1, n) if sizes[k] >= min_pixels]
        if len(big) > best:
            best = len(big)
            markers = np.zeros(values.shape, np.int32)
            for i, k in enumerate(big):
                markers[labels == k] = i + 1
    if markers is None:
        return [part]
    basins = torch.from_numpy(watershed(-values, markers, mask=inside)).to(part.device)
    return [basins == i for i in range(1, best + 1)]


def uncovered_parts(
    map_logits: Tensor,
    covered: Tensor,
    valid: Tensor | None = None,
    min_fraction: float = 0.004,
    max_covered: float = 0.5,
) -> list[Tensor]:
    """The objects a map finds that no mask covers: the 8-connected parts of ``map_logits > 0`` (h x w logits,
    e.g. a presence map upsampled to the masks' frame), each cut between its peaks (``split_peaks``: touching
    objects), of which at most ``max_covered`` lies inside ``covered`` (h x w bool, the union of the masks already
    there), each without its covered pixels, kept when that remainder is at least ``min_fraction`` of the frame.
    ``valid``: h x w bool, False on padding (never part of a part). Returns bool h x w masks, strongest part
    (largest logit) first."""
    import cv2
    import numpy as np

    if map_logits.dim() != 2 or covered.shape != map_logits.shape:
        raise ValueError(f"uncovered_parts takes h x w logits and an h x w covered mask, got {tuple(map_logits.shape)} "
                         f"and {tuple(covered.shape)}")
    on = map_logits > 0
    if valid is not None:
        on &= valid.to(on.device)
    n, labels = cv2.connectedComponents(on.cpu().numpy().astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    labels = torch.from_numpy(labels).to(map_logits.device)
    covered = covered.to(map_logits.device)
    min_pixels = min_fraction * map_logits.numel()
    found = []
    for k in range(1, n):
        whole = labels == k
        if int(whole.sum()) < min_pixels:
            continue
        for part in split_peaks(map_logits, whole, min_pixels):
            if int((part & covered).sum()) > max_covered * int(part.sum()):
                continue
            rest = part & ~covered
            if int(rest.sum()) >= min_pixels:
                found.append((float(map_logits[part].max()), rest))
    found.sort(key=lambda item: -item[0])
    return [m for _, m in found]
