"""``grounding plan-memory``: will a training config fit the GPUs, before anyone rents them?

The model of the config is built on the meta device (shapes and dtypes, no weights, no GPU): an ``HFPreset``'s
architecture comes from ``--model-config`` (a known name such as ``llava-1.5-7b``, see
``grounding.architectures.KNOWN_ARCHITECTURES``, or a ``config.json``), from the ``config.json`` in its
``model_path`` folder, or from a known name in that path. Its parameters are counted exactly (the same
``GroundingLitModule`` that trains, so LoRA and every trained part are what training would have), and per GPU the
plan adds:

- parameters, gradients and optimizer state (AdamW: two moments) for the strategy:
  ``single`` / ``ddp``: everything replicated, in each parameter's dtype;
  ``zero1`` / ``zero2`` / ``zero3`` (DeepSpeed): 16-bit weights under bf16/fp16 precision (DeepSpeed casts the
  module), fp32 master weights + moments of the trainable parameters sharded (ZeRO-1), and the gradients
  (ZeRO-2), and the weights (ZeRO-3, plus the gathered layers in flight);
  ``fsdp`` / ``fsdp2``: everything sharded, plus the unsharded units in flight (the root unit stays gathered
  from forward to backward; two decoder layers at a time);
- activations kept for backward: the language model's, by a per-token formula measured on CPU with the
  repository's setting (bf16 autocast, frozen base, LoRA; ``tests/test_memory.py`` checks it against
  ``saved_tensors_hooks`` measurements), with gradient checkpointing only each layer's input plus one layer being
  recomputed; the logits of the answer tokens; a trainable projector's input; SAM's mask decoder per ``[SEG]``;
- the frozen SAM image encoder's peak (no autograd, so it is transient and comes before the language model's
  activations: the larger of the two counts), its attention matrices for the micro-batch's images; zero with the
  feature cache;
- framework overhead: CUDA context and cuBLAS workspace (0.8 GiB) and allocator fragmentation (8 %).

These are estimates for planning (expect +-20 %); parameter counts are exact.
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

GIB = 1024**3
CUDA_CONTEXT_BYTES = int(0.8 * GIB)
FRAGMENTATION = 0.08
STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp", "fsdp2")
_SIXTEEN_BIT = ("bf16", "16", "fp16")


# ---------------------------------------------------------------------------------------------------- settings
@dataclass
class TrainSettings:
    """What the plan depends on besides the model (read from the config's ``trainer`` / ``data`` sections)."""

    strategy: str = "single"
    world_size: int = 1
    precision: str = "32-true"
    micro_batch: int = 1
    seq_len: int = 1024
    """Tokens per sample (image tokens + text)."""
    answer_tokens: int = 64
    """Labelled (answer) tokens per sample: logits are computed only there."""
    masks_per_sample: int = 3
    """[SEG] masks decoded per sample in training."""
    gradient_checkpointing: bool = False
    feature_cache: bool = False
    reduce_bucket: int = 200_000_000
    allgather_bucket: int = 200_000_000

    @property
    def compute_bytes(self) -> int:
        return 2 if any(self.precision.startswith(p) for p in _SIXTEEN_BIT) else 4

    @property
    def weights_cast_to_16bit(self) -> bool:
        """DeepSpeed casts the module to 16 bits under bf16/fp16 precision; "-true" precisions cast too."""
        return (self.strategy.startswith("zero") and self.compute_bytes == 2) or self.precision in ("bf16-true", "16-true")


def strategy_of(trainer: dict) -> tuple[str, dict]:
    """(strategy name, its init args) from a ``trainer`` config section."""
    s = trainer.get("strategy", "auto")
    devices = trainer.get("devices", 1)
    if isinstance(s, dict):
        cls = str(s.get("class_path", ""))
        args = dict(s.get("init_args") or {})
        if cls.endswith("DeepSpeedStrategy"):
            return f"zero{int(args.get('stage', 2))}", args
        if cls.endswith("FSDPStrategy"):
            return "fsdp", args
        if cls.endswith("ModelParallelStrategy"):
            return "fsdp2", args
        if cls.endswith("DDPStrategy"):
            return "ddp", args
        if cls.endswith("SingleDeviceStrategy"):
            return "single", args
        raise ValueError(f"unknown strategy class {cls!r}: pass --strategy")
    s = str(s or "auto").lower()
    if s.startswith("deepspeed_stage_"):
        return f"zero{s[len('deepspeed_stage_')]}", {}
    if s.startswith("fsdp"):
        return "fsdp", {}
    if s.startswith("ddp"):
        return "ddp", {}
    if s in ("auto", "single_device"):
        return ("ddp" if isinstance(devices, int) and devices > 1 else "single"), {}
    raise ValueError(f"unknown strategy {s!r}: pass --strategy ({', '.join(STRATEGIES)})")


# ---------------------------------------------------------------------------------------------------- meta model
def _architecture_preset(preset: dict, architecture: str | None) -> dict:
    """The config's preset as an ``ArchitecturePreset`` at real size (buildable on the meta device)."""
    from grounding.architectures import known_architecture_in

    cls = str(preset.get("class_path", ""))
    args = dict(preset.get("init_args") or {})
    name = cls.rsplit(".", 1)[-1]
    if name == "TinyPreset":
        return preset
    if name == "ArchitecturePreset":
        return {"class_path": "grounding.architectures.ArchitecturePreset", "init_args": dict(args, **({"architecture": architecture} if architecture else {}))}
    if name == "DefaultPreset":
        arch, sam, extra = architecture or "smollm2-135m", {"encoder": "lite_medsam"}, {"grid": args.get("grid", 8), "dtype": "float32"}
    elif name == "HFPreset":
        path = args.get("model_path")
        arch = architecture or (path if path and (Path(path) / "config.json").is_file() else known_architecture_in(path))
        sam, extra = args.get("sam"), {"dtype": args.get("dtype", "bfloat16")}
    elif name == "ComposedPreset":
        path = args.get("lm_path")
        arch = architecture or (path if path and (Path(path) / "config.json").is_file() else known_architecture_in(path))
        sam, extra = args.get("sam"), {"dtype": args.get("dtype", "float32"), "grid": args.get("grid", 8)}
    else:
        raise ValueError(f"plan-memory does not know the preset {cls!r}")
    if not arch:
        raise ValueError(
            f"{name}: the model folder is not set or has no config.json; pass --model-config with a known "
            "architecture (e.g. llava-1.5-7b, qwen2-vl-7b) or a config.json"
        )
    return {
        "class_path": "grounding.architectures.ArchitecturePreset",
        "init_args": dict(architecture=str(arch), sam=sam, shrink=False, **extra),
    }


def build_on_meta(model_config: dict, architecture: str | None = None):
    """The config's ``GroundingLitModule`` on the meta device (no weights; a ``TinyPreset`` is built for real),
    with the model's own trainable choices."""
    from grounding.checkpoint import build_lit_from_config

    cfg = copy.deepcopy(model_config)
    for key in ("init_weights", "feature_cache_dir"):
        cfg.pop(key, None)
    preset = cfg.get("preset") or {"class_path": "grounding.presets.TinyPreset"}
    if str(preset.get("class_path", "")).endswith("TinyPreset"):
        return build_lit_from_config(cfg)  # tiny: built for real, in milliseconds
    cfg["preset"] = _architecture_preset(preset, architecture)
    with torch.device("meta"):
        return build_lit_from_config(cfg)


# ---------------------------------------------------------------------------------------------------- counting
@dataclass
class ModelCount:
    """Exact parameter counts and bytes of the built model (by part)."""

    total: int = 0
    trainable: int = 0
    frozen_bytes: int = 0
    trainable_bytes: int = 0
    parts: dict[str, list[int]] = field(default_factory=dict)
    """part -> [parameters, trainable parameters]."""
    layer_bytes: int = 0
    """One decoder layer of the language model (its own dtype)."""
    layer_params: int = 0
    num_layers: int = 0
    root_bytes_fsdp2: int = 0
    """Parameters outside the decoder layers (the FSDP2 root unit)."""
    root_bytes_fsdp: int = 0
    """Parameters outside every wrapped unit of configs/strategies/fsdp.yaml."""


def _part(name: str) -> str:
    if "lora_" in name:
        return "LoRA"
    if "trainable_tokens" in name:
        return "grounding-token rows"
    if name.startswith("model.mask_head.image_encoder"):
        return "SAM image encoder"
    if name.startswith("model.mask_head"):
        return "SAM prompt encoder + mask decoder"
    if name.startswith("model.seg_projector"):
        return "seg projector"
    if name.startswith("model.region_encoder"):
        return "region encoder"
    if any(k in name for k in ("vision_tower", ".visual.", "vision_model")):
        return "vision tower"
    if any(k in name for k in ("multi_modal_projector", "vision_llm.projector", "merger", "position_embedding")):
        return "vision projector"
    return "language model"


_FSDP_UNIT_CLASSES = ("DecoderLayer", "EncoderLayer", "VisionBlock", "Block")


def count_model(lit) -> ModelCount:
    from grounding.vision_llm.base import decoder_layers

    c = ModelCount()
    for name, p in lit.named_parameters():
        n = p.numel()
        b = n * p.element_size()
        c.total += n
        part = c.parts.setdefault(_part(name), [0, 0])
        part[0] += n
        if p.requires_grad:
            c.trainable += n
            c.trainable_bytes += b
            part[1] += n
        else:
            c.frozen_bytes += b
    layers = decoder_layers(lit.model.vision_llm.hf_model)
    c.num_layers = len(layers)
    c.layer_bytes = sum(p.numel() * p.element_size() for p in layers[0].parameters()) if layers else 0
    c.layer_params = sum(p.numel() for p in layers[0].parameters()) if layers else 0
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    units = [m for m in lit.modules() if type(m).__name__.endswith(_FSDP_UNIT_CLASSES)]
    in_units = {id(p) for m in units for p in m.parameters()}
    for p in lit.parameters():
        b = p.numel() * p.element_size()
        if id(p) not in in_layers:
            c.root_bytes_fsdp2 += b
        if id(p) not in in_units:
            c.root_bytes_fsdp += b
    return c


# ---------------------------------------------------------------------------------------------------- activations
def lm_activation_bytes_per_token(
    hidden: int, kv_dim: int, intermediate: int, layers: int, compute_bytes: int = 2,
    lora_modules: int = 2, lora_dropout: bool = False, checkpointing: bool = False,
) -> tuple[int, int]:
    """(bytes kept for backward per token, extra transient bytes per token during backward) of a decoder-only
    language model with a frozen base: RMSNorm inputs as fp32 copies (2 x 4h), q and attention output (2h),
    k and v (2 kv), the MLP's gate, up and SiLU outputs (3i), each LoRA module's input (h, and its dropout output
    and mask with dropout), the residual stream each layer hands on (h, kept by ``output_hidden_states``), and the
    final norm (4h). With checkpointing only each layer's input stays; one layer is recomputed at a time."""
    a = compute_bytes
    per_layer = 8 * hidden + a * (2 * hidden + 2 * kv_dim + 3 * intermediate) + lora_modules * a * hidden
    if lora_dropout:
        per_layer += lora_modules * (a + 2) * hidden
    final = 4 * hidden
    if checkpointing:
        return layers * a * hidden + final, per_layer
    return layers * (per_layer + a * hidden) + final, 0


def _text_dims(config) -> tuple[int, int, int, int]:
    t = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = t.num_attention_heads
    head_dim = getattr(t, "head_dim", None) or t.hidden_size // heads
    kv = (getattr(t, "num_key_value_heads", None) or heads) * head_dim
    return t.hidden_size, kv, t.intermediate_size, t.num_hidden_layers


def _lora_modules(lit) -> int:
    from grounding.vision_llm.base import decoder_layers

    layers = decoder_layers(lit.model.vision_llm.hf_model)
    return sum(1 for n, _ in layers[0].named_modules() if n.endswith("lora_A")) if layers else 0


def _sam_encoder_peak_bytes(head, images: int, compute_bytes: int) -> int:
    """Attention matrices of one global block of SAM's ViT for ``images`` images (scores in the compute dtype,
    decomposed relative-position sum and softmax in fp32), the largest transient of the frozen encoder."""
    enc = head.image_encoder
    if type(enc).__name__ != "ImageEncoderViT":
        return images * 64 * 1024**2  # TinyViT (LiteMedSAM) at 256 px: tens of MB per image
    tokens = (enc.img_size // enc.patch_embed.proj.kernel_size[0]) ** 2
    heads = enc.blocks[0].attn.num_heads
    return images * heads * tokens * tokens * (compute_bytes + 8)


def _mask_decoder_bytes_per_mask(head, compute_bytes: int) -> int:
    """SAM's two-way transformer and upscaling per decoded mask: about 21 x tokens x channels values."""
    h, w = head.embedding_size
    return 21 * h * w * head.embed_dim * compute_bytes


# ---------------------------------------------------------------------------------------------------- the plan
@dataclass
class MemoryPlan:
    settings: TrainSettings
    count: ModelCount
    rows: dict[str, int]
    """Per-GPU bytes by line (parameters, gradients, ...)."""
    total: int
    gpu_memory_gib: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory_gib is None else self.total <= self.gpu_memory_gib * GIB

    def as_dict(self) -> dict:
        return {
            "settings": asdict(self.settings),
            "parameters": {"total": self.count.total, "trainable": self.count.trainable, "parts": self.count.parts},
            "per_gpu_bytes": dict(self.rows, total=self.total),
            "gpu_memory_gib": self.gpu_memory_gib,
            "fits": self.fits,
            "notes": self.notes,
        }

    def table(self) -> str:
        s = self.settings
        lines = [
            f"parameters: {self.count.total / 1e9:.3f} B total, {self.count.trainable / 1e6:.2f} M trainable",
        ]
        for part, (n, t) in sorted(self.count.parts.items(), key=lambda kv: -kv[1][0]):
            lines.append(f"  {part:34s} {n / 1e6:12.2f} M   trainable {t / 1e6:10.2f} M")
        lines.append(
            f"strategy {s.strategy} on {s.world_size} GPU(s), precision {s.precision}, micro-batch {s.micro_batch} x "
            f"{s.seq_len} tokens, gradient checkpointing {'on' if s.gradient_checkpointing else 'off'}, "
            f"feature cache {'on' if s.feature_cache else 'off'}"
        )
        lines.append(f"{'per GPU':42s} {'GiB':>8s}")
        for k, v in self.rows.items():
            lines.append(f"  {k:40s} {v / GIB:8.2f}")
        lines.append(f"  {'total':40s} {self.total / GIB:8.2f}")
        if self.gpu_memory_gib is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            lines.append(f"{verdict} a {self.gpu_memory_gib:g} GiB GPU ({(self.gpu_memory_gib * GIB - self.total) / GIB:+.2f} GiB)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def plan(lit, settings: TrainSettings, gpu_memory_gib: float | None = None) -> MemoryPlan:
    """Per-GPU memory of training ``lit`` (built on any device, meta included) with ``settings``."""
    c = count_model(lit)
    s = settings
    n = max(1, s.world_size)
    a = s.compute_bytes
    all_params = c.total
    trainable_fp = c.trainable_bytes  # in their own dtype (LoRA and heads: fp32)
    rows: dict[str, int] = {}
    notes: list[str] = []
    if s.strategy in ("single", "ddp"):
        frozen = c.frozen_bytes if not s.weights_cast_to_16bit else (c.total - c.trainable) * 2
        rows["parameters"] = frozen + trainable_fp
        rows["gradients"] = trainable_fp
        rows["optimizer state (AdamW)"] = 2 * trainable_fp
    elif s.strategy.startswith("zero"):
        stage = int(s.strategy[-1])
        p16 = 2 if s.weights_cast_to_16bit else 4
        master = 4 if p16 == 2 else 0
        rows["parameters"] = all_params * p16 // (n if stage == 3 else 1)
        if stage == 3:
            rows["parameters"] += 2 * c.layer_params * p16  # the layer running and the one prefetched
        rows["gradients"] = c.trainable * p16 // (n if stage >= 2 else 1)
        rows["optimizer state (fp32 master + AdamW)"] = c.trainable * (master + 8) // n
        rows["communication buckets"] = min(s.reduce_bucket, c.trainable) * p16 + min(s.allgather_bucket, c.trainable) * p16
    elif s.strategy in ("fsdp", "fsdp2"):
        shard = (c.frozen_bytes + trainable_fp) // n
        root = c.root_bytes_fsdp2 if s.strategy == "fsdp2" else c.root_bytes_fsdp
        rows["parameters (shard)"] = shard
        rows["parameters (gathered units in flight)"] = root + 2 * c.layer_bytes
        rows["gradients (shard)"] = trainable_fp // n
        rows["optimizer state (AdamW, shard)"] = 2 * trainable_fp // n
    else:
        raise ValueError(f"unknown strategy {s.strategy!r}; choose one of {STRATEGIES}")

    # activations of one micro-batch
    config = lit.model.vision_llm.hf_model.config
    hidden, kv, inter, layers = _text_dims(config)
    kept, transient = lm_activation_bytes_per_token(
        hidden, kv, inter, layers, a, _lora_modules(lit), lit.lora.dropout > 0 and lit.lora.r > 0, s.gradient_checkpointing
    )
    tokens = s.micro_batch * s.seq_len
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = text.vocab_size
    logits = s.micro_batch * s.answer_tokens * vocab * (a + 8)
    head = lit.model.mask_head
    masks = s.micro_batch * s.masks_per_sample * _mask_decoder_bytes_per_mask(head, a)
    acts = tokens * (kept + transient) + logits + masks
    rows["activations (language model, est.)"] = tokens * (kept + transient)
    rows["activations (logits, mask decoder)"] = logits + masks
    encoder_peak = 0 if s.feature_cache else _sam_encoder_peak_bytes(head, s.micro_batch, a)
    rows["frozen SAM encoder peak (transient)"] = max(0, encoder_peak - acts)
    if encoder_peak > acts:
        notes.append("the frozen SAM encoder's transient peak exceeds the activations: the feature cache removes it")
    base = sum(rows.values())
    rows["CUDA context + fragmentation"] = CUDA_CONTEXT_BYTES + int(FRAGMENTATION * base)
    total = sum(rows.values())
    if not s.gradient_checkpointing and tokens * kept > 4 * GIB:
        notes.append("gradient checkpointing (model.gradient_checkpointing: true) would keep only each layer's input")
    if gpu_memory_gib is not None and total > gpu_memory_gib * GIB and s.strategy in ("single", "ddp", "zero1", "zero2"):
        notes.append("weights are replicated on every GPU: zero3 / fsdp shard them")
    return MemoryPlan(s, c, rows, total, gpu_memory_gib, notes)


# ---------------------------------------------------------------------------------------------------- CLI
def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "class_path" not in v:
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def load_configs(paths: list[str]) -> dict:
    """Several LightningCLI YAMLs merged in order (later ones win), as ``grounding fit --config a --config b``."""
    import yaml

    cfg: dict = {}
    for p in paths:
        cfg = _merge(cfg, yaml.safe_load(Path(p).read_text()) or {})
    return cfg


def default_seq_len(config) -> int:
    """Image tokens + 256 text tokens: LLaVA-style fixed grids from the vision config; 1024 otherwise."""
    vc = getattr(config, "vision_config", None)
    if vc is not None and getattr(vc, "image_size", None) and getattr(vc, "patch_size", None):
        return (vc.image_size // vc.patch_size) ** 2 + 256
    return 1024


def plan_memory_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="grounding plan-memory",
        description="Per-GPU training memory of a config, from the model built on the meta device (no weights).",
    )
    p.add_argument("--config", action="append", required=True, help="LightningCLI YAML (repeatable, later wins)")
    p.add_argument("--model-config", default=None,
                   help="architecture: a known name (" + ", ".join(_known()) + ") or a config.json / model folder")
    p.add_argument("--gpu-memory", type=float, default=None, help="GiB per GPU, to say whether it fits")
    p.add_argument("--strategy", choices=STRATEGIES, default=None, help="default: the config's trainer.strategy")
    p.add_argument("--gpus", type=int, default=None, help="processes in total (default: devices x num_nodes)")
    p.add_argument("--precision", default=None, help="default: the config's trainer.precision")
    p.add_argument("--batch-size", type=int, default=None, help="micro-batch per GPU (default: data.batch_size)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sample (default: image tokens + 256)")
    p.add_argument("--answer-tokens", type=int, default=64)
    p.add_argument("--masks-per-sample", type=int, default=3)
    p.add_argument("--gradient-checkpointing", choices=("on", "off"), default=None)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = p.parse_args(argv)

    cfg = load_configs(args.config)
    trainer = cfg.get("trainer") or {}
    model_cfg = dict(cfg.get("model") or {})
    if args.gradient_checkpointing is not None:
        model_cfg["gradient_checkpointing"] = args.gradient_checkpointing == "on"
    strategy, sargs = strategy_of(trainer)
    devices = trainer.get("devices", 1)
    devices = devices if isinstance(devices, int) and devices > 0 else 1
    world = args.gpus or devices * int(trainer.get("num_nodes", 1) or 1)
    lit = build_on_meta(model_cfg, args.model_config)
    settings = TrainSettings(
        strategy=args.strategy or strategy,
        world_size=world,
        precision=str(args.precision or trainer.get("precision", "32-true")),
        micro_batch=args.batch_size or int((cfg.get("data") or {}).get("batch_size", 1)),
        seq_len=args.seq_len or default_seq_len(lit.model.vision_llm.hf_model.config),
        answer_tokens=args.answer_tokens,
        masks_per_sample=args.masks_per_sample,
        gradient_checkpointing=bool(model_cfg.get("gradient_checkpointing", False)),
        feature_cache=bool(model_cfg.get("feature_cache_dir")),
        reduce_bucket=int(sargs.get("reduce_bucket_size", 200_000_000)),
        allgather_bucket=int(sargs.get("allgather_bucket_size", 200_000_000)),
    )
    result = plan(lit, settings, args.gpu_memory)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.table())
    return 0


def _known() -> list[str]:
    from grounding.architectures import KNOWN_ARCHITECTURES

    return sorted(KNOWN_ARCHITECTURES)


__all__ = [
    "MemoryPlan",
    "ModelCount",
    "TrainSettings",
    "build_on_meta",
    "count_model",
    "lm_activation_bytes_per_token",
    "plan",
    "plan_memory_main",
    "strategy_of",
]

