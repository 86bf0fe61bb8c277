"""Optical-flow tracking with any segment-anything mask decoder (``SamMaskHead``: SAM ViT-B/L/H, LiteMedSAM, ...).

Per frame: the image encoder runs once. Each object's previous low-resolution mask logits are carried to the new
frame by OpenCV dense optical flow (DIS or Farneback, on grey levels, backward warp) united with a rigid shift
found by masked colour template matching (robust where grey-level flow is weak: flat objects, objects as bright
as their background). The mask decoder then refines that prior, prompted by its box (with a margin) and,
optionally, by the carried logits as a dense mask prompt (SAM's ``mask_inputs``); with ``multimask`` the
decoder's mask that agrees best with the prior is kept. Everything between frames happens in the decoder's
low-resolution frame (``4h x 4w`` logits over the square input frame, 256 x 256 for SAM and LiteMedSAM), so the
flow costs the same whatever the video's size.

An object is reported lost (``mask=None``), rather than given an invented mask, when its carried or decoded mask
is tiny (it left the frame or is hidden), when the decoder's predicted IoU is low, when the decoded mask
disagrees with the prior, or when its appearance (the image embedding pooled over the mask, compared with the
prompt frame's) no longer matches. A lost object is looked for on later frames by matching its last good
appearance (colour template) around where its motion would have taken it; a candidate found there is accepted
only if the decoder's mask passes the same checks. The ``reacquire`` callback of :meth:`Tracker.propagate`
(e.g. re-grounding by a vision-LLM) can also bring it back.

Frames are streamed: the engine keeps the previous frame (RGB, low resolution), the current frame's embedding
and, per object, one low-resolution logit map, a small colour template and a descriptor vector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from data.transforms import ImageGeometry, ImageTransform
from heads.sam import SamMaskHead
from heads.tracking.base import ObjectOutput, Prompt, Tracker, TrackingState

__all__ = ["FlowState", "FlowTracker", "FlowTrackerConfig"]

_NEG = -20.0  # logit of "certainly background" (outside the frame, padding)
_POS = 20.0
_MAX_MEAN_SQ = 40.0**2  # template match: mean squared colour difference above this is "not the object"


@dataclass
class FlowTrackerConfig:
    """Options of :class:`FlowTracker`."""

    flow: str | None = "dis"
    """Dense optical flow on the grey frames: "dis" (OpenCV DIS), "farneback", or None (template match only)."""
    dis_preset: str = "medium"
    """DIS preset: "ultrafast", "fast" or "medium"."""
    match: bool = True
    """Also shift each object's whole mask by its best masked colour template match in a window around it."""
    match_window: float = 0.5
    """Template-match search window each way: this fraction of the object's larger side (at least 8 low-res px)."""
    mask_prompt: bool = False
    """Give the carried logits to the decoder as a dense mask prompt (SAM's mask_inputs) besides the box. Off by
    default: LiteMedSAM was trained with box prompts only, and mask prompts make its masks spread over frames;
    SAM's own ViT heads were trained with mask inputs."""
    multimask: bool = False
    """Ask the decoder for its three masks and keep the one that agrees best with the carried mask (off by
    default: LiteMedSAM's extra mask tokens are untrained)."""
    box_margin: float = 0.1
    """Margin added around the carried mask's box, as a fraction of its side (at least 2 low-res pixels)."""
    min_area: float = 0.0003
    """An object whose mask covers less than this fraction of the frame is lost (left the frame or hidden)."""
    min_score: float = 0.5
    """An object whose decoded mask has a predicted IoU below this is lost."""
    min_agreement: float = 0.3
    """An object whose decoded mask overlaps its carried mask with an IoU below this is lost (drift)."""
    min_similarity: float | None = 0.5
    """An object whose mask-pooled image embedding has a cosine similarity below this with its prompt frame's is
    lost (covered by another object, or the track jumped); None: no appearance check."""
    redetect: bool = True
    """Look for lost objects on later frames (colour template, then decoder and the same checks)."""
    redetect_similarity: float | None = 0.6
    """Appearance similarity needed to accept a re-detected object (None: ``min_similarity``)."""
    max_lost: int | None = None
    """Stop looking for an object lost for more than this many frames (None: keep looking)."""

    def __post_init__(self) -> None:
        if self.flow not in ("dis", "farneback", None):
            raise ValueError(f"flow must be 'dis', 'farneback' or None, got {self.flow!r}")
        if self.flow is None and not self.match:
            raise ValueError("with flow=None, match must be True (something has to carry the masks)")
        if self.dis_preset not in ("ultrafast", "fast", "medium"):
            raise ValueError(f"dis_preset must be ultrafast, fast or medium, got {self.dis_preset!r}")
        if not 0 <= self.min_area < 1:
            raise ValueError(f"min_area is a fraction of the frame in [0, 1), got {self.min_area}")


