"""The evaluator's per-turn results file (``EvalConfig.results_file``): one JSON line per evaluated turn."""

from __future__ import annotations

import json

import numpy as np

from conftest import build_tiny
from grounding.evaluation import EvalConfig, Evaluator
from grounding.model import GeneratedAnswer
from grounding.parse import parse_answer


def test_every_turn_is_written_with_its_scores_and_presence(monkeypatch, sample, tmp_path):
    model, proc = build_tiny("composed")
    out = tmp_path / "sub" / "turns.jsonl"
    ev = Evaluator(model, proc, EvalConfig(results_file=str(out)))
    h, w = sample.size
    blue = sample.targets[1].box
    replies = {
        "res": "Sure, it is [SEG].",  # no mask logits: an empty mask, IoU 0 but grounded
        "region": "It is a blue square.",
        "rec": f"It is {model.box_codec.encode(np.asarray(blue, np.float32), (w, h))}.",
        "gcg": "A red square.",
        "res_none": "There is no green star in the image.",
    }
    tasks = [t.task.value for t in sample.turns]

    def generate(batch, max_new_tokens=64, image_embeddings=None, **kw):
        texts = [replies[t] for t in tasks[: batch.batch_size]]
        return [GeneratedAnswer(t, parse_answer(t, model.box_codec, (w, h)), [], None, None, presence=0.25 * i)
                for i, t in enumerate(texts)]

    monkeypatch.setattr(model, "generate", generate)
    ev.update([sample])
    assert ev.write_results() == out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task"] for r in rows] == tasks
    by = {r["task"]: r for r in rows}
    assert by["res"]["scores"] == {"iou": 0.0, "grounded": 1.0}
    assert by["res_none"]["scores"] == {"iou": 1.0, "grounded": 0.0}  # nothing to find, nothing found
    assert by["rec"]["scores"]["correct"] == 1.0 and by["rec"]["scores"]["iou"] > 0.9  # the codec's rounding
    assert by["region"]["scores"] == {"correct": 1.0}
    assert by["res"]["prompt"] == "Please segment the red square."
    assert by["res_none"]["answer"] == replies["res_none"]
    assert by["rec"]["reference"].startswith("It is <box>")
    assert [r["presence"] for r in rows] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # a wrong box is scored wrong; without a path nothing is written
    x1, y1, x2, y2 = (float(v) for v in blue)  # the right height, half the width: IoU 0.5 -> still correct; less -> wrong
    replies["rec"] = f"It is {model.box_codec.encode(np.array([x1, y1, x1 + 0.45 * (x2 - x1), y2], np.float32), (w, h))}."
    ev2 = Evaluator(model, proc)
    ev2.update([sample])
    assert ev2.write_results() is None
    assert ev2.results == []
    ev2.keep_results = True
    ev2.update([sample])
    (rec,) = [r.scores for r in ev2.results if r.task.value == "rec"]
    assert rec["correct"] == 0.0 and 0.4 < rec["iou"] < 0.5
