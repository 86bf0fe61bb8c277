"""Real-scale recipes (configs/recipes) and strategy configs (configs/strategies) cannot rot.

Each recipe is run through the real CLI with only three things swapped: the preset becomes the *same architecture*
shrunk (``ArchitecturePreset``: the same transformers config class with tiny dimensions, the same SAM encoder kind
at 64 px), the datasets become the synthetic world, and the 8-GPU trainer settings become one CPU. Everything
else the recipe says (LoRA, heads, box format, losses, optimiser, precision, gradient checkpointing) is what trains
the one step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from grounding.architectures import (
    KNOWN_ARCHITECTURES,
    ArchitecturePreset,
    architecture_config,
    shrink_config,
    shrink_sam,
)
from grounding.cli import lightning_cli
from heads import SamConfig

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").rglob("*.yaml"))
STRATEGIES = sorted((ROOT / "configs" / "strategies").rglob("*.yaml"))
# The architecture each recipe's model_path is meant to hold (a recipe's path is null until a user fills it in).
ARCHITECTURE = {
    "lisa_llava15_7b.yaml": "llava-1.5-7b",
    "lisa_qwen2vl_7b.yaml": "qwen2-vl-7b",
    "glamm_gcg_llava15_7b.yaml": "llava-1.5-7b",
    "rvos_qwen2vl_7b_sam2.yaml": "qwen2-vl-7b",
}
HF_CLASS = {"llava-1.5-7b": "LlavaForConditionalGeneration", "qwen2-vl-7b": "Qwen2VLForConditionalGeneration"}


def test_every_recipe_names_its_architecture():
    assert RECIPES, "no recipes under configs/recipes"
    assert {p.name for p in RECIPES} == set(ARCHITECTURE), "add new recipes to ARCHITECTURE"


@pytest.mark.parametrize("path", RECIPES + STRATEGIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_opening_comment_gives_the_command_and_hardware(path):
    lines = path.read_text().splitlines()
    head = "\n".join(line for line in lines[: next(i for i, l in enumerate(lines) if not l.startswith("#"))])
    rel = str(path.relative_to(ROOT))
    assert head, f"{rel} must open with a comment"
    assert f"grounding fit --config {rel}" in head or f"--config {rel}" in head, f"{rel}: command missing"
    assert "GPU" in head or "CPU" in head, f"{rel}: say which hardware it expects"


def _tiny_override(recipe: dict, architecture: str, tmp_path: Path) -> dict:
    model = recipe["model"]
    sam = copy.deepcopy(model["preset"]["init_args"]["sam"])
    region = model.get("heads", {}).get("region_encoder", True)
    tasks = ["res", "res_multi", "res_none", "reason", "rec", "gcg"] + (["region"] if region else [])
    return {
        "model": {
            "preset": {
                "class_path": "grounding.architectures.ArchitecturePreset",
                "init_args": {
                    "architecture": architecture,
                    "sam": sam,
                    "shrink": True,
                    "dtype": model["preset"]["init_args"].get("dtype", "float32"),
                },
            },
            "feature_cache_dir": None,
        },
        "data": {
            "train": {
                "class_path": "data.synthetic.SyntheticGrounding",
                "init_args": {"split": "train", "length": 8, "image_size": 64, "tasks": tasks, "turns_per_sample": 2,
                              "seed": 0},
            },
            "val": None,
            "batch_size": 2,
            "num_workers": 0,
        },
        "trainer": {
            "accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto",
            "max_steps": 1, "max_epochs": 1, "accumulate_grad_batches": 1, "limit_val_batches": 0,
            "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
            "default_root_dir": str(tmp_path),
        },
    }


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_trains_one_step_with_its_architecture_shrunk(path, tmp_path):
    recipe = yaml.safe_load(path.read_text())
    architecture = ARCHITECTURE[path.name]
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump(_tiny_override(recipe, architecture, tmp_path)))
    torch.manual_seed(0)
    cli = lightning_cli(["fit", "--config", str(path), "--config", str(override)])
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    lit = cli.model
    want = recipe["model"]
    # the real architecture classes, shrunk
    base = lit.model.vision_llm.hf_model.get_base_model()
    assert type(base).__name__ == HF_CLASS[architecture]
    assert base.config.get_text_config().hidden_size == 64
    assert lit.model.mask_head.image_encoder.__class__.__name__ == "ImageEncoderViT"
    # the recipe's own settings are what trained
    assert lit.lora.r == want["lora"]["r"] and lit.lora.alpha == want["lora"]["alpha"]
    assert lit.processor.config.box_codec == want["processor"]["box_codec"]
    assert lit.optim.lr == want["optim"]["lr"]
    assert (lit.model.region_encoder is not None) == want["heads"]["region_encoder"]
    assert lit.gradient_checkpointing == want.get("gradient_checkpointing", False)
    assert cli.trainer.precision == recipe["trainer"]["precision"]
    lora = [n for n, p in lit.named_parameters() if p.requires_grad and "lora_" in n]
    assert lora and all("language_model" in n for n in lora), "LoRA only on the language model"


# ---------------------------------------------------------------------------------------------- shrinking
@pytest.mark.parametrize("name", ["llava-1.5-7b", "qwen2-vl-7b", "qwen2-vl-2b", "smollm2-135m"])
def test_shrink_keeps_the_architecture_and_shrinks_dimensions(name):
    real = architecture_config(name)
    tiny = shrink_config(real, vocab_size=300)
    assert type(tiny) is type(real) and tiny.model_type == real.model_type
    rt, tt = real.get_text_config(), tiny.get_text_config()
    assert type(tt) is type(rt)
    assert tt.hidden_size == 64 and tt.num_hidden_layers == 2 and tt.vocab_size == 300
    assert tt.hidden_act == rt.hidden_act and tt.tie_word_embeddings == rt.tie_word_embeddings
    assert (tt.num_key_value_heads < tt.num_attention_heads) == (rt.num_key_value_heads < rt.num_attention_heads)
    assert round(tt.intermediate_size / tt.hidden_size, 1) == pytest.approx(rt.intermediate_size / rt.hidden_size, abs=0.2)
    if name.startswith("llava"):
        assert tiny.vision_feature_layer == real.vision_feature_layer == -2
        assert tiny.projector_hidden_act == real.projector_hidden_act
        assert type(tiny.vision_config) is type(real.vision_config)
    if name.startswith("qwen2-vl"):
        rope = tt.rope_parameters
        assert sum(rope["mrope_section"]) == tt.hidden_size // tt.num_attention_heads // 2
        assert tiny.vision_config.patch_size == real.vision_config.patch_size
        assert tiny.vision_config.spatial_merge_size == real.vision_config.spatial_merge_size
        assert tiny.vision_config.hidden_size == tt.hidden_size


def test_shrink_sam_keeps_the_encoder_kind_and_its_window_global_pattern():
    tiny = shrink_sam(SamConfig(encoder="vit_h", checkpoint="/nowhere/sam_vit_h.pth"))
    assert tiny.encoder == "vit_h" and tiny.checkpoint is None
    assert tiny.image_size == 64 and tiny.encoder_embed_dim == 32
    # SAM: windowed blocks, then a global one, repeated; the shrunk encoder too (no global block first)
    assert tiny.encoder_global_attn_indexes == (1, 3) and tiny.encoder_depth == 4


def test_known_architectures_cite_their_source():
    for name, entry in KNOWN_ARCHITECTURES.items():
        assert "/" in entry["source"], name
        architecture_config(name)  # every entry builds its transformers config


def test_architecture_preset_from_a_config_json(tmp_path):
    """A user's own model folder: only config.json is read (no weights, no tokenizer)."""
    real = architecture_config("llava-1.5-7b")
    (tmp_path / "config.json").write_text(real.to_json_string())
    model, processor = ArchitecturePreset(str(tmp_path), SamConfig(encoder="vit_b"), shrink=True).build()
    assert type(model.vision_llm.hf_model).__name__ == "LlavaForConditionalGeneration"
    assert model.vision_llm.hf_model.config.vision_feature_layer == -2


