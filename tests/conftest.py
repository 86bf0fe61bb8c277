"""Shared test setup: offline hub, small thread count, tiny models and hand-made samples."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from data import GroundingSample, GroundRef, RegionRef, Target, Task, Turn  # noqa: E402

OUTPUT = Path(__file__).parent / "_output"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


def two_squares_sample(h: int = 48, w: int = 64, source: str = "two-squares") -> GroundingSample:
    """A red and a blue rectangle with turns for several tasks (hand-made, exact ground truth)."""
    img = np.full((h, w, 3), 30, np.uint8)
    m1 = np.zeros((h, w), bool)
    m1[h // 10 : h // 2, w // 12 : w // 2 - 4] = True
    m2 = np.zeros((h, w), bool)
    m2[h // 2 + 2 : h - 4, w // 2 : w - 4] = True
    img[m1] = (230, 20, 20)
    img[m2] = (20, 40, 230)

    def box(m):
        ys, xs = np.nonzero(m)
        return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]

    targets = [Target(box(m1), m1, "red square"), Target(box(m2), m2, "blue square")]
    turns = [
        Turn(("Please segment the red square.",), ("Sure, it is ", GroundRef(0), "."), Task.RES, "the red square"),
        Turn(("What is in ", RegionRef(0), "?"), ("It is a blue square.",), Task.REGION),
        Turn(("Where is the blue square? Give its bounding box.",), ("It is ", GroundRef(1, box=True, seg=False), "."), Task.REC),
        Turn(
            ("Describe the image with grounded phrases.",),
            (GroundRef(0, phrase="a red square"), " and ", GroundRef(1, phrase="a blue square"), "."),
            Task.GCG,
        ),
        Turn(("Please segment the green star.",), ("There is no green star in the image.",), Task.RES_NONE, "the green star"),
    ]
    return GroundingSample(img, turns, targets, regions=np.array([box(m2)], np.float32), source=source)


@pytest.fixture
def sample() -> GroundingSample:
    return two_squares_sample()


@pytest.fixture(scope="session", params=["llava", "qwen2vl", "composed"])
def tiny_kind(request) -> str:
    return request.param


def build_tiny(kind: str = "llava", **heads):
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset

    torch.manual_seed(0)
    model, proc = TinyPreset(kind).build(HeadOptions(**heads))
    return model.eval(), proc


def tiny_lit(**heads):
    """A tiny composed-model ``GroundingLitModule`` (LoRA r=4) with these ``HeadOptions``, seeded."""
    from grounding.lit_module import GroundingLitModule, OptimConfig
    from grounding.model import HeadOptions
    from grounding.presets import TinyPreset
    from grounding.vision_llm.base import LoraSettings

    torch.manual_seed(0)
    return GroundingLitModule(
        TinyPreset("composed"),
        heads=HeadOptions(**heads),
        lora=LoraSettings(r=4, alpha=8, dropout=0.0),
        optim=OptimConfig(lr=3e-3),
    )


def two_images_batch(lit):
    """A training batch of two two-squares samples of different sizes, encoded by ``lit``'s processor."""
    s = two_squares_sample()
    return lit.processor.collate([lit.processor.encode(s), lit.processor.encode(two_squares_sample(56, 40, "b"))])
