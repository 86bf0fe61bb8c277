"""``GroundingPredictor``: the inference API.

    from grounding import GroundingPredictor
    predictor = GroundingPredictor.from_pretrained("default")       # or "tiny", or a path
    result = predictor.predict("photo.jpg", "Please segment the red circle.")
    result.segments[0].mask, result.segments[0].box, result.to_dict()

As in segment-anything's ``SamPredictor``, ``set_image`` (expensive: the image encoder) is split from
``predict`` (cheap, repeated): several prompts about one image encode it once. ``predict_batch`` batches the
vision-LLM's generation and the mask decoder across images. Boxes are ``xyxy`` float in absolute pixels of
the original image; masks are bool ``H x W`` at the original resolution.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from data.sample import Turn
from data.transforms import as_rgb_uint8
from grounding.describe import check_by_description, describe_phrases
from grounding.errors import GroundingError, InvalidImageError, InvalidPromptError, InvalidRegionError
from grounding.model import GeneratedAnswer, GroundingModel
from grounding.processor import GroundingProcessor
from grounding.results import GroundingResult, Segment, mask_box

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000  # refuse larger images (decompression bombs)


def load_image(image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A path, bytes, PIL image or array -> H x W x 3 uint8 RGB (EXIF orientation applied, alpha dropped).

    Raises ``InvalidImageError`` for unreadable data, empty images and images above ``max_pixels``.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike, bytes, bytearray)):
        src = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray)) else Path(image)
        if isinstance(src, Path) and not src.is_file():
            raise InvalidImageError(f"no image file at {src}")
        try:
            with Image.open(src) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InvalidImageError(f"image is {w} x {h} = {w * h} pixels, above the limit of {max_pixels}")
                if w == 0 or h == 0:
                    raise InvalidImageError(f"image has zero size: {w} x {h}")
                im = ImageOps.exif_transpose(im)
                image = im.convert("RGBA" if "A" in im.getbands() else "RGB")
        except InvalidImageError:
            raise
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
            name = src if isinstance(src, Path) else "the uploaded data"
            raise InvalidImageError(f"cannot read {name} as an image: {e}") from None
    if hasattr(image, "getbands"):  # PIL image given directly
        from PIL import ImageOps

        image = ImageOps.exif_transpose(image)
        image = np.asarray(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidImageError(f"image has zero size: shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise InvalidImageError(f"image has {arr.shape[0] * arr.shape[1]} pixels, above the limit of {max_pixels}")
    if arr.dtype.kind not in "biuf":
        raise InvalidImageError(f"an image array holds numbers, got dtype {arr.dtype}")
    try:
        return as_rgb_uint8(arr)
    except (ValueError, TypeError) as e:
        raise InvalidImageError(str(e)) from None


def check_regions(regions, image_hw: tuple[int, int]) -> np.ndarray:
    """R x 4 xyxy boxes (original pixels), clipped to the image; ``InvalidRegionError`` for bad ones."""
    if regions is None:
        return np.zeros((0, 4), np.float32)
    try:
        r = np.asarray(regions, dtype=np.float32).reshape(-1, 4)
    except (ValueError, TypeError):
        raise InvalidRegionError(f"regions must be boxes [x1, y1, x2, y2], got {regions!r}") from None
    h, w = image_hw
    for i, b in enumerate(r):
        if not np.all(np.isfinite(b)):
            raise InvalidRegionError(f"region {i} has non-finite coordinates: {b.tolist()}")
        if b[2] <= b[0] or b[3] <= b[1]:
            raise InvalidRegionError(f"region {i} is empty or not x1 < x2, y1 < y2: {b.tolist()}")
        if b[2] <= 0 or b[3] <= 0 or b[0] >= w or b[1] >= h:
            raise InvalidRegionError(f"region {i} {b.tolist()} lies outside the {w} x {h} image")
    r[:, [0, 2]] = np.clip(r[:, [0, 2]], 0, w)
    r[:, [1, 3]] = np.clip(r[:, [1, 3]], 0, h)
    return r


@dataclass
class _ImageState:
    image: np.ndarray
    key: str
    embedding: torch.Tensor  # 1 x C x h x w


class GroundingPredictor:
    """Inference on a ``GroundingModel`` + its ``GroundingProcessor`` (see the module docstring).

    Thread-safe: calls are serialised by a lock (the image cache is shared state).
    """

    def __init__(
        self,
        model: GroundingModel,
        processor: GroundingProcessor,
        device: str | torch.device = "cpu",
        max_new_tokens: int = 96,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        encoder_batch_size: int | None = None,
        encoder_precision: str = "auto",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # "auto": the image encoder in bfloat16 where the hardware computes it natively (as in bf16-mixed
        # training, whose cached features were bf16 too), float32 elsewhere; see SamMaskHead.set_encoder_precision
        try:
            self.model.mask_head.set_encoder_precision(encoder_precision, self.device)
        except ValueError as e:
            raise GroundingError(str(e)) from None
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.max_pixels = max_pixels
        # images per image-encoder call in predict_batch; None: 1 on CPU (a CPU encodes a batch of 256 px images
        # no faster per image than one at a time, often slower: activations leave the cache), all at once elsewhere
        self.encoder_batch_size = encoder_batch_size
        self._state: _ImageState | None = None
        self._lock = threading.RLock()

    @property
    def encoder_dtype(self) -> torch.dtype | None:
        """The image encoder's autocast dtype (None: float32); the mask head holds it."""
        return self.model.mask_head.encoder_dtype

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str = "default", device: str = "cpu", **kwargs) -> "GroundingPredictor":
        """``"default"`` (the embedded default model), ``"tiny"`` (random, for tests), an exported folder
        (``grounding export``), or a Lightning ``.ckpt`` of ``GroundingLitModule``."""
        from grounding.hub import load_model

        model, processor = load_model(name_or_path)
        return cls(model, processor, device=device, **kwargs)

    # ------------------------------------------------------------------ image cache
    def set_image(self, image) -> np.ndarray:
        """Read and encode ``image`` once (cached for the following ``predict`` calls); returns the RGB array."""
        with self._lock:
            img = load_image(image, self.max_pixels)
            sam_image, _ = self.processor.image_transform(img)
            key = self.processor.image_key(sam_image)
            if self._state is not None and self._state.key == key:
                return self._state.image
            with torch.no_grad():
                emb = self.model.encode_images(sam_image[None].to(self.device), [key])
            self._state = _ImageState(img, key, emb)
            return img

    def reset_image(self) -> None:
        with self._lock:
            self._state = None

    @property
    def image(self) -> np.ndarray | None:
        return None if self._state is None else self._state.image

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        image=None,
        prompt: str | Turn = "",
        regions=None,
        box_to_mask: bool = False,
        max_new_tokens: int | None = None,
    ) -> GroundingResult:
        """Answer ``prompt`` about ``image`` (or the image from ``set_image`` when ``image`` is None).

        ``regions``: R x 4 xyxy boxes (original pixels) for the prompt's ``<region>`` placeholders (added in
        front of the prompt when it has none). ``box_to_mask``: turn boxes written as text into masks with the
        mask decoder's box prompt.
        """
        with self._lock:
            t0 = time.perf_counter()
            if image is not None:
                self.set_image(image)
            if self._state is None:
                raise InvalidImageError("no image: pass one to predict() or call set_image() first")
            t1 = time.perf_counter()
            st = self._state
            results = self._run([st.image], [prompt], [regions], st.embedding, box_to_mask, max_new_tokens)
            res = results[0]
            res.timings["set_image"] = t1 - t0
            res.timings["total"] = time.perf_counter() - t0
            return res

    def predict_batch(
        self,
        images: Sequence,
        prompts: Sequence[str | Turn],
        regions: Sequence | None = None,
        box_to_mask: bool = False,
        max_new_tokens: int | None = None,
    ) -> list[GroundingResult]:
        """One result per (image, prompt) pair, generated in one batch (each distinct image encoded once, in
        chunks of ``encoder_batch_size``)."""
        if len(images) != len(prompts):
            raise InvalidPromptError(f"got {len(images)} images but {len(prompts)} prompts")
        if regions is not None and len(regions) != len(images):
            raise InvalidRegionError(f"got {len(regions)} region lists for {len(images)} images")
        if not images:
            return []
        with self._lock:
            imgs = [load_image(im, self.max_pixels) for im in images]
            return self._run(imgs, list(prompts), list(regions) if regions is not None else [None] * len(imgs), None, box_to_mask, max_new_tokens)

    def _run(self, imgs, prompts, regions, embedding, box_to_mask, max_new_tokens) -> list[GroundingResult]:
        t0 = time.perf_counter()
        reqs, checked = [], []
        for img, prompt, reg in zip(imgs, prompts, regions):
            if isinstance(prompt, str) and not prompt.strip():
                raise InvalidPromptError("the prompt is empty")
            r = check_regions(reg, img.shape[:2])
            checked.append(r)
            try:
                reqs.append(self.processor.encode_request(img, prompt, r))
            except ValueError as e:
                raise InvalidPromptError(str(e)) from None
        batch = self.processor.collate(reqs, padding_side="left").to(self.device)
        t_pre = time.perf_counter()
        if embedding is None:  # predict_batch: each distinct image encoded once, for generation and masks alike
            with torch.no_grad():
                emb = self._encode(batch.sam_images, batch.image_keys)
        else:
            emb = embedding.expand(len(reqs), -1, -1, -1)
        t1 = time.perf_counter()
        max_new_tokens = max_new_tokens or self.max_new_tokens
        answers = self.model.generate(batch, max_new_tokens=max_new_tokens, image_embeddings=emb)
        if self.model.options.check_by_description is not None:  # unsure answers checked against their mask's description
            check_by_description(self.model, self.processor, imgs, prompts, checked, answers, batch.geometries, emb,
                                 max_new_tokens)
        if self.model.options.describe_phrases:  # caption phrases named again from their masks (grounding.describe)
            describe_phrases(self.model, self.processor, imgs, answers, batch.geometries, emb)
        t2 = time.perf_counter()
        results = []
        for i, (ans, prompt) in enumerate(zip(answers, prompts)):
            phrase = prompt.expression if isinstance(prompt, Turn) else None
            res = self._result(ans, batch.geometries[i], phrase)
            results.append(res)
        if box_to_mask:
            self._boxes_to_masks(results, batch, emb)
        t3 = time.perf_counter()
        for r in results:
            # seconds: prompts -> tokens (preprocess), image encoder (set_image; predict sets it itself), the
            # vision-LLM's generation with [SEG] mask decoding (generate), box-to-mask decoding and results (masks)
            r.timings.update({"preprocess": t_pre - t0, "generate": t2 - t1, "masks": t3 - t2})
            if embedding is None:
                r.timings["set_image"] = t1 - t_pre
            r.timings["total"] = t3 - t0
        return results

    def _encode(self, sam_images: torch.Tensor, keys: list[str]) -> torch.Tensor:
        """B x C x h x w embeddings; each distinct image (by key) encoded once, ``encoder_batch_size`` per call."""
        n = self.encoder_batch_size or (1 if self.device.type == "cpu" else len(keys))
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        uniq = list(first.values())
        feats: dict[str, torch.Tensor] = {}
        for start in range(0, len(uniq), n):
            idx = uniq[start : start + n]
            emb = self.model.encode_images(sam_images[idx], [keys[i] for i in idx])
            feats.update({keys[i]: emb[j] for j, i in enumerate(idx)})
        return torch.stack([feats[k] for k in keys])

    def _result(self, ans: GeneratedAnswer, geometry, default_phrase: str | None) -> GroundingResult:
        h, w = geometry.original_hw
        masks: list[np.ndarray] = []
        scores: list[float] = []
        if ans.mask_logits is not None:
            full = geometry.logits_to_original(ans.mask_logits.float())
            masks = [m[0].cpu().numpy() > 0 for m in full]
            scores = [float(s) for s in ans.scores.float().clamp(0, 1).cpu()]
        segments = []
        skipped = [f"{reason} at characters {a}-{b}" for a, b, reason in ans.parsed.skipped]
        for s in ans.parsed.segments:
            phrase = s.phrase or default_phrase
            if s.seg_index is not None:
                if s.seg_index >= len(masks):
                    # "[SEG]" written as plain text (not the [SEG] token) has no hidden state, so no mask
                    skipped.append(f"[SEG] without a mask (not the [SEG] token) at characters {s.start}-{s.end}")
                    continue
                mask = masks[s.seg_index]
                box = s.box if s.box is not None else mask_box(mask)
                segments.append(Segment(phrase, box, mask, scores[s.seg_index], "seg"))
            else:
                segments.append(Segment(phrase, s.box, None, 1.0, "box"))
        return GroundingResult(ans.parsed.clean_text, segments, ans.text, (h, w), skipped, presence=ans.presence,
                               refused_by=ans.refused_by)

    def _boxes_to_masks(self, results, batch, emb) -> None:
        todo = [(i, s) for i, r in enumerate(results) for s in r.segments if s.mask is None and s.box is not None]
        if not todo:
            return
        if emb is None:
            emb = self.model.encode_images(batch.sam_images, batch.image_keys)
        boxes = np.stack([batch.geometries[i].boxes_to_input(s.box)[0] for i, s in todo])
        index = torch.tensor([i for i, _ in todo], device=self.device)
        with torch.no_grad():
            pred = self.model.mask_head.decode(emb, index, boxes=torch.from_numpy(boxes).to(self.device))
        for k, (i, s) in enumerate(todo):
            full = batch.geometries[i].logits_to_original(pred.low_res_logits[k : k + 1].float())
            s.mask = full[0, 0].cpu().numpy() > 0
            s.score = float(pred.iou[k, 0].clamp(0, 1))
            s.source = "box+sam"
