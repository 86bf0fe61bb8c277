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
]
