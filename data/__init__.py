"""Datasets, the synthetic grounding world, transforms, templates, collate helpers and the datamodule.

``data`` never imports ``grounding``: the model's processor (tokens, box codec) is handed in where needed.
"""

from data.sample import (
    GroundingSample,
    GroundRef,
    RegionRef,
    Target,
    Task,
    Turn,
    VideoExpression,
    VideoSample,
    VideoTarget,
)
from data.templates import caption_turn, reasoning_turn, rec_turn, referring_turn, region_turn

__all__ = [
    "GroundingSample",
    "GroundRef",
    "RegionRef",
    "Target",
    "Task",
    "Turn",
    "VideoExpression",
    "VideoSample",
    "VideoTarget",
    "caption_turn",
    "reasoning_turn",
    "rec_turn",
    "referring_turn",
    "region_turn",
]
