"""Resuming a run from a Lightning checkpoint with the same data order (``grounding fit --ckpt_path ...``).

Lightning restores the step, optimizer, scheduler and loop counters, but a plain ``DataLoader`` restarts its epoch
from the first batch: after a mid-epoch checkpoint the resumed run would see the epoch's first batches again, and
a shuffling loader would draw another permutation than the uninterrupted run (its generator starts afresh, and
``DataLoader`` draws worker seeds from the same generator). ``ResumeDataOrder`` (added by
``GroundingLitModule.configure_callbacks``) makes the training order a function of (seed, epoch) and remembers
how far into the epoch a checkpoint was:

- a shuffling loader's ``RandomSampler`` is replaced, before the first batch, by a permutation drawn from
  ``seed + epoch`` (the seed of the loader's generator, i.e. ``data.seed``); ``DistributedSampler`` (DDP, FSDP,
  DeepSpeed) already orders by (seed, epoch) and is kept;
- each checkpoint stores the batches done in its epoch; on resume the batch sampler skips their indices (nothing
  is loaded or collated for them), once.
"""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler


class EpochPermutation(Sampler):
    """``range(n)`` shuffled by ``torch.randperm`` with a generator seeded ``seed + epoch``."""

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableSampler(Sampler):
    """Wraps a sampler: the next iteration drops the first ``skip`` indices (batches done before a checkpoint);
    later iterations are the inner sampler's. ``set_epoch`` and ``len`` pass through."""

    def __init__(self, inner: Sampler, skip: int = 0):
        self.inner = inner
        self.skip = int(skip)

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        for i, index in enumerate(self.inner):
            if i >= skip:
                yield index

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __getattr__(self, name: str) -> Any:  # e.g. DistributedSampler.num_replicas
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def _train_loaders(trainer) -> list[DataLoader]:
    loaders = trainer.train_dataloader
    if isinstance(loaders, DataLoader):
        return [loaders]
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return [v for v in loaders if isinstance(v, DataLoader)]
    return []


class ResumeDataOrder(L.Callback):
    """Same data order after ``--ckpt_path`` as without the interruption (see the module docstring)."""

    def __init__(self) -> None:
        self._trainer = None
        self._restore: dict | None = None

    def state_dict(self) -> dict:
        trainer = self._trainer
        if trainer is None:
            return {}
        n = trainer.num_training_batches
        return {
            "epoch": int(trainer.current_epoch),
            "batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
            "batches_per_epoch": int(n) if n != float("inf") else -1,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._restore = dict(state_dict) if state_dict else None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def on_train_start(self, trainer, pl_module) -> None:
        """Before the first batch is drawn (samplers are read lazily): install the samplers, and the skip."""
        restore, self._restore = self._restore, None
        skip = 0
        if restore:
            done, per_epoch = restore.get("batches_done", 0), restore.get("batches_per_epoch", -1)
            if not (per_epoch > 0 and done >= per_epoch) and restore.get("epoch") == trainer.current_epoch:
                skip = done
        for dl in _train_loaders(trainer):
            bs = dl.batch_sampler
            if bs is None or not hasattr(bs, "sampler"):
                if skip:
                    raise ValueError("resuming mid-epoch needs a loader with a batch sampler (batch_size set)")
                continue
            inner = bs.sampler
            if isinstance(inner, ResumableSampler):
                inner = inner.inner
            if type(inner) is RandomSampler and not inner.replacement and inner._num_samples is None:
                seed = inner.generator.initial_seed() if inner.generator is not None else torch.initial_seed()
                inner = EpochPermutation(len(inner.data_source), seed)
                inner.set_epoch(trainer.current_epoch)
            bs.sampler = ResumableSampler(inner, skip * bs.batch_size)
