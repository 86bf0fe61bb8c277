"""The small interface every vision-LLM adapter implements, and the embedding injection they share.

A vision-LLM here is: a tokenizer with a chat template, a way to turn the first user message (which holds
the image placeholder) plus the image into token ids and image tensors, a forward that returns the
last-layer hidden states and logits, and ``generate`` that also returns the last-layer hidden state that
*predicted* each new token. Features for special tokens (``<region>``, and ``<image>`` in composed models)
are written into the input embeddings by ``inject_embeddings``: positions are found by an id mask, and a
count mismatch is a ``ValueError``; there are no offsets.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class EncodedPrompt:
    """Token ids of a text piece that holds the image placeholder, with the image tensors it needs.

    ``image_inputs``: tensors for the model's forward (e.g. ``pixel_values``, ``image_grid_thw``), batched
    along dim 0 by concatenation. ``token_fields``: per-token integer fields the model needs next to
    ``input_ids`` (e.g. Qwen2-VL's ``mm_token_type_ids``); tokens added later get 0.
    """

    ids: list[int]
    image_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    token_fields: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class VisionLLMOutput:
    logits: torch.Tensor  # B x L x V, or N x V for the True positions of ``logits_mask``
    hidden: torch.Tensor  # B x L x D, the ``hidden_layer`` states (default the last, after the final norm)
    logits_mask: torch.Tensor | None = None  # B x L bool: where logits were computed (None: everywhere)


@dataclass
class GenerationOutput:
    sequences: torch.Tensor  # B x T new tokens (padded with pad id after EOS)
    hidden: torch.Tensor  # B x T x D: hidden[b, t] is the ``hidden_layer`` state that predicted sequences[b, t]


@dataclass
class LoraSettings:
    """LoRA on the language model only (peft)."""

    r: int = 8
    """LoRA rank; 0 disables LoRA (the language model stays frozen except new token rows)."""
    alpha: int = 16
    dropout: float = 0.05
    target_modules: str | None = None
    """Regex of module names to adapt; None uses the adapter's default (q_proj and v_proj of the language model)."""
    train_new_tokens: bool = True
    """Train the embedding (and output) rows of the grounding tokens, through peft's trainable tokens."""


class VisionLLM(nn.Module):
    """Interface of vision-LLM adapters (see module docstring)."""

    tokenizer = None
    image_placeholder: str = "<image>"
    uses_mask_head_features: bool = False
    supports_packing: bool = True
    """Accepts a 4-D attention mask with 1-D position ids (packed independent turns)."""
    lora_target_default: str = r".*language_model.*\.(q_proj|v_proj)"
    hidden_layer: int = -1
    """Which of ``hidden_states`` the outputs' ``hidden`` holds (0: the embeddings, -1: the last layer after
    the final norm); ``HeadOptions.seg_layer`` sets it."""

    # --- text side -------------------------------------------------------------------------------------
    def encode_prompt(self, text: str, image: np.ndarray | None) -> EncodedPrompt:  # pragma: no cover
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:  # pragma: no cover
        raise NotImplementedError

    @property
    def hf_model(self) -> nn.Module:  # pragma: no cover
        """The transformers model that LoRA wraps (whole VLM, or the causal LM of a composed model)."""
        raise NotImplementedError

    def get_input_embeddings(self) -> nn.Module:
        return self.hf_model.get_input_embeddings()

    # --- compute ---------------------------------------------------------------------------------------
    def model_inputs(self, input_ids, attention_mask, image_inputs, token_fields) -> dict:
        """Keyword arguments of the transformers model's forward / generate."""
        kw = dict(input_ids=input_ids, attention_mask=attention_mask)
        kw.update(image_inputs or {})
        kw.update(token_fields or {})
        return kw

    def injections(self, image_inputs, image_features, inject) -> dict[int, torch.Tensor]:
        """Features to write into the input embeddings, by token id (``<region>``; composed: ``<image>``)."""
        return dict(inject or {})

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_inputs: dict[str, torch.Tensor],
        token_fields: dict[str, torch.Tensor] | None = None,
        image_features: torch.Tensor | None = None,
        inject: dict[int, torch.Tensor] | None = None,
        logits_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> VisionLLMOutput:
        """``logits_mask`` (B x L bool): compute logits only there (the vocabulary projection is costly).
        ``attention_mask`` may be B x L (padding) or B x 1 x L x L (bool, True = may attend) with
        ``position_ids`` (B x L) for packed sequences."""
        kw = self.model_inputs(input_ids, attention_mask, image_inputs, token_fields)
        if logits_mask is not None:
            kw["logits_to_keep"] = logits_mask
        if position_ids is not None:
            if not self.supports_packing:
                raise ValueError(f"{type(self).__name__} does not support packed sequences (independent turns)")
            kw["position_ids"] = position_ids
        with inject_embeddings(self.get_input_embeddings(), self.injections(image_inputs, image_features, inject)):
            out = self.hf_model(**kw, output_hidden_states=True)
        return VisionLLMOutput(out.logits, out.hidden_states[self.hidden_layer], logits_mask)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_inputs: dict[str, torch.Tensor],
        token_fields: dict[str, torch.Tensor] | None = None,
        image_features: torch.Tensor | None = None,
        inject: dict[int, torch.Tensor] | None = None,
        max_new_tokens: int = 64,
        **generate_kwargs,
    ) -> GenerationOutput:
        """Greedy by default; returns the new tokens and the last-layer state that predicted each."""
        kw = self.model_inputs(input_ids, attention_mask, image_inputs, token_fields)
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        generate_kwargs.setdefault("eos_token_id", self.tokenizer.eos_token_id)
        with merged_token_rows(self.hf_model), inject_embeddings(
            self.get_input_embeddings(), self.injections(image_inputs, image_features, inject)
        ):
            out = self.hf_model.generate(
                **kw,
                max_new_tokens=max_new_tokens,
                output_hidden_states=True,
                return_dict_in_generate=True,
                **generate_kwargs,
            )
        new = out.sequences[:, input_ids.shape[1] :]
        return GenerationOutput(new, last_hidden_per_step(out.hidden_states, input_ids.shape[0], self.hidden_layer))

    # --- LoRA ------------------------------------------------------------------------------------------
    def apply_lora(self, settings: LoraSettings, new_token_ids: list[int]) -> None:  # pragma: no cover
        raise NotImplementedError


