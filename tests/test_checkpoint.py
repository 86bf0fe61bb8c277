"""Trained-parts folders: save only what training changed, rebuild from config.yaml, load exactly."""

from pathlib import Path

import pytest
import torch

from conftest import two_squares_sample
from grounding.checkpoint import build_lit_from_config, load_trained_folder, load_trained_weights, save_trained_folder
from grounding.hub import load_model
from grounding.losses import grounding_loss

ROOT = Path(__file__).resolve().parents[1]

CFG = {
    "preset": {"class_path": "grounding.presets.TinyPreset", "init_args": {"vision_llm": "composed", "seed": 3}},
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "heads": {"seg_tokens": 2},
    "processor": {"seg_with_box": True},
}


def test_trained_folder_round_trip(tmp_path):
    torch.manual_seed(0)
    lit = build_lit_from_config(CFG)
    batch = lit.processor.collate([lit.processor.encode(two_squares_sample())])
    opt = torch.optim.AdamW([p for p in lit.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss, _ = grounding_loss(lit.model(batch), batch, lit.loss_weights)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_trained_folder(lit, tmp_path / "m", CFG, {"note": "test"})
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.yaml", "manifest.json", "trained.safetensors"]
    lit2 = load_trained_folder(tmp_path / "m")
    sd1, sd2 = lit.state_dict(), lit2.state_dict()
    assert set(sd1) == set(sd2)
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    # the same folder loads through the hub, as GroundingPredictor.from_pretrained(path) does
    model, proc = load_model(str(tmp_path / "m"))
    lit.eval()
    with torch.no_grad():
        a = lit.model(batch).mask_logits
        b = model(proc.collate([proc.encode(two_squares_sample())])).mask_logits
    assert torch.allclose(a, b, atol=1e-6)


def test_loading_weights_of_another_configuration_fails_clearly(tmp_path):
    lit = build_lit_from_config(CFG)
    save_trained_folder(lit, tmp_path / "m", CFG)
    other = build_lit_from_config({**CFG, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}})
    with pytest.raises(ValueError, match="shape mismatch"):
        load_trained_weights(other, tmp_path / "m" / "trained.safetensors")
    with pytest.raises(FileNotFoundError, match="not a trained-parts folder"):
        load_trained_folder(tmp_path)


def test_a_model_without_a_verifier_starts_from_parts_that_have_one(tmp_path):
    """init_weights of a verifier model's parts (the shipped default's) into a model configured without the verifier:
    every other part loads, the verifier is left out; a tensor of any other part the model lacks still fails."""
    cfg = {**CFG, "heads": {"seg_tokens": 2, "seg_prior": True, "presence": True, "verifier": True, "presence_verifier": True}}
    torch.manual_seed(0)
    with_verifier = build_lit_from_config(cfg)
    assert with_verifier.model.presence_verifier is not None
    save_trained_folder(with_verifier, tmp_path / "v", cfg)
    path = tmp_path / "v" / "trained.safetensors"
    plain = build_lit_from_config({**cfg, "heads": {**cfg["heads"], "verifier": False, "presence_verifier": False},
                                   "init_weights": str(path)})
    assert plain.model.mask_verifier is None and plain.model.presence_verifier is None
    own, src = plain.state_dict(), with_verifier.state_dict()
    shared = [k for k in own if k in src and not k.startswith(("model.mask_verifier.", "model.presence_verifier."))]
    assert any(k.startswith("model.presence_head.") for k in shared)
    assert all(torch.equal(own[k], src[k]) for k in shared)
    with pytest.raises(ValueError, match="do not exist in the model"):  # without leave_out: refused
        load_trained_weights(plain, path)
    no_presence = build_lit_from_config({**cfg, "heads": {"seg_tokens": 2, "seg_prior": True}})
    with pytest.raises(ValueError, match="presence_head"):
        load_trained_weights(no_presence, path, leave_out=("model.mask_verifier.", "model.presence_verifier."))
    # the mask verifier alone (the verifier shipped before): the file's presence verifier is left out, the rest loads
    mask_only = build_lit_from_config({**cfg, "heads": {**cfg["heads"], "presence_verifier": False}, "init_weights": str(path)})
    assert mask_only.model.presence_verifier is None
    own = mask_only.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if k.startswith("model.mask_verifier."))


def test_trained_folder_in_half_precision(tmp_path):
    """A shipped folder may store its tensors as float16 (half the file); they load back into the float32 model
    rounded to float16, and a bad dtype name fails before anything is written."""
    from safetensors.torch import load_file

    from grounding.checkpoint import SaveTrainedParts

    lit = build_lit_from_config(CFG)
    with torch.no_grad():
        for p in lit.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    save_trained_folder(lit, tmp_path / "full", CFG)
    save_trained_folder(lit, tmp_path / "half", CFG, dtype="float16")
    half = load_file(str(tmp_path / "half" / "trained.safetensors"))
    assert half and all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    full_size = (tmp_path / "full" / "trained.safetensors").stat().st_size
    assert (tmp_path / "half" / "trained.safetensors").stat().st_size < 0.6 * full_size
    lit2 = load_trained_folder(tmp_path / "half")
    sd1, sd2 = lit.state_dict(), lit2.state_dict()
    for k, v in half.items():
        assert sd2[k].dtype == sd1[k].dtype
        assert torch.equal(sd2[k], v.to(sd1[k].dtype))
        assert torch.allclose(sd2[k], sd1[k], rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="floating-point torch dtype"):
        SaveTrainedParts(str(tmp_path / "x"), dtype="int8")
    with pytest.raises(ValueError, match="floating-point torch dtype"):
        save_trained_folder(lit, tmp_path / "bad", CFG, dtype="halfish")
    assert not (tmp_path / "bad").exists()


def test_fit_writes_a_trained_parts_folder_with_its_manifest(tmp_path):
    """SaveTrainedParts at the end of `grounding fit`: config, half-precision tensors and a manifest naming the
    base packages, the step, the storage dtype, the training minutes and the caller's own entries; the folder
    loads back with the trained values."""
    import json

    import yaml
    from safetensors.torch import load_file

    from grounding.cli import lightning_cli

    cfg = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    cfg["trainer"].update(
        max_steps=2, val_check_interval=None, limit_val_batches=0, enable_progress_bar=False, logger=False,
        default_root_dir=str(tmp_path), enable_checkpointing=False,
        callbacks=[{"class_path": "grounding.checkpoint.SaveTrainedParts",
                    "init_args": {"dirpath": str(tmp_path / "model"), "dtype": "float16",
                                  "manifest": {"recipe": "grounding fit --config configs/tiny.yaml"}}}],
    )
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(cfg))
    lightning_cli(["fit", "--config", str(tmp_path / "fit.yaml")])
    manifest = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert manifest["global_step"] == 2 and manifest["dtype"] == "float16"
    assert manifest["recipe"] == "grounding fit --config configs/tiny.yaml"
    assert 0 <= manifest["train_minutes"] < 10 and "transformers" in manifest["packages"]
    stored = load_file(str(tmp_path / "model" / "trained.safetensors"))
    lit = load_trained_folder(tmp_path / "model")
    sd = lit.state_dict()
    assert stored and all(torch.equal(sd[k], v.to(sd[k].dtype)) for k, v in stored.items())
