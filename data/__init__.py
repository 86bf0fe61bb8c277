"""Datasets, the synthetic grounding world, transforms, templates, collate helpers and the datamodule.

``data`` never imports ``grounding``: the model's processor (tokens, box codec) is handed in where needed.
"""

from data.errors import DatasetError
from data.export import ReferExport, write_refer
from data.grounded_captions import CaptionPhrase, FlickrGCG, GranDfGCG, GroundedCaption
from data.mixture import DatasetMixture, DatasetSpec, MixtureConfig, SampleSource, Templated
from data.reasonseg import ReasonSeg, ReasonSegItem
from data.refcoco import GRefCOCO, GRefItem, RefCOCO, RefItem
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
from data.synthetic import Scene, ShapeObject, SyntheticGrounding, SyntheticVideos, VideoScene, render_scene, render_video
from data.templates import caption_turn, reasoning_turn, rec_turn, referring_turn, region_turn
from data.video_datasets import LazyFrames, MeViS, RefYouTubeVOS

__all__ = [
    "CaptionPhrase",
    "DatasetError",
    "DatasetMixture",
    "DatasetSpec",
    "FlickrGCG",
    "GRefCOCO",
    "GRefItem",
    "GranDfGCG",
    "GroundedCaption",
    "LazyFrames",
    "MeViS",
    "MixtureConfig",
    "ReasonSeg",
    "ReasonSegItem",
    "RefCOCO",
    "RefItem",
    "RefYouTubeVOS",
    "ReferExport",
    "SampleSource",
    "Templated",
    "write_refer",
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
    "Scene",
    "ShapeObject",
    "SyntheticGrounding",
    "SyntheticVideos",
    "VideoScene",
    "render_scene",
    "render_video",
]
