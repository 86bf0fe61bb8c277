"""Mixing datasets with explicit float weights, and the typed config that builds a mixture from YAML.

A *sample source* is a loader whose items are in its dataset's own terms (``RefItem``, ``ReasonSegItem``, ...)
and that turns an item into a ``GroundingSample`` with ``to_sample(item, rng)`` through the templates. The
mixture calls ``to_sample`` for such datasets and returns the items of any other dataset (e.g. the synthetic
world, which yields ``GroundingSample``s already) unchanged.

Every draw is deterministic in ``(seed, epoch, index)``: which dataset, which item, and the template phrasing.

YAML (LightningCLI / jsonargparse)::

    mixture:
      length: 10000
      seed: 0
      datasets:
        - weight: 3.0
          dataset:
            class_path: data.RefCOCO
            init_args: {root: /data/refer, name: refcoco, split: train}
        - weight: 1.0
          dataset:
            class_path: data.ReasonSeg
            init_args: {root: /data/reason_seg/ReasonSeg, split: train}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from torch.utils.data import Dataset

from data.sample import GroundingSample


@runtime_checkable
class SampleSource(Protocol):
    """A map-style dataset of raw items that ``to_sample`` turns into ``GroundingSample``s."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...

    def to_sample(self, item: Any, rng: np.random.Generator) -> GroundingSample: ...


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator for one draw: a function of ``(seed, epoch, index, stream)`` only (all non-negative)."""
    return np.random.default_rng([int(seed), int(epoch), int(index), int(stream)])


def draw(dataset: Dataset, index: int, rng: np.random.Generator) -> Any:
    """``dataset[index]``, passed through ``dataset.to_sample(item, rng)`` when the dataset is a ``SampleSource``."""
    item = dataset[index]
    return dataset.to_sample(item, rng) if isinstance(dataset, SampleSource) else item


class Templated(Dataset):
    """One sample source as a ``GroundingSample`` dataset: item ``i`` through ``to_sample`` with ``sample_rng``.

    ``set_epoch(e)`` changes the template phrasings (not the items) from epoch to epoch.
    """

    def __init__(self, source: SampleSource, seed: int = 0):
        if not isinstance(source, SampleSource):
            raise TypeError(f"{type(source).__name__} has no to_sample(item, rng): it is not a sample source")
        self.source = source
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> GroundingSample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        return self.source.to_sample(self.source[index], sample_rng(self.seed, self.epoch, index))


def normalize_weights(weights: Sequence[float], count: int) -> np.ndarray:
    """Validate mixture weights (one per dataset, finite, >= 0, not all 0) and normalise them to sum to 1."""
    w = [float(x) for x in weights]
    if len(w) != count:
        raise ValueError(f"got {len(w)} weights for {count} datasets: give one weight per dataset")
    if count == 0:
        raise ValueError("a mixture needs at least one dataset")
    bad = [(i, x) for i, x in enumerate(w) if not math.isfinite(x) or x < 0]
    if bad:
        raise ValueError(f"weights must be finite and non-negative; got {', '.join(f'[{i}]={x}' for i, x in bad)}")
    total = sum(w)
    if total <= 0:
        raise ValueError("all mixture weights are zero: at least one dataset must have a positive weight")
    return np.asarray(w, np.float64) / total


class DatasetMixture(Dataset):
    """A map-style dataset of ``length`` draws from ``datasets`` with probabilities ``weights`` (normalised).

    Per epoch, the dataset of each index is drawn i.i.d. with the weights; within a dataset, items are taken in a
    fresh random permutation, repeated when a dataset is drawn more often than it has items (so each item is used
    before any repeats). Items of sample sources go through ``to_sample`` with ``sample_rng(seed, epoch, index)``.
    Call ``set_epoch`` to draw a new mixture (the datamodule does, before each epoch).
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], length: int, seed: int = 0):
        self.datasets = list(datasets)
        self.weights = normalize_weights(weights, len(self.datasets))
        if int(length) != length or length < 1:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.length = int(length)
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        self.seed = int(seed)
        self.sizes = [len(d) for d in self.datasets]
        empty = [i for i, (n, w) in enumerate(zip(self.sizes, self.weights)) if n == 0 and w > 0]
        if empty:
            raise ValueError(f"datasets {empty} are empty but have a positive weight")
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the (dataset, item) assignment of every index for ``epoch``."""
        self.epoch = int(epoch)
        rng = sample_rng(self.seed, self.epoch, 0, stream=0)
        self._which = rng.choice(len(self.datasets), size=self.length, p=self.weights).astype(np.int32)
        self._item = np.zeros(self.length, np.int64)
        for d, n in enumerate(self.sizes):
            slots = np.flatnonzero(self._which == d)
            if len(slots) == 0:
                continue
            reps = -(-len(slots) // n)
            order = np.concatenate([rng.permutation(n) for _ in range(reps)])
            self._item[slots] = order[: len(slots)]

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int]:
        """``(dataset number, item index)`` that ``index`` draws this epoch."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a mixture of length {self.length}")
        return int(self._which[index]), int(self._item[index])

    def __getitem__(self, index: int) -> Any:
        d, i = self.locate(index)
        return draw(self.datasets[d], i, sample_rng(self.seed, self.epoch, index, stream=1))

    def counts(self) -> np.ndarray:
        """How many indices draw from each dataset this epoch."""
        return np.bincount(self._which, minlength=len(self.datasets))


@dataclass
class DatasetSpec:
    """One dataset of a mixture."""

    dataset: Dataset
    """The dataset, built from ``class_path`` / ``init_args`` (e.g. ``data.RefCOCO`` or ``data.SyntheticGrounding``)."""
    weight: float = 1.0
    """Relative sampling weight (normalised over the mixture; 0 leaves the dataset out)."""
    name: str = ""
    """A label for logs; defaults to the dataset's class name."""

    def __post_init__(self):
        if not self.name:
            self.name = type(self.dataset).__name__


@dataclass
class MixtureConfig:
    """A weighted mixture of datasets, typed for jsonargparse (see the module docstring for YAML)."""

    datasets: list[DatasetSpec] = field(default_factory=list)
    """The datasets and their weights."""
    length: int = 1000
    """Draws per epoch."""
    seed: int = 0
    """Seed of the draws and of the template phrasings."""

    def build(self) -> DatasetMixture:
        return DatasetMixture(
            [s.dataset for s in self.datasets], [s.weight for s in self.datasets], self.length, self.seed
        )


__all__ = [
    "DatasetMixture",
    "DatasetSpec",
    "MixtureConfig",
    "SampleSource",
    "Templated",
    "draw",
    "normalize_weights",
    "sample_rng",
]
