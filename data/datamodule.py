"""``GroundingDataModule``: train / val / test datasets of ``GroundingSample``s for Lightning.

Datasets are given as objects (LightningCLI builds them from ``class_path`` + ``init_args``): the synthetic
world, a real loader wrapped by ``data.mixture.Templated``, or a ``DatasetMixture`` with explicit weights.
The batch ``collate_fn`` (tokenisation, image preprocessing) belongs to the model's processor: the
``GroundingLitModule`` attaches it in its ``setup`` hook, so ``data`` stays free of the token vocabulary.
"""

from __future__ import annotations

from typing import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset


class GroundingDataModule(L.LightningDataModule):
    """Args:
        train: training dataset (items: ``GroundingSample``).
        val: validation dataset.
        test: test dataset (defaults to ``val``).
        batch_size: samples per training batch (per process).
        val_batch_size: samples per validation/test batch (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        shuffle: shuffle the training set each epoch.
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        train: Dataset | None = None,
        val: Dataset | None = None,
        test: Dataset | None = None,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.train_set = train
        self.val_set = val
        self.test_set = test if test is not None else val
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle = shuffle
        self.seed = seed
        self.collate_fn: Callable | None = None

    def _loader(self, dataset: Dataset | None, batch_size: int, shuffle: bool, what: str) -> DataLoader:
        if dataset is None:
            raise ValueError(f"no {what} dataset was configured (set data.{what} in the config)")
        if self.collate_fn is None:
            raise RuntimeError("no collate_fn: the model attaches its processor's collate in setup()")
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=gen,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, self.shuffle, "train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, False, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.val_batch_size, False, "test")
