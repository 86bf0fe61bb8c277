"""`grounding export`: LoRA merged, a self-contained folder, and the same predictions after loading it back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import two_squares_sample
from grounding.export import EXPORT_CONFIG, HEADS_FILE, export_model, is_exported, load_exported, sam_config_of
from grounding.lit_module import GroundingLitModule
from grounding.presets import TinyPreset
from grounding.vision_llm.base import LoraSettings

ROOT = Path(__file__).resolve().parents[1]


def _trained_tiny(kind: str) -> GroundingLitModule:
    """A tiny model whose trained parts are not at their initial values (LoRA B is zero at init: merging it would
    prove nothing)."""
    torch.manual_seed(0)
    # composed-norm: the default model's token_norm and position code, without the feature InstanceNorm, so the
    # export must carry all three options to rebuild the same model
    preset = (
        TinyPreset("composed", position_embedding=True, token_norm=True, feature_norm="none")
        if kind == "composed-norm" else TinyPreset(kind)
    )
    lit = GroundingLitModule(preset, lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in lit.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return lit.eval()


def _predictions(model, processor):
    """Teacher-forced outputs on a training batch (LM logits at answer tokens, [SEG] mask logits) and greedy
    answers (text, mask logits) to two requests."""
    sample = two_squares_sample()
    batch = processor.collate([processor.encode(sample), processor.encode(two_squares_sample(56, 40, "b"))])
    with torch.no_grad():
        fwd = model(batch)
    reqs = [processor.encode_request(sample.image, "Please segment the red square."),
            processor.encode_request(sample.image, "What is in <region>?", regions=[[8, 8, 30, 30]])]
    answers = model.generate(processor.collate(reqs, padding_side="left"), max_new_tokens=12)
    return fwd, answers


def _assert_same(before, after):
    fb, ab = before
    fa, aa = after
    torch.testing.assert_close(fa.logits, fb.logits, rtol=1e-4, atol=1e-4)
    assert fb.mask_logits is not None and fb.mask_logits.shape[0] > 0
    torch.testing.assert_close(fa.mask_logits, fb.mask_logits, rtol=1e-4, atol=1e-4)
    assert [a.text for a in aa] == [b.text for b in ab]
    for a, b in zip(aa, ab):
        assert (a.mask_logits is None) == (b.mask_logits is None)
        if a.mask_logits is not None:
            torch.testing.assert_close(a.mask_logits, b.mask_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["llava", "qwen2vl", "composed", "composed-norm"])
def test_export_round_trip_gives_the_same_predictions(kind, tmp_path):
    lit = _trained_tiny(kind)
    before = _predictions(lit.model, lit.processor)
    out = export_model(copy.deepcopy(lit.model), lit.processor, tmp_path / "export")
    assert is_exported(out)
    cfg = json.loads((out / EXPORT_CONFIG).read_text())
    assert cfg["lora_merged"] and cfg["vision_llm"]["kind"] == ("composed" if kind.startswith("composed") else "hf")
    # the vision-LLM is a plain transformers folder: no peft adapter, no LoRA tensors
    assert (out / "vision_llm" / "config.json").is_file() and not (out / "vision_llm" / "adapter_config.json").exists()
    from safetensors import safe_open

    with safe_open(str(next((out / "vision_llm").glob("*.safetensors"))), "pt") as f:
        assert not any("lora_" in k or "trainable_tokens" in k for k in f.keys())
    with safe_open(str(out / HEADS_FILE), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("mask_head.image_encoder.") for k in keys) and any(k.startswith("seg_projector.") for k in keys)

    model, processor = load_exported(out)
    assert processor.tokens == lit.processor.tokens  # the grounding tokens kept their ids
    assert processor.config == lit.processor.config
    after = _predictions(model, processor)
    _assert_same(before, after)


def test_sam_config_of_rebuilds_the_same_structure():
    from heads import SamConfig, build_sam_head

    for cfg in (SamConfig(encoder="tiny", image_size=64, prompt_embed_dim=32),
                SamConfig(encoder="vit_b", image_size=128, encoder_depth=4, encoder_global_attn_indexes=(1, 3),
                          encoder_embed_dim=48, encoder_num_heads=3, window_size=4, prompt_embed_dim=64)):
        head = build_sam_head(cfg)
        again = build_sam_head(sam_config_of(head))
        a, b = head.state_dict(), again.state_dict()
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)


def test_load_exported_refuses_other_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_exported(tmp_path)
    (tmp_path / EXPORT_CONFIG).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="format"):
        load_exported(tmp_path)


def test_grounding_export_cli_from_a_fit_checkpoint(tmp_path):
    """`grounding fit` (1 step) -> .ckpt -> `grounding export` -> load_exported: same predictions as the
    checkpoint's own (unmerged) model."""
    from grounding.cli import lightning_cli, main
    from grounding.export import load_for_export

    lightning_cli([
        "fit", "--config", str(ROOT / "configs/tiny.yaml"), "--trainer.max_steps", "1",
        "--trainer.val_check_interval", "1", "--data.val.init_args.length", "2", "--model.evaluation.generate", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
    ])
    ckpt = next(tmp_path.rglob("*.ckpt"))
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "export")]) == 0
    lit, _ = load_for_export(ckpt)
    before = _predictions(lit.model, lit.processor)
    model, processor = load_exported(tmp_path / "export")
    _assert_same(before, _predictions(model, processor))
    cfg = json.loads((tmp_path / "export" / EXPORT_CONFIG).read_text())
    assert cfg["provenance"]["global_step"] == 1
