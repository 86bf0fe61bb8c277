"""Resume: a run stopped mid-epoch and resumed with --ckpt_path has the uninterrupted run's loss curve (same step,
same data order, same optimizer and schedule state)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import yaml

from grounding.cli import lightning_cli

ROOT = Path(__file__).resolve().parents[1]


class _StopAfter(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _fit(tmp: Path, name: str, max_steps: int, ckpt_path: str | None = None, frozen_weights_in_ckpt: bool = True,
         stop_after: int | None = None):
    override = tmp / f"{name}.yaml"
    override.write_text(yaml.safe_dump({
        "data": {
            # 12 samples, batches of 4: 3 steps an epoch, shuffled; 8 steps cross two epoch boundaries
            "train": {"class_path": "data.synthetic.SyntheticGrounding",
                      "init_args": {"split": "train", "length": 12, "image_size": 64, "turns_per_sample": 2}},
            "batch_size": 4,
            "shuffle": True,
        },
        "trainer": {
            "max_steps": max_steps, "limit_val_batches": 0, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
            "enable_progress_bar": False, "default_root_dir": str(tmp / name),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp / name)}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(tmp / name / "ckpt"), "every_n_train_steps": 1,
                                         "save_top_k": -1, "filename": "{step}"}}],
        },
    }))
    # run=False: the trainer's own fit(ckpt_path=...) is what `grounding fit --ckpt_path` calls
    cli = lightning_cli(["--config", str(ROOT / "configs/tiny.yaml"), "--config", str(override)], run=False)
    if not frozen_weights_in_ckpt:  # a module that keeps only trained tensors in its checkpoints
        trained = {n for n, p in cli.model.named_parameters() if p.requires_grad}

        def drop_frozen(checkpoint):
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}

        cli.model.on_save_checkpoint = drop_frozen
        cli.model.strict_loading = False
    if stop_after is not None:  # the interruption: same config (max_steps, schedule), stopped after a step
        cli.trainer.callbacks.insert(0, _StopAfter(stop_after))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path)
    return cli.trainer


def _losses(tmp: Path, name: str) -> dict[int, float]:
    out: dict[int, float] = {}
    for path in sorted((tmp / name).rglob("metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("frozen_weights_in_ckpt", [True, False], ids=["full-ckpt", "trained-only-ckpt"])
def test_interrupted_run_resumes_with_the_same_loss_curve(tmp_path, frozen_weights_in_ckpt):
    """6 steps uninterrupted vs. the same run stopped after step 4 (mid-epoch: 3 batches an epoch) and resumed with
    --ckpt_path from step 4 and, for full checkpoints, from step 3 (an epoch's end: the next epoch must draw the
    uninterrupted run's permutation, not the first epoch's again)."""
    from grounding.resume import EpochPermutation, ResumableSampler, _train_loaders

    full = _fit(tmp_path, "full", 6, frozen_weights_in_ckpt=frozen_weights_in_ckpt)
    assert full.global_step == 6
    _fit(tmp_path, "part", 6, frozen_weights_in_ckpt=frozen_weights_in_ckpt, stop_after=4)
    a, b = _losses(tmp_path, "full"), _losses(tmp_path, "part")
    assert sorted(a) == list(range(6)) and sorted(b) == list(range(4))
    for step in range(4):
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6)
    assert len({round(v, 4) for v in a.values()}) > 3, "equal losses must mean equal batches, not a flat curve"
    starts = [4, 3] if frozen_weights_in_ckpt else [4]
    for start in starts:
        name = f"resumed{start}"
        resumed = _fit(tmp_path, name, 6, str(tmp_path / "part" / "ckpt" / f"step={start}.ckpt"),
                       frozen_weights_in_ckpt=frozen_weights_in_ckpt)
        assert resumed.global_step == 6
        c = _losses(tmp_path, name)
        assert sorted(c) == list(range(start, 6)), f"the run resumed from step {start} continues there"
        for step in range(start, 6):
            assert c[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), (start, step, c[step], a[step])
    sampler = _train_loaders(resumed)[0].batch_sampler.sampler
    assert isinstance(sampler, ResumableSampler) and isinstance(sampler.inner, EpochPermutation)


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    from grounding.resume import EpochPermutation, ResumableSampler

    a, b = EpochPermutation(10, seed=3), EpochPermutation(10, seed=3)
    a.set_epoch(2), b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(10))
    b.set_epoch(3)
    assert list(a) != list(b)
    r = ResumableSampler(a, skip=4)
    assert list(r) == list(a)[4:] and list(r) == list(a)  # the skip applies once