@dataclass
class _ObjectMemory:
    """What the engine remembers of one object. Coordinates are low-res pixels (the decoder's logit grid)."""

    frame_idx: int
    """Frame of the last kept mask (``logits``, ``box``)."""
    logits: torch.Tensor | None
    """1 x 1 x L x L low-res logits on ``frame_idx``; None while the object is lost."""
    box: np.ndarray
    """Box of the last kept mask, xyxy."""
    descriptor: torch.Tensor | None
    """Reference appearance: the image embedding pooled over the prompt frame's mask (unit vector). Only the
    prompt frame's: a reference updated along the track would follow a slow drift onto another object."""
    template: np.ndarray
    """The object's pixels on the last *confident* frame (appearance close to the reference): an RGB crop of the
    low-res frame at ``template_box`` (uint8) ..."""
    template_mask: np.ndarray
    """... which of them are the object (bool) ..."""
    template_box: np.ndarray
    """... where it was cut (xyxy) ..."""
    template_frame: int
    """... and on which frame. Re-detection looks for this template."""
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    """Motion on the last confident frames, low-res pixels per frame (in the direction of propagation)."""

    @property
    def template_area(self) -> float:
        return float(self.template_mask.sum())


@dataclass
class FlowState:
    """The flow engine's memory for one video (``TrackingState.engine``)."""

    objects: list[_ObjectMemory | None] = field(default_factory=list)
    """Per internal object index; None before the object's first prompt (in this propagation)."""
    prev_small: np.ndarray | None = None
    """The previous frame, RGB uint8, at the low-res frame's scale (h x w x 3, no padding)."""
    prev_frame_idx: int | None = None
    direction: int = 1
    geometry: ImageGeometry | None = None
    embedding: torch.Tensor | None = None
    embedding_frame: int | None = None


