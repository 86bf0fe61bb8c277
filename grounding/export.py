"""Export a trained model to a self-contained folder, and load it back with no training code's checkpoint.

``grounding export --ckpt CKPT --out DIR`` (or :func:`export_model`) merges LoRA (and the trained grounding-token
rows) into the language model with peft's ``merge_and_unload`` and writes::

    DIR/grounding_export.json      how to rebuild: vision-LLM kind and arguments, SAM config, head options,
                                   processor config (box format, ...), provenance
    DIR/vision_llm/                the vision-LLM in transformers format (save_pretrained: config, safetensors)
                                   with its tokenizer / processor holding the grounding tokens
    DIR/heads.safetensors          everything else: SAM image encoder + prompt encoder + mask decoder, seg
                                   projector, region encoder, a composed model's projector

:func:`load_exported` rebuilds ``(GroundingModel, GroundingProcessor)`` from such a folder with transformers'
``from_pretrained`` and the repository's own builders (``heads.build_sam_head``, ``grounding.presets.assemble``);
``GroundingPredictor.from_pretrained(DIR)`` calls it.

``CKPT`` is a Lightning ``.ckpt`` written by ``grounding fit`` (read with ``torch.load(weights_only=True)``: the
CLI records the model's config as plain values), or a trained-parts folder (``config.yaml`` +
``trained.safetensors``, as the default model ships).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from heads import SamConfig, build_sam_head

from grounding.model import GroundingModel, HeadOptions
from grounding.processor import GroundingProcessor, ProcessorConfig

EXPORT_CONFIG = "grounding_export.json"
EXPORT_FORMAT = "pixel-grounding-export"
EXPORT_VERSION = 1
VISION_LLM_DIR = "vision_llm"
HEADS_FILE = "heads.safetensors"


def is_exported(path: str | Path) -> bool:
    """True when ``path`` is a folder written by :func:`export_model`."""
    return (Path(path) / EXPORT_CONFIG).is_file()


# ---------------------------------------------------------------------------------------------------- SAM config
def sam_config_of(head) -> SamConfig:
    """The ``SamConfig`` that rebuilds ``head``'s structure (read from the modules themselves, so it holds for
    any preset). Weights are not part of it."""
    enc = head.image_encoder
    dec = head.mask_decoder
    common = dict(
        prompt_embed_dim=int(head.embed_dim),
        decoder_depth=int(dec.transformer.depth),
        decoder_mlp_dim=int(dec.transformer.mlp_dim),
        decoder_num_heads=int(dec.transformer.num_heads),
        iou_head_hidden_dim=int(dec.iou_prediction_head.layers[0].out_features),
        mask_in_chans=int(head.prompt_encoder.mask_downscaling[3].out_channels),
    )
    if type(enc).__name__ == "TinyViT":
        return SamConfig(encoder="lite_medsam", **common)
    if type(enc).__name__ != "ImageEncoderViT":
        raise NotImplementedError(f"cannot describe a {type(enc).__name__} image encoder for export")
    windows = [int(b.window_size) for b in enc.blocks]
    return SamConfig(
        encoder="vit_b",  # every field below is explicit, so the preset name only picks the builder (ViT)
        image_size=int(enc.img_size),
        patch_size=int(enc.patch_embed.proj.kernel_size[0]),
        encoder_embed_dim=int(enc.patch_embed.proj.out_channels),
        encoder_depth=len(enc.blocks),
        encoder_num_heads=int(enc.blocks[0].attn.num_heads),
        encoder_global_attn_indexes=tuple(i for i, w in enumerate(windows) if w == 0),
        window_size=max(windows),
        **common,
    )


def _dataclass_from(cls, values: dict):
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


# ---------------------------------------------------------------------------------------------------- export
def _hf_attribute(vlm) -> str:
    """Name of the vision-LLM's child that holds the transformers (or peft) model."""
    for name, child in vlm.named_children():
        if child is vlm.hf_model:
            return name
    raise ValueError(f"{type(vlm).__name__} does not hold its hf_model as a child module")


def merge_lora(model: GroundingModel) -> torch.nn.Module:
    """Merge LoRA and trained token rows into the language model, in place; returns the plain transformers model."""
    vlm = model.vision_llm
    name = _hf_attribute(vlm)
    hf = vlm.hf_model
    if hasattr(hf, "merge_and_unload"):
        hf = hf.merge_and_unload()
        setattr(vlm, name, hf)
    return hf


