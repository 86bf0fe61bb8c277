"""SAM 2 memory-based propagation through transformers' ``Sam2VideoModel`` (for users with SAM 2 weights).

The engine drives transformers' streaming inference session (``Sam2VideoProcessor.init_video_session`` and
``Sam2VideoModel.forward(inference_session, frame=..., frame_idx=...)``): each frame is preprocessed when it
arrives, prompts are added to the session on their frame, and SAM 2's memory attention carries the objects.
The session's per-frame outputs would grow with the video; this engine prunes frames and memories older than
SAM 2 can attend to (``num_maskmem`` and ``max_object_pointers_in_encoder`` frames), so memory stays bounded.

The session's object ids are this state's internal indices; client ids live in ``TrackingState`` only.
Removing an object resets SAM 2's memory (transformers' session cannot forget one object): propagate again from
the prompt frames.

:func:`build_tiny_sam2` builds a random tiny model and processor (tests, benchmarks of the machinery).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heads.tracking.base import ObjectOutput, Prompt, Tracker, TrackingState

__all__ = ["Sam2State", "Sam2Tracker", "Sam2TrackerConfig", "build_tiny_sam2"]


@dataclass
class Sam2TrackerConfig:
    """Options of :class:`Sam2Tracker`."""

    object_score_threshold: float = 0.0
    """SAM 2's object-score logit above which the object counts as visible (its occlusion head)."""
    mask_threshold: float = 0.0
    """Mask logit threshold."""
    keep_frames: int | None = None
    """Frames of non-conditioning memory kept behind the current one (None: what the model can attend to,
    ``max(num_maskmem, max_object_pointers_in_encoder)``)."""


@dataclass
class Sam2State:
    """The SAM 2 engine's memory for one video: transformers' inference session (created on the first frame)."""

    session: Any = None
    direction: int = 1


