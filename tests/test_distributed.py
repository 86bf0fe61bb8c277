"""Strategies through Lightning on CPU: DDP (gloo) and FSDP2 (``ModelParallelStrategy``) with 2 processes, bf16
mixed precision, gradient checkpointing; and the evaluator's reduction across processes (sums, not averages).

GPU-only strategies (``FSDPStrategy``, DeepSpeed ZeRO-2/3) are validated by parsing their configs in
``test_configs.py`` / ``test_recipes.py``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import two_squares_sample
from grounding.lit_module import GroundingLitModule, decoder_layers
from grounding.losses import LossWeights, grounding_loss
from grounding.presets import TinyPreset
from grounding.vision_llm.base import LoraSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1"]


def _run_cli(args: list[str], tmp: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "grounding.cli", *args, "--trainer.default_root_dir", str(tmp), *QUIET]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r


def _metrics(tmp: Path) -> list[dict[str, str]]:
    files = sorted(tmp.rglob("metrics.csv"))
    assert files, f"no metrics.csv under {tmp}"
    with open(files[-1]) as f:
        return list(csv.DictReader(f))


def _last(rows: list[dict[str, str]], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            if k.startswith(prefix) and v not in ("", None):
                out[k] = float(v)
    return out


# ---------------------------------------------------------------------------------------- Lightning on CPU
@pytest.mark.slow
def test_ddp_fit_two_processes_and_validation_equals_one_process(tmp_path):
    """`grounding fit` with DDP over 2 gloo processes trains (every trainable parameter gets a gradient, or DDP
    raises) and validates; `grounding validate` of its checkpoint on 1 process then gives the same generation
    metrics (cIoU, gIoU, N-acc, ...) as the 2-process validation: the evaluator reduces sums and counts.
    Validation batches hold 1 sample, so each answer is generated alike in both runs."""
    val = [
        "--data.val.init_args.length", "4", "--data.val_batch_size", "1",
        "--model.evaluation.max_turns_per_epoch", "null",
    ]
    two, one = tmp_path / "two", tmp_path / "one"
    _run_cli(
        [
            "fit", "--config", str(TINY), *val, "--model.evaluation.results_file", str(two / "turns.jsonl"),
            "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
            "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.num_sanity_val_steps", "0",
        ],
        two,
    )
    rows = _metrics(two)
    assert any(r.get("train/loss") for r in rows)
    ckpts = sorted(two.rglob("*.ckpt"))
    assert ckpts, "no checkpoint was written"
    _run_cli(["validate", "--config", str(TINY), *val, "--trainer.devices", "1", "--ckpt_path", str(ckpts[-1]),
              "--model.evaluation.results_file", str(one / "turns.jsonl")], one)
    # each process wrote its own share of the turns; together they are the one-process file's
    shares = sorted(two.glob("turns.rank*.jsonl"))
    assert [p.name for p in shares] == ["turns.rank0.jsonl", "turns.rank1.jsonl"]
    def turns(files):
        out = [json.loads(line) for p in files for line in p.read_text().splitlines()]
        for r in out:  # the same answers; floats compared to 5 decimals
            r["scores"] = {k: round(v, 5) for k, v in r["scores"].items()}
            r["presence"] = None if r["presence"] is None else round(r["presence"], 5)
        return sorted(out, key=json.dumps)

    assert turns(shares) and turns(shares) == turns([one / "turns.jsonl"])
    losses = ("val/loss", "val/ce", "val/bce", "val/dice", "val/mask_iou")
    m2 = {k: v for k, v in _last(rows, "val/").items() if k not in losses}
    m1 = {k: v for k, v in _last(_metrics(one), "val/").items() if k not in losses}
    assert "val/seg/ciou" in m1 and "val/seg/giou" in m1
    assert m1.keys() == m2.keys()
    for k in m1:
        assert math.isclose(m1[k], m2[k], rel_tol=1e-6, abs_tol=1e-9), (k, m1[k], m2[k])


@pytest.mark.slow
def test_fsdp2_model_parallel_strategy_with_two_cpu_processes(tmp_path):
    """FSDP2 through Lightning's ModelParallelStrategy + GroundingLitModule.configure_model, 2 gloo processes:
    trains and validates (generation all-gathers the sharded weights)."""
    strategy = tmp_path / "fsdp2.yaml"
    strategy.write_text(
        "trainer:\n"
        "  strategy:\n"
        "    class_path: lightning.pytorch.strategies.ModelParallelStrategy\n"
        "    init_args: {data_parallel_size: 2, tensor_parallel_size: 1, save_distributed_checkpoint: false}\n"
        "  devices: 2\n"
        "  accelerator: cpu\n"
    )
    _run_cli(
        [
            "fit", "--config", str(TINY), "--config", str(strategy),
            "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.num_sanity_val_steps", "0",
            "--model.evaluation.max_turns_per_epoch", "2", "--data.val.init_args.length", "4",
        ],
        tmp_path,
    )
    rows = _metrics(tmp_path)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert "val/seg/giou" in _last(rows, "val/")


def test_bf16_mixed_precision_fit_on_cpu(tmp_path):
    """`--trainer.precision bf16-mixed` trains the tiny config on a CPU (autocast to bfloat16), in process."""
    from grounding.cli import lightning_cli

    cli = lightning_cli(
        [
            "fit", "--config", str(TINY), "--trainer.precision", "bf16-mixed",
            "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_checkpointing", "false", *QUIET,
        ]
    )
    assert cli.trainer.global_step == 2
    assert cli.trainer.precision == "bf16-mixed"
    loss = cli.trainer.callback_metrics["train/loss"]
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------- gradient checkpointing
def _grads(lit: GroundingLitModule, batch) -> dict[str, torch.Tensor]:
    lit.train()
    lit.zero_grad()
    loss, _ = grounding_loss(lit.model(batch), batch, LossWeights())
    (loss + lit._zero_touch()).backward()
    return {n: p.grad.detach().clone() for n, p in lit.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("kind", ["llava", "composed"])
def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(kind):
    """Checkpointing runs each decoder layer again in backward, and the gradients (LoRA, token rows, heads) equal
    those without it."""
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    plain = GroundingLitModule(TinyPreset(kind), lora=lora)
    ckpt = GroundingLitModule(TinyPreset(kind), lora=lora, gradient_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    s = two_squares_sample()
    batch = plain.processor.collate([plain.processor.encode(s)])

    calls = {"n": 0}
    # transformers checkpoints the layer's forward (its own hooks run once): count a module inside it
    mlp = decoder_layers(ckpt.model.vision_llm.hf_model)[0].mlp
    h = mlp.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    g_ckpt = _grads(ckpt, batch)
    h.remove()
    assert calls["n"] == 2, "the first decoder layer's MLP should run in forward and again in backward"
    g_plain = _grads(plain, batch)
    assert g_plain.keys() == g_ckpt.keys() and any("lora_" in k for k in g_plain)
    for k in g_plain:
        torch.testing.assert_close(g_ckpt[k], g_plain[k], rtol=1e-4, atol=1e-6, msg=k)


# ---------------------------------------------------------------------------------------- evaluator reduction
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fabricated_answers(index: int, sample, codec):
    """A deterministic imperfect answer per turn: masks shifted or dropped, boxes jittered, phrases kept."""
    from data import GroundRef, Task
    from grounding.model import GeneratedAnswer
    from grounding.parse import parse_answer
    from grounding.tokens import PHRASE_END, PHRASE_START, SEG

    rng = np.random.default_rng(index)
    h, w = sample.size
    out = []
    for turn in sample.turns:
        grounds = [g for g in turn.answer if isinstance(g, GroundRef)]
        masks, parts = [], []
        for g in grounds:
            t = sample.targets[g.index]
            if g.seg and rng.random() < 0.8:
                shift = int(rng.integers(0, 4))
                masks.append(np.roll(t.mask, shift, axis=1))
                parts.append((f"{PHRASE_START}{g.phrase}{PHRASE_END} " if g.phrase else "") + SEG)
            if g.box:
                box = np.asarray(t.box, np.float32) + rng.normal(0, 3, 4).astype(np.float32)
                parts.append(codec.encode(np.clip(box, 0, [w, h, w, h]), (w, h)))
        if turn.task == Task.REGION:
            parts.append(rng.choice(["It is a red square.", sample.targets[0].label]))
        if turn.task == Task.RES_NONE and rng.random() < 0.5:
            parts.append(SEG)
            masks.append(np.zeros((h, w), bool))
        text = " and ".join(parts) or "Nothing."
        out.append((turn, GeneratedAnswer(text, parse_answer(text, codec, (w, h)), [], None, None), masks))
    return out


def _eval_samples():
    from data import SyntheticGrounding

    ds = SyntheticGrounding(split="val", length=6, image_size=48, turns_per_sample=3, textures=False)
    return [ds[i] for i in range(len(ds))] + [two_squares_sample(), two_squares_sample(56, 40, "b")]


def _score(samples, indices, codec):
    from grounding.evaluation import Evaluator

    ev = Evaluator(None, None)
    ev.reset("cpu")
    for i in indices:
        for turn, ans, masks in _fabricated_answers(i, samples[i], codec):
            ev.score(samples[i], turn, ans, masks)
    return ev


def _evaluator_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from grounding.box_codecs import make_box_codec

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        samples = _eval_samples()
        # uneven shares: rank 0 takes a third, rank 1 the rest (order differs from the single-process run)
        idx = list(range(len(samples)))
        mine = idx[: len(idx) // 3] if rank == 0 else idx[len(idx) // 3 :][::-1]
        result = _score(samples, mine, make_box_codec("default")).compute()
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_evaluator_reduces_sums_across_processes(tmp_path):
    """Two gloo processes score uneven shares of the samples; each gets exactly the single-process metrics
    (gIoU/cIoU from summed I, U and counts, N-acc, Acc@0.5, counters, and GCG from gathered pairs)."""
    import torch.multiprocessing as mp

    from grounding.box_codecs import make_box_codec

    samples = _eval_samples()
    reference = _score(samples, range(len(samples)), make_box_codec("default")).compute()
    for key in ("seg/giou", "seg/ciou", "n_acc", "rec/acc50", "region/acc", "gcg/miou", "gcg/ap50"):
        assert key in reference, (key, reference)
    assert 0.0 < reference["seg/ciou"] < 1.0 and 0.0 < reference["gcg/miou"] < 1.0
    mp.start_processes(_evaluator_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got.keys() == reference.keys()
        for k, v in reference.items():
            assert math.isclose(got[k], v, rel_tol=1e-9, abs_tol=1e-12), (rank, k, got[k], v)
