"""Test doubles for the tracking tests: a mask head that segments flat-colour objects exactly, and hand-made
videos of moving rectangles with exact ground truth."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from heads.sam import MaskPrediction, SamConfig, SamMaskHead, build_sam_head

BACKGROUND = (90, 90, 90)


class ColourHead(SamMaskHead):
    """A ``SamMaskHead`` whose "encoder" pools the normalised RGB image (channels 0-2, channel 3 constant) and
    whose "decoder" segments, inside each box, the pixels of the colour found at the box's centre (read from the
    full-resolution input, which the fake keeps per embedding tensor): an ideal SAM for flat-colour
    objects on a flat background. 128 px input, 32 x 32 embedding, 128 x 128 low-res logits (the low-res frame
    is the input frame). Prompts without a box fall back to their mask input."""

    def __init__(self, threshold: float = 0.3):
        real = build_sam_head(SamConfig(encoder="tiny", image_size=128, patch_size=4, window_size=4))
        super().__init__(real.image_encoder, real.prompt_encoder, real.mask_decoder, 128)
        self.threshold = threshold
        self.encode_calls = 0
        self.decode_calls = 0
        self._images: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # data_ptr -> (embedding, image)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        self.encode_calls += 1
        pooled = F.avg_pool2d(images, 4)
        emb = images.new_zeros(images.shape[0], self.embed_dim, *pooled.shape[-2:])
        emb[:, :3] = pooled
        emb[:, 3] = 1.0
        for b in range(images.shape[0]):
            self._images[emb[b].data_ptr()] = (emb, images[b])
        return emb

    def decode(self, image_embeddings, image_index, sparse_tokens=None, boxes=None, mask_inputs=None,
               multimask_output=False) -> MaskPrediction:
        self.decode_calls += 1
        n = int(image_index.shape[0])
        rgb = torch.stack([self._images[e.data_ptr()][1] for e in image_embeddings])  # B x 3 x 128 x 128
        size = rgb.shape[-1]
        logits = torch.full((n, 1, size, size), -10.0)
        iou = torch.full((n, 1), 0.95)
        for k in range(n):
            img = rgb[int(image_index[k])]
            box = None if boxes is None or torch.isnan(boxes[k]).any() else boxes[k]
            if box is None:
                if mask_inputs is not None:
                    logits[k, 0] = torch.where(mask_inputs[k, 0] > 0, 10.0, -10.0)
                continue
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, size), min(y2, size)
            if x2 <= x1 or y2 <= y1:
                iou[k] = 0.0
                continue
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            ref = img[:, cy, cx]
            inside = torch.zeros(size, size, dtype=torch.bool)
            inside[y1:y2, x1:x2] = True
            close = (img - ref[:, None, None]).abs().sum(0) < self.threshold
            mask = inside & close
            logits[k, 0] = torch.where(mask, 10.0, -10.0)
            if not mask.any():
                iou[k] = 0.0
        if multimask_output:
            logits, iou = logits.repeat(1, 3, 1, 1), iou.repeat(1, 3)
        return MaskPrediction(low_res_logits=logits, iou=iou)


def rect_video(
    tracks: list[dict], num_frames: int = 8, size: tuple[int, int] = (96, 128), seed: int = 0
) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Frames (H x W x 3 uint8) and visible masks (obj_id -> T x H x W bool) of rectangles moving linearly.

    Each track: ``obj_id``, ``colour`` (RGB), ``xy`` (top-left at frame 0), ``wh``, ``v`` (pixels / frame);
    later tracks are drawn over earlier ones (occlusion). The background is a flat grey with faint noise.
    """
    h, w = size
    rng = np.random.default_rng(seed)
    noise = rng.integers(-6, 7, size=(h, w, 1))
    frames, masks = [], {t["obj_id"]: np.zeros((num_frames, h, w), bool) for t in tracks}
    for f in range(num_frames):
        img = np.clip(np.array(BACKGROUND)[None, None] + noise, 0, 255).astype(np.uint8)
        full = {}
        for t in tracks:
            x, y = np.asarray(t["xy"], float) + f * np.asarray(t["v"], float)
            m = np.zeros((h, w), bool)
            x1, y1 = int(round(x)), int(round(y))
            m[max(y1, 0) : max(y1 + t["wh"][1], 0), max(x1, 0) : max(x1 + t["wh"][0], 0)] = True
            full[t["obj_id"]] = m
            img[m] = t["colour"]
        for i, t in enumerate(tracks):
            vis = full[t["obj_id"]].copy()
            for later in tracks[i + 1 :]:
                vis &= ~full[later["obj_id"]]
            masks[t["obj_id"]][f] = vis
        frames.append(img)
    return frames, masks


def box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 1.0 if not b.any() else 0.0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


class OraclePredictor:
    """Stands in for ``GroundingPredictor`` in the tracking glue: ``predict(image, prompt)`` returns the segments
    ``answer(image, prompt)`` gives (a list of ``grounding.results.Segment``); ``model.mask_head`` is the given
    head. Records its calls."""

    def __init__(self, head, answer):
        from types import SimpleNamespace

        self.model = SimpleNamespace(mask_head=head)
        self.device = "cpu"
        self.answer = answer
        self.calls: list[str] = []

    def predict(self, image, prompt):
        from grounding.results import GroundingResult

        self.calls.append(prompt)
        segments = list(self.answer(image, prompt))
        text = "Sure." if segments else "There is no such object."
        return GroundingResult(text, segments, text, tuple(image.shape[:2]))


def segment(mask=None, box=None, phrase=None, score=0.9):
    from grounding.results import Segment

    if box is None and mask is not None:
        box = box_of(mask)
    return Segment(phrase, None if box is None else np.asarray(box, np.float32), mask, score, "seg")
