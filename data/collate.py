"""Padding and ragged-stacking helpers for batches (tokenisation itself is the model processor's job)."""

from __future__ import annotations

from typing import Sequence

import torch


def pad_1d(seqs: Sequence[torch.Tensor], value: int | float, side: str = "right") -> torch.Tensor:
    """Stack 1-D tensors of different lengths into B x Lmax, padding with ``value`` on ``side``."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    if not seqs:
        raise ValueError("nothing to pad")
    n = max(int(s.shape[0]) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=seqs[0].dtype)
    for i, s in enumerate(seqs):
        if side == "right":
            out[i, : len(s)] = s
        else:
            out[i, n - len(s) :] = s
    return out
