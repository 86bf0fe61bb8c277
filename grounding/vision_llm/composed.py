"""A composed vision-LLM, LLaVA-style: any causal LM + any vision features + an MLP projector.

The image features are pooled to a ``grid x grid`` map, projected to the LM's width and written into the
input embeddings at the ``<image>`` placeholder tokens (``grid * grid`` of them). The features come either
from the mask head's image encoder (one encoder pass serves the LM and the mask decoder; the embedded
default model does this) or from a separate ``vision_encoder`` module.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from grounding.tokens import IMAGE, token_id
from grounding.vision_llm.base import EncodedPrompt, LoraSettings, VisionLLM, apply_lora_to


def sincos_2d(grid: int, dim: int, norm: float = 1.0) -> torch.Tensor:
    """(grid * grid) x dim 2-D sine-cosine position codes, row-major, each of L2 norm about ``norm``."""
    quarter = dim // 4
    freq = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    parts = [torch.sin(xs.flatten()[:, None] * freq), torch.cos(xs.flatten()[:, None] * freq),
             torch.sin(ys.flatten()[:, None] * freq), torch.cos(ys.flatten()[:, None] * freq)]
    pe = torch.cat(parts, dim=1)
    if pe.shape[1] < dim:
        pe = torch.cat([pe, torch.zeros(pe.shape[0], dim - pe.shape[1])], dim=1)
    return pe * (norm / (dim / 2) ** 0.5)


PROJECTORS = ("mlp", "conv")
"""The image-token projectors of ``ComposedVisionLLM`` (see its ``projector`` argument)."""


def check_projector(name: str) -> str:
    if name not in PROJECTORS:
        raise ValueError(f"projector must be one of {PROJECTORS}, got {name!r}")
    return name


class ConvAbstractor(nn.Module):
    """Convolutions over the full feature map before pooling, so an image token can carry the *shape* of what
    lies in its cell, which average pooling erases (a locality-preserving projector in the spirit of Honeybee's
    C-Abstractor). B x C x h x w -> B x width x grid x grid.

    A 1x1 reduction to ``width`` channels, ``stages`` stride-2 3x3 convolutions, adaptive average pooling to
    the grid, then one 3x3 convolution across neighbouring cells (receptive field ~31 feature pixels for a 64 x 64
    map: a whole object, not a corner of it).
    """

    def __init__(self, feature_dim: int, grid: int, width: int = 128, stages: int = 3):
        super().__init__()
        self.grid = int(grid)
        layers: list[nn.Module] = [nn.Conv2d(feature_dim, width, 1), nn.GELU()]
        for _ in range(stages):
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GELU()]
        self.down = nn.Sequential(*layers)
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.down(features)
        return self.mix(F.adaptive_avg_pool2d(x, self.grid))


class ComposedVisionLLM(VisionLLM):
    """``language_model``: a transformers causal LM whose ``tokenizer`` already has the ``<image>`` token.

    ``feature_dim``: channels of the image features (B x C x h x w). ``grid``: side of the pooled token grid.
    ``vision_encoder``: None to take the mask head's image embeddings, else a module mapping the
    ``pixel_values`` made by ``image_transform`` to B x C x h x w features. ``position_embedding``: add a
    learned 2-D position embedding to the image tokens. ``feature_norm``: "instance" standardises each feature
    channel over the image before pooling (InstanceNorm with a learned affine), "none" leaves features as they are.
    ``token_norm``: LayerNorm the projected tokens to the scale of the language model's own token embeddings (and
    start the position embedding at that scale too), so that image tokens neither dwarf the text nor drown
    their position code; without it a freshly trained projector drifts to tokens many times larger than words.
    ``projector``: "mlp" projects each pooled cell (LLaVA's two-layer MLP); "conv" also runs a ``ConvAbstractor``
    over the unpooled map and projects [pooled cell, its conv features] (``conv_width`` channels), so tokens
    carry the shape of what they show, not only its mean colour.
    """

    image_placeholder = IMAGE
    lora_target_default = r".*\.(q_proj|v_proj)"

    def __init__(
        self,
        language_model: nn.Module,
        tokenizer,
        feature_dim: int,
        grid: int = 8,
        vision_encoder: nn.Module | None = None,
        image_transform=None,
        projector_hidden: int | None = None,
        position_embedding: bool = False,
        feature_norm: str = "instance",
        token_norm: bool = False,
        projector: str = "mlp",
        conv_width: int = 128,
    ):
        super().__init__()
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.grid = int(grid)
        self.vision_encoder = vision_encoder
        self.image_transform = image_transform
        self.uses_mask_head_features = vision_encoder is None
        if vision_encoder is not None and image_transform is None:
            raise ValueError("a separate vision_encoder needs the image_transform that prepares its pixel_values")
        d = self.hidden_size
        h = projector_hidden or d
        if feature_norm not in ("instance", "none"):
            raise ValueError(f"feature_norm must be 'instance' or 'none', got {feature_norm!r}")
        # SAM-style embeddings share a large component across positions (pooled tokens of one image have cosine
        # similarity ~0.8 for LiteMedSAM): standardising each channel over the image keeps what differs
        self.feature_norm = nn.InstanceNorm2d(feature_dim, affine=True) if feature_norm == "instance" else None
        check_projector(projector)
        self.abstractor = ConvAbstractor(feature_dim, self.grid, conv_width) if projector == "conv" else None
        in_dim = feature_dim + (conv_width if self.abstractor is not None else 0)
        self.projector = nn.Sequential(nn.Linear(in_dim, h), nn.GELU(), nn.Linear(h, d))
        scale = 1.0
        self.token_norm = None
        if token_norm:  # the mean L2 norm of the LM's token embeddings: image tokens start at the scale of words
            with torch.no_grad():
                scale = float(language_model.get_input_embeddings().weight.float().norm(dim=-1).mean())
            self.token_norm = nn.LayerNorm(d)
            nn.init.constant_(self.token_norm.weight, scale / d**0.5)
        # a learned 2-D position embedding per image token (initialised sinusoidally) makes "where" easy to read
        self.position_embedding = nn.Parameter(sincos_2d(self.grid, d, norm=scale)) if position_embedding else None
        self.image_token_id = token_id(tokenizer, IMAGE)

    @property
    def hf_model(self) -> nn.Module:
        return self.language_model

    @property
    def hidden_size(self) -> int:
        # the config, not the embedding module: after LoRA with trainable token rows that is peft's wrapper
        return int(self.language_model.config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return self.grid * self.grid

    def encode_prompt(self, text: str, image: np.ndarray | None) -> EncodedPrompt:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        n_img = sum(1 for i in ids if i == self.image_token_id)
        if image is None:
            if n_img:
                raise ValueError(f"prompt has {n_img} {IMAGE} placeholders but no image was given")
            return EncodedPrompt(ids)
        if n_img != 1:
            raise ValueError(f"prompt must hold exactly one {IMAGE} placeholder for its image, found {n_img}")
        k = ids.index(self.image_token_id)
        ids = ids[:k] + [self.image_token_id] * self.num_image_tokens + ids[k + 1 :]
        image_inputs = {}
        if self.vision_encoder is not None:
            pixel_values, _ = self.image_transform(image)
            image_inputs["pixel_values"] = pixel_values[None]
        return EncodedPrompt(ids, image_inputs)

    def image_tokens(self, image_inputs: dict, image_features: torch.Tensor | None) -> torch.Tensor:
        """(B * grid * grid) x D projected image tokens, row-major per image."""
        if self.vision_encoder is not None:
            image_features = self.vision_encoder(image_inputs["pixel_values"])
        if image_features is None:
            raise ValueError("the composed vision-LLM needs image features (the mask head's image embeddings)")
        if image_features.dim() == 3:  # B x N x C tokens -> B x C x h x w
            b, n, c = image_features.shape
            s = int(round(n**0.5))
            image_features = image_features.transpose(1, 2).reshape(b, c, s, s)
        if self.feature_norm is not None:
            image_features = self.feature_norm(image_features.to(self.feature_norm.weight.dtype))
        proj_dtype = self.projector[0].weight.dtype
        pooled = F.adaptive_avg_pool2d(image_features, self.grid).to(proj_dtype)  # B x C x g x g
        if self.abstractor is not None:
            pooled = torch.cat([pooled, self.abstractor(image_features.to(proj_dtype))], dim=1)
        tokens = pooled.flatten(2).transpose(1, 2)  # B x g*g x C
        out = self.projector(tokens)
        if self.token_norm is not None:
            out = self.token_norm(out)
        if self.position_embedding is not None:
            out = out + self.position_embedding
        return out.flatten(0, 1)

    def model_inputs(self, input_ids, attention_mask, image_inputs, token_fields) -> dict:
        return dict(input_ids=input_ids, attention_mask=attention_mask)

    def injections(self, image_inputs, image_features, inject) -> dict[int, torch.Tensor]:
        feats = dict(inject or {})
        feats[self.image_token_id] = self.image_tokens(image_inputs, image_features)
        return feats

    def apply_lora(self, settings: LoraSettings, new_token_ids: list[int]) -> None:
        lm = self.language_model
        tied = lm.get_output_embeddings() is not None and lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
        self.language_model = apply_lora_to(lm, settings, self.lora_target_default, new_token_ids, tied)