@contextlib.contextmanager
def inject_embeddings(embedding: nn.Module, features: dict[int, torch.Tensor], once: bool = True):
    """While active, rows of ``embedding``'s output at tokens ``id`` are replaced by ``features[id]`` (in order).

    ``features[id]``: N x D, one row per occurrence of ``id`` in the batch, row-major over (batch, position).
    With ``once``, the hook disarms after the first call that contains the tokens (generation's prefill), so
    decode steps are untouched. Raises ``ValueError`` if a call has a different number of such tokens.
    """
    features = {k: v for k, v in features.items() if v is not None}
    if not features:
        yield
        return
    state = {"armed": True}

    def hook(module, args, output):
        if not state["armed"]:
            return output
        ids = args[0] if args else None
        if ids is None:
            return output
        out = output
        touched = False
        for tok, feats in features.items():
            mask = ids == tok
            n = int(mask.sum())
            if n == 0 and feats.shape[0] == 0:
                continue
            if n != feats.shape[0]:
                if n == 0:
                    continue
                raise ValueError(
                    f"token id {tok} appears {n} times in the input but {feats.shape[0]} feature rows were given"
                )
            out = out.masked_scatter(mask.unsqueeze(-1), feats.to(out.dtype))
            touched = True
        if touched and once:
            state["armed"] = False
        return out

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def merged_token_rows(hf_model: nn.Module):
    """While active, peft's trainable token rows (the grounding tokens' embeddings and output rows) are written into
    the base weights, and restored after. Unmerged, peft copies the whole vocabulary matrix to patch those rows on
    every call of the embedding and of the output layer (once per generated token each: about 30% of generation
    time for SmolLM2 on a CPU); merged, the rows are the same values, so the outputs are unchanged. For inference
    (no gradients reach the rows while merged)."""
    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:  # (peft without trainable tokens: nothing to merge)
        yield
        return
    layers = [m for m in hf_model.modules()
              if isinstance(m, TrainableTokensLayer) and not m.merged and not m.disable_adapters and m.active_adapters]
    merged = []
    try:
        for m in layers:
            m.merge(adapter_names=list(m.active_adapters))
            merged.append(m)
        yield
    finally:
        for m in reversed(merged):
            m.unmerge()


def decoder_layers(hf_model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated decoder blocks of a transformers (or peft-wrapped) model's language model."""
    base = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} (get_decoder().layers)")
    return list(layers)


def last_hidden_per_step(hidden_states, batch_size: int, layer: int = -1) -> torch.Tensor:
    """From ``generate``'s per-step ``hidden_states`` -> B x T x D: the state of ``layer`` (default the last)
    that predicted token t."""
    if not hidden_states:
        return torch.zeros(batch_size, 0, 0)
    steps = [h[layer][:, -1, :] for h in hidden_states]
    return torch.stack(steps, dim=1)


def apply_lora_to(model: nn.Module, settings: LoraSettings, target_regex: str, token_ids: list[int], tied: bool):
    """Wrap a transformers model with peft LoRA (+ trainable rows for ``token_ids``); returns the peft model."""
    from peft import LoraConfig, get_peft_model

    trainable = None
    if settings.train_new_tokens and token_ids:
        trainable = {"embed_tokens": list(token_ids)} if tied else {"embed_tokens": list(token_ids), "lm_head": list(token_ids)}
    if settings.r > 0:
        cfg = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=settings.target_modules or target_regex,
            trainable_token_indices=trainable,
        )
        return get_peft_model(model, cfg)
    if trainable:
        from peft import TrainableTokensConfig

        cfg = TrainableTokensConfig(target_modules=list(trainable), token_indices=list(token_ids))
        return get_peft_model(model, cfg)
    for p in model.parameters():
        p.requires_grad_(False)
    return model
