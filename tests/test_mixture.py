"""``DatasetMixture``: weights, realised proportions, determinism, sample sources; ``MixtureConfig`` from YAML."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from jsonargparse import ArgumentParser
from torch.utils.data import Dataset

from data import DatasetMixture, DatasetSpec, GroundingSample, MixtureConfig, RefCOCO, Target, Templated, write_refer
from data.templates import referring_turn


class Numbers(Dataset):
    """Items ``(tag, i)`` for ``i < n``."""

    def __init__(self, tag: str, n: int):
        self.tag, self.n = tag, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return (self.tag, i)


class Phrases(Numbers):
    """A sample source: raw items are ints; ``to_sample`` makes a one-turn GroundingSample."""

    def to_sample(self, item, rng) -> GroundingSample:
        m = np.zeros((4, 4), bool)
        m[1:3, 1:3] = True
        return GroundingSample(
            image=np.zeros((4, 4, 3), np.uint8),
            turns=[referring_turn(f"{self.tag} {item[1]}", [0], rng)],
            targets=[Target(box=[1, 1, 3, 3], mask=m)],
            source=f"{self.tag} {item[1]}",
        )


def test_realised_proportions_follow_the_weights():
    mix = DatasetMixture([Numbers("a", 7), Numbers("b", 1000), Numbers("c", 3)], [2.0, 1.0, 1.0], length=40_000, seed=1)
    counts = mix.counts()
    np.testing.assert_allclose(counts / counts.sum(), [0.5, 0.25, 0.25], atol=0.01)
    tags = [mix[i][0] for i in range(0, 40_000, 7)]  # the items agree with the assignment
    np.testing.assert_allclose([tags.count(t) / len(tags) for t in "abc"], [0.5, 0.25, 0.25], atol=0.03)
    # within a dataset, every item is used before any repeats
    a_items = [mix.locate(i)[1] for i in range(40_000) if mix.locate(i)[0] == 0]
    assert sorted(a_items[:7]) == list(range(7)) and sorted(a_items[7:14]) == list(range(7))


def test_zero_weight_dataset_is_never_drawn_and_weights_are_normalised():
    mix = DatasetMixture([Numbers("a", 5), Numbers("b", 5)], [0.0, 3.0], length=500)
    assert mix.counts().tolist() == [0, 500] and mix.weights.tolist() == [0.0, 1.0]


def test_deterministic_per_seed_and_index_and_new_draw_per_epoch():
    def build(seed):
        return DatasetMixture([Phrases("a", 10), Numbers("b", 10)], [1.0, 1.0], length=64, seed=seed)

    m1, m2 = build(0), build(0)
    assert [m1.locate(i) for i in range(64)] == [m2.locate(i) for i in range(64)]
    for i in range(64):
        x, y = m1[i], m2[i]
        if isinstance(x, GroundingSample):  # sample sources go through to_sample
            assert x.turns == y.turns and x.source == y.source
        else:
            assert x == y and x[0] == "b"
    assert [build(1).locate(i) for i in range(64)] != [m1.locate(i) for i in range(64)]
    before = [m1.locate(i) for i in range(64)]
    m1.set_epoch(1)
    assert [m1.locate(i) for i in range(64)] != before
    m1.set_epoch(0)
    assert [m1.locate(i) for i in range(64)] == before


def test_templated_wrapper():
    t = Templated(Phrases("p", 4), seed=5)
    assert len(t) == 4 and t[2].source == "p 2" and t[2].turns == t[2].turns
    with pytest.raises(TypeError, match="not a sample source"):
        Templated(Numbers("n", 3))
    with pytest.raises(IndexError):
        t[4]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0], "got 1 weights for 2 datasets"),
        ([1.0, -0.5], r"non-negative; got \[1\]=-0.5"),
        ([0.0, 0.0], "all mixture weights are zero"),
        ([1.0, float("nan")], "finite"),
    ],
)
def test_weight_validation(weights, message):
    with pytest.raises(ValueError, match=message):
        DatasetMixture([Numbers("a", 3), Numbers("b", 3)], weights, length=10)


def test_other_validation():
    with pytest.raises(ValueError, match="empty but have a positive weight"):
        DatasetMixture([Numbers("a", 0), Numbers("b", 3)], [1, 1], length=10)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        DatasetMixture([Numbers("a", 3)], [1], length=0)
    with pytest.raises(ValueError, match="at least one dataset"):
        DatasetMixture([], [], length=3)
    with pytest.raises(IndexError):
        DatasetMixture([Numbers("a", 3)], [1], length=3)[3]


def instantiate(parser: ArgumentParser, cfg):
    """``parser.instantiate`` (jsonargparse >= 4.49) or its older name."""
    if hasattr(parser, "instantiate"):
        return parser.instantiate(cfg)
    return parser.instantiate_classes(cfg)


def test_mixture_config_from_yaml_with_class_path(tmp_path):
    g = np.random.default_rng(0)
    m = np.zeros((8, 8), bool)
    m[2:5, 3:6] = True
    sample = GroundingSample(
        image=g.integers(0, 255, (8, 8, 3), dtype=np.uint8),
        turns=[referring_turn("the square", [0], g)],
        targets=[Target(box=[3, 2, 6, 5], mask=m, label="square")],
    )
    write_refer({"train": [sample, sample], "val": [sample]}, tmp_path)
    config = f"""
mixture:
  length: 50
  seed: 3
  datasets:
    - weight: 3
      name: synthetic-refer
      dataset:
        class_path: data.RefCOCO
        init_args: {{root: {tmp_path}, name: synthetic, split: train, task: REC}}
    - weight: 1.0
      dataset:
        class_path: data.GRefCOCO
        init_args: {{root: {tmp_path}, name: synthetic, split: val}}
"""
    parser = ArgumentParser()
    parser.add_argument("--mixture", type=MixtureConfig)
    cfg = parser.parse_object(yaml.safe_load(config))
    init = instantiate(parser, cfg)
    mc = init.mixture
    assert isinstance(mc, MixtureConfig) and all(isinstance(s, DatasetSpec) for s in mc.datasets)
    assert isinstance(mc.datasets[0].dataset, RefCOCO) and mc.datasets[0].dataset.split == "train"
    assert [s.name for s in mc.datasets] == ["synthetic-refer", "GRefCOCO"] and mc.datasets[0].weight == 3.0
    mix = mc.build()
    assert len(mix) == 50 and mix.weights.tolist() == [0.75, 0.25]
    assert all(isinstance(mix[i], GroundingSample) for i in range(5))


def test_dataset_mixture_itself_as_a_class_path_dataset(tmp_path):
    """The datamodule's route: ``train: {class_path: data.DatasetMixture, init_args: ...}``."""
    config = """
train:
  class_path: data.DatasetMixture
  init_args:
    length: 20
    weights: [1.0, 3.0]
    seed: 2
    datasets:
      - class_path: data.synthetic.SyntheticGrounding
        init_args: {split: train, length: 4, image_size: 32}
      - class_path: data.synthetic.SyntheticGrounding
        init_args: {split: val, length: 4, image_size: 32}
"""
    parser = ArgumentParser()
    parser.add_argument("--train", type=Dataset)
    mix = instantiate(parser, parser.parse_object(yaml.safe_load(config))).train
    assert isinstance(mix, DatasetMixture) and mix.weights.tolist() == [0.25, 0.75] and mix.seed == 2
    assert isinstance(mix[0], GroundingSample)