def _drop_gguf_quantizer(hf) -> None:
    """A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); its weights are dequantised already."""
    qc = getattr(hf.config, "quantization_config", None)
    if getattr(hf, "hf_quantizer", None) is not None or qc is not None:
        method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
        if method is not None and "gguf" not in str(method).lower():
            raise NotImplementedError(f"exporting a {method}-quantised language model is not supported")
        hf.hf_quantizer = None
        if hasattr(hf.config, "quantization_config"):
            del hf.config.quantization_config
        hf.is_quantized = False


def export_model(
    model: GroundingModel, processor: GroundingProcessor, out: str | Path, provenance: dict | None = None
) -> Path:
    """Write ``model`` (LoRA merged, in place) and ``processor`` to ``out`` (see the module docstring)."""
    from grounding.vision_llm import ComposedVisionLLM, HFVisionLLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vlm = model.vision_llm
    hf = merge_lora(model)
    _drop_gguf_quantizer(hf)
    prefix = f"vision_llm.{_hf_attribute(vlm)}."
    if isinstance(vlm, HFVisionLLM):
        spec = {"kind": "hf", "image_placeholder": vlm.image_placeholder}
        tokenizer_or_processor = vlm.processor
    elif isinstance(vlm, ComposedVisionLLM):
        if vlm.vision_encoder is not None:
            raise NotImplementedError("exporting a composed model with a separate vision encoder is not supported")
        spec = {
            "kind": "composed",
            "feature_dim": int(vlm.projector[0].in_features),
            "grid": int(vlm.grid),
            "projector_hidden": int(vlm.projector[0].out_features),
            "position_embedding": getattr(vlm, "position_embedding", None) is not None,
            "token_norm": getattr(vlm, "token_norm", None) is not None,
            "feature_norm": "instance" if getattr(vlm, "feature_norm", None) is not None else "none",
        }
        tokenizer_or_processor = vlm.tokenizer
    else:
        raise NotImplementedError(f"exporting a {type(vlm).__name__} is not supported")
    spec["path"] = VISION_LLM_DIR
    spec["class"] = type(hf).__name__
    hf.save_pretrained(out / VISION_LLM_DIR)
    tokenizer_or_processor.save_pretrained(out / VISION_LLM_DIR)

    heads = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if not k.startswith(prefix)}
    save_file(heads, str(out / HEADS_FILE))
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "vision_llm": spec,
        "sam": asdict(sam_config_of(model.mask_head)),
        "heads": asdict(model.options),
        "processor": asdict(processor.config),
        "weights": HEADS_FILE,
        "lora_merged": True,
        "provenance": dict(provenance or {}, packages=_versions()),
    }
    (out / EXPORT_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default) + "\n")
    return out


