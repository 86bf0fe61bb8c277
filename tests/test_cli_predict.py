"""``grounding predict``: overlay PNG + JSON result, progress on stderr, the answer on stdout; run in-process
and as the installed console command (a real subprocess). Bad input is in test_bad_input.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grounding.cli import main as cli_main
from grounding.commands import predict_main
from grounding.results import decode_rle

from _scripted import ONE_THREAD_ENV, one_torch_thread, png_bytes, scene

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ROOT / "demo" / "assets" / "shapes.png"
PROMPT = "Please segment the red circle."


def script_model(monkeypatch, answer: str) -> None:
    """Models loaded by the command answer ``answer`` (scripted, see _scripted.py) until the test ends."""
    from contextlib import ExitStack

    from grounding.predictor import GroundingPredictor

    from _scripted import scripted_answers

    real = GroundingPredictor.from_pretrained
    stack = ExitStack()

    def scripted_from_pretrained(*a, **k):
        p = real(*a, **k)
        stack.enter_context(scripted_answers(p, answer))
        return p

    monkeypatch.setattr(GroundingPredictor, "from_pretrained", scripted_from_pretrained)
    monkeypatch.setattr(sys.modules[__name__], "_scripts", stack, raising=False)  # kept alive until teardown


def test_predict_writes_overlay_and_json(tmp_path, capsys, monkeypatch):
    img = scene(72, 96)
    src = tmp_path / "photo.png"
    src.write_bytes(png_bytes(img))
    out = tmp_path / "out"

    # the tiny model's answers are noise: script one with a phrase, a [SEG] and a box
    script_model(monkeypatch, "Sure, <p>the red circle</p> [SEG] near <p>a box</p> <box>[0, 0, 500, 500]</box>.")
    rc = predict_main(
        ["--image", str(src), "--prompt", PROMPT, "--model", "tiny", "--out", str(out), "--max-new-tokens", "64",
         "--regions", "[[0, 0, 40, 40]]"]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    box = [round(v) for v in json.loads((out / "photo.json").read_text())["segments"][1]["box"]]
    assert cap.out.strip() == f"Sure, the red circle near a box {box}."  # the box in the image's pixels
    assert "loading model 'tiny'" in cap.err and "predicted in" in cap.err and "wrote" in cap.err

    overlay = np.asarray(Image.open(out / "photo.png"))
    assert overlay.shape == img.shape and not np.array_equal(overlay, img)
    d = json.loads((out / "photo.json").read_text())
    assert d["prompt"] == PROMPT and d["model"] == "tiny" and d["image"] == str(src)
    assert d["regions"] == [[0.0, 0.0, 40.0, 40.0]]
    assert d["image_size"] == [72, 96]
    assert [s["phrase"] for s in d["segments"]] == ["the red circle", "a box"]
    assert decode_rle(d["segments"][0]["mask"]).shape == (72, 96)
    assert d["segments"][1]["mask"] is None and len(d["segments"][1]["box"]) == 4
    assert {"load_model", "set_image", "generate", "masks", "total", "wall"} <= set(d["timings"])


def test_box_to_mask_option(tmp_path, capsys, monkeypatch):
    script_model(monkeypatch, "It is <box>[100, 100, 600, 600]</box>.")
    rc = predict_main(["--image", str(SHAPES), "--prompt", PROMPT, "--model", "tiny", "--box-to-mask", "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    seg = json.loads((tmp_path / "shapes.json").read_text())["segments"][0]
    assert seg["source"] == "box+sam" and decode_rle(seg["mask"]).shape == (256, 256)


def test_help(capsys):
    assert predict_main(["--help"]) == 0
    assert "--image" in capsys.readouterr().out
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "predict" in out and "serve" in out


@pytest.mark.slow
def test_console_command_end_to_end(tmp_path):
    """The installed entry point as a user runs it (the README's quick start, on the tiny model)."""
    exe = Path(sys.executable).with_name("grounding")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "grounding.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD_ENV}
    proc = subprocess.run(
        cmd + ["predict", "--image", str(SHAPES), "--prompt", PROMPT, "--model", "tiny", "--out", str(tmp_path),
               "--max-new-tokens", "8"],
        capture_output=True, text=True, timeout=400, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "shapes.png").is_file()
    d = json.loads((tmp_path / "shapes.json").read_text())
    assert d["image_size"] == [256, 256] and isinstance(d["segments"], list)
    assert "Traceback" not in proc.stderr

    bad = subprocess.run(
        cmd + ["predict", "--image", str(tmp_path / "missing.png"), "--prompt", PROMPT, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=400, env=env,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"grounding predict: error: no image file at {tmp_path / 'missing.png'}"]


def test_shapes_asset_has_exactly_one_red_circle():
    """The README's quick-start image: the synthetic test scene it was written from has one red circle."""
    sys.path.insert(0, str(ROOT / "demo" / "assets"))
    try:
        from make_assets import shapes_scene
    finally:
        sys.path.pop(0)
    sc = shapes_scene()
    assert [o.label for o in sc.objects].count("red circle") == 1
    np.testing.assert_array_equal(np.asarray(Image.open(SHAPES).convert("RGB")), sc.image)
