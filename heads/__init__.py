"""Output and input heads: seg projector, seg prior, SAM mask head, box codecs, region encoder, video trackers.

``heads`` never imports ``grounding``.
"""

from heads.region_encoder import RegionEncoder
from heads.sam import SAM_PRESETS, MaskPrediction, SamConfig, SamMaskHead, build_sam_head, keep_one_part, load_sam_checkpoint
from heads.seg_prior import SegPrior
from heads.seg_projector import SegProjector
from heads.tracking import FlowTracker, FlowTrackerConfig, Prompt, ReacquirePolicy, Tracker, TrackingState