class Sam2Tracker(Tracker[Sam2State]):
    """SAM 2 video propagation (see the module docstring).

    Args:
        model: a ``transformers.Sam2VideoModel`` (put it on its device and dtype first).
        processor: the matching ``transformers.Sam2VideoProcessor``.
        config: thresholds and memory window.
    """

    def __init__(self, model, processor, config: Sam2TrackerConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.config = config or Sam2TrackerConfig()
        mcfg = model.config
        self.keep_frames = self.config.keep_frames or max(int(mcfg.num_maskmem), int(mcfg.max_object_pointers_in_encoder))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        config: Sam2TrackerConfig | None = None) -> Sam2Tracker:
        """Load ``Sam2VideoModel`` + ``Sam2VideoProcessor`` from a local folder (e.g. a download of
        ``facebook/sam2.1-hiera-tiny``); nothing is fetched from the network when ``HF_HUB_OFFLINE=1``."""
        from transformers import Sam2VideoModel, Sam2VideoProcessor

        model = Sam2VideoModel.from_pretrained(str(path)).to(device=device, dtype=dtype)
        processor = Sam2VideoProcessor.from_pretrained(str(path))
        return cls(model, processor, config)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ------------------------------------------------------------------ engine hooks
    def _new_engine_state(self) -> Sam2State:
        return Sam2State()

    def _begin(self, state: TrackingState[Sam2State], start_frame: int, reverse: bool) -> None:
        state.engine.direction = -1 if reverse else 1

    def _on_remove(self, state: TrackingState[Sam2State], index: int) -> None:
        state.engine.session = None

    @torch.inference_mode()
    def _step(
        self,
        state: TrackingState[Sam2State],
        frame_idx: int,
        frame: np.ndarray,
        prompts: Mapping[int, Prompt],
        only: Sequence[int] | None,
    ) -> dict[int, ObjectOutput]:
        eng = state.engine
        h, w = frame.shape[:2]
        if eng.session is None:
            eng.session = self.processor.init_video_session(inference_device=self.device, dtype=self.dtype)
        session = eng.session
        for index, prompt in prompts.items():
            self._add_prompt(session, frame_idx, index, prompt, (h, w))
        # transformers keeps only the ids of its last add_inputs call as "new": restore all of this frame's
        session.obj_with_new_inputs = list(prompts)
        if session.get_obj_num() == 0:
            return {}
        pixels = self.processor(images=frame, return_tensors="pt")["pixel_values"][0]
        out = self.model(
            inference_session=session,
            frame=pixels.to(self.device, self.dtype),
            frame_idx=frame_idx,
            reverse=eng.direction < 0,
        )
        logits = self.processor.post_process_masks([out.pred_masks.float()], original_sizes=[[h, w]], binarize=False)[0]
        object_scores = out.object_score_logits.float().reshape(-1)
        outputs: dict[int, ObjectOutput] = {}
        for k, index in enumerate(out.object_ids):
            present = float(object_scores[k]) > self.config.object_score_threshold
            mask = (logits[k, 0] > self.config.mask_threshold).cpu().numpy() if present else None
            score = float(torch.sigmoid(object_scores[k]))
            outputs[int(index)] = ObjectOutput(-1, mask, None, score)
        self._prune(session, frame_idx)
        return outputs

    # ------------------------------------------------------------------ helpers
    def _add_prompt(self, session, frame_idx: int, index: int, prompt: Prompt, hw: tuple[int, int]) -> None:
        if prompt.mask is not None:
            self.processor.add_inputs_to_inference_session(
                session, frame_idx=frame_idx, obj_ids=[index], input_masks=[prompt.mask.astype(np.float32)]
            )
            return
        kwargs: dict[str, Any] = {}
        if prompt.box is not None:
            kwargs["input_boxes"] = [[[float(v) for v in prompt.box]]]
        if prompt.points is not None:
            kwargs["input_points"] = [[[[float(x), float(y)] for x, y in prompt.points]]]
            kwargs["input_labels"] = [[[int(v) for v in prompt.point_labels]]]
        self.processor.add_inputs_to_inference_session(
            session, frame_idx=frame_idx, obj_ids=[index], original_size=hw, **kwargs
        )

    def _prune(self, session, frame_idx: int) -> None:
        """Drop what SAM 2 can no longer attend to: old frames, old non-conditioning outputs."""
        keep = self.keep_frames
        if session.processed_frames is not None:
            for f in [f for f in session.processed_frames if f != frame_idx]:
                del session.processed_frames[f]
        for outputs in session.output_dict_per_obj.values():
            old = outputs["non_cond_frame_outputs"]
            for f in [f for f in old if abs(f - frame_idx) > keep]:
                del old[f]
        for tracked in session.frames_tracked_per_obj.values():
            for f in [f for f in tracked if abs(f - frame_idx) > keep]:
                del tracked[f]


def build_tiny_sam2(image_size: int = 128, seed: int = 0):
    """A random tiny ``Sam2VideoModel`` and its ``Sam2VideoProcessor`` (tests and machinery benchmarks only:
    its masks are noise). About 0.9 M parameters; ``image_size`` must be a multiple of 32.

    Notes on valid tiny configs: a Hiera stage must not start with a global-attention block; the memory
    attention's key/value width is fixed at 64 in transformers (so ``memory_encoder_output_channels=64``), and
    the hidden size must be a multiple of it *larger* than 64 (object pointers are split into 64-wide tokens;
    with equal widths transformers' box-prompted path stacks pointers of mismatched rank).
    """
    from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    s = int(image_size)
    if s % 32:
        raise ValueError(f"image_size must be a multiple of 32, got {s}")
    hidden = 128
    config = Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1, image_size=[s, s],
                blocks_per_stage=[1, 2, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 2],
                global_attention_blocks=[4], window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=hidden,
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=s,
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
    )
    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    size = {"height": s, "width": s}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(size=size),
        target_size=s,
    )
    return model, processor
