"""``GroundingLitModule``: trains and evaluates a ``GroundingModel`` with PyTorch Lightning.

What trains (by default, LISA-style): LoRA on the language model, the grounding-token rows of the embeddings
and output layer, the composed model's projector, the seg projector, the region encoder and the SAM mask
decoder. The SAM image encoder is frozen (no autograd; its features may be cached on disk) and the prompt
encoder is frozen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import lightning as L
import torch

from grounding.evaluation import EvalConfig, Evaluator
from grounding.feature_cache import FeatureCache
from grounding.losses import LossWeights, grounding_loss
from grounding.model import HeadOptions
from grounding.presets import ModelPreset, TinyPreset
from grounding.processor import GroundingBatch, ProcessorConfig
from grounding.vision_llm.base import LoraSettings, decoder_layers


@dataclass
class TrainableParts:
    """Which parts train besides LoRA and the grounding-token rows."""

    mask_decoder: bool = True
    """SAM's mask decoder (its IoU head trains only with a non-zero iou loss weight)."""
    prompt_encoder: bool = False
    """SAM's prompt encoder."""
    projector: bool = True
    """The vision-to-language projector (composed model's MLP, or the HF model's multimodal projector)."""
    seg_projector: bool = True
    """The seg projector (and, with ``HeadOptions.seg_prior``, the seg prior and SAM's mask-input path; with
    ``HeadOptions.presence``, the presence head)."""
    region_encoder: bool = True


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then linear/cosine decay (or constant), stepped per optimizer step."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 10
    schedule: str = "linear"
    """linear | cosine | constant (after warm-up)."""
    min_lr_ratio: float = 0.0
    lr_scales: dict[str, float] = field(default_factory=dict)
    """Learning-rate multipliers by parameter-name prefix, e.g. {"model.mask_head": 0.5}."""


