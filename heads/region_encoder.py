"""Region encoder: user boxes -> RoIAlign on the vision features -> MLP -> one embedding per box.

The embeddings replace the ``<region>`` token embeddings in the language model's input (done in ``grounding``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align


class RegionEncoder(nn.Module):
    """RoIAlign (``torchvision.ops.roi_align``, ``aligned=True``, ``sampling_ratio=2``) -> flatten ->
    Linear -> GELU -> Linear.

    Args:
        feature_dim: channels C of the feature map.
        out_dim: embedding size (the language model's hidden size).
        output_size: RoIAlign grid side; the MLP sees ``C * output_size**2`` inputs.
        hidden_dim: MLP hidden width; default ``out_dim``.
    """

    def __init__(self, feature_dim: int, out_dim: int, output_size: int = 4, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden_dim = out_dim if hidden_dim is None else hidden_dim
        self.feature_dim, self.out_dim, self.output_size = feature_dim, out_dim, output_size
        self.mlp = nn.Sequential(
            nn.Linear(feature_dim * output_size * output_size, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, features: Tensor, boxes: Sequence[Tensor], input_size: int | tuple[int, int]) -> Tensor:
        """Embed boxes.

        Args:
            features: B x C x h x w feature map of the input frame.
            boxes: B tensors of R_i x 4, xyxy absolute pixels in the input frame (the image the features were
                computed from). Boxes are clamped to the frame; empty tensors are fine.
            input_size: side of the input frame, or its (height, width).

        Returns:
            (sum R_i) x out_dim, boxes in order (image 0's first).
        """
        if features.dim() != 4 or features.shape[1] != self.feature_dim:
            raise ValueError(f"features must be B x {self.feature_dim} x h x w, got {tuple(features.shape)}")
        if len(boxes) != features.shape[0]:
            raise ValueError(f"got {len(boxes)} box tensors for {features.shape[0]} feature maps")
        in_h, in_w = (input_size, input_size) if isinstance(input_size, int) else input_size
        h, w = features.shape[-2:]
        scale = features.new_tensor([w / in_w, h / in_h, w / in_w, h / in_h])
        limit = features.new_tensor([in_w, in_h, in_w, in_h])
        rois = []
        for b in boxes:
            b = b.reshape(-1, 4).to(features)
            b = torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], dim=1)
            rois.append(torch.minimum(b.clamp(min=0), limit) * scale)  # feature-map coordinates
        num = sum(r.shape[0] for r in rois)
        if num == 0:
            return self.mlp(features.new_zeros(0, self.mlp[0].in_features))
        pooled = roi_align(features, rois, output_size=self.output_size, spatial_scale=1.0,
                           sampling_ratio=2, aligned=True)
        return self.mlp(pooled.flatten(1))
