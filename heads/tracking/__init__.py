"""Video object tracking engines behind one interface (``heads.tracking.base.Tracker``).

- :class:`FlowTracker`: optical flow + any segment-anything mask decoder (``SamMaskHead``), CPU-friendly.
- :class:`Sam2Tracker`: SAM 2 memory-based propagation through transformers' ``Sam2VideoModel``.

``heads`` never imports ``grounding``: the vision-LLM plugs in through the ``reacquire`` callback.
"""

from heads.tracking.base import (
    FrameError,
    FrameOutput,
    ObjectOutput,
    ObjectRecord,
    Prompt,
    Reacquire,
    ReacquirePolicy,
    Tracker,
    TrackingState,
    mask_to_xyxy,
)
from heads.tracking.flow import FlowState, FlowTracker, FlowTrackerConfig


def __getattr__(name: str):
    # the SAM 2 engine imports transformers' SAM 2 classes: load it only when asked for
    if name in ("Sam2Tracker", "Sam2TrackerConfig", "Sam2State", "build_tiny_sam2"):
        from heads.tracking import sam2

        return getattr(sam2, name)
    raise AttributeError(f"module 'heads.tracking' has no attribute {name!r}")


__all__ = [
    "FlowState",
    "FlowTracker",
    "FlowTrackerConfig",
    "FrameError",
    "FrameOutput",
    "ObjectOutput",
    "ObjectRecord",
    "Prompt",
    "Reacquire",
    "ReacquirePolicy",
    "Sam2State",
    "Sam2Tracker",
    "Sam2TrackerConfig",
    "Tracker",
    "TrackingState",
    "build_tiny_sam2",
    "mask_to_xyxy",
]
