"""The video side of grounding: frame sources (video files, folders, arrays) and their bad inputs, the
track_video glue (LLM grounding on a keyframe, interactive prompts, several / no objects, a middle keyframe,
re-grounding), TrackResult and its RLE JSON, and J&F evaluation on synthetic videos and the Ref-YouTube-VOS /
MeViS layouts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from _tracking import ColourHead, OraclePredictor, box_of, iou, rect_video, segment
from data.masks import decode_rle
from grounding.errors import GroundingError, InvalidPromptError, InvalidRegionError
from grounding.tracking import TrackResult, evaluate_tracking, make_tracker, track_video
from grounding.video import FolderFrames, InvalidVideoError, SequenceFrames, VideoFileFrames, open_frames
from heads.tracking import FlowTracker

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 40)


@pytest.fixture(scope="module")
def head():
    return ColourHead().eval()


@pytest.fixture(scope="module")
def video():
    return rect_video(
        [dict(obj_id=1, colour=RED, xy=(10, 20), wh=(20, 16), v=(5, 2)),
         dict(obj_id=2, colour=BLUE, xy=(100, 60), wh=(14, 14), v=(-3, -1))],
        num_frames=8,
    )


def write_video(path, frames, fourcc="MJPG", fps=12.0):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


# ------------------------------------------------------------------------------------------ frame sources


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v")])
def test_video_file_frames(tmp_path, video, suffix, fourcc):
    frames, _ = video
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, fourcc)
    src = open_frames(path)
    assert isinstance(src, VideoFileFrames)
    assert len(src) == 8 and src.size == (96, 128) and src.fps == pytest.approx(12.0)
    forward = list(src.iter_from(0))
    assert len(forward) == 8 and all(f.dtype == np.uint8 and f.shape == (96, 128, 3) for f in forward)
    assert np.abs(forward[3].astype(int) - frames[3]).mean() < 12  # lossy codecs
    backward = list(src.iter_from(6, reverse=True))
    assert len(backward) == 7
    for t, f in zip(range(6, -1, -1), backward):
        assert np.abs(f.astype(int) - forward[t]).mean() < 1.0, f"frame {t} read backwards differs"
    assert np.array_equal(src[5], forward[5]) and len(src[2:4]) == 2
    with pytest.raises(IndexError):
        src[8]


def test_folder_and_array_frames(tmp_path, video):
    frames, _ = video
    for i, f in enumerate(frames):  # natural order: 2 before 10
        cv2.imwrite(str(tmp_path / f"frame{i * 4}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not a frame")
    src = open_frames(tmp_path)
    assert isinstance(src, FolderFrames) and len(src) == 8
    assert [p.name for p in src.paths][:4] == ["frame0.png", "frame4.png", "frame8.png", "frame12.png"]
    assert np.array_equal(src[7], frames[7])
    arr = open_frames(np.stack(frames))
    assert isinstance(arr, SequenceFrames) and len(arr) == 8 and np.array_equal(arr[2], frames[2])
    assert np.array_equal(open_frames([f.astype(np.float32) / 255 for f in frames])[1], frames[1])


def test_unreadable_and_empty_videos(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(InvalidVideoError, match="broken.mp4"):
        open_frames(bad)
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(InvalidVideoError, match="empty.avi"):
        open_frames(empty)
    with pytest.raises(InvalidVideoError, match="no video file or folder"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "frames").mkdir()
    with pytest.raises(InvalidVideoError, match="no frame images"):
        open_frames(tmp_path / "frames")
    (tmp_path / "frames" / "0.jpg").write_bytes(b"garbage")
    with pytest.raises(InvalidVideoError, match="cannot read"):
        open_frames(tmp_path / "frames")
    with pytest.raises(InvalidVideoError, match="no frames"):
        open_frames([])
    with pytest.raises(InvalidVideoError, match="must be a video file"):
        open_frames(42)
    assert issubclass(InvalidVideoError, GroundingError) and issubclass(InvalidVideoError, ValueError)


def test_frames_of_changing_size(tmp_path, video):
    frames, _ = video
    with pytest.raises(InvalidVideoError, match="frame 3 is 50 x 60 .* but frame 0 is 96 x 128"):
        open_frames(frames[:3] + [np.zeros((50, 60, 3), np.uint8)])
    for i, f in enumerate(frames[:3] + [np.zeros((50, 60, 3), np.uint8)]):
        cv2.imwrite(str(tmp_path / f"{i}.png"), f)
    src = open_frames(tmp_path)  # a folder is checked as frames are read
    with pytest.raises(InvalidVideoError, match="frame 3 is 50 x 60"):
        list(src.iter_from(0))
    predictor = OraclePredictor(ColourHead(), lambda im, p: [])
    with pytest.raises(InvalidVideoError, match="frame 3 is 50 x 60"):
        track_video(predictor, tmp_path, boxes=[[10, 20, 30, 36]])


# ------------------------------------------------------------------------------------------ track_video


def test_track_from_the_llm_on_the_first_frame(head, video):
    frames, masks = video
    predictor = OraclePredictor(head, lambda im, p: [segment(masks[1][0], phrase="the red box")])
    result = track_video(predictor, frames, "Please segment the red box.")
    assert predictor.calls == ["Please segment the red box."]
    assert isinstance(result, TrackResult) and result.obj_ids == [1] and result.phrases == {1: "the red box"}
    assert [f.frame_idx for f in result.frames] == list(range(8)) and result.video_size == (96, 128)
    for f in result.frames:
        assert iou(f[1].mask, masks[1][f.frame_idx]) > 0.9
        np.testing.assert_allclose(f[1].box, box_of(f[1].mask))
    assert result.masks(1).shape == (8, 96, 128) and result.union_masks().sum() == result.masks(1).sum()
    d = json.loads(json.dumps(result.to_dict()))
    assert d["objects"] == [{"obj_id": 1, "phrase": "the red box"}] and d["num_frames"] == 8
    rle = d["frames"][4]["objects"][0]["mask"]
    assert np.array_equal(decode_rle(rle), result.frames[4][1].mask)
    assert result.timings["total"] >= result.timings["track"] > 0


def test_several_objects_and_a_middle_keyframe(head, video):
    frames, masks = video
    predictor = OraclePredictor(head, lambda im, p: [segment(masks[2][4]), segment(box=box_of(masks[1][4]))])
    result = track_video(predictor, frames, "Please segment the two boxes.", keyframe=4)
    assert result.obj_ids == [1, 2] and result.keyframe == 4
    assert [f.frame_idx for f in result.frames] == list(range(8))
    for f in result.frames:
        assert iou(f[1].mask, masks[2][f.frame_idx]) > 0.9  # first segment -> object 1
        assert iou(f[2].mask, masks[1][f.frame_idx]) > 0.9  # a box-only segment is prompted by its box


def test_a_prompt_matching_nothing_gives_empty_tracks(head, video):
    frames, _ = video
    result = track_video(OraclePredictor(head, lambda im, p: []), frames, "Please segment the green star.")
    assert result.obj_ids == [] and len(result.frames) == 8
    assert all(f.objects == [] for f in result.frames)
    assert result.union_masks().shape == (8, 96, 128) and not result.union_masks().any()
    assert result.text == "There is no such object." and result.to_dict()["objects"] == []


def test_an_object_that_leaves_has_no_mask(head):
    frames, masks = rect_video([dict(obj_id=1, colour=GREEN, xy=(90, 40), wh=(16, 16), v=(9, 0))], num_frames=8)
    result = track_video(OraclePredictor(head, lambda im, p: [segment(masks[1][0])]), frames, "the green box")
    for f in result.frames:
        if not masks[1][f.frame_idx].any():
            assert f[1].mask is None and f[1].rle is None and f[1].box is None and not f[1].visible
    assert result.to_dict()["frames"][-1]["objects"][0]["mask"] is None


def test_interactive_tracking_without_the_llm(head, video):
    frames, masks = video
    tracker = FlowTracker(head)
    result = track_video(None, frames, boxes=[box_of(masks[1][2]), box_of(masks[2][2])], obj_ids=[5, 9],
                         keyframe=2, tracker=tracker)
    assert result.obj_ids == [5, 9] and result.text == "" and result.phrases == {5: None, 9: None}
    assert all(iou(f[5].mask, masks[1][f.frame_idx]) > 0.9 for f in result.frames)
    by_points = track_video(None, frames, masks=[masks[2][0]], tracker=tracker, max_frames=3)
    assert [f.frame_idx for f in by_points.frames] == [0, 1, 2]
    assert all(iou(f[1].mask, masks[2][f.frame_idx]) > 0.9 for f in by_points.frames)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, InvalidPromptError, "give a prompt"),
        ({"prompt": "   "}, InvalidPromptError, "empty"),
        ({"prompt": "x", "boxes": [[0, 0, 5, 5]]}, InvalidPromptError, "not both"),
        ({"boxes": [[0, 0, 5]]}, ValueError, "reshape|4"),
        ({"boxes": [[10, 10, 5, 5]]}, InvalidRegionError, "empty"),
        ({"boxes": [[500, 10, 600, 50]]}, InvalidRegionError, "outside"),
        ({"boxes": [[0, 0, 5, 5]], "obj_ids": [1, 2]}, InvalidRegionError, "obj_ids"),
        ({"boxes": [[0, 0, 5, 5]], "masks": [np.ones((96, 128), bool)]}, InvalidRegionError, "masks alone"),
        ({"masks": [np.ones((10, 10), bool)]}, InvalidRegionError, "mask is 10 x 10"),
        ({"boxes": [[0, 0, 5, 5]], "keyframe": 8}, InvalidVideoError, "keyframe 8 is outside"),
    ],
)
def test_bad_requests(head, video, kwargs, error, message):
    frames, _ = video
    with pytest.raises(error, match=message):
        track_video(OraclePredictor(head, lambda im, p: []), frames, **kwargs)


def test_a_text_prompt_needs_a_predictor(head, video):
    with pytest.raises(InvalidPromptError, match="needs a predictor"):
        track_video(None, video[0], "the red box", tracker=FlowTracker(head))
    with pytest.raises(ValueError, match="unknown tracking engine"):
        make_tracker("kalman", None, mask_head=head)
    with pytest.raises(ValueError, match="sam2_model"):
        make_tracker("sam2")


def test_regrounding_when_lost(head):
    frames, masks = rect_video(
        [dict(obj_id=1, colour=RED, xy=(10, 40), wh=(14, 14), v=(8, 0)),
         dict(obj_id=2, colour=BLUE, xy=(50, 30), wh=(30, 34), v=(0, 0))],
        num_frames=13,
    )
    index = {frames[t].tobytes(): t for t in range(13)}

    def answer(image, prompt):
        m = masks[1][index[image.tobytes()]]
        return [segment(m)] if m.any() else []

    predictor = OraclePredictor(head, answer)
    tracker = make_tracker("flow", predictor, redetect=False)
    result = track_video(predictor, frames, "the red box", tracker=tracker, reground_when_lost=True)
    assert len(predictor.calls) >= 2 and result.timings["reground_calls"] == len(predictor.calls) - 1
    hidden = [t for t in range(13) if not masks[1][t].any()]
    assert all(result.frames[t][1].mask is None for t in hidden)
    assert iou(result.frames[-1][1].mask, masks[1][-1]) > 0.8  # found again by the LLM, not the tracker
    periodic = OraclePredictor(head, answer)
    track_video(periodic, frames[:7], "the red box", tracker=tracker, reground_every=2)
    assert len(periodic.calls) == 1 + 3  # keyframe, then frames 2, 4, 6


def test_progress_callback(head, video):
    frames, masks = video
    seen = []
    track_video(None, frames, boxes=[box_of(masks[1][3])], keyframe=3, tracker=FlowTracker(head), progress=seen.append)
    assert seen == list(range(1, 9))


# ------------------------------------------------------------------------------------------ evaluation


def synthetic_oracle(head, samples):
    """A predictor that grounds each expression of ``samples`` exactly on frame 0 (ground-truth masks)."""
    lookup = {}
    for s in samples:
        for e in s.expressions:
            lookup[(s.frames[0].tobytes(), f"Please segment {e.text}.")] = [s.target(i).masks[0] for i in e.obj_ids]

    def answer(image, prompt):
        return [segment(m) for m in lookup[(image.tobytes(), prompt)] if m.any()]

    return OraclePredictor(head, answer)


def test_evaluate_on_synthetic_videos(head):
    from data.synthetic import SyntheticVideos

    ds = SyntheticVideos("test", length=1, num_frames=4, image_size=(96, 128), seed=0, textures=False)
    samples = [ds[0]]
    n_expr = sum(len(s.expressions) for s in samples)
    predictor = synthetic_oracle(head, samples)
    scores = evaluate_tracking(samples, predictor)
    assert scores.count == n_expr == len(scores.rows) and len(predictor.calls) == n_expr
    assert 0.0 <= scores.JF <= 1.0 and scores.JF == pytest.approx((scores.J + scores.F) / 2)
    assert scores.JF == pytest.approx(np.mean([r["JF"] for r in scores.rows]), abs=1e-4)
    assert {"video", "expression", "obj_ids", "J", "F", "JF"} <= set(scores.rows[0])
    gt = evaluate_tracking(samples, None, prompt_source="gt-box", mask_head=head, limit=2)
    assert gt.count == 2 and 0.0 <= gt.JF <= 1.0
    with pytest.raises(ValueError, match="needs a predictor"):
        evaluate_tracking(samples, None)


def test_evaluate_on_ref_youtube_vos_and_mevis_layouts(tmp_path, head):
    from data.video_datasets import MeViS, RefYouTubeVOS
    from test_loaders import write_mevis, write_ytvos

    write_ytvos(tmp_path / "ytvos")
    write_mevis(tmp_path / "mevis")
    yt = RefYouTubeVOS(tmp_path / "ytvos", "train")
    mv = MeViS(tmp_path / "mevis", "train")
    for ds, n in ((yt, 3), (mv, 2)):
        scores = evaluate_tracking([ds[0]], None, prompt_source="gt-box", mask_head=head)
        assert scores.count == n and all(0.0 <= r["JF"] <= 1.0 for r in scores.rows)
    rows = evaluate_tracking([mv[0]], None, prompt_source="gt-box", mask_head=head).rows
    assert rows[1]["obj_ids"] == [1, 2]  # the union of both objects is scored
    unlabelled = RefYouTubeVOS(tmp_path / "ytvos", "valid")
    assert evaluate_tracking([unlabelled[0]], None, prompt_source="gt-box", mask_head=head).count == 0
