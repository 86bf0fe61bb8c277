"""Output and input heads: seg projector, seg prior, mask verifier, SAM mask head, box codecs, region encoder, video trackers.

``heads`` never imports ``grounding``.
"""

from heads.mask_verifier import Candidates, MaskVerifier, mask_parts, select_parts
from heads.region_encoder import RegionEncoder
from heads.sam import SAM_PRESETS, MaskPrediction, SamConfig, SamMaskHead, build_sam_head, empty_specks, keep_one_part, load_sam_checkpoint
from heads.seg_prior import SegPrior, split_peaks, uncovered_parts
from heads.seg_projector import SegProjector
from heads.tracking import FlowTracker, FlowTrackerConfig, Prompt, ReacquirePolicy, Tracker, TrackingState
