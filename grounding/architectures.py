"""Vision-LLM architectures known by their public ``config.json`` values, and the same architectures shrunk.

Two uses, one builder (``ArchitecturePreset``):

- *Memory planning without downloads*: ``ArchitecturePreset("llava-1.5-7b", sam=SamConfig("vit_h"), shrink=False)``
  built under ``torch.device("meta")`` is the real-size model with no weights (``grounding.memory``).
- *Recipes that cannot rot*: ``shrink=True`` builds the same transformers config class (same ``model_type``,
  activation, feature layer, RoPE kind, GQA, tied or untied embeddings, ...) and the same SAM encoder class, with
  every width, depth and head count made tiny, so a real-scale recipe trains one step on a CPU in a test
  (``tests/test_recipes.py``).

``KNOWN_ARCHITECTURES`` holds the values of the public ``config.json`` of each model on the Hugging Face hub
(the repository is named in ``source``; values the file leaves out are transformers' defaults for that class,
e.g. LlamaConfig's 4096 / 11008 / 32 layers / 32 heads for Vicuna-7B inside LLaVA-1.5-7B). Any other model is
described by its own ``config.json`` (a file, or a folder holding one): only that file is read, no weights.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch

from heads import SamConfig, build_sam_head

from grounding.model import HeadOptions
from grounding.presets import ModelPreset, assemble, tiny_tokenizer
from grounding.processor import ProcessorConfig
from grounding.tokens import IMAGE, add_grounding_tokens
from grounding.vision_llm import ComposedVisionLLM, HFVisionLLM

KNOWN_ARCHITECTURES: dict[str, dict] = {
    # https://huggingface.co/llava-hf/llava-1.5-7b-hf/blob/main/config.json (Vicuna-7B v1.5 + CLIP ViT-L/14-336)
    "llava-1.5-7b": {
        "source": "llava-hf/llava-1.5-7b-hf",
        "config": {
            "model_type": "llava",
            "image_token_index": 32000,
            "projector_hidden_act": "gelu",
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "text_config": {
                "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5, "vocab_size": 32064, "tie_word_embeddings": False,
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14,
                "projection_dim": 768,
            },
        },
    },
    # https://huggingface.co/llava-hf/llava-1.5-13b-hf/blob/main/config.json (Vicuna-13B v1.5 + CLIP ViT-L/14-336)
    "llava-1.5-13b": {
        "source": "llava-hf/llava-1.5-13b-hf",
        "config": {
            "model_type": "llava",
            "image_token_index": 32000,
            "projector_hidden_act": "gelu",
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "text_config": {
                "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                "num_attention_heads": 40, "num_key_value_heads": 40, "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-5, "vocab_size": 32064, "tie_word_embeddings": False,
            },
            "vision_config": {
                "model_type": "clip_vision_model", "hidden_size": 1024, "image_size": 336,
                "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14,
                "projection_dim": 768,
            },
        },
    },
    # https://huggingface.co/Qwen/Qwen2-VL-7B-Instruct/blob/main/config.json
    "qwen2-vl-7b": {
        "source": "Qwen/Qwen2-VL-7B-Instruct",
        "config": {
            "model_type": "qwen2_vl",
            "image_token_id": 151655, "video_token_id": 151656,
            "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "text_config": {
                "model_type": "qwen2_vl_text", "hidden_size": 3584, "intermediate_size": 18944,
                "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "vocab_size": 152064,
                "hidden_act": "silu", "tie_word_embeddings": False,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0,
            },
            "vision_config": {
                "model_type": "qwen2_vl_vision", "depth": 32, "embed_dim": 1280, "hidden_size": 3584,
                "num_heads": 16, "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "in_channels": 3,
            },
        },
    },
    # https://huggingface.co/Qwen/Qwen2-VL-2B-Instruct/blob/main/config.json (tied embeddings)
    "qwen2-vl-2b": {
        "source": "Qwen/Qwen2-VL-2B-Instruct",
        "config": {
            "model_type": "qwen2_vl",
            "image_token_id": 151655, "video_token_id": 151656,
            "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "tie_word_embeddings": True,
            "text_config": {
                "model_type": "qwen2_vl_text", "hidden_size": 1536, "intermediate_size": 8960,
                "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "vocab_size": 151936,
                "hidden_act": "silu", "tie_word_embeddings": True,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "rope_theta": 1000000.0,
            },
            "vision_config": {
                "model_type": "qwen2_vl_vision", "depth": 32, "embed_dim": 1280, "hidden_size": 1536,
                "num_heads": 16, "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2,
                "temporal_patch_size": 2, "in_channels": 3,
            },
        },
    },
    # https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/blob/main/config.json (the default model's LM)
    "smollm2-135m": {
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "config": {
            "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "vocab_size": 49152, "tie_word_embeddings": True, "rope_theta": 100000.0,
            "hidden_act": "silu",
        },
    },
}

# The tiny size every shrunk architecture gets (widths, depths, heads); the rest of the config is kept.
TINY_TEXT = dict(width=64, heads=4, layers=2)
TINY_VISION = dict(width=32, heads=2, layers=2)
TINY_CLIP_IMAGE = dict(image_size=32, patch_size=8)
TINY_SAM = dict(image_size=64, patch_size=8, encoder_embed_dim=32, encoder_num_heads=2, window_size=4,
                prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2, iou_head_hidden_dim=32)


def architecture_config(architecture: str | dict):
    """A transformers config from a known name (``KNOWN_ARCHITECTURES``), a ``config.json`` file or a folder
    holding one, or a dict of config values (with ``model_type``). Reads no weights."""
    from transformers import AutoConfig

    if isinstance(architecture, dict):
        values = copy.deepcopy(architecture)
    elif architecture in KNOWN_ARCHITECTURES:
        values = copy.deepcopy(KNOWN_ARCHITECTURES[architecture]["config"])
    else:
        path = Path(architecture)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            known = ", ".join(sorted(KNOWN_ARCHITECTURES))
            raise FileNotFoundError(f"{architecture!r} is neither a known architecture ({known}) nor a config.json")
        values = json.loads(path.read_text())
    model_type = values.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"the config of {architecture!r} has no model_type")
    return AutoConfig.for_model(model_type, **values)


def known_architecture_in(text: str | None) -> str | None:
    """The known architecture whose name appears in ``text`` (e.g. a model folder ``.../llava-1.5-7b-hf``)."""
    if not text:
        return None
    low = Path(str(text)).name.lower().replace("_", "-")
    for name in sorted(KNOWN_ARCHITECTURES, key=len, reverse=True):
        if name in low:
            return name
    return None


def is_vision_llm(config) -> bool:
    """True for image-text-to-text configs (vision + text sub-configs), False for a plain causal LM."""
    return getattr(config, "vision_config", None) is not None


# ---------------------------------------------------------------------------------------------------- shrinking
def _scaled_sections(sections: list[int], half_head_dim: int) -> list[int]:
    """M-RoPE sections rescaled to a smaller head: same proportions, summing to ``half_head_dim``."""
    total = sum(sections)
    out = [max(1, round(s * half_head_dim / total)) for s in sections]
    out[0] += half_head_dim - sum(out)
    return out


def _shrink_block(d: dict, width: int, heads: int, layers: int) -> dict:
    """A transformer block's config dict with tiny width / heads / depth; ratios and kinds kept."""
    d = dict(d)
    old_width = d.get("embed_dim") or d.get("hidden_size")
    old_heads = d.get("num_attention_heads") or d.get("num_heads")
    for key in ("embed_dim", "hidden_size"):
        if key in d:
            d[key] = width
    for key in ("num_attention_heads", "num_heads"):
        if key in d:
            d[key] = heads
    kv = d.get("num_key_value_heads")
    if kv is not None:
        d["num_key_value_heads"] = heads if kv == old_heads else max(1, heads // 2)  # keep MHA vs GQA
    if d.get("head_dim") is not None:
        d["head_dim"] = width // heads
    if d.get("intermediate_size") and old_width:
        d["intermediate_size"] = max(8, 8 * round(width * d["intermediate_size"] / old_width / 8))
    for key in ("num_hidden_layers", "depth"):
        if key in d:
            d[key] = layers
    if d.get("layer_types"):
        d["layer_types"] = list(d["layer_types"])[:layers]
    if "max_window_layers" in d:
        d["max_window_layers"] = min(int(d["max_window_layers"]), layers)
    if "projection_dim" in d:
        d["projection_dim"] = width
    for key in ("rope_parameters", "rope_scaling"):
        rope = d.get(key)
        if isinstance(rope, dict) and rope.get("mrope_section"):
            rope = dict(rope)
            rope["mrope_section"] = _scaled_sections(list(rope["mrope_section"]), width // heads // 2)
            d[key] = rope
    return d


def shrink_config(config, vocab_size: int, token_ids: dict[str, int] | None = None):
    """The same config class with tiny dimensions: text width 64 / 4 heads / 2 layers, vision width 32 /
    2 heads / 2 layers (CLIP at 32 px with 8 px patches), ``vocab_size`` rows; special ids from ``token_ids``
    (config attribute -> id in the tiny tokenizer), other special ids cleared. Everything else is kept."""
    d = config.to_dict()
    token_ids = dict(token_ids or {})
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        d.pop(key, None)
    if is_vision_llm(config):
        text = _shrink_block(d["text_config"], **TINY_TEXT)
        text["vocab_size"] = vocab_size
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            text[key] = None
        vision = _shrink_block(d["vision_config"], **TINY_VISION)
        if "image_size" in vision:  # CLIP / SigLIP towers: fixed input size
            vision.update(TINY_CLIP_IMAGE)
        if vision.get("hidden_size") is not None and "embed_dim" in vision:  # Qwen2-VL merger output = LM width
            vision["hidden_size"] = text["hidden_size"]
        d["text_config"], d["vision_config"] = text, vision
        if "vocab_size" in d:
            d["vocab_size"] = vocab_size
    else:
        d = _shrink_block(d, **TINY_TEXT)
        d["vocab_size"] = vocab_size
        for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
            d[key] = None
    d.update(token_ids)
    model_type = d.pop("model_type")
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **d)


def shrink_sam(config: SamConfig) -> SamConfig:
    """The same SAM encoder kind at tiny size: ViT (vit_b/l/h) at 64 px, 8 px patches, width 32, with as many
    blocks as it takes to keep its pattern of windowed blocks before each global one (SAM: 3 windowed, then 1
    global, four times -> 2 and 2 global here); LiteMedSAM's TinyViT is fixed (already small) and kept."""
    if config.encoder == "lite_medsam":
        return replace(config, checkpoint=None)
    depth = int(config.encoder_depth)
    glob = sorted(int(i) for i in config.encoder_global_attn_indexes or ())
    stages = max(1, min(2, len(glob)))
    tiny_glob = tuple(2 * k + 1 for k in range(stages))
    return SamConfig(
        encoder=config.encoder,
        encoder_depth=2 * stages if glob else min(depth, 2),
        encoder_global_attn_indexes=tiny_glob if glob else (),
        decoder_depth=config.decoder_depth,
        mask_in_chans=config.mask_in_chans,
        checkpoint=None,
        **TINY_SAM,
    )


def _real_pixel_statistics(head, sam: SamConfig) -> None:
    """Built under ``torch.device("meta")`` (memory planning), the head's pixel mean/std buffers hold no values,
    but the processor reads them: give them the builder's constants."""
    if not head.pixel_mean.is_meta:
        return
    from heads.sam import LITE_MEDSAM_PIXEL_MEAN, LITE_MEDSAM_PIXEL_STD, SAM_PIXEL_MEAN, SAM_PIXEL_STD

    lite = sam.encoder == "lite_medsam"
    mean, std = (LITE_MEDSAM_PIXEL_MEAN, LITE_MEDSAM_PIXEL_STD) if lite else (SAM_PIXEL_MEAN, SAM_PIXEL_STD)
    head.pixel_mean = torch.tensor(mean, dtype=torch.float32, device="cpu").view(-1, 1, 1)
    head.pixel_std = torch.tensor(std, dtype=torch.float32, device="cpu").view(-1, 1, 1)


# ---------------------------------------------------------------------------------------------------- the preset
_QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


class ArchitecturePreset(ModelPreset):
    """A vision-LLM (or causal LM, composed LLaVA-style with SAM's features) built from its config alone.

    Args:
        architecture: a name in ``KNOWN_ARCHITECTURES`` (e.g. "llava-1.5-7b", "qwen2-vl-7b"), a ``config.json``
            file or a model folder holding one (only that file is read).
        sam: the mask head (its checkpoint is never loaded here).
        shrink: build the same classes at tiny size (``shrink_config`` / ``shrink_sam``); False: real size,
            with random weights, or none at all under ``torch.device("meta")`` (memory planning).
        dtype: weights dtype of the vision-LLM.
        grid: image-token grid of a composed model (causal-LM architectures only).
        seed: initialisation seed.

    The tokenizer is the repository's tiny tokenizer with the grounding tokens (and the model's image tokens):
    a real tokenizer needs the model's files. At real size the vocabulary keeps the architecture's size.
    """

    name = "architecture"

    def __init__(
        self,
        architecture: str,
        sam: SamConfig,
        shrink: bool = True,
        dtype: str = "float32",
        grid: int = 8,
        seed: int = 0,
    ):
        self.architecture = architecture
        self.sam = sam
        self.shrink = shrink
        self.dtype = dtype
        self.grid = grid
        self.seed = seed

    def config(self):
        """The (unshrunk) transformers config of the architecture."""
        return architecture_config(self.architecture)

    def sam_config(self) -> SamConfig:
        return shrink_sam(self.sam) if self.shrink else replace(self.sam, checkpoint=None)

    def build(self, options=None, processor_config=None):
        options = options or HeadOptions()
        processor_config = processor_config or ProcessorConfig()
        config = self.config()
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            head = build_sam_head(self.sam_config())
            _real_pixel_statistics(head, self.sam)
            if is_vision_llm(config):
                vlm = self._vision_llm(config)
            else:
                vlm = self._composed(config, head.embed_dim)
            return assemble(vlm, head, options, processor_config)

    def _dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def _vision_llm(self, config) -> HFVisionLLM:
        from transformers import AutoModelForImageTextToText

        tok = tiny_tokenizer()
        qwen = config.model_type.startswith("qwen2")
        extra = _QWEN_VISION_TOKENS if qwen else (IMAGE,)
        add_grounding_tokens(tok, extra=extra)
        if qwen:
            ids = {
                "image_token_id": tok.convert_tokens_to_ids("<|image_pad|>"),
                "video_token_id": tok.convert_tokens_to_ids("<|video_pad|>"),
                "vision_start_token_id": tok.convert_tokens_to_ids("<|vision_start|>"),
                "vision_end_token_id": tok.convert_tokens_to_ids("<|vision_end|>"),
            }
        else:
            ids = {"image_token_id": tok.convert_tokens_to_ids(IMAGE)}
        if self.shrink:
            config = shrink_config(config, len(tok), ids)
        model = AutoModelForImageTextToText.from_config(config, dtype=self._dtype())
        return HFVisionLLM(model, self._processor(config, tok))

    def _processor(self, config, tok):
        if config.model_type.startswith("qwen2"):
            from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

            vc = config.vision_config
            unit = vc.patch_size * vc.spatial_merge_size
            pixels = dict(min_pixels=(2 * unit) ** 2, max_pixels=(4 * unit) ** 2) if self.shrink else {}
            image_processor = Qwen2VLImageProcessor(
                patch_size=vc.patch_size, merge_size=vc.spatial_merge_size, temporal_patch_size=vc.temporal_patch_size,
                **pixels,
            )
            return Qwen2VLProcessor(
                image_processor=image_processor,
                video_processor=Qwen2VLVideoProcessor(**pixels),
                tokenizer=tok,
                chat_template=tok.chat_template,
            )
        if config.model_type == "llava":
            from transformers import CLIPImageProcessor, LlavaProcessor

            side = config.vision_config.image_size
            image_processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
            return LlavaProcessor(
                image_processor=image_processor,
                tokenizer=tok,
                patch_size=config.vision_config.patch_size,
                vision_feature_select_strategy=config.vision_feature_select_strategy,
                num_additional_image_tokens=1,  # CLIP's CLS token
                image_token=IMAGE,
                chat_template=tok.chat_template,
            )
        raise ValueError(f"no processor recipe for model_type {config.model_type!r} (known: llava, qwen2_vl)")

    def _composed(self, config, feature_dim: int) -> ComposedVisionLLM:
        from transformers import AutoModelForCausalLM

        tok = tiny_tokenizer()
        add_grounding_tokens(tok, extra=(IMAGE,))
        if self.shrink:
            config = shrink_config(config, len(tok))
        lm = AutoModelForCausalLM.from_config(config, dtype=self._dtype())
        return ComposedVisionLLM(lm, tok, feature_dim=feature_dim, grid=self.grid)
