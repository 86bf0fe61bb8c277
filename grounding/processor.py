"""Samples -> model inputs: the one place where grounding references become tokens.

``GroundingProcessor`` renders a ``GroundingSample``'s structured turns with the grounding tokens and the box
codec, applies the vision-LLM's chat template, tokenises (labels only on answer tokens), preprocesses the image
once for the mask head (and through the vision-LLM's own processor where it has one), maps ground-truth masks,
boxes and regions into the mask head's input frame, and pads batches.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from data.collate import pad_1d
from data.sample import GroundingSample, GroundRef, RegionRef, Turn
from data.templates import sentence_case
from data.transforms import ImageGeometry, ImageTransform, as_rgb_uint8
from grounding.box_codecs import make_box_codec
from grounding.parse import parse_answer
from grounding.tokens import (
    BOX_END,
    BOX_START,
    GROUNDING_TOKENS,
    PHRASE_END,
    PHRASE_START,
    REGION,
    SEG,
    GroundingTokenIds,
)
from grounding.vision_llm.base import VisionLLM

IGNORE_INDEX = -100
_SENTINEL = "@@ANSWER{}@@"
_SENTINEL_RE = re.compile(r"@@ANSWER(\d+)@@")


@dataclass
class ProcessorConfig:
    """How answers are written and conversations are templated."""

    box_codec: str = "default"
    """Box text format: default (<box>[x1, y1, x2, y2]</box>, 0..999), qwen2vl, qwen25vl."""
    seg_with_box: bool = False
    """Write each [SEG] target's box right before its [SEG]; the box then also prompts the mask decoder."""
    box_from_seg: bool = False
    """A box asked for as text (REC) is written ``<box>[SEG]</box>``: the language model points at the object
    with a [SEG] and the model writes the box of that [SEG]'s decoded mask into its answer (``GroundingModel.
    generate``), so coordinates come from the mask decoder, which localises, instead of being spelled digit by
    digit. Targets without a mask keep their box as text."""
    system_prompt: str | None = None
    """A system message before the conversation (None: whatever the chat template does by default)."""
    chat_template: str | None = None
    """A Jinja chat template overriding the tokenizer's."""
    max_length: int | None = None
    """Refuse encoded samples longer than this many tokens (None: no limit)."""
    prompt_case: str = "keep"
    """How a prompt's letter case reaches the model: "keep" (as typed) or "sentence": a prompt typed in capitals or
    with every word capitalised is rewritten in sentence case, as the training templates write prompts
    (``data.templates.sentence_case``; "SEGMENT THE RED CIRCLE." -> "Segment the red circle."; other prompts
    unchanged). For a model trained on templated prompts only (the embedded default), which reads capitals as
    other words; in training and inference alike."""
    turns: str = "conversation"
    """How a sample's turns are laid out in training: "conversation" (one multi-turn chat), or "independent"
    (each turn is its own single-turn chat about the image, exactly as asked at inference; the turns share the
    image prefix in one packed sequence with block attention, so the image is read once)."""

    def __post_init__(self):
        if self.turns not in ("conversation", "independent"):
            raise ValueError(f"turns must be 'conversation' or 'independent', got {self.turns!r}")
        if self.prompt_case not in ("keep", "sentence"):
            raise ValueError(f"prompt_case must be 'keep' or 'sentence', got {self.prompt_case!r}")


@dataclass
class EncodedSample:
    """One sample as model inputs (unbatched). Boxes, masks and regions are in the mask head's input frame."""

    input_ids: torch.Tensor  # L
    labels: torch.Tensor  # L, IGNORE_INDEX outside answers
    token_fields: dict[str, torch.Tensor]  # name -> L
    image_inputs: dict[str, torch.Tensor]  # for the vision-LLM (batched by concatenation)
    sam_image: torch.Tensor  # 3 x S x S
    geometry: ImageGeometry
    seg_masks: torch.Tensor  # n_seg x S x S bool, in [SEG] order
    seg_boxes: torch.Tensor  # n_seg x 4, NaN rows where no box precedes the [SEG]
    regions: torch.Tensor  # R x 4
    image_key: str  # content hash of the mask-head input (feature cache key)
    sample: GroundingSample | None = None
    segment_ids: torch.Tensor | None = None  # L: 0 shared prefix, k >= 1 turn k ("independent" turns only)
    position_ids: torch.Tensor | None = None  # L: positions as if each turn were alone after the prefix


