"""`grounding plan-memory`: exact parameter counts on the meta device, the activation formula against measured
saved tensors, known architectures against their published sizes, and the CLI on a real-scale recipe."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from grounding.cli import main
from grounding.memory import TrainSettings, build_on_meta, count_model, lm_activation_bytes_per_token, plan

ROOT = Path(__file__).resolve().parents[1]
LISA = ROOT / "configs/recipes/lisa_llava15_7b.yaml"


def _shrunk_model_config(recipe: Path, architecture: str) -> dict:
    model = yaml.safe_load(recipe.read_text())["model"]
    args = model["preset"]["init_args"]
    model["preset"] = {
        "class_path": "grounding.architectures.ArchitecturePreset",
        "init_args": {"architecture": architecture, "sam": args["sam"], "shrink": True, "dtype": args["dtype"]},
    }
    return model


@pytest.mark.parametrize(
    "recipe,architecture",
    [("lisa_llava15_7b.yaml", "llava-1.5-7b"), ("lisa_qwen2vl_7b.yaml", "qwen2-vl-7b"), ("glamm_gcg_llava15_7b.yaml", "llava-1.5-7b")],
)
def test_meta_counts_equal_the_instantiated_model(recipe, architecture):
    """The same recipe at tiny size, built on the meta device and for real: every count and byte agrees."""
    from grounding.checkpoint import build_lit_from_config

    cfg = _shrunk_model_config(ROOT / "configs/recipes" / recipe, architecture)
    meta = build_on_meta(cfg)
    assert all(p.is_meta for p in meta.model.vision_llm.parameters())
    real = build_lit_from_config({k: v for k, v in cfg.items() if k != "feature_cache_dir"})
    assert not any(p.is_meta for p in real.parameters())
    cm, cr = count_model(meta), count_model(real)
    assert cm.total == cr.total == sum(p.numel() for p in real.parameters())
    assert cm.trainable == cr.trainable == sum(p.numel() for p in real.parameters() if p.requires_grad)
    assert cm.frozen_bytes == cr.frozen_bytes and cm.trainable_bytes == cr.trainable_bytes
    assert cm.parts == cr.parts and cm.layer_bytes == cr.layer_bytes > 0


@pytest.mark.parametrize("name,billions", [("llava-1.5-7b", 7.06), ("qwen2-vl-7b", 8.29), ("qwen2-vl-2b", 2.21)])
def test_known_architectures_have_their_published_sizes(name, billions):
    """The hard-coded public config values rebuild models of the sizes their hub pages state."""
    from transformers import AutoModelForImageTextToText

    from grounding.architectures import architecture_config

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(architecture_config(name))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions


def _measured_saved_bytes_per_token(hidden, inter, heads, kv_heads, layers, ckpt, tokens=(2, 96)) -> float:
    """Bytes autograd keeps for backward (saved tensors, parameters excluded) per token of a LoRA'd Llama in
    bf16 weights under bf16 autocast, the repository's training setting."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, vocab_size=128, max_position_embeddings=512)
    m = get_peft_model(LlamaForCausalLM(cfg).to(torch.bfloat16), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                                          target_modules=["q_proj", "v_proj"]))
    if ckpt:
        m.get_base_model().model.activation_checkpointing_enable()
    m.train()
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    seen: dict = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    b, s = tokens
    x = m.get_input_embeddings()(torch.randint(0, 128, (b, s))).detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = m.get_base_model().model(inputs_embeds=x, output_hidden_states=True)
    hidden_states = sum(h.untyped_storage().nbytes() for h in out.hidden_states[1:-1])  # kept by the caller
    return (sum(seen.values()) + (0 if ckpt else hidden_states)) / (b * s)


@pytest.mark.parametrize("ckpt", [False, True])
@pytest.mark.parametrize("dims", [(256, 688, 4, 4, 2), (192, 512, 6, 2, 3)], ids=["mha", "gqa"])
def test_activation_formula_matches_measured_saved_tensors(dims, ckpt):
    hidden, inter, heads, kv_heads, layers = dims
    measured = _measured_saved_bytes_per_token(hidden, inter, heads, kv_heads, layers, ckpt)
    kept, _ = lm_activation_bytes_per_token(
        hidden, kv_heads * hidden // heads, inter, layers, compute_bytes=2, lora_modules=2, checkpointing=ckpt
    )
    assert 0.85 < kept / measured < 1.15, (kept, measured)