# ---------------------------------------------------------------------------------------------- strategies
def test_fsdp_strategy_config_instantiates_with_its_wrap_policy():
    """The GPU FSDP config builds Lightning's FSDPStrategy with the decoder-layer classes as wrap units."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy, Strategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    raw = yaml.safe_load((ROOT / "configs/strategies/fsdp.yaml").read_text())
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": raw["trainer"]["strategy"]})).strategy
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True  # LoRA: frozen and trainable parameters in one unit
    policy = strategy.kwargs["auto_wrap_policy"]
    model, _ = ArchitecturePreset("llava-1.5-7b", SamConfig(encoder="vit_h"), shrink=True).build()
    wrapped = [m for m in model.modules() if policy(module=m, recurse=False, nonwrapped_numel=0)]
    names = {type(m).__name__ for m in wrapped}
    assert names == {"LlamaDecoderLayer", "CLIPEncoderLayer", "Block"}
    assert sum(isinstance(m, LlamaDecoderLayer) for m in wrapped) == 2


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_are_validated_by_parsing(stage, tmp_path):
    """ZeRO-2/3 configs parse through the CLI without deepspeed installed, and parsing does check the options
    against DeepSpeedStrategy's signature (a misspelt option fails)."""
    import contextlib
    import io

    path = ROOT / f"configs/strategies/deepspeed_zero{stage}.yaml"
    raw = yaml.safe_load(path.read_text())
    assert raw["trainer"]["strategy"]["init_args"]["stage"] == stage
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        lightning_cli(["fit", "--config", str(ROOT / "configs/tiny.yaml"), "--config", str(path), "--print_config"])
    assert exc.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    assert printed["trainer"]["strategy"]["class_path"].endswith("DeepSpeedStrategy")
    assert printed["trainer"]["strategy"]["init_args"]["stage"] == stage
    bad = tmp_path / "bad.yaml"
    raw["trainer"]["strategy"]["init_args"]["stagee"] = stage
    bad.write_text(yaml.safe_dump(raw))
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exc:
        lightning_cli(["fit", "--config", str(bad), "--print_config"])
    assert exc.value.code not in (0, None)
