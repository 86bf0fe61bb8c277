"""Seg projector: LLM hidden state of a ``[SEG]`` token -> sparse prompt token(s) for the SAM mask decoder."""

from __future__ import annotations

from torch import Tensor, nn


class SegProjector(nn.Module):
    """LISA's ``text_hidden_fcs``: Linear -> ReLU -> Linear -> Dropout, reshaped to ``num_tokens`` prompt tokens.

    ``num_tokens=2`` maps one ``[SEG]`` to two corner-like tokens, closer to the box prompts (two corner tokens)
    that box-trained decoders such as LiteMedSAM know.

    Args:
        in_dim: LLM hidden size.
        out_dim: prompt token size (the mask head's ``embed_dim``, 256 for SAM).
        num_tokens: prompt tokens per ``[SEG]``.
        hidden_dim: MLP hidden width; default ``in_dim`` (as LISA).
        dropout: dropout after the last layer (LISA: 0.0).
    """

    def __init__(self, in_dim: int, out_dim: int = 256, num_tokens: int = 1, hidden_dim: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        hidden_dim = in_dim if hidden_dim is None else hidden_dim
        self.in_dim, self.out_dim, self.num_tokens = in_dim, out_dim, num_tokens
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim * num_tokens),
            nn.Dropout(dropout),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        """N x in_dim (any leading dims) -> N x num_tokens x out_dim."""
        if hidden.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dim {self.in_dim}, got {tuple(hidden.shape)}")
        return self.mlp(hidden).reshape(*hidden.shape[:-1], self.num_tokens, self.out_dim)
