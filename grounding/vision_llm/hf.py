"""Adapter for any transformers image-text-to-text model with its processor (LLaVA, Qwen2-VL, Qwen2.5-VL, ...)."""

from __future__ import annotations

import numpy as np
from torch import nn

from grounding.vision_llm.base import EncodedPrompt, LoraSettings, VisionLLM, apply_lora_to

_TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids"}
_TOKEN_FIELDS = {"mm_token_type_ids"}


def default_image_placeholder(processor) -> str:
    """The text that marks one image in a user message, as the model's chat template writes it."""
    image_token = getattr(processor, "image_token", None) or "<image>"
    vocab = processor.tokenizer.get_vocab()
    if "<|vision_start|>" in vocab and "<|vision_end|>" in vocab:  # Qwen2-VL / Qwen2.5-VL
        return f"<|vision_start|>{image_token}<|vision_end|>"
    return image_token


class HFVisionLLM(VisionLLM):
    """A transformers vision-LLM (``model``) with its ``processor``; the processor expands image tokens."""

    def __init__(self, model: nn.Module, processor, image_placeholder: str | None = None):
        super().__init__()
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_placeholder = image_placeholder or default_image_placeholder(processor)
        # multimodal rotary positions (Qwen2-VL's M-RoPE) are computed from the ids: no custom 1-D positions
        self.supports_packing = not any(hasattr(m, "get_rope_index") for m in (model, getattr(model, "model", None)))

    @property
    def hf_model(self) -> nn.Module:
        return self.model

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    def encode_prompt(self, text: str, image: np.ndarray | None) -> EncodedPrompt:
        if image is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return EncodedPrompt(ids)
        enc = self.processor(images=[image], text=[text], return_tensors="pt", add_special_tokens=False)
        ids = enc["input_ids"][0].tolist()
        image_inputs = {k: v for k, v in enc.items() if k not in _TEXT_KEYS | _TOKEN_FIELDS}
        fields = {k: enc[k][0].tolist() for k in _TOKEN_FIELDS if k in enc}
        return EncodedPrompt(ids, image_inputs, fields)

    def apply_lora(self, settings: LoraSettings, new_token_ids: list[int]) -> None:
        m = self.model
        tied = m.get_output_embeddings() is not None and m.get_output_embeddings().weight is m.get_input_embeddings().weight
        self.model = apply_lora_to(m, settings, self.lora_target_default, new_token_ids, tied)