@dataclass
class GroundingBatch:
    """A padded batch. ``seg_*`` rows are all [SEG] tokens of the batch in (sample, position) order."""

    input_ids: torch.Tensor  # B x L
    attention_mask: torch.Tensor  # B x L
    labels: torch.Tensor  # B x L
    token_fields: dict[str, torch.Tensor]
    image_inputs: dict[str, torch.Tensor]
    sam_images: torch.Tensor  # B x 3 x S x S
    seg_masks: torch.Tensor  # N x S x S bool
    seg_boxes: torch.Tensor  # N x 4 (NaN rows: no box)
    seg_image_index: torch.Tensor  # N
    regions: list[torch.Tensor]  # B x (R_i x 4)
    geometries: list[ImageGeometry]
    image_keys: list[str]
    samples: list = field(default_factory=list)
    segment_ids: torch.Tensor | None = None  # B x L (-1 on padding), packed independent turns only
    position_ids: torch.Tensor | None = None  # B x L

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device) -> "GroundingBatch":
        """A copy with every tensor on ``device`` (geometry and samples stay on the host)."""
        from dataclasses import replace

        def mv(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return replace(
            self,
            input_ids=mv(self.input_ids),
            attention_mask=mv(self.attention_mask),
            labels=mv(self.labels),
            token_fields={k: mv(v) for k, v in self.token_fields.items()},
            image_inputs={k: mv(v) for k, v in self.image_inputs.items()},
            sam_images=mv(self.sam_images),
            seg_masks=mv(self.seg_masks),
            seg_boxes=mv(self.seg_boxes),
            seg_image_index=mv(self.seg_image_index),
            regions=[mv(r) for r in self.regions],
            segment_ids=mv(self.segment_ids),
            position_ids=mv(self.position_ids),
        )

    def attention_mask_4d(self) -> torch.Tensor | None:
        """B x 1 x L x L bool (True: may attend) for packed independent turns: causal, and a turn sees only
        the shared prefix and itself. None for ordinary (conversation / request) batches."""
        if self.segment_ids is None:
            return None
        seg = self.segment_ids
        L = seg.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()
        q, k = seg[:, :, None], seg[:, None, :]
        allowed = causal[None] & (k >= 0) & ((k == 0) | (k == q))
        allowed |= torch.eye(L, dtype=torch.bool, device=seg.device)[None]  # padding rows see themselves
        return allowed[:, None]

    @property
    def image_valid_masks(self) -> torch.Tensor:
        """B x S x S bool: True on each image's pixels in the mask head's input frame, False on padding."""
        return torch.stack([torch.from_numpy(g.valid_mask()) for g in self.geometries]).to(self.sam_images.device)

    @property
    def valid_masks(self) -> torch.Tensor:
        """N x S x S bool: True on image pixels of each [SEG]'s image, False on padding."""
        if len(self.seg_image_index) == 0:
            return torch.zeros_like(self.seg_masks)
        return self.image_valid_masks.to(self.seg_masks.device)[self.seg_image_index]


class GroundingProcessor:
    """Turns samples into ``EncodedSample``s and batches. See the module docstring."""

    def __init__(self, vision_llm: VisionLLM, image_transform: ImageTransform, config: ProcessorConfig | None = None):
        self.vision_llm = vision_llm
        self.tokenizer = vision_llm.tokenizer
        self.image_transform = image_transform
        self.config = config or ProcessorConfig()
        self.codec = make_box_codec(self.config.box_codec)
        self.tokens = GroundingTokenIds.from_tokenizer(self.tokenizer)
        if self.tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token")
        if self.tokenizer.eos_token is None:
            raise ValueError("the tokenizer needs an eos token (generation stops there)")

    # ------------------------------------------------------------------ text rendering
    def render_prompt(self, turn: Turn | str) -> str:
        """The prompt's text as the model reads it: region references as ``<region>`` and ``prompt_case`` applied."""
        text = turn if isinstance(turn, str) else "".join(p if isinstance(p, str) else REGION for p in turn.prompt)
        if self.config.prompt_case == "sentence":
            text = sentence_case(text, keep=(REGION,))
        return text

    def _box_as_seg(self, part: GroundRef, sample: GroundingSample) -> bool:
        """Whether ``part`` (a box asked for as text) is written ``<box>[SEG]</box>`` (``box_from_seg``)."""
        return (
            self.config.box_from_seg and part.box and not part.seg and sample.targets[part.index].mask is not None
        )

    def _seg_parts(self, turn: Turn, sample: GroundingSample) -> list[GroundRef]:
        """The answer's references that write a [SEG], in order (each has a mask target)."""
        return [
            g for g in turn.answer if isinstance(g, GroundRef) and (g.seg or self._box_as_seg(g, sample))
        ]

    def render_answer(self, turn: Turn, sample: GroundingSample) -> str:
        w, h = sample.size[1], sample.size[0]
        out = []
        for part in turn.answer:
            if isinstance(part, str):
                out.append(part)
                continue
            target = sample.targets[part.index]
            if part.phrase is not None:
                out.append(f"{PHRASE_START}{part.phrase}{PHRASE_END}")
            if self._box_as_seg(part, sample):
                if part.phrase is not None:
                    out.append(" ")
                out.append(f"{BOX_START}{SEG}{BOX_END}")
                continue
            if part.box or (part.seg and self.config.seg_with_box):
                if part.phrase is not None:
                    out.append(" ")
                out.append(self.codec.encode(target.box, (w, h)))
            if part.seg:
                if part.phrase is not None or part.box or self.config.seg_with_box:
                    out.append(" ")
                out.append(SEG)
        return "".join(out)

    def _check_text(self, text: str, where: str) -> None:
        for tok in GROUNDING_TOKENS:
            if tok in text:
                raise ValueError(f"{where} contains the grounding token {tok!r} as plain text; use structured parts")

    def conversation(self, prompts: list[str], answers: list[str]) -> list[tuple[str, bool]]:
        """Chat-templated pieces (text, is_answer). The first user message holds the image placeholder.

        With fewer answers than prompts, the conversation ends with the generation prompt.
        """
        messages = []
        if self.config.system_prompt is not None:
            messages.append({"role": "system", "content": self.config.system_prompt})
        for i, p in enumerate(prompts):
            content = f"{self.vision_llm.image_placeholder}\n{p}" if i == 0 else p
            messages.append({"role": "user", "content": content})
            if i < len(answers):
                messages.append({"role": "assistant", "content": _SENTINEL.format(i)})
        text = self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=len(answers) < len(prompts),
            chat_template=self.config.chat_template,
        )
        pieces: list[tuple[str, bool]] = []
        pos = 0
        for m in _SENTINEL_RE.finditer(text):
            pieces.append((text[pos : m.start()], False))
            pieces.append((answers[int(m.group(1))], True))
            pos = m.end()
        pieces.append((text[pos:], False))
        if sum(1 for _, a in pieces if a) != len(answers):
            raise ValueError("the chat template dropped or repeated an assistant message")
        return pieces

    # ------------------------------------------------------------------ encoding
    def _tokenize(self, pieces, image) -> tuple[list[int], list[int], dict[str, list[int]], dict]:
        ids: list[int] = []
        labels: list[int] = []
        fields: dict[str, list[int]] = {}
        image_inputs: dict = {}
        eos = self.tokenizer.eos_token
        eos_id = self.tokenizer.eos_token_id
        pending_eos_strip = False
        for k, (text, is_answer) in enumerate(pieces):
            if pending_eos_strip and text.startswith(eos):
                text = text[len(eos) :]
            pending_eos_strip = False
            if k == 0:
                enc = self.vision_llm.encode_prompt(text, image)
                piece_ids = enc.ids
                image_inputs = enc.image_inputs
                for name, vals in enc.token_fields.items():
                    fields[name] = list(vals)
            elif not text:
                continue
            else:
                piece_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
                if is_answer:
                    piece_ids = piece_ids + [eos_id]
                    pending_eos_strip = True
            for name in fields:
                if k > 0:
                    fields[name].extend([0] * len(piece_ids))
            ids.extend(piece_ids)
            labels.extend(piece_ids if is_answer else [IGNORE_INDEX] * len(piece_ids))
        return ids, labels, fields, image_inputs

    @staticmethod
    def image_key(sam_image: torch.Tensor) -> str:
        """Content hash of a preprocessed image (the feature-cache and dedup key)."""
        return hashlib.sha1(sam_image.numpy().tobytes()).hexdigest()

    def _image(self, image: np.ndarray):
        img = as_rgb_uint8(image)
        sam_image, geometry = self.image_transform(img)
        return img, sam_image, geometry, self.image_key(sam_image)

    def _pack_independent(self, prompts, answers, img, where):
        """Each turn tokenised as its own single-turn chat; the common prefix (chat header and image tokens)
        kept once, then every turn's remainder. Returns ids, labels, fields, image inputs, segment ids and
        position ids (each turn's positions continue from the prefix, as if it were alone)."""
        encs = [self._tokenize(self.conversation([p], [a]), img) for p, a in zip(prompts, answers)]
        first = encs[0][0]
        n = min(len(e[0]) for e in encs)
        prefix = 0
        while prefix < n and all(e[0][prefix] == first[prefix] for e in encs):
            prefix += 1
        if any(lab != IGNORE_INDEX for e in encs for lab in e[1][:prefix]):
            raise ValueError(f"{where}: turns share labelled tokens; cannot pack them independently")
        ids, labels = list(first[:prefix]), [IGNORE_INDEX] * prefix
        fields = {k: list(v[:prefix]) for k, v in encs[0][2].items()}
        segment_ids, position_ids = [0] * prefix, list(range(prefix))
        for k, (e_ids, e_labels, e_fields, _) in enumerate(encs, start=1):
            rest = len(e_ids) - prefix
            ids += e_ids[prefix:]
            labels += e_labels[prefix:]
            for name in fields:
                fields[name] += e_fields[name][prefix:]
            segment_ids += [k] * rest
            position_ids += list(range(prefix, prefix + rest))
        return ids, labels, fields, encs[0][3], segment_ids, position_ids

    def encode(self, sample: GroundingSample) -> EncodedSample:
        """A training sample: every turn with its answer; labels on answer tokens only."""
        where = f"sample {sample.source!r}" if sample.source else "sample"
        if not sample.turns:
            raise ValueError(f"{where} has no turns")
        img, sam_image, geometry, key = self._image(sample.image)
        prompts = [self.render_prompt(t) for t in sample.turns]
        for p in prompts:
            self._check_text(p.replace(REGION, ""), f"a prompt of {where}")
        for t in sample.turns:
            for part in t.answer:
                if isinstance(part, str):
                    self._check_text(part, f"an answer of {where}")
        answers = [self.render_answer(t, sample) for t in sample.turns]
        segment_ids = position_ids = None
        if self.config.turns == "independent" and len(sample.turns) > 1:
            ids, labels, fields, image_inputs, segment_ids, position_ids = self._pack_independent(prompts, answers, img, where)
        else:
            ids, labels, fields, image_inputs = self._tokenize(self.conversation(prompts, answers), img)
        if self.config.max_length is not None and len(ids) > self.config.max_length:
            raise ValueError(f"{where} encodes to {len(ids)} tokens, more than max_length={self.config.max_length}")

        # [SEG] targets in order, with the box (if any) that the answer writes right before each [SEG]
        w, h = sample.size[1], sample.size[0]
        seg_targets: list[int] = []
        seg_boxes: list[np.ndarray] = []
        for t, answer in zip(sample.turns, answers):
            grounds = self._seg_parts(t, sample)
            parsed = parse_answer(answer, self.codec, (w, h))
            by_seg = {s.seg_index: s for s in parsed.segments if s.seg_index is not None}
            if parsed.num_seg != len(grounds):
                raise ValueError(f"{where}: answer {answer!r} has {parsed.num_seg} [SEG] for {len(grounds)} targets")
            for k, g in enumerate(grounds):
                seg_targets.append(g.index)
                box = by_seg[k].box
                seg_boxes.append(geometry.boxes_to_input(box)[0] if box is not None else np.full(4, np.nan, np.float32))
        n_seg_ids = sum(1 for i in ids if i == self.tokens.seg)
        if n_seg_ids != len(seg_targets):
            raise ValueError(f"{where}: {n_seg_ids} [SEG] tokens after tokenisation but {len(seg_targets)} targets")
        S = geometry.input_size
        masks = (
            np.stack([geometry.mask_to_input(sample.targets[i].mask) for i in seg_targets])
            if seg_targets
            else np.zeros((0, S, S), bool)
        )
        # region features are injected in the order the <region> tokens appear
        order = [p.index for t in sample.turns for p in t.prompt if isinstance(p, RegionRef)]
        n_region_tokens = sum(1 for i in ids if i == self.tokens.region)
        if n_region_tokens != len(order):
            raise ValueError(f"{where}: {n_region_tokens} <region> tokens but {len(order)} region references")
        regions = sample.regions[order] if order else np.zeros((0, 4), np.float32)
        return EncodedSample(
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            token_fields={k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()},
            image_inputs=image_inputs,
            sam_image=sam_image,
            geometry=geometry,
            seg_masks=torch.from_numpy(masks),
            seg_boxes=torch.from_numpy(np.stack(seg_boxes).astype(np.float32)) if seg_boxes else torch.zeros(0, 4),
            regions=torch.from_numpy(geometry.boxes_to_input(regions)),
            image_key=key,
            sample=sample,
            segment_ids=None if segment_ids is None else torch.tensor(segment_ids, dtype=torch.long),
            position_ids=None if position_ids is None else torch.tensor(position_ids, dtype=torch.long),
        )

    def encode_request(self, image, prompt: str | Turn, regions=None) -> EncodedSample:
        """An inference request: image + one prompt (text with ``<region>`` placeholders, or a Turn), ending
        with the generation prompt. ``regions``: R x 4 xyxy boxes in the original frame."""
        prompt_text = self.render_prompt(prompt if isinstance(prompt, Turn) else str(prompt))
        if not prompt_text.strip():
            raise ValueError("the prompt is empty")
        img, sam_image, geometry, key = self._image(image)
        regions = np.zeros((0, 4), np.float32) if regions is None else np.asarray(regions, np.float32).reshape(-1, 4)
        n_region = prompt_text.count(REGION)
        if n_region != len(regions):
            if n_region == 0 and len(regions) > 0:
                prompt_text = " ".join([REGION] * len(regions)) + " " + prompt_text
            else:
                raise ValueError(f"the prompt has {n_region} {REGION} placeholders but {len(regions)} regions were given")
        ids, labels, fields, image_inputs = self._tokenize(self.conversation([prompt_text], []), img)
        S = geometry.input_size
        return EncodedSample(
            input_ids=torch.tensor(ids, dtype=torch.long),
            labels=torch.tensor(labels, dtype=torch.long),
            token_fields={k: torch.tensor(v, dtype=torch.long) for k, v in fields.items()},
            image_inputs=image_inputs,
            sam_image=sam_image,
            geometry=geometry,
            seg_masks=torch.zeros(0, S, S, dtype=torch.bool),
            seg_boxes=torch.zeros(0, 4),
            regions=torch.from_numpy(geometry.boxes_to_input(regions)),
            image_key=key,
        )

    # ------------------------------------------------------------------ batching
    def collate(self, items: list[EncodedSample], padding_side: str = "right") -> GroundingBatch:
        """Pad a list of encoded samples. Use ``padding_side="left"`` for generation."""
        if not items:
            raise ValueError("cannot collate an empty list of samples")
        pad = self.tokenizer.pad_token_id
        input_ids = pad_1d([it.input_ids for it in items], pad, padding_side)
        attention = pad_1d([torch.ones_like(it.input_ids) for it in items], 0, padding_side)
        labels = pad_1d([it.labels for it in items], IGNORE_INDEX, padding_side)
        names = set().union(*(it.token_fields.keys() for it in items))
        fields = {n: pad_1d([it.token_fields[n] for it in items], 0, padding_side) for n in names}
        image_inputs = {}
        for name in items[0].image_inputs:
            image_inputs[name] = torch.cat([it.image_inputs[name] for it in items], dim=0)
        seg_index = torch.cat([torch.full((len(it.seg_masks),), i, dtype=torch.long) for i, it in enumerate(items)])
        segment_ids = position_ids = None
        if any(it.segment_ids is not None for it in items):
            # ordinary samples in a packed batch: one segment, plain positions
            segs = [it.segment_ids if it.segment_ids is not None else torch.ones_like(it.input_ids) for it in items]
            poss = [it.position_ids if it.position_ids is not None else torch.arange(len(it.input_ids)) for it in items]
            segment_ids = pad_1d(segs, -1, padding_side)
            position_ids = pad_1d(poss, 0, padding_side)
        return GroundingBatch(
            input_ids=input_ids,
            attention_mask=attention,
            labels=labels,
            token_fields=fields,
            image_inputs=image_inputs,
            sam_images=torch.stack([it.sam_image for it in items]),
            seg_masks=torch.cat([it.seg_masks for it in items]),
            seg_boxes=torch.cat([it.seg_boxes for it in items]),
            seg_image_index=seg_index,
            regions=[it.regions for it in items],
            geometries=[it.geometry for it in items],
            image_keys=[it.image_key for it in items],
            samples=[it.sample for it in items],
            segment_ids=segment_ids,
            position_ids=position_ids,
        )

    def collate_samples(self, samples: list[GroundingSample]) -> GroundingBatch:
        """DataLoader ``collate_fn``: encode and pad training samples."""
        return self.collate([self.encode(s) for s in samples])