def enable_gradient_checkpointing(hf_model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing of the language model's decoder layers (works with LoRA and
    frozen embeddings without ``enable_input_require_grads``; the vision tower is frozen and untouched)."""
    base = hf_model.get_base_model() if hasattr(hf_model, "get_base_model") else hf_model
    decoder = base.get_decoder()
    kwargs = {"use_reentrant": False}
    if hasattr(decoder, "activation_checkpointing_enable"):
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers releases before the rename
        decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _set_trainable(module: torch.nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


class GroundingLitModule(L.LightningModule):
    """Args:
        preset: the model builder (``grounding.presets``: TinyPreset, DefaultPreset, HFPreset, ComposedPreset).
        heads: how [SEG], boxes and regions couple to the mask head.
        processor: answer format and chat templating.
        lora: LoRA on the language model.
        trainable: which other parts train.
        loss: loss weights.
        optim: optimizer and schedule.
        evaluation: generation-based validation metrics.
        feature_cache_dir: cache frozen image-encoder features here (None: no cache).
        init_weights: a safetensors file of trained parts to load before training (e.g. a shipped checkpoint). A
            model without a mask verifier (``heads.verifier`` off) or presence verifier loads the file's other parts
            and leaves those verifiers out, so the shipped parts can be measured or trained on without their second stage.
        gradient_checkpointing: recompute the language model's decoder layers in backward instead of keeping
            their activations (non-reentrant checkpointing, so it works with LoRA, frozen embeddings and DDP).
    """

    def __init__(
        self,
        preset: ModelPreset | None = None,
        heads: HeadOptions | None = None,
        processor: ProcessorConfig | None = None,
        lora: LoraSettings | None = None,
        trainable: TrainableParts | None = None,
        loss: LossWeights | None = None,
        optim: OptimConfig | None = None,
        evaluation: EvalConfig | None = None,
        feature_cache_dir: str | None = None,
        init_weights: str | None = None,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        # evaluation settings belong to the run, not the model: left out of the checkpoint's hyperparameters, which
        # LightningCLI's --ckpt_path would otherwise apply over the command line's --model.evaluation.*
        self.save_hyperparameters(ignore=["evaluation"])
        self.strict_loading = False  # checkpoints hold the trained tensors only (see on_save_checkpoint)
        self.preset = preset or TinyPreset()
        self.heads = heads or HeadOptions()
        self.lora = lora or LoraSettings()
        self.trainable = trainable or TrainableParts()
        self.loss_weights = loss or LossWeights()
        self.optim = optim or OptimConfig()
        self.model, self.processor = self.preset.build(self.heads, processor or ProcessorConfig())
        self._configure_trainable()
        self.gradient_checkpointing = gradient_checkpointing
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.model.vision_llm.hf_model)
        if feature_cache_dir:
            self.model.feature_cache = FeatureCache(feature_cache_dir, namespace=getattr(self.preset, "name", "model"))
        if init_weights:
            from grounding.checkpoint import load_trained_weights

            # the verifiers are a second stage: a model configured without them starts from the other parts
            leave_out = tuple(f"model.{name}." for name in ("mask_verifier", "presence_verifier") if getattr(self.model, name) is None)
            load_trained_weights(self, init_weights, leave_out=leave_out)
        self.evaluator = Evaluator(self.model, self.processor, evaluation or EvalConfig())

    # ------------------------------------------------------------------ parts
    def _configure_trainable(self) -> None:
        m = self.model
        vlm = m.vision_llm
        new_ids = m.tokens.as_list()
        extra = getattr(vlm, "image_token_id", None)
        if extra is not None:
            new_ids = new_ids + [extra]
        for p in vlm.hf_model.parameters():
            p.requires_grad_(False)
        vlm.apply_lora(self.lora, new_ids)
        projector = getattr(vlm, "projector", None)
        if projector is None:  # LLaVA's multi_modal_projector, Qwen2-VL's visual.merger (found by name: peft wraps)
            projector = next(
                (mod for name, mod in vlm.hf_model.named_modules() if name.endswith(("multi_modal_projector", "visual.merger"))),
                None,
            )
        _set_trainable(projector, self.trainable.projector)
        _set_trainable(getattr(vlm, "abstractor", None), self.trainable.projector)  # the conv half of a "conv" projector
        head = m.mask_head
        _set_trainable(head.prompt_encoder, self.trainable.prompt_encoder)
        _set_trainable(head.mask_decoder, self.trainable.mask_decoder)
        if self.trainable.mask_decoder and self.loss_weights.iou <= 0:
            _set_trainable(head.mask_decoder.iou_prediction_head, False)
        _set_trainable(m.seg_projector, self.trainable.seg_projector)
        if m.seg_prior is not None:  # the prior and SAM's mask-input path it feeds
            _set_trainable(m.seg_prior, self.trainable.seg_projector)
            _set_trainable(head.prompt_encoder.mask_downscaling, self.trainable.seg_projector)
        _set_trainable(m.presence_head, self.trainable.seg_projector)
        _set_trainable(m.region_encoder, self.trainable.region_encoder)
        head.freeze_image_encoder(self.heads.freeze_image_encoder)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints hold only the trained tensors: base weights come from their own files or packages (a
        7B base would otherwise be copied into every checkpoint). ``strict_loading`` is off to match."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in names}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained tensors (what a shipped checkpoint needs beside the base weights)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "collate_fn") and dm.collate_fn is None:
            dm.collate_fn = self.processor.collate_samples

    def configure_callbacks(self):
        """``ResumeDataOrder``: a run resumed with ``--ckpt_path`` sees the data in the uninterrupted order."""
        from grounding.resume import ResumeDataOrder

        return [ResumeDataOrder()]

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        if isinstance(batch, GroundingBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def forward(self, batch: GroundingBatch):
        return self.model(batch)

    def configure_model(self) -> None:
        """FSDP2 under ``ModelParallelStrategy`` (a no-op under every other strategy).

        Each decoder layer of the language model becomes one ``fully_shard`` unit and the rest of the
        ``GroundingModel`` (embeddings, vision tower, projectors, SAM head, LoRA outside the layers) the root
        unit; frozen and trainable parameters shard alike (FSDP2 shards per parameter). ``generate`` is
        registered as a forward method so generation-based validation all-gathers like ``forward``.
        """
        mesh = self.device_mesh
        if mesh is None or getattr(self, "_fsdp2_applied", False):  # configure_model runs again for validate
            return
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                "tensor parallelism is not supported: set ModelParallelStrategy(data_parallel_size=<world size>, "
                "tensor_parallel_size=1)"
            )
        dp = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        for layer in decoder_layers(self.model.vision_llm.hf_model):
            fully_shard(layer, mesh=dp)
        fully_shard(self.model, mesh=dp)
        register_fsdp_forward_method(self.model, "generate")
        self._fsdp2_applied = True

    def _zero_touch(self) -> torch.Tensor:
        """0 x (sum of the head parameters): keeps every trainable parameter in the graph when a batch has
        no [SEG] or no region (DDP requires all of them to receive gradients; FSDP2 reduce-scatters only the
        gradients that exist, so processes would disagree on the sizes)."""
        parts = [self.model.seg_projector, self.model.region_encoder, self.model.mask_head.mask_decoder,
                 self.model.seg_prior, self.model.presence_head, self.model.mask_head.prompt_encoder,
                 self.model.mask_verifier, self.model.presence_verifier]  # the verifiers train in `grounding fit-verifier`, not here
        total = None
        for mod in parts:
            if mod is None:
                continue
            for p in mod.parameters():
                if p.requires_grad:
                    s = p.sum() * 0.0
                    total = s if total is None else total + s
        return total if total is not None else torch.zeros((), device=self.device)

    def training_step(self, batch: GroundingBatch, batch_idx: int):
        fwd = self.model(batch)
        loss, parts = grounding_loss(fwd, batch, self.loss_weights)
        loss = loss + self._zero_touch()
        bs = batch.batch_size
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=bs, prog_bar=k in ("ce", "mask_iou"))
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the gradient's total 2-norm (before any clipping) every ``log_every_n_steps``: spikes and
        clipping show in the training curve."""
        trainer = self.trainer
        if trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return
        grads = [p.grad for p in self.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor
            norm = norm.full_tensor()
        self.log("train/grad_norm", norm.float(), batch_size=1)

    def validation_step(self, batch: GroundingBatch, batch_idx: int, dataloader_idx: int = 0, stage: str = "val"):
        fwd = self.model(batch)
        loss, parts = grounding_loss(fwd, batch, self.loss_weights)
        bs = batch.batch_size
        self.log(f"{stage}/loss", loss, batch_size=bs, sync_dist=True, add_dataloader_idx=False)
        for k, v in parts.items():
            self.log(f"{stage}/{k}", v, batch_size=bs, sync_dist=True, add_dataloader_idx=False)
        if self.evaluator.config.generate:
            self.evaluator.update(batch.samples, image_embeddings=fwd.image_embeddings, keys=batch.image_keys)

    def on_validation_epoch_start(self) -> None:
        self.evaluator.reset(self.device)

    def on_validation_epoch_end(self) -> None:
        if self.evaluator.config.generate:
            self._log_evaluation("val")

    def _log_evaluation(self, stage: str) -> None:
        """Log the evaluator's metrics: ``compute`` has already reduced them over all processes (sums, not
        averages), so every process logs the same value and Lightning must not average again."""
        metrics = self.evaluator.compute()
        self.evaluator.write_results()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            for name, value in metrics.items():
                self.log(f"{stage}/{name}", value, sync_dist=False)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        return self.validation_step(batch, batch_idx, dataloader_idx, stage="test")

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        if self.evaluator.config.generate:
            self._log_evaluation("test")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        cfg = self.optim
        groups: dict[float, list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0
            for prefix, s in cfg.lr_scales.items():
                if name.startswith(prefix):
                    scale = s
            groups.setdefault(scale, []).append(p)
        if not groups:
            raise ValueError("nothing to train: every parameter is frozen")
        param_groups = [{"params": ps, "lr": cfg.lr * s} for s, ps in groups.items()]
        opt = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        total = self._total_steps()

        def factor(step: int) -> float:
            if cfg.warmup_steps and step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            if cfg.schedule == "constant" or total is None:
                return 1.0
            progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
            if cfg.schedule == "cosine":
                f = 0.5 * (1 + math.cos(math.pi * progress))
            elif cfg.schedule == "linear":
                f = 1.0 - progress
            else:
                raise ValueError(f"unknown schedule {cfg.schedule!r}: linear, cosine or constant")
            return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * f

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _total_steps(self) -> int | None:
        if self._trainer is None:
            return None
        try:
            n = int(self.trainer.estimated_stepping_batches)
        except Exception:
            return None
        return n if 0 < n < 10**9 else None
