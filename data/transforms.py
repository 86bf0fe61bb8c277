"""The one image/box/mask geometry between the original frame and a model's square input frame.

SAM-style preprocessing: resize so the longest side equals ``size`` (sizes from segment-anything's own
``ResizeLongestSide.get_preprocess_shape``), normalise, pad bottom/right to ``size x size``. Every map between
frames lives in ``ImageGeometry``; nothing else rescales boxes or masks.

Frames: *original* = the image as the user gave it (H x W); *input* = the padded square the encoder sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide


@dataclass(frozen=True)
class ImageGeometry:
    """How an original H x W image sits in a square input frame of side ``input_size``."""

    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_size: int

    @classmethod
    def create(cls, original_hw: tuple[int, int], input_size: int) -> "ImageGeometry":
        h, w = (int(v) for v in original_hw)
        if h <= 0 or w <= 0:
            raise ValueError(f"image has zero size: {h} x {w}")
        rh, rw = ResizeLongestSide.get_preprocess_shape(h, w, input_size)
        return cls((h, w), (max(1, rh), max(1, rw)), int(input_size))

    @property
    def scale_xy(self) -> tuple[float, float]:
        """(sx, sy): input-frame pixels per original pixel."""
        return self.resized_hw[1] / self.original_hw[1], self.resized_hw[0] / self.original_hw[0]

    def boxes_to_input(self, boxes) -> np.ndarray:
        """N x 4 xyxy original pixels -> N x 4 xyxy input-frame pixels (float32)."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        sx, sy = self.scale_xy
        return b * np.array([sx, sy, sx, sy], np.float32)

    def boxes_to_original(self, boxes) -> np.ndarray:
        """N x 4 xyxy input-frame pixels -> N x 4 xyxy original pixels, clipped to the image (float32)."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        sx, sy = self.scale_xy
        out = b / np.array([sx, sy, sx, sy], np.float32)
        h, w = self.original_hw
        return np.clip(out, 0, np.array([w, h, w, h], np.float32))

    def mask_to_input(self, mask: np.ndarray) -> np.ndarray:
        """bool H x W (original) -> bool S x S (input frame; padding is False). Nearest-neighbour resize."""
        m = np.asarray(mask, dtype=np.uint8)
        if m.shape != self.original_hw:
            raise ValueError(f"mask is {m.shape} but the image is {self.original_hw}")
        rh, rw = self.resized_hw
        r = cv2.resize(m, (rw, rh), interpolation=cv2.INTER_NEAREST)
        out = np.zeros((self.input_size, self.input_size), bool)
        out[:rh, :rw] = r > 0
        return out

    def valid_mask(self) -> np.ndarray:
        """bool S x S: True on the image, False on the padding."""
        out = np.zeros((self.input_size, self.input_size), bool)
        out[: self.resized_hw[0], : self.resized_hw[1]] = True
        return out

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """N x C x s x s logits over the input frame (any s) -> N x C x H x W over the original image.

        Upsamples to the input size, crops the padding, resizes to the original size (bilinear), as
        segment-anything's ``Sam.postprocess_masks`` does.
        """
        x = F.interpolate(logits, (self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = x[..., : self.resized_hw[0], : self.resized_hw[1]]
        return F.interpolate(x, self.original_hw, mode="bilinear", align_corners=False)


@dataclass(frozen=True)
class ImageTransform:
    """Resize-longest-side + normalise + pad, producing a 3 x S x S float tensor and its geometry.

    ``mean``/``std`` are per channel in 0..255 units (SAM: ImageNet statistics; LiteMedSAM: mean 0, std 255).
    """

    size: int = 1024
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    def geometry(self, original_hw: tuple[int, int]) -> ImageGeometry:
        return ImageGeometry.create(original_hw, self.size)

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, ImageGeometry]:
        """H x W x 3 uint8 RGB -> (3 x S x S float32 tensor, geometry)."""
        img = as_rgb_uint8(image)
        geo = self.geometry(img.shape[:2])
        rh, rw = geo.resized_hw
        interp = cv2.INTER_AREA if rh < img.shape[0] else cv2.INTER_LINEAR
        resized = cv2.resize(img, (rw, rh), interpolation=interp)
        x = (resized.astype(np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        out = np.zeros((self.size, self.size, 3), np.float32)
        out[:rh, :rw] = x
        return torch.from_numpy(out).permute(2, 0, 1).contiguous(), geo


def as_rgb_uint8(image) -> np.ndarray:
    """Any H x W, H x W x 1, H x W x 3 or H x W x 4 array (uint8, or float in 0..1) -> H x W x 3 uint8 RGB."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 image, got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image has zero size: {img.shape[0]} x {img.shape[1]}")
    return np.ascontiguousarray(img)