def _plan_json(*args: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["plan-memory", *args, "--json"]) == 0
    return json.loads(out.getvalue())


def test_plan_memory_cli_on_the_lisa_recipe_without_weights():
    zero2 = _plan_json("--config", str(LISA), "--model-config", "llava-1.5-7b", "--gpu-memory", "24")
    s = zero2["settings"]
    assert s["strategy"] == "zero2" and s["world_size"] == 8 and s["precision"] == "bf16-mixed"
    assert s["gradient_checkpointing"] and s["micro_batch"] == 2 and s["seq_len"] == 576 + 256
    params = zero2["parameters"]
    # Vicuna-7B (Llama-2-7B shape, 6 738 415 616 with 32 000 rows) with LLaVA's 32 064-row vocabulary
    assert params["parts"]["language model"][0] == 6_738_415_616 + 2 * 64 * 4096
    assert 7.7e9 < params["total"] < 7.8e9  # LLaVA-1.5-7B (7.06 B) + SAM ViT-H (0.64 B) + heads
    assert params["parts"]["LoRA"] == [4_194_304, 4_194_304]  # r=8 on q and v of 32 layers: 32 * 2 * 8 * (4096 + 4096)
    bytes_ = zero2["per_gpu_bytes"]
    assert bytes_["parameters"] == 2 * params["total"]  # DeepSpeed bf16: every weight in 16 bits, replicated
    assert zero2["fits"] is True  # LISA-7B trains on 8 x 24 GB with ZeRO-2

    zero3 = _plan_json("--config", str(LISA), "--model-config", "llava-1.5-7b", "--strategy", "zero3")
    assert zero3["per_gpu_bytes"]["parameters"] < bytes_["parameters"] / 4
    no_ckpt = _plan_json("--config", str(LISA), "--model-config", "llava-1.5-7b", "--gradient-checkpointing", "off")
    lm = "activations (language model, est.)"
    assert no_ckpt["per_gpu_bytes"][lm] > 5 * bytes_[lm]
    single = _plan_json("--config", str(LISA), "--model-config", "llava-1.5-7b", "--strategy", "single", "--gpus", "1",
                        "--gpu-memory", "16")
    assert single["fits"] is False


def test_plan_memory_on_the_tiny_config_counts_the_real_model():
    from grounding.checkpoint import build_lit_from_config

    got = _plan_json("--config", str(ROOT / "configs/tiny.yaml"))
    lit = build_lit_from_config(yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())["model"])
    assert got["parameters"]["total"] == sum(p.numel() for p in lit.parameters())
    assert got["parameters"]["trainable"] == sum(p.numel() for p in lit.parameters() if p.requires_grad)
    assert got["settings"]["strategy"] == "single" and got["fits"] is None


def test_plan_rows_follow_the_strategy():
    """ZeRO stages and FSDP shard what they claim to: same model, 8 GPUs."""
    cfg = _shrunk_model_config(LISA, "llava-1.5-7b")
    lit = build_on_meta(cfg)
    rows = {s: plan(lit, TrainSettings(strategy=s, world_size=8, precision="bf16-mixed")).rows
            for s in ("ddp", "zero1", "zero2", "zero3", "fsdp2")}
    opt = {s: next(v for k, v in r.items() if k.startswith("optimizer")) for s, r in rows.items()}
    grads = {s: next(v for k, v in r.items() if k.startswith("gradients")) for s, r in rows.items()}
    assert opt["zero1"] < opt["ddp"] and grads["zero1"] > grads["zero2"]
    assert rows["zero3"]["parameters"] < rows["zero2"]["parameters"]
    assert rows["fsdp2"]["parameters (shard)"] * 8 <= count_model(lit).frozen_bytes + count_model(lit).trainable_bytes