def _json_default(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return str(value)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("pixel-grounding", "transformers", "torch", "peft", "segment-anything"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------------- load
def load_exported(path: str | Path, dtype: str | torch.dtype | None = "auto") -> tuple[GroundingModel, GroundingProcessor]:
    """Rebuild ``(GroundingModel, GroundingProcessor)`` from a folder written by :func:`export_model`, in eval mode.

    ``dtype``: the vision-LLM's weights dtype ("auto": as saved). Raises ``ValueError`` for a folder of another
    format or version, and names any tensor of ``heads.safetensors`` that does not fit the rebuilt model.
    """
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    from grounding.presets import assemble
    from grounding.vision_llm import ComposedVisionLLM, HFVisionLLM

    path = Path(path)
    if not is_exported(path):
        raise FileNotFoundError(f"{path} is not an exported model folder: {EXPORT_CONFIG} is missing")
    config = json.loads((path / EXPORT_CONFIG).read_text())
    if config.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path / EXPORT_CONFIG}: format {config.get('format')!r}, expected {EXPORT_FORMAT!r}")
    if int(config.get("version", 0)) > EXPORT_VERSION:
        raise ValueError(f"{path} was exported by a newer version (format {config['version']} > {EXPORT_VERSION})")
    spec = config["vision_llm"]
    folder = path / spec["path"]
    if spec["kind"] == "hf":
        hf = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
        vlm = HFVisionLLM(hf, AutoProcessor.from_pretrained(folder), spec.get("image_placeholder"))
    elif spec["kind"] == "composed":
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
        vlm = ComposedVisionLLM(
            lm,
            AutoTokenizer.from_pretrained(folder),
            feature_dim=spec["feature_dim"],
            grid=spec["grid"],
            projector_hidden=spec["projector_hidden"],
            position_embedding=spec.get("position_embedding", False),
            token_norm=spec.get("token_norm", False),
            feature_norm=spec.get("feature_norm", "instance"),
        )
    else:
        raise ValueError(f"{path}: unknown vision_llm kind {spec['kind']!r}")
    sam = _dataclass_from(SamConfig, dict(config["sam"], checkpoint=None))
    options = _dataclass_from(HeadOptions, config["heads"])
    processor_config = _dataclass_from(ProcessorConfig, config["processor"])
    model, processor = assemble(vlm, build_sam_head(sam), options, processor_config)

    state = load_file(str(path / config.get("weights", HEADS_FILE)))
    prefix = f"vision_llm.{_hf_attribute(model.vision_llm)}."
    own = model.state_dict()
    unknown = sorted(k for k in state if k not in own)
    bad = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if unknown or bad:
        raise ValueError(f"{path / HEADS_FILE} does not fit the rebuilt model: unknown {unknown[:5]}, shape {bad[:5]}")
    missing = sorted(k for k in own if not k.startswith(prefix) and k not in state)
    if missing:
        raise ValueError(f"{path / HEADS_FILE} lacks {len(missing)} tensors, e.g. {missing[:5]}")
    model.load_state_dict(state, strict=False)
    return model.eval(), processor


# ---------------------------------------------------------------------------------------------------- from training
def load_for_export(ckpt: str | Path, config: str | Path | None = None):
    """A ``GroundingLitModule`` with trained weights, from a Lightning ``.ckpt`` (its recorded model config, or the
    ``model:`` section of ``config``) or from a trained-parts folder."""
    import yaml

    from grounding.checkpoint import CONFIG_FILE, TRAINED_FILE, build_lit_from_config, load_trained_folder

    ckpt = Path(ckpt)
    if ckpt.is_dir() and (ckpt / CONFIG_FILE).exists() and (ckpt / TRAINED_FILE).exists():
        return load_trained_folder(ckpt), {"source": str(ckpt)}
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    data = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    if config is not None:
        raw = yaml.safe_load(Path(config).read_text())
        model_config = raw.get("model", raw)
    else:
        model_config = dict(data.get("hyper_parameters") or {})
        if "_instantiator" not in model_config:
            raise ValueError(f"{ckpt} records no CLI config of the model: pass --config (the run's config.yaml)")
        model_config.pop("_instantiator")
    model_config = {k: v for k, v in model_config.items() if k not in ("init_weights", "feature_cache_dir")}
    lit = build_lit_from_config(model_config)
    state = data["state_dict"]
    own = lit.state_dict()
    unknown = sorted(k for k in state if k not in own)
    if unknown:
        raise ValueError(f"{ckpt}: {len(unknown)} tensors do not exist in the model built from its config: {unknown[:5]}")
    trained = {n for n, p in lit.named_parameters() if p.requires_grad}
    absent = sorted(trained - set(state))
    if absent:
        raise ValueError(f"{ckpt} lacks trained tensors {absent[:5]}")
    lit.load_state_dict(state, strict=False)  # frozen weights may be left out of checkpoints
    return lit.eval(), {"source": str(ckpt), "global_step": int(data.get("global_step", -1))}


def export_main(argv: list[str]) -> int:
    """``grounding export --ckpt CKPT --out DIR [--config CONFIG]``."""
    parser = argparse.ArgumentParser(
        prog="grounding export",
        description="Merge LoRA and write a self-contained model folder (transformers vision-LLM + heads + config).",
    )
    parser.add_argument("--ckpt", required=True, help="Lightning .ckpt from `grounding fit`, or a trained-parts folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--config", default=None, help="the run's config.yaml, if the .ckpt records no model config")
    args = parser.parse_args(argv)
    lit, provenance = load_for_export(args.ckpt, args.config)
    out = export_model(lit.model, lit.processor, args.out, provenance)
    print(f"exported to {out} ({EXPORT_CONFIG}, {VISION_LLM_DIR}/, {HEADS_FILE})")
    return 0