class FlowTracker(Tracker[FlowState]):
    """Optical flow + mask-decoder refinement (see the module docstring). ``mask_head``: any ``SamMaskHead``."""

    def __init__(self, mask_head: SamMaskHead, config: FlowTrackerConfig | None = None):
        self.head = mask_head
        self.config = config or FlowTrackerConfig()
        mean = tuple(float(v) for v in mask_head.pixel_mean.flatten())
        std = tuple(float(v) for v in mask_head.pixel_std.flatten())
        self.transform = ImageTransform(size=mask_head.image_size, mean=mean, std=std)
        self.low_res = 4 * int(mask_head.embedding_size[0])
        self.scale = mask_head.image_size / self.low_res  # input-frame pixels per low-res pixel
        self.trace: list[dict] | None = None
        """Set to a list to record, per tracked object and frame, the checks behind each keep/lose decision."""
        self._dis = None
        if self.config.flow == "dis":
            preset = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                      "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[self.config.dis_preset]
            self._dis = cv2.DISOpticalFlow_create(preset)

    @property
    def device(self) -> torch.device:
        return self.head.pixel_mean.device

    # ------------------------------------------------------------------ engine hooks
    def _new_engine_state(self) -> FlowState:
        return FlowState()

    def _on_prompt(self, state: TrackingState[FlowState], index: int, frame_idx: int) -> None:
        while len(state.engine.objects) <= index:
            state.engine.objects.append(None)

    def _on_remove(self, state: TrackingState[FlowState], index: int) -> None:
        if index < len(state.engine.objects):
            state.engine.objects.pop(index)

    def _begin(self, state: TrackingState[FlowState], start_frame: int, reverse: bool) -> None:
        eng = state.engine
        eng.direction = -1 if reverse else 1
        eng.prev_small, eng.prev_frame_idx = None, None
        for i, mem in enumerate(eng.objects):
            if mem is None:
                continue
            if mem.frame_idx != start_frame or mem.logits is None:
                eng.objects[i] = None  # continue only from an output on the start frame
            else:
                mem.velocity = np.zeros(2, np.float32)

    @torch.no_grad()
    def _step(
        self,
        state: TrackingState[FlowState],
        frame_idx: int,
        frame: np.ndarray,
        prompts: Mapping[int, Prompt],
        only: Sequence[int] | None,
    ) -> dict[int, ObjectOutput]:
        eng = state.engine
        while len(eng.objects) < len(state.objects):
            eng.objects.append(None)
        emb, geo = self._embed(eng, frame_idx, frame)
        small = self._small(frame, geo)
        outputs: dict[int, ObjectOutput] = {}
        # 1. prompts on this frame (re-)start their objects
        for index, prompt in prompts.items():
            outputs[index] = self._start(eng, index, frame_idx, prompt, emb, geo, small)
        if only is not None:
            return outputs
        others = [(i, m) for i, m in enumerate(eng.objects) if i not in prompts and m is not None]
        # 2. a propagation restarted on the frame an object's memory holds: nothing to move
        for i, m in others:
            if m.logits is not None and m.frame_idx == frame_idx:
                outputs[i] = self._output(m, geo, score=1.0)
        # 3. tracked objects follow the flow; 4. lost ones are looked for
        tracked = [i for i, m in others if m.logits is not None and m.frame_idx != frame_idx]
        if tracked:
            outputs.update(self._track(eng, tracked, frame_idx, small, emb, geo))
        lost = [i for i, m in enumerate(eng.objects) if i not in prompts and m is not None and m.logits is None]
        if lost and self.config.redetect:
            outputs.update(self._redetect(eng, lost, frame_idx, small, emb, geo))
        eng.prev_small, eng.prev_frame_idx = small, frame_idx
        return outputs

    # ------------------------------------------------------------------ image side
    def _embed(self, eng: FlowState, frame_idx: int, frame: np.ndarray) -> tuple[torch.Tensor, ImageGeometry]:
        if eng.embedding is not None and eng.embedding_frame == frame_idx:
            return eng.embedding, eng.geometry
        x, geo = self.transform(frame)
        emb = self.head.encode_image(x[None].to(self.device))
        eng.embedding, eng.embedding_frame, eng.geometry = emb, frame_idx, geo
        return emb, geo

    def _low_res_hw(self, geo: ImageGeometry) -> tuple[int, int]:
        """(h, w) of the image (without padding) in the low-res frame."""
        s = self.low_res / geo.input_size
        return max(1, round(geo.resized_hw[0] * s)), max(1, round(geo.resized_hw[1] * s))

    def _small(self, frame: np.ndarray, geo: ImageGeometry) -> np.ndarray:
        """The frame at the low-res frame's scale (h x w x 3 uint8)."""
        h, w = self._low_res_hw(geo)
        interp = cv2.INTER_AREA if h < frame.shape[0] else cv2.INTER_LINEAR
        return cv2.resize(frame, (w, h), interpolation=interp)

    def _valid(self, geo: ImageGeometry) -> torch.Tensor:
        h, w = self._low_res_hw(geo)
        v = torch.zeros(self.low_res, self.low_res, dtype=torch.bool, device=self.device)
        v[:h, :w] = True
        return v

    def _min_pixels(self, geo: ImageGeometry) -> float:
        h, w = self._low_res_hw(geo)
        return max(1.0, self.config.min_area * h * w)

    def _flow(self, eng: FlowState, small: np.ndarray) -> np.ndarray | None:
        """h x w x 2 backward flow: ``flow[y, x]`` is where pixel (x, y) of this frame was in the previous one."""
        if self.config.flow is None:
            return None
        cur = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        prev = cv2.cvtColor(eng.prev_small, cv2.COLOR_RGB2GRAY)
        if self._dis is not None:
            return self._dis.calc(cur, prev, None)
        return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    @staticmethod
    def _match(template: np.ndarray, weights: np.ndarray, image: np.ndarray, x: float, y: float,
               pad: int) -> tuple[float, float] | None:
        """Where the masked ``template`` (top-left expected at ``(x, y)``) best matches ``image`` within ``pad``
        pixels each way: the top-left (x, y) found, or None if even the best match is poor."""
        th, tw = template.shape[:2]
        if th == 0 or tw == 0 or not weights.any():
            return None
        x0, y0 = int(round(x)) - pad, int(round(y)) - pad
        h, w = image.shape[:2]
        # search window (x0, y0) .. (x0 + tw + 2 pad, y0 + th + 2 pad), padded where it leaves the image
        border = max(0, -x0, -y0, x0 + tw + 2 * pad - w, y0 + th + 2 * pad - h)
        if border > max(th, tw) + 2 * pad:
            return None  # the window lies entirely outside the frame
        padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_REPLICATE)
        search = padded[y0 + border : y0 + border + th + 2 * pad, x0 + border : x0 + border + tw + 2 * pad]
        res = cv2.matchTemplate(search.astype(np.float32), template.astype(np.float32), cv2.TM_SQDIFF,
                                mask=weights.astype(np.float32))
        best, _, loc, _ = cv2.minMaxLoc(res)
        if not np.isfinite(best) or best / max(1.0, 3 * float(weights.sum())) > _MAX_MEAN_SQ:
            return None
        return float(x0 + loc[0]), float(y0 + loc[1])

    @staticmethod
    def _similarity(mem: _ObjectMemory, d: torch.Tensor | None) -> float | None:
        """Cosine similarity of a descriptor with the object's prompt-frame appearance."""
        return None if d is None or mem.descriptor is None else float(d @ mem.descriptor)

    def _descriptor(self, emb: torch.Tensor, low_res_mask: torch.Tensor) -> torch.Tensor | None:
        """Unit C-vector: the embedding (1 x C x h x w) averaged over a low-res bool mask (L x L)."""
        weights = F.adaptive_avg_pool2d(low_res_mask[None, None].float(), emb.shape[-2:])[0, 0]
        total = weights.sum()
        if float(total) <= 1e-6:
            return None
        return F.normalize((emb[0] * weights).sum(dim=(1, 2)) / total, dim=0)

    # ------------------------------------------------------------------ objects
    @staticmethod
    def _box(low: torch.Tensor) -> np.ndarray | None:
        """xyxy box (low-res pixels) of a bool mask, or None if it is empty."""
        ys, xs = torch.nonzero(low, as_tuple=True)
        if len(xs) == 0:
            return None
        return np.array([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1], np.float32)

    def _keep(self, mem: _ObjectMemory, frame_idx: int, logits: torch.Tensor, low: torch.Tensor, small: np.ndarray,
              confident: bool, shift: np.ndarray | None) -> None:
        """The object's new mask on ``frame_idx``; when ``confident``, also its template and velocity (from the
        template match's ``shift``, else from the move of the template's box)."""
        box = self._box(low)
        mem.frame_idx, mem.logits, mem.box = frame_idx, logits, box
        if not confident:
            return
        if shift is None:
            steps = max(1, abs(frame_idx - mem.template_frame))
            shift = ((box[:2] + box[2:]) - (mem.template_box[:2] + mem.template_box[2:])) / 2 / steps
        mem.velocity = np.asarray(shift, np.float32)
        self._set_template(mem, frame_idx, low, small)

    @staticmethod
    def _set_template(mem: _ObjectMemory, frame_idx: int, low: torch.Tensor, small: np.ndarray) -> None:
        x1, y1, x2, y2 = (int(v) for v in mem.box)
        mem.template = small[y1:y2, x1:x2].copy()
        mem.template_mask = low.cpu().numpy()[y1:y2, x1:x2].copy()
        mem.template_box, mem.template_frame = mem.box.copy(), frame_idx

    def _confident(self, similarity: float | None) -> bool:
        need = self.config.redetect_similarity
        return need is None or similarity is None or similarity >= need

    def _start(self, eng: FlowState, index: int, frame_idx: int, prompt: Prompt, emb, geo, small) -> ObjectOutput:
        """Turn a prompt into the object's mask on this frame and reset its memory."""
        L = self.low_res
        score = 1.0
        if prompt.mask is not None:
            m = torch.from_numpy(geo.mask_to_input(prompt.mask)).to(self.device)
            area = F.interpolate(m[None, None].float(), (L, L), mode="area")
            logits = torch.where(area >= 0.5, _POS, _NEG)
        else:
            pred = self._decode_prompt(prompt, emb, geo)
            best = int(pred.iou[0].argmax())
            logits = pred.low_res_logits[:, best : best + 1].float()
            score = float(pred.iou[0, best].clamp(0, 1))
        low = (logits[0, 0] > 0) & self._valid(geo)
        if not low.any():
            eng.objects[index] = None
            return ObjectOutput(-1, None)
        descriptor = self._descriptor(emb, low) if self.config.min_similarity is not None else None
        box = self._box(low)
        mem = _ObjectMemory(frame_idx, logits, box, descriptor, small[:0, :0], np.zeros((0, 0), bool), box, frame_idx)
        self._set_template(mem, frame_idx, low, small)
        eng.objects[index] = mem
        return self._output(mem, geo, score)

    def _decode_prompt(self, prompt: Prompt, emb, geo):
        box = None if prompt.box is None else torch.from_numpy(geo.boxes_to_input(prompt.box)).to(self.device)
        index = torch.zeros(1, dtype=torch.long, device=self.device)
        if prompt.points is None:
            return self.head.decode(emb, index, boxes=box, multimask_output=False)
        sx, sy = geo.scale_xy
        coords = torch.from_numpy(prompt.points * np.array([sx, sy], np.float32))[None].to(self.device)
        labels = torch.from_numpy(prompt.point_labels)[None].to(self.device)
        sparse, _ = self.head.prompt_encoder(points=(coords, labels), boxes=box, masks=None)
        multimask = box is None and len(prompt.points) == 1  # SAM: one click is ambiguous
        return self.head.decode(emb, index, sparse_tokens=sparse, multimask_output=multimask)

    def _output(self, mem: _ObjectMemory, geo: ImageGeometry, score: float) -> ObjectOutput:
        mask = geo.logits_to_original(mem.logits.float())[0, 0] > 0
        return ObjectOutput(-1, mask.cpu().numpy(), None, score)

    def _carry(self, eng: FlowState, mem: _ObjectMemory, flow: np.ndarray | None, small: np.ndarray):
        """The previous logits carried to this frame (backward flow per pixel, united with the rigid shift of the
        object's previous pixels, found by template matching), and that shift (None if the match failed)."""
        h, w = small.shape[:2]
        prev = mem.logits[0, 0, :h, :w].float().cpu().numpy()
        moved, shift = [], None
        if flow is not None:
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            moved.append(cv2.remap(prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=_NEG))
        if self.config.match:
            x1, y1, x2, y2 = (int(v) for v in mem.box)
            pad = int(max(8, self.config.match_window * max(x2 - x1, y2 - y1)))
            found = self._match(eng.prev_small[y1:y2, x1:x2], prev[y1:y2, x1:x2] > 0, small, x1, y1, pad)
            if found is not None:
                shift = np.array([found[0] - x1, found[1] - y1], np.float32)
                affine = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
                moved.append(cv2.warpAffine(prev, affine, (w, h), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=_NEG))
        out = torch.full_like(mem.logits, _NEG)
        if moved:
            out[0, 0, :h, :w] = torch.from_numpy(np.maximum.reduce(moved)).to(out)
        return out, shift

    def _track(self, eng: FlowState, indices: list[int], frame_idx: int, small, emb, geo) -> dict[int, ObjectOutput]:
        cfg = self.config
        adjacent = (eng.prev_small is not None and eng.prev_frame_idx == frame_idx - eng.direction
                    and eng.prev_small.shape == small.shape)
        flow = self._flow(eng, small) if adjacent else None
        valid = self._valid(geo)
        min_pixels = self._min_pixels(geo)
        outputs: dict[int, ObjectOutput] = {}
        carried, shifts, boxes, keep = [], [], [], []
        for i in indices:
            mem = eng.objects[i]
            logits, shift = self._carry(eng, mem, flow, small) if adjacent else (mem.logits, None)
            prior = (logits[0, 0] > 0) & valid
            box = self._box(prior) if float(prior.sum()) >= min_pixels else None
            if box is None:  # moved out of the frame (or vanished)
                self._lose(mem)
                outputs[i] = ObjectOutput(-1, None)
                continue
            pad = np.maximum((box[2:] - box[:2]) * cfg.box_margin, 2.0)
            box = np.concatenate([box[:2] - pad, box[2:] + pad]) * self.scale
            carried.append(logits)
            shifts.append(shift)
            boxes.append(box.clip(0, geo.input_size))
            keep.append(i)
        if not keep:
            return outputs
        n = len(keep)
        carried_t = torch.cat(carried)  # n x 1 x L x L
        pred = self.head.decode(
            emb,
            torch.zeros(n, dtype=torch.long, device=self.device),
            boxes=torch.from_numpy(np.stack(boxes).astype(np.float32)).to(self.device),
            mask_inputs=carried_t.clamp(_NEG, _POS) if cfg.mask_prompt else None,
            multimask_output=cfg.multimask,
        )
        priors = (carried_t[:, 0] > 0) & valid
        for k, i in enumerate(keep):
            mem = eng.objects[i]
            cand = (pred.low_res_logits[k] > 0) & valid  # M x L x L
            inter = (cand & priors[k]).flatten(1).sum(1).float()
            union = (cand | priors[k]).flatten(1).sum(1).float().clamp(min=1)
            agreement = inter / union
            best = int(agreement.argmax())
            low = cand[best]
            score = float(pred.iou[k, best].clamp(0, 1))
            ok = float(low.sum()) >= min_pixels and score >= cfg.min_score and float(agreement[best]) >= cfg.min_agreement
            similarity, d = None, None
            if mem.descriptor is not None and (cfg.min_similarity is not None or self.trace is not None):
                d = self._descriptor(emb, low)
                similarity = self._similarity(mem, d)
            if ok and mem.descriptor is not None and cfg.min_similarity is not None:
                ok = similarity is not None and similarity >= cfg.min_similarity
            if self.trace is not None:
                self.trace.append({"frame": frame_idx, "index": i, "area": float(low.sum()), "score": score,
                                   "agreement": float(agreement[best]), "similarity": similarity, "kept": ok,
                                   "shift": None if shifts[k] is None else shifts[k].tolist()})
            if not ok:
                self._lose(mem)
                outputs[i] = ObjectOutput(-1, None)
                continue
            self._keep(mem, frame_idx, pred.low_res_logits[k : k + 1, best : best + 1].float(), low, small,
                       self._confident(similarity), shifts[k])
            outputs[i] = self._output(eng.objects[i], geo, score)
        return outputs

    def _redetect(self, eng: FlowState, indices: list[int], frame_idx: int, small, emb, geo) -> dict[int, ObjectOutput]:
        cfg = self.config
        valid = self._valid(geo)
        min_pixels = self._min_pixels(geo)
        need = cfg.redetect_similarity if cfg.redetect_similarity is not None else cfg.min_similarity
        todo, boxes = [], []
        for i in indices:
            mem = eng.objects[i]
            if mem.frame_idx == frame_idx or (cfg.max_lost is not None and abs(frame_idx - mem.frame_idx) > cfg.max_lost):
                continue
            steps = abs(frame_idx - mem.template_frame)  # extrapolate from the last confident frame
            x1, y1, x2, y2 = mem.template_box
            side = max(x2 - x1, y2 - y1)
            guess = mem.template_box[:2] + mem.velocity * steps
            pad = int(max(8, cfg.match_window * side) + 0.5 * float(np.abs(mem.velocity).max()) * steps)
            found = self._match(mem.template, mem.template_mask, small, guess[0], guess[1], pad)
            if found is None:
                continue
            box = np.array([found[0], found[1], found[0] + (x2 - x1), found[1] + (y2 - y1)], np.float32)
            margin = np.maximum((box[2:] - box[:2]) * cfg.box_margin, 2.0)
            box = np.concatenate([box[:2] - margin, box[2:] + margin]) * self.scale
            todo.append(i)
            boxes.append(box.clip(0, geo.input_size))
        if not todo:
            return {}
        pred = self.head.decode(
            emb, torch.zeros(len(todo), dtype=torch.long, device=self.device),
            boxes=torch.from_numpy(np.stack(boxes).astype(np.float32)).to(self.device), multimask_output=False,
        )
        outputs: dict[int, ObjectOutput] = {}
        for k, i in enumerate(todo):
            mem = eng.objects[i]
            low = (pred.low_res_logits[k, 0] > 0) & valid
            area = float(low.sum())
            score = float(pred.iou[k, 0].clamp(0, 1))
            if area < min_pixels or score < cfg.min_score or not 0.25 <= area / max(mem.template_area, 1.0) <= 4.0:
                continue
            similarity = None
            if mem.descriptor is not None and need is not None:
                similarity = self._similarity(mem, self._descriptor(emb, low))
                if similarity is None or similarity < need:
                    continue
            self._keep(mem, frame_idx, pred.low_res_logits[k : k + 1, :1].float(), low, small, True, None)
            outputs[i] = self._output(mem, geo, score)
        return outputs

    @staticmethod
    def _lose(mem: _ObjectMemory) -> None:
        """Mark the object lost; its memory keeps the last kept frame and box, and the last confident template
        and velocity."""
        mem.logits = None
