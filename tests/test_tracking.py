"""Tracking engines (heads.tracking): the typed state and prompts, the flow engine on hand-made videos with exact
ground truth (an ideal colour "decoder" stands in for SAM), lost objects, reverse and continued propagation,
streaming memory, re-acquisition; the flow engine on a real (tiny, random) SAM head; the SAM 2 engine on a tiny
random Sam2VideoModel."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch

from _tracking import ColourHead, box_of, iou, rect_video
from heads.sam import SamConfig, build_sam_head
from heads.tracking import (
    FlowTracker,
    FlowTrackerConfig,
    FrameOutput,
    ObjectOutput,
    Prompt,
    ReacquirePolicy,
    Tracker,
)

RED, BLUE, GREEN = (220, 30, 30), (30, 30, 220), (30, 200, 40)


@pytest.fixture(scope="module")
def head():
    return ColourHead().eval()


def two_objects(num_frames=8):
    return rect_video(
        [dict(obj_id=7, colour=RED, xy=(10, 20), wh=(20, 16), v=(5, 2)),
         dict(obj_id=3, colour=BLUE, xy=(100, 60), wh=(14, 14), v=(-3, -1))],
        num_frames=num_frames,
    )


def run(tracker, state, frames, **kw) -> list[FrameOutput]:
    return list(tracker.propagate(state, frames, **kw))


# ------------------------------------------------------------------------------------------ prompts and state


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs a box, points or a mask"),
        ({"box": [10, 10, 5, 20]}, "empty"),
        ({"box": [0, 0, 1]}, "4 finite numbers"),
        ({"box": [0, 0, float("nan"), 3]}, "4 finite numbers"),
        ({"mask": np.ones((4, 4), bool), "box": [0, 0, 2, 2]}, "cannot be combined"),
        ({"points": [[1, 2], [3, 4]], "point_labels": [1]}, "2 points but 1 point labels"),
        ({"points": [[1, 2]], "point_labels": [2]}, r"1 \(foreground\) or 0"),
        ({"point_labels": [1]}, "without points"),
        ({"mask": np.ones(4, bool)}, "H x W"),
    ],
)
def test_prompt_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Prompt(**kwargs)


def test_prompt_must_fit_the_frame(head):
    tracker = FlowTracker(head)
    state = tracker.init_state((40, 50))
    with pytest.raises(ValueError, match="outside the 50 x 40 frame"):
        tracker.add_object(state, 0, 1, box=[60, 0, 70, 10])
    with pytest.raises(ValueError, match="mask is 10 x 10 but the video is 40 x 50"):
        tracker.add_object(state, 0, 1, mask=np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="frame_idx"):
        tracker.add_object(state, -1, 1, box=[0, 0, 5, 5])
    assert state.objects == []


def test_client_ids_are_kept_apart_from_indices(head):
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 42, box=[0, 0, 10, 10])
    tracker.add_object(state, 3, 5, box=[0, 0, 10, 10])
    tracker.add_object(state, 2, 42, box=[1, 1, 10, 10])  # a second prompt for a known object
    assert state.obj_ids == [42, 5]
    assert state.index_of(42) == 0 and state.index_of(5) == 1
    assert sorted(state.record(42).prompts) == [0, 2]
    tracker.remove_object(state, 42)
    assert state.obj_ids == [5] and state.index_of(5) == 0
    with pytest.raises(KeyError, match="no object 42"):
        state.index_of(42)


def test_object_output_of_an_empty_mask_is_not_visible():
    out = ObjectOutput(1, np.zeros((4, 4), bool), None, 0.9)
    assert out.mask is None and out.box is None and out.score == 0.0 and not out.visible
    out = ObjectOutput(1, np.pad(np.ones((2, 3), bool), 1), None, 0.9)
    assert out.box.tolist() == [1, 1, 4, 3]


# ------------------------------------------------------------------------------------------ flow engine


def test_flow_tracks_moving_objects(head):
    frames, masks = two_objects(8)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    for obj_id, m in masks.items():
        tracker.add_object(state, 0, obj_id, box=box_of(m[0]))
    outs = run(tracker, state, frames)
    assert [o.frame_idx for o in outs] == list(range(8))
    for out in outs:
        assert out.obj_ids == [7, 3]
        for o in out.objects:
            assert o.mask.dtype == bool and o.mask.shape == frames[0].shape[:2]
            assert iou(o.mask, masks[o.obj_id][out.frame_idx]) > 0.9
            np.testing.assert_allclose(o.box, box_of(o.mask))
            assert 0 < o.score <= 1
        assert out[7].visible and out.masks.keys() == {7, 3}
    assert head.encode_calls >= 8


def test_flow_mask_prompt_and_points_prompt(head):
    frames, masks = two_objects(5)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, mask=masks[7][0])
    outs = run(tracker, state, frames)
    assert outs[0][7].mask.tolist() == masks[7][0].tolist()  # a mask prompt is the mask on its frame
    assert all(iou(o[7].mask, masks[7][o.frame_idx]) > 0.9 for o in outs)


def test_an_object_that_leaves_the_frame_is_reported_lost(head):
    frames, masks = rect_video([dict(obj_id=1, colour=GREEN, xy=(90, 40), wh=(16, 16), v=(9, 0))], num_frames=8)
    gone = [t for t in range(8) if not masks[1][t].any()]
    assert gone, "the test video must have frames without the object"
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 1, box=box_of(masks[1][0]))
    for out in tracker.propagate(state, frames):
        gt = masks[1][out.frame_idx]
        if not gt.any():
            assert out[1].mask is None and out[1].box is None and out[1].score == 0.0
        elif gt.sum() > 40:
            assert iou(out[1].mask, gt) > 0.8


def test_occluded_object_is_lost_then_found_again(head):
    # the red square passes behind a bigger blue one (drawn later), then comes out
    frames, masks = rect_video(
        [dict(obj_id=1, colour=RED, xy=(10, 40), wh=(14, 14), v=(8, 0)),
         dict(obj_id=2, colour=BLUE, xy=(50, 30), wh=(30, 34), v=(0, 0))],
        num_frames=13,
    )
    hidden = [t for t in range(13) if not masks[1][t].any()]
    assert hidden and hidden[-1] < 12
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 1, box=box_of(masks[1][0]))
    outs = run(tracker, state, frames)
    for t in hidden:
        assert outs[t][1].mask is None, f"frame {t}: a hidden object must not get a mask"
    assert iou(outs[-1][1].mask, masks[1][-1]) > 0.8, "the object is found again when it comes out"


def test_object_prompted_later_is_absent_before(head):
    frames, masks = two_objects(6)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
    tracker.add_object(state, 3, 3, box=box_of(masks[3][3]))
    outs = run(tracker, state, frames)
    assert [o[3].mask is None for o in outs] == [True, True, True, False, False, False]
    assert all(iou(o[3].mask, masks[3][o.frame_idx]) > 0.9 for o in outs[3:])


def test_reverse_from_a_middle_keyframe(head):
    frames, masks = two_objects(8)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 4, 7, box=box_of(masks[7][4]))
    back = run(tracker, state, frames, start_frame=4, reverse=True)
    assert [o.frame_idx for o in back] == [4, 3, 2, 1, 0]
    assert all(iou(o[7].mask, masks[7][o.frame_idx]) > 0.9 for o in back)
    fwd = run(tracker, state, frames, start_frame=4)
    assert [o.frame_idx for o in fwd] == [4, 5, 6, 7]
    assert all(iou(o[7].mask, masks[7][o.frame_idx]) > 0.9 for o in fwd)


def test_propagation_continues_where_it_stopped(head):
    frames, masks = two_objects(8)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
    first = run(tracker, state, frames, max_frames=4)
    assert [o.frame_idx for o in first] == [0, 1, 2, 3]
    rest = run(tracker, state, frames, start_frame=3)
    assert rest[0][7].mask.tolist() == first[-1][7].mask.tolist()
    assert all(iou(o[7].mask, masks[7][o.frame_idx]) > 0.9 for o in rest)
    # starting elsewhere without a prompt there: the object has nothing to continue from
    assert all(o[7].mask is None for o in run(tracker, state, frames, start_frame=6))


def test_iterable_and_sequence_frames_agree_and_memory_is_bounded(head):
    frames, masks = two_objects(8)
    tracker = FlowTracker(head)

    def outputs(source, start=0):
        state = tracker.init_state()
        tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
        return [o[7].mask for o in tracker.propagate(state, source, start_frame=start)]

    as_sequence = outputs(frames)
    alive: list[weakref.ref] = []
    peak = [0]

    def stream():
        for f in frames:
            copy = f.copy()
            alive.append(weakref.ref(copy))
            peak[0] = max(peak[0], sum(r() is not None for r in alive))
            yield copy

    as_stream = outputs(stream())
    assert all(a.tolist() == b.tolist() for a, b in zip(as_sequence, as_stream))
    assert peak[0] <= 3, f"the tracker kept {peak[0]} frames alive"


def test_frames_of_another_size_are_refused(head):
    frames, masks = two_objects(4)
    frames[2] = frames[2][:, :100]
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
    with pytest.raises(ValueError, match="frame 2 is 96 x 100 .* but the video is 96 x 128"):
        run(tracker, state, frames)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        run(tracker, tracker.init_state(), [np.zeros((4, 4), np.uint8)])
    with pytest.raises(ValueError, match="past the end"):
        run(tracker, state, frames[:2], start_frame=5)


def test_no_objects_and_no_frames(head):
    tracker = FlowTracker(head)
    frames, _ = two_objects(3)
    outs = run(tracker, tracker.init_state(), frames)
    assert [o.objects for o in outs] == [[], [], []]
    assert run(tracker, tracker.init_state(), []) == []


def test_reacquire_callback_brings_a_lost_object_back(head):
    frames, masks = rect_video(
        [dict(obj_id=1, colour=RED, xy=(10, 40), wh=(14, 14), v=(8, 0)),
         dict(obj_id=2, colour=BLUE, xy=(50, 30), wh=(30, 34), v=(0, 0))],
        num_frames=13,
    )
    calls = []

    def reacquire(frame_idx, frame, obj_ids):
        calls.append((frame_idx, list(obj_ids)))
        m = masks[1][frame_idx]
        return {1: Prompt(box=box_of(m))} if m.any() else {}

    tracker = FlowTracker(head, FlowTrackerConfig(redetect=False))
    state = tracker.init_state()
    tracker.add_object(state, 0, 1, box=box_of(masks[1][0]))
    outs = run(tracker, state, frames, reacquire=reacquire, policy=ReacquirePolicy(when_lost=True, lost_retry=1))
    assert calls and all(ids == [1] for _, ids in calls)
    hidden = [t for t in range(13) if not masks[1][t].any()]
    assert calls[0][0] <= hidden[0], "asked as soon as the tracker lost the object"
    assert all(outs[t][1].mask is None for t in hidden)
    back = [t for t, _ in calls if masks[1][t].any() and t > hidden[-1]]
    assert back, "asked again while the object stayed lost, until it was visible"
    assert iou(outs[back[0]][1].mask, masks[1][back[0]]) > 0.8
    assert back[0] in state.record(1).prompts  # the re-acquired prompt conditions that frame from now on
    # periodic re-grounding asks about every started object every k frames
    calls.clear()
    state = tracker.init_state()
    tracker.add_object(state, 0, 1, box=box_of(masks[1][0]))
    run(tracker, state, frames[:7], reacquire=lambda t, f, ids: calls.append(t) or {},
        policy=ReacquirePolicy(every=3, when_lost=False))
    assert calls == [3, 6]


def test_reacquire_must_return_prompts(head):
    frames, masks = two_objects(4)
    tracker = FlowTracker(head)
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
    with pytest.raises(TypeError, match="Prompt"):
        run(tracker, state, frames, reacquire=lambda t, f, ids: {7: [0, 0, 5, 5]},
            policy=ReacquirePolicy(every=1))


def test_config_validation():
    with pytest.raises(ValueError, match="flow"):
        FlowTrackerConfig(flow="lk")
    with pytest.raises(ValueError, match="match must be True"):
        FlowTrackerConfig(flow=None, match=False)
    with pytest.raises(ValueError, match="every"):
        ReacquirePolicy(every=0)


@pytest.mark.parametrize("flow, match", [("farneback", True), (None, True), ("dis", False)])
def test_flow_variants_run(head, flow, match):
    frames, masks = two_objects(4)
    tracker = FlowTracker(head, FlowTrackerConfig(flow=flow, match=match, multimask=False, mask_prompt=False))
    state = tracker.init_state()
    tracker.add_object(state, 0, 3, box=box_of(masks[3][0]))
    outs = run(tracker, state, frames)
    assert all(iou(o[3].mask, masks[3][o.frame_idx]) > 0.8 for o in outs)


# ------------------------------------------------------------------------------------------ real SAM head


def test_flow_engine_runs_on_a_real_sam_head():
    """A tiny random segment-anything head: the decoder's real prompt and mask-input paths (shapes, dtypes,
    box + mask prompts, multimask selection, point prompts)."""
    torch.manual_seed(0)
    real = build_sam_head(SamConfig(encoder="tiny")).eval()
    frames, masks = two_objects(4)
    tracker = FlowTracker(real, FlowTrackerConfig(min_score=0.0, min_agreement=0.0, min_similarity=None, min_area=0))
    state = tracker.init_state()
    tracker.add_object(state, 0, 7, box=box_of(masks[7][0]))
    tracker.add_object(state, 0, 3, points=[[105, 66]])
    tracker.add_object(state, 1, 9, points=[[20, 30], [5, 5]], point_labels=[1, 0], box=[10, 20, 40, 40])
    for out in tracker.propagate(state, frames):
        assert out.obj_ids == [7, 3, 9]
        for o in out.objects:
            assert o.mask is None or (o.mask.shape == (96, 128) and o.mask.dtype == bool)


# ------------------------------------------------------------------------------------------ SAM 2 engine


@pytest.fixture(scope="module")
def sam2():
    from heads.tracking.sam2 import Sam2Tracker, build_tiny_sam2

    model, processor = build_tiny_sam2(64)
    return Sam2Tracker(model, processor)


def test_sam2_engine_tracks_with_typed_state(sam2):
    from heads.tracking.sam2 import Sam2State

    frames, masks = two_objects(5)
    state = sam2.init_state()
    assert isinstance(state.engine, Sam2State)
    sam2.add_object(state, 0, 7, box=box_of(masks[7][0]))
    sam2.add_object(state, 0, 3, points=[[105, 66]], point_labels=[1])
    sam2.add_object(state, 2, 11, mask=masks[3][2])
    outs = run(sam2, state, frames)
    assert [o.frame_idx for o in outs] == list(range(5))
    for out in outs:
        assert out.obj_ids == [7, 3, 11]
        for o in out.objects:
            assert o.mask is None or (o.mask.shape == (96, 128) and o.mask.dtype == bool)
            assert 0.0 <= o.score <= 1.0
    assert outs[0][11].mask is None and outs[1][11].mask is None  # prompted on frame 2
    session = state.engine.session
    assert sorted(session.obj_ids) == [0, 1, 2]  # the session sees internal indices, not client ids
    # bounded memory: one processed frame, non-conditioning outputs within the attention window
    assert len(session.processed_frames) == 1
    for per_obj in session.output_dict_per_obj.values():
        assert all(abs(f - 4) <= sam2.keep_frames for f in per_obj["non_cond_frame_outputs"])
    # backwards from a middle frame, in the same state
    back = run(sam2, state, frames, start_frame=2, reverse=True)
    assert [o.frame_idx for o in back] == [2, 1, 0]


def test_sam2_engine_reacquire_and_remove(sam2):
    frames, masks = two_objects(5)
    state = sam2.init_state()
    sam2.add_object(state, 0, 7, box=box_of(masks[7][0]))
    sam2.add_object(state, 0, 3, box=box_of(masks[3][0]))
    calls = []
    outs = run(sam2, state, frames, reacquire=lambda t, f, ids: calls.append(t) or {7: Prompt(box=box_of(masks[7][t]))},
               policy=ReacquirePolicy(every=2, when_lost=False))
    assert calls == [2, 4] and len(outs) == 5
    sam2.remove_object(state, 7)
    assert state.engine.session is None and state.obj_ids == [3]
    assert [o.obj_ids for o in run(sam2, state, frames[:2])] == [[3]] * 2


def test_engines_share_the_interface(head, sam2):
    assert isinstance(sam2, Tracker) and isinstance(FlowTracker(head), Tracker)
