"""Training on the tiny config: overfitting one batch, the CLI, the shipped configs."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import two_squares_sample
from grounding.lit_module import GroundingLitModule, OptimConfig
from grounding.losses import LossWeights, grounding_loss
from grounding.model import HeadOptions
from grounding.presets import TinyPreset
from grounding.vision_llm.base import LoraSettings

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["llava", "composed", "composed-seg-prior"])
def test_overfit_one_batch_reaches_mask_iou_0_9(kind):
    """With the seg prior (HeadOptions.seg_prior) its own map must also learn the masks (IoU > 0.5)."""
    torch.manual_seed(0)
    seg_prior = kind.endswith("-seg-prior")
    lit = GroundingLitModule(
        TinyPreset(kind.removesuffix("-seg-prior")),
        heads=HeadOptions(seg_prior=seg_prior),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        optim=OptimConfig(lr=3e-3),
    )
    s = two_squares_sample()
    batch = lit.processor.collate([lit.processor.encode(s), lit.processor.encode(two_squares_sample(56, 40, "b"))])
    opt = torch.optim.AdamW([p for p in lit.parameters() if p.requires_grad], lr=3e-3)
    lit.train()
    first = None
    for step in range(300):
        fwd = lit.model(batch)
        loss, parts = grounding_loss(fwd, batch, LossWeights())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss.detach())
        if float(parts["mask_iou"]) > 0.9 and (not seg_prior or float(parts["prior_iou"]) > 0.5):
            break
    assert float(parts["mask_iou"]) > 0.9, f"mask IoU {float(parts['mask_iou']):.3f} after {step} steps"
    if seg_prior:
        assert float(parts["prior_iou"]) > 0.5, f"prior IoU {float(parts['prior_iou']):.3f} after {step} steps"
    assert float(loss.detach()) < 0.8 * first


def test_frozen_parts_and_trainable_parts():
    lit = GroundingLitModule(TinyPreset("llava"))
    names = {n for n, p in lit.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in names)
    assert any("trainable_tokens" in n for n in names)
    assert any(n.startswith("model.mask_head.mask_decoder") for n in names)
    assert not any(n.startswith("model.mask_head.image_encoder") for n in names)
    assert not any("iou_prediction_head" in n for n in names)  # iou loss weight 0
    assert not any("vision_tower" in n for n in names)
    # LoRA only on the language model: the CLIP tower has q_proj too
    assert not any("vision_tower" in n and "lora" in n for n in names)
    sd = lit.trainable_state_dict()
    assert set(sd) == names


def test_grounding_fit_cli_trains_and_validates(tmp_path):
    cmd = [
        sys.executable, "-m", "grounding.cli", "fit", "--config", str(ROOT / "configs/tiny.yaml"),
        "--trainer.max_steps", "6", "--trainer.val_check_interval", "6", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false", "--model.evaluation.max_turns_per_epoch", "4",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = list(tmp_path.rglob("metrics.csv"))
    assert metrics, "the CSV logger wrote no metrics"
    text = metrics[0].read_text()
    assert "train/loss" in text and "val/loss" in text and "val/seg/giou" in text
    rows = list(csv.DictReader(text.splitlines()))
    norms = [float(r["train/grad_norm"]) for r in rows if r.get("train/grad_norm")]
    assert norms and all(math.isfinite(n) and n > 0 for n in norms), norms
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint was written"
