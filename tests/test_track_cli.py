"""``grounding track`` and ``grounding track-eval`` through the real dispatcher, on the tiny random model: the
overlay video and the RLE JSON are written, the progress bar goes to stderr, bad input exits with status 2 and
one line on stderr."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from _scripted import scripted_answers
from _tracking import rect_video
from data.masks import decode_rle
from grounding.cli import main

RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, masks = rect_video(
        [dict(obj_id=1, colour=RED, xy=(10, 20), wh=(20, 16), v=(5, 2)),
         dict(obj_id=2, colour=BLUE, xy=(100, 60), wh=(14, 14), v=(-3, -1))],
        num_frames=6,
    )
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (128, 96))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path, masks


def read_video(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def test_track_with_boxes_writes_overlay_and_json(clip, tmp_path, capsys):
    path, masks = clip
    out = tmp_path / "out"
    rc = main(["track", "--video", str(path), "--box", "[[10, 20, 30, 36], [100, 60, 114, 74]]", "--model", "tiny",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "tracking" in err and "6/6" in err  # tqdm's bar on stderr
    videos = list(out.glob("overlay.*"))
    assert len(videos) == 1 and len(read_video(videos[0])) == 6
    data = json.loads((out / "tracks.json").read_text())
    assert data["num_frames"] == 6 and data["video_size"] == [96, 128] and data["fps"] == pytest.approx(8.0)
    assert [o["obj_id"] for o in data["objects"]] == [1, 2] and data["boxes"][0] == [10, 20, 30, 36]
    first = data["frames"][0]["objects"][0]
    assert first["mask"] is None or decode_rle(first["mask"]).shape == (96, 128)
    assert {"ground", "track", "load_model", "wall"} <= set(data["timings"])


def test_track_with_a_prompt(clip, tmp_path, capsys, monkeypatch):
    """The LLM path: a scripted answer with one [SEG] on the keyframe, then tracking (the tiny model's
    random mask decoder gives noise masks; the test checks the plumbing, not their quality)."""
    from grounding.predictor import GroundingPredictor

    path, _ = clip
    predictor = GroundingPredictor.from_pretrained("tiny", max_new_tokens=24)
    monkeypatch.setattr("grounding.commands_track.load_predictor", lambda model, device: predictor)
    out = tmp_path / "out"
    with scripted_answers(predictor, "Sure, [SEG]."):
        rc = main(["track", "--video", str(path), "--prompt", "Please segment the red box.", "--keyframe", "2",
                   "--model", "tiny", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads((out / "tracks.json").read_text())
    assert data["prompt"] == "Please segment the red box." and data["keyframe"] == 2 and data["num_frames"] == 6
    assert len(data["objects"]) == 1
    with scripted_answers(predictor, "There is no red box."):
        rc = main(["track", "--video", str(path), "--prompt", "Please segment the red box.", "--model", "tiny",
                   "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "tracks.json").read_text())
    assert data["objects"] == [] and all(f["objects"] == [] for f in data["frames"]) and data["num_frames"] == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["--video", "{missing}", "--box", "[[0, 0, 5, 5]]"], "no video file or folder"),
        (["--video", "{broken}", "--box", "[[0, 0, 5, 5]]"], "cannot open|no readable frames"),
        (["--video", "{empty}", "--box", "[[0, 0, 5, 5]]"], "no frame images"),
        (["--video", "{clip}"], "give --prompt"),
        (["--video", "{clip}", "--prompt", "x", "--box", "[[0, 0, 5, 5]]"], "not both"),
        (["--video", "{clip}", "--prompt", "  "], "the prompt is empty"),
        (["--video", "{clip}", "--box", "[[0, 0, 5]]"], "regions must be"),
        (["--video", "{clip}", "--points", "[1, 2]"], "--points must be"),
        (["--video", "{clip}", "--box", "[[0, 0, 5, 5]]", "--keyframe", "9"], "outside the video"),
        (["--video", "{clip}", "--box", "[[0, 0, 5, 5]]", "--engine", "sam2"], "--sam2-model"),
        (["--video", "{clip}", "--box", "[[0, 0, 5, 5]]", "--max-frames", "0"], "--max-frames must be"),
    ],
)
def test_track_bad_input(clip, tmp_path, capsys, args, message):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    (tmp_path / "empty").mkdir()
    subs = {"{clip}": str(clip[0]), "{missing}": str(tmp_path / "nope.mp4"), "{broken}": str(broken),
            "{empty}": str(tmp_path / "empty")}
    argv = ["track", *[subs.get(a, a) for a in args], "--model", "tiny", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("grounding track: error:")
    import re

    assert re.search(message, err[-1]), err[-1]


def test_track_help_and_usage(capsys):
    assert main(["track", "--help"]) == 0
    assert "--video" in capsys.readouterr().out
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "track " in out and "track-eval" in out


def test_track_eval_on_synthetic_with_gt_boxes(tmp_path, capsys):
    out = tmp_path / "scores.json"
    rc = main(["track-eval", "--dataset", "synthetic", "--num-videos", "1", "--num-frames", "3", "--image-size", "64",
               "--prompt-source", "gt-box", "--limit", "2", "--model", "tiny", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.startswith("synthetic: J&F ")
    data = json.loads(out.read_text())
    assert data["count"] == 2 and 0.0 <= data["JF"] <= 1.0 and len(data["rows"]) == 2


def test_track_eval_bad_input(tmp_path, capsys):
    assert main(["track-eval", "--dataset", "mevis", "--model", "tiny"]) == 2
    assert "needs --root" in capsys.readouterr().err
    assert main(["track-eval", "--dataset", "mevis", "--root", str(tmp_path), "--model", "tiny"]) == 2
    assert "meta_expressions.json" in capsys.readouterr().err
    assert main(["track-eval", "--dataset", "kinetics"]) == 2
    assert "invalid choice" in capsys.readouterr().err
