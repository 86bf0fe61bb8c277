"""The grounding model: a vision-LLM coupled to the mask head through ``[SEG]`` hidden states.

Data flow (one forward): mask-head image encoder (once per distinct image) -> region features at ``<region>``
tokens -> vision-LLM -> last-layer hidden state that predicts each ``[SEG]`` -> seg projector -> sparse prompt
tokens (with the box written right before the ``[SEG]``, if any, as a box prompt) -> mask decoder.

Losses live in ``grounding.losses``; training lives in ``grounding.lit_module``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LogitsProcessorList

from data.masks import dominant_box
from heads import empty_specks, keep_one_part, mask_parts, select_parts, uncovered_parts
from grounding.feature_cache import FeatureCache
from grounding.losses import presence_scores
from grounding.parse import ParsedAnswer, parse_answer, relist_segments
from grounding.processor import IGNORE_INDEX, GroundingBatch
from grounding.tokens import BOX_END, BOX_START, PHRASE_END, PHRASE_START, SEG, GroundingTokenIds
from grounding.vision_llm.base import VisionLLM, decoder_layers


@dataclass
class HeadOptions:
    """How the heads are coupled to the vision-LLM."""

    seg_tokens: int = 1
    """Sparse prompt tokens per [SEG] (2 gives box-trained decoders two corner-like tokens)."""
    box_prompt: bool = True
    """A box written right before a [SEG] also prompts the mask decoder (with the [SEG] tokens)."""
    region_encoder: bool = True
    """Build a region encoder so prompts can point at boxes through <region> tokens."""
    region_pool: int = 4
    """roi_align output side of the region encoder."""
    freeze_image_encoder: bool = True
    """Run the mask head's image encoder without autograd (and allow caching its features)."""
    max_train_masks: int | None = None
    """In training, decode at most this many [SEG] masks per batch (a random subset; the decoder runs once per
    prompt over the whole image embedding, so it can cost as much as the language model). None: all."""
    seg_layer: int = -1
    """Which layer's hidden state of a [SEG] token prompts the heads (index into ``hidden_states``: -1 the last,
    as LISA; a middle layer may carry more of the question than the state that predicts the next word)."""
    seg_prior: bool = False
    """Each [SEG] also gives a coarse mask: its state's similarity with every cell of the image embedding
    (``heads.SegPrior``, LSeg-style), supervised with the mask target and fed to the decoder as SAM's mask input."""
    prior_context: int = 0
    """Context blocks over the seg prior's and presence head's keys (``heads.SegPrior(context=...)``): dilated
    depthwise convolutions, so a cell's key tells what object it is part of (its shape), not only its own
    features. 0: per-cell keys."""
    presence: bool = False
    """A presence head: the state that starts each answer (it predicts the answer's first token) is mapped
    against the image embedding like a [SEG] state (``heads.SegPrior``), supervised with the union of that
    answer's [SEG] masks (empty when it grounds nothing); the map's largest logit says whether the answer should
    ground anything. It reads SAM's full embedding grid where the language model reads a few pooled image tokens."""
    presence_threshold: float | None = 0.5
    """With a presence head, an answer whose having [SEG] disagrees with presence probability > threshold is
    generated again from the language model's next-best first tokens (``GroundingModel.generate``); None: the
    probability is only reported (``GeneratedAnswer.presence``)."""
    presence_retries: int = 2
    """How many next-best first tokens ``generate`` tries for an answer the presence head disagrees with."""
    presence_fusion: tuple[float, float, float] | None = None
    """(w_head, w_prior, bias): with a seg prior too, the presence probability of an answer with one [SEG] is
    sigmoid(w_head * presence-head logit + w_prior * the largest seg-prior logit of its [SEG] state + bias): the
    head reads the question's state, the prior the [SEG]'s own map, and together they separate present from absent
    objects better than either (``benchmarks/presence_probe.py --fit`` fits the weights on validation scenes).
    An answer without [SEG] has no [SEG] state to read, so one whose head probability exceeds
    ``presence_recheck`` is generated again from next-best first tokens, and a one-[SEG] answer replaces it if its
    fused probability exceeds ``presence_threshold``. Answers with several [SEG] keep the head alone: the weights
    are fitted on one-target answers, and the strongest of several [SEG] maps reads differently (the probe's
    ``--present-tasks res_multi``). None: the head alone decides."""
    presence_recheck: float = 0.3
    """With ``presence_fusion``: the head probability above which an answer without [SEG] is re-checked."""
    mask_one_part: float | None = None
    """In generation, cut each [SEG]'s mask to one object (``heads.keep_one_part``): of the 8-connected parts of
    its logits > this threshold, the part with the highest mean logit is the mask, and the [SEG]s of one answer
    take different parts where they can (each its best part not taken by an earlier [SEG] of the answer). For
    models whose [SEG] stands for one object (an answer about several objects has one [SEG] each) and whose
    decoder, unsure of the object, lights several at low logits. None: the decoder's ``logits > 0``."""
    verifier: bool = False
    """A mask verifier (``heads.MaskVerifier``): in generation each [SEG]'s mask is the candidate the verifier
    scores highest against the [SEG] state, of the 8-connected parts of the decoder's logits above each of
    ``verify_thresholds`` (the [SEG]s of one answer take different candidates), instead of ``mask_one_part``'s
    highest mean logit. Fitted on the frozen model's own candidates by ``grounding fit-verifier``."""
    verifier_context: int = 0
    """Transformer blocks in which the verifier's candidates of one [SEG] attend to each other (``heads.MaskVerifier``'s
    ``context``): a relation ("left of", "the largest") is about how a candidate stands among the others. 0: each
    candidate is scored on its own (the shipped verifier)."""
    verifier_colour: bool = False
    """The verifiers also read each candidate's pixel colour (``heads.MaskVerifier(colour=True)``: per channel, mean and
    spread of the input image under it), for an encoder that may keep little of hue (LiteMedSAM was trained on grey
    medical images). Fitted by ``grounding fit-verifier --colour``. Not in the shipped default: at 400 scenes it moved
    the verifier's held-out numbers within seed noise (docs/default-model.md)."""
    verify_thresholds: tuple[float, ...] = (-1.0, -3.0)
    """Decoder-logit thresholds whose parts are the verifier's candidates."""
    verifier_presence: bool = True
    """With a verifier and a presence head: an answer with one [SEG] grounds something when the verifier's best
    probability over its candidates exceeds ``verifier_threshold`` (else it is generated again from next-best
    first tokens), and an answer without [SEG] whose presence-head probability exceeds ``presence_recheck`` is
    re-checked with a [SEG] answer that the verifier must accept. Answers with several [SEG] keep the head (at
    ``presence_threshold``; unless ``verifier_presence_multi``): the verifier, fitted with absent objects asked in
    the singular, scores the [SEG]s of "all the blue shapes" about absent blue shapes high too (best logit > 0 in
    12 of 15 such answers on 150 validation scenes), so letting it decide them called only 2 more of 150 absent
    objects absent."""
    verifier_presence_multi: bool = False
    """With ``verifier_presence``: answers with several [SEG] are decided by the verifier too, as one-[SEG] answers
    are (its evidence: the largest of their [SEG]s' best logits; fused with the head by ``verifier_fusion``, at
    ``verifier_threshold``). For a verifier fitted with absent things asked in the plural answered with several
    [SEG] (``grounding fit-verifier --plural-absent``; the shipped default's is, and ships with this on)."""
    verifier_fusion: tuple[float, float, float] | None = None
    """With ``verifier_presence``: (w_head, w_verifier, bias): a one-[SEG] answer's presence probability is
    sigmoid(w_head * presence-head logit + w_verifier * the verifier's best logit + bias) instead of the verifier's
    alone (the head has read the question; ``benchmarks/verifier_threshold.py --fit`` fits the weights)."""
    presence_verifier: bool = False
    """With ``verifier_presence``: a second ``heads.MaskVerifier`` gives the verifier's evidence (its best logit over
    the [SEG]'s candidates) instead of the mask verifier, which still picks the mask. ``grounding fit-verifier
    --presence-verifier W`` fits it on the same candidates with a multiple-instance term (weight W): a state's best
    candidate must score "present" exactly when one of its candidates is the [SEG]'s object. That term makes the
    best logit a sharper presence call but, on the one verifier, costs the choice of part, hence two. Not in the
    shipped default: sharper when teacher-forced, it did not raise generated N-acc (docs/default-model.md)."""
    verifier_threshold: float | None = None
    """With ``verifier_presence``: the verifier probability a one-[SEG] answer must exceed (None: ``presence_threshold``).
    Its probability runs lower on harder questions whose object is there (relations, boxes) than on plain ones."""
    min_mask_cells: float | None = None
    """In generation, a [SEG] mask (``logits > 0``) covering less of the input frame than this many cells of the image
    embedding is emptied (``heads.empty_specks``): a speck the encoder cannot have resolved as an object (a 64 x 64
    embedding: 1 cell = 1/4096 of the frame). None: masks are kept whatever their size."""
    prune_phrases: float | None = None
    """In generation, an answer that grounds two or more phrases (a grounded caption) loses each phrase whose [SEG]
    found nothing: an empty mask, or, with a verifier, a best verifier probability over its candidates below this
    value; the phrase goes with its [SEG] and mask, and its list is rejoined (``parse.relist_segments``). The language
    model writes a caption's phrases from 64 pooled image tokens, some about objects that are not there, and their
    [SEG]s land on specks or parts of other objects. Done before ``complete_captions``, which can add back an object
    a dropped phrase half-covered. None: every phrase stays."""
    describe_phrases: bool = False
    """Each ``<p>phrase</p>`` that grounds a [SEG] (grounded captions) is re-written from the model's answer to
    "What is in <region>?" about the box of that [SEG]'s own mask (``grounding.describe``): the region encoder
    names an object from SAM's features better than the language model does from its pooled image tokens. Done
    by ``GroundingPredictor`` and the ``Evaluator`` after ``generate``; needs the region encoder."""
    check_by_description: float | None = None
    """An answer with [SEG] (not a caption) whose presence probability is below this is checked against the model's
    own description of its masks (``grounding.describe.check_by_description``, run where ``describe_phrases`` runs):
    "What is in <region>?" about the box of each mask, and where the prompt names exactly one word of a group of
    ``description_words`` (a colour, a shape) and every description names another word of that group, the answer
    is generated again without [SEG] (``GroundingModel.generate(refuse=...)``): it grounded some other object. Where
    the presence call is unsure, the region encoder reads the object from SAM's full embedding, where the language
    model wrote "Sure" from 64 pooled image tokens. Needs the presence head and the region encoder. None: no check."""
    description_words: tuple[tuple[str, ...], ...] = ()
    """The word groups ``check_by_description`` compares (lower case; the default model's: its world's colour names
    and shape names). A group the prompt names two or more words of is not compared (a relation such as "the circle
    left of the square" names two objects)."""
    complete_captions: bool = False
    """In generation, an answer that grounds phrases (``<p>phrase</p> [SEG]``: a grounded caption) is completed with
    the objects its presence map finds that none of its masks covers (``heads.uncovered_parts``: parts of the map's
    logits > 0, at most half covered, at least 0.4% of the frame): each becomes ``<p>an object</p> [SEG]``, one more
    item of the list of the answer's last [SEG] ("A, B, an object and an object"), with that part as its mask
    (``describe_phrases`` then names it). The presence head is trained to map the union of an answer's masks, so for
    a caption it maps every object the caption should ground, whether or not the language model wrote a phrase for
    it. Needs the presence head."""


COMPLETED_PHRASE = "an object"
"""The phrase of an object added by ``HeadOptions.complete_captions`` (``describe_phrases`` names it)."""


@dataclass
class GroundingForward:
    logits: torch.Tensor  # B x L x V, or N x V at the True positions of logits_mask
    seg_hidden: torch.Tensor  # N x D, one row per [SEG] in (sample, position) order
    mask_logits: torch.Tensor | None  # N x 1 x h' x w' low-res logits over the input frame
    iou: torch.Tensor | None  # N x 1 predicted IoU
    image_embeddings: torch.Tensor  # B x C x h x w
    logits_mask: torch.Tensor | None = None  # B x L bool (None: logits everywhere)
    mask_index: torch.Tensor | None = None  # rows of the batch's [SEG] targets that were decoded (None: all)
    prior_logits: torch.Tensor | None = None  # N x 1 x h x w seg-prior maps of every [SEG] (HeadOptions.seg_prior)
    presence_logits: torch.Tensor | None = None  # T x 1 x h x w presence maps, one per answer (HeadOptions.presence)
    answer_image_index: torch.Tensor | None = None  # T: each answer's image
    seg_answer_index: torch.Tensor | None = None  # N: the answer each [SEG] belongs to


@dataclass
class GeneratedAnswer:
    """One generated answer: raw ``text`` (with grounding tokens), its parse, and one mask per ``[SEG]``.

    ``mask_logits``: n_seg x 1 x h' x w' over the input frame; ``scores``: n_seg predicted IoU.
    Boxes in ``parsed`` are in the original image frame.
    """

    text: str
    parsed: ParsedAnswer
    token_ids: list[int]
    mask_logits: torch.Tensor | None
    scores: torch.Tensor | None
    presence: float | None = None  # presence head's probability that the answer grounds something (HeadOptions.presence)
    presence_map: torch.Tensor | None = None  # 1 x h x w presence-head logits over the input frame (embedding grid)
    refused_by: list[str] | None = None  # HeadOptions.check_by_description: the descriptions of the masks of the answer this refusal replaced


def seg_state_positions(input_ids: torch.Tensor, seg_id: int) -> torch.Tensor:
    """B x L bool: True at position p-1 for every [SEG] at position p (the state that predicts it)."""
    pos = torch.zeros_like(input_ids, dtype=torch.bool)
    pos[:, :-1] = input_ids[:, 1:] == seg_id
    return pos


def answer_start_positions(labels: torch.Tensor) -> torch.Tensor:
    """B x L bool: True at position p-1 for every answer that starts at p (a labelled token after an unlabelled
    one): the state that predicts the answer's first token, which has read the whole question."""
    lab = labels != IGNORE_INDEX
    pos = torch.zeros_like(lab)
    pos[:, :-1] = lab[:, 1:] & ~lab[:, :-1]
    return pos


class _FirstTokenControl:
    """A generation logits processor: records the first step's scores and forces the first token of some rows."""

    def __init__(self, force: dict[int, int] | None = None):
        self.force = force or {}
        self.first: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first is None:
            self.first = scores.detach().clone()
            if self.force:
                scores = scores.clone()
                for row, tok in self.force.items():
                    scores[row] = float("-inf")
                    scores[row, tok] = 0.0
        return scores


class GroundingModel(nn.Module):
    """Receives its parts already built (see ``grounding.presets`` for the named builders)."""

    def __init__(
        self,
        vision_llm: VisionLLM,
        mask_head: nn.Module,
        seg_projector: nn.Module,
        region_encoder: nn.Module | None = None,
        box_codec=None,
        options: HeadOptions | None = None,
        seg_prior: nn.Module | None = None,
        presence_head: nn.Module | None = None,
        mask_verifier: nn.Module | None = None,
        presence_verifier: nn.Module | None = None,
    ):
        super().__init__()
        self.vision_llm = vision_llm
        self.mask_head = mask_head
        self.seg_projector = seg_projector
        self.region_encoder = region_encoder
        self.options = options or HeadOptions()
        if self.options.seg_prior and seg_prior is None:
            raise ValueError("HeadOptions.seg_prior is set but no seg_prior module was given")
        self.seg_prior = seg_prior
        if self.options.presence and presence_head is None:
            raise ValueError("HeadOptions.presence is set but no presence_head module was given")
        self.presence_head = presence_head
        if self.options.verifier and mask_verifier is None:
            raise ValueError("HeadOptions.verifier is set but no mask_verifier module was given")
        if self.options.verifier and not self.options.verify_thresholds:
            raise ValueError("HeadOptions.verify_thresholds must hold at least one threshold")
        for name, v in (("mask_verifier", mask_verifier), ("presence_verifier", presence_verifier)):
            if v is not None and (v.colour is not None) != bool(self.options.verifier_colour):
                raise ValueError(f"{name} {'reads' if v.colour is not None else 'does not read'} colour but "
                                 f"HeadOptions.verifier_colour is {self.options.verifier_colour}")
        self.mask_verifier = mask_verifier
        if self.options.presence_verifier and (presence_verifier is None or not self.options.verifier):
            raise ValueError("HeadOptions.presence_verifier needs the mask verifier (verifier: true) and a presence_verifier module")
        self.presence_verifier = presence_verifier
        if self.options.min_mask_cells is not None and self.options.min_mask_cells < 0:
            raise ValueError(f"min_mask_cells must be >= 0 or None, got {self.options.min_mask_cells}")
        p = self.options.prune_phrases
        if p is not None and not 0.0 <= p < 1.0:
            raise ValueError(f"prune_phrases must be a probability in [0, 1) or None, got {p}")
        if self.options.complete_captions and presence_head is None:
            raise ValueError("HeadOptions.complete_captions reads the presence map: it needs the presence head (presence: true)")
        if self.options.describe_phrases and region_encoder is None:
            raise ValueError("HeadOptions.describe_phrases asks region questions: it needs the region encoder (region_encoder: true)")
        if self.options.check_by_description is not None:
            c = self.options.check_by_description
            if not 0.0 < c <= 1.0:
                raise ValueError(f"check_by_description must be a probability in (0, 1] or None, got {c}")
            if region_encoder is None or presence_head is None or self.options.presence_threshold is None:
                raise ValueError("HeadOptions.check_by_description asks region questions and refuses through the presence "
                                 "head: it needs region_encoder: true, presence: true and a presence_threshold")
            if not self.options.description_words:
                raise ValueError("HeadOptions.check_by_description needs description_words (groups of words to compare)")
        t = self.options.presence_threshold
        if t is not None and not 0.0 < t < 1.0:
            raise ValueError(f"presence_threshold must be a probability in (0, 1) or None, got {t}")
        if self.options.presence_retries < 0:
            raise ValueError(f"presence_retries must be >= 0, got {self.options.presence_retries}")
        fusion = self.options.presence_fusion
        if fusion is not None:
            if len(fusion) != 3:
                raise ValueError(f"presence_fusion must be (w_head, w_prior, bias), got {fusion}")
            if seg_prior is None or presence_head is None:
                raise ValueError("presence_fusion fuses the presence head with the seg prior: set presence and seg_prior")
        if self.options.verifier_fusion is not None and len(self.options.verifier_fusion) != 3:
            raise ValueError(f"verifier_fusion must be (w_head, w_verifier, bias), got {self.options.verifier_fusion}")
        t = self.options.verifier_threshold
        if t is not None and not 0.0 < t < 1.0:
            raise ValueError(f"verifier_threshold must be a probability in (0, 1) or None, got {t}")
        if not 0.0 < self.options.presence_recheck < 1.0:
            raise ValueError(f"presence_recheck must be a probability in (0, 1), got {self.options.presence_recheck}")
        n_layers = len(decoder_layers(vision_llm.hf_model))
        if not -(n_layers + 1) <= self.options.seg_layer <= n_layers:
            raise ValueError(
                f"seg_layer {self.options.seg_layer} is out of range: the language model has {n_layers} layers "
                f"(hidden states 0..{n_layers}, or -1..-{n_layers + 1})"
            )
        vision_llm.hidden_layer = self.options.seg_layer
        self.tokens = GroundingTokenIds.from_tokenizer(vision_llm.tokenizer)
        if box_codec is None:
            from grounding.box_codecs import make_box_codec

            box_codec = make_box_codec("default")
        self.box_codec = box_codec
        self.feature_cache: FeatureCache | None = None
        self.mask_head.freeze_image_encoder(self.options.freeze_image_encoder)

    @property
    def tokenizer(self):
        return self.vision_llm.tokenizer

    # ------------------------------------------------------------------ image side
    def encode_images(self, sam_images: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
        """B x 3 x S x S -> B x C x h x w mask-head embeddings; each distinct image (by key) is encoded once."""
        cache = self.feature_cache if (self.options.freeze_image_encoder and keys is not None) else None
        if keys is None:
            keys = [str(i) for i in range(len(sam_images))]
        first: dict[str, int] = {}
        index = [first.setdefault(k, i) for i, k in enumerate(keys)]
        uniq = sorted(set(index))
        feats: dict[int, torch.Tensor] = {}
        todo = []
        for i in uniq:
            hit = cache.get(keys[i]) if cache is not None else None
            if hit is not None:
                feats[i] = hit.to(sam_images.device)
            else:
                todo.append(i)
        if todo:
            x = sam_images[todo]
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.options.freeze_image_encoder):
                emb = self.mask_head.encode_image(x)
            for j, i in enumerate(todo):
                feats[i] = emb[j]
                if cache is not None:
                    cache.put(keys[i], emb[j])
        pos = {i: n for n, i in enumerate(uniq)}
        stacked = torch.stack([feats[i] for i in uniq])
        return stacked[[pos[i] for i in index]]

    def region_features(self, image_embeddings: torch.Tensor, regions: list[torch.Tensor]) -> torch.Tensor | None:
        """(sum R_i) x D features for the <region> tokens, or None when there are no regions."""
        if self.region_encoder is None or sum(len(r) for r in regions) == 0:
            if sum(len(r) for r in regions) and self.region_encoder is None:
                raise ValueError("the prompt has regions but this model has no region encoder")
            return None
        regions = [r.to(image_embeddings.device, image_embeddings.dtype) for r in regions]
        return self.region_encoder(image_embeddings, regions, self.mask_head.image_size)

    def _inject(self, image_embeddings, regions):
        feats = self.region_features(image_embeddings, regions)
        return {} if feats is None else {self.tokens.region: feats}

    def seg_prior_maps(self, image_embeddings, seg_hidden, image_index):
        """Seg-prior logits N x 1 x h x w for N [SEG] states, or None without ``HeadOptions.seg_prior``."""
        if self.seg_prior is None:
            return None
        return self.seg_prior(seg_hidden, image_embeddings, image_index.to(image_embeddings.device))

    def decode_masks(self, image_embeddings, seg_hidden, image_index, boxes, prior=None):
        """Mask-decoder outputs for N [SEG] states: (low-res logits N x 1 x h' x w', iou N x 1, seg-prior
        logits N x 1 x h x w or None). ``prior``: those states' seg-prior maps if already computed."""
        proj_dtype = next(self.seg_projector.parameters()).dtype
        tokens = self.seg_projector(seg_hidden.to(proj_dtype))
        if tokens.dim() == 2:
            tokens = tokens[:, None, :]
        use_boxes = boxes if (self.options.box_prompt and boxes is not None and len(boxes)) else None
        mask_inputs = None
        if prior is None:
            prior = self.seg_prior_maps(image_embeddings, seg_hidden, image_index)
        if prior is not None:
            mask_hw = tuple(4 * s for s in prior.shape[-2:])  # SAM's mask input: 4 x the embedding grid
            mask_inputs = F.interpolate(prior, mask_hw, mode="bilinear", align_corners=False)
        pred = self.mask_head.decode(
            image_embeddings, image_index, sparse_tokens=tokens, boxes=use_boxes, mask_inputs=mask_inputs
        )
        return pred.low_res_logits, pred.iou, prior

    # ------------------------------------------------------------------ training forward
    def forward(
        self, batch: GroundingBatch, image_embeddings: torch.Tensor | None = None, all_logits: bool = False
    ) -> GroundingForward:
        """Teacher-forced forward. Logits are computed only where the next token is labelled, unless
        ``all_logits``."""
        logits_mask = None
        if not all_logits:
            logits_mask = torch.zeros_like(batch.labels, dtype=torch.bool)
            logits_mask[:, :-1] = batch.labels[:, 1:] != IGNORE_INDEX
        if image_embeddings is None:
            image_embeddings = self.encode_images(batch.sam_images, batch.image_keys)
        mask4d = batch.attention_mask_4d()
        out = self.vision_llm(
            batch.input_ids,
            batch.attention_mask if mask4d is None else mask4d,
            batch.image_inputs,
            batch.token_fields,
            image_features=image_embeddings if self.vision_llm.uses_mask_head_features else None,
            inject=self._inject(image_embeddings, batch.regions),
            logits_mask=logits_mask,
            position_ids=batch.position_ids,
        )
        pos = seg_state_positions(batch.input_ids, self.tokens.seg)
        seg_hidden = out.hidden[pos]
        if seg_hidden.shape[0] != batch.seg_masks.shape[0]:
            raise ValueError(
                f"the batch has {seg_hidden.shape[0]} [SEG] tokens but {batch.seg_masks.shape[0]} mask targets"
            )
        mask_logits = iou = mask_index = prior = None
        n = seg_hidden.shape[0]
        if n:
            # the cheap seg prior maps every [SEG] (its loss sees them all); the costly decoder may decode a
            # random subset in training (max_train_masks), each decoded mask reading its own [SEG]'s map
            prior = self.seg_prior_maps(image_embeddings, seg_hidden, batch.seg_image_index)
            limit = self.options.max_train_masks
            if self.training and limit is not None and n > limit:
                mask_index = torch.randperm(n, device=seg_hidden.device)[:limit].sort().values
            rows = slice(None) if mask_index is None else mask_index
            mask_logits, iou, _ = self.decode_masks(
                image_embeddings,
                seg_hidden[rows],
                batch.seg_image_index[rows],
                batch.seg_boxes[rows],
                prior=None if prior is None else prior[rows],
            )
        fwd = GroundingForward(
            out.logits, seg_hidden, mask_logits, iou, image_embeddings, out.logits_mask, mask_index, prior
        )
        if self.presence_head is not None:
            starts = answer_start_positions(batch.labels)
            if starts.any():
                answer_rows = starts.nonzero()[:, 0]
                fwd.presence_logits = self.presence_head(
                    out.hidden[starts], image_embeddings, answer_rows.to(image_embeddings.device)
                )
                fwd.answer_image_index = answer_rows
                # each [SEG] belongs to the latest answer started at or before the state that predicts it
                latest = starts.flatten().long().cumsum(0).view_as(starts) - 1
                fwd.seg_answer_index = latest[pos]
        return fwd

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def generate(
        self,
        batch: GroundingBatch,
        max_new_tokens: int = 64,
        image_embeddings: torch.Tensor | None = None,
        refuse: Sequence[int] = (),
        **generate_kwargs,
    ) -> list[GeneratedAnswer]:
        """Greedy answers for a left-padded batch of requests, with one mask per generated [SEG]. ``refuse``: rows
        to be answered without [SEG] (``HeadOptions.check_by_description``): a row whose answer grounds something
        is generated again from the next-best first tokens, as where the presence head disagrees, and keeps the
        first answer without [SEG] (its own answer if none is found). Needs the presence head."""
        if refuse and (self.presence_head is None or self.options.presence_threshold is None):
            raise ValueError("generate(refuse=...) revises answers through the presence head: this model has none")
        if image_embeddings is None:
            image_embeddings = self.encode_images(batch.sam_images, batch.image_keys)
        seqs, hidden, first = self._generate_tokens(batch, image_embeddings, max_new_tokens, None, generate_kwargs)
        maps = self._presence_maps(image_embeddings, hidden)
        presence = None if maps is None else self._presence(batch, maps)
        if presence is None:
            prob = None
        elif self.options.presence_threshold is None:  # reported only
            prob = torch.sigmoid(presence.float()).tolist()
        else:
            prob = self._revise_by_presence(batch, image_embeddings, max_new_tokens, generate_kwargs, seqs, hidden, first,
                                            presence, refuse)
        tok = self.tokenizer
        answers: list[GeneratedAnswer] = []
        all_hidden, all_index, all_boxes, counts = [], [], [], []
        for b in range(batch.batch_size):
            seq = seqs[b]
            text = tok.decode(seq, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            geo = batch.geometries[b]
            h, w = geo.original_hw
            parsed = parse_answer(text, self.box_codec, (w, h))
            seg_t = [t for t, i in enumerate(seq) if i == self.tokens.seg]
            # the text parse and the token ids must agree on the number of [SEG]
            k = min(len(seg_t), parsed.num_seg)
            box_by_seg = {s.seg_index: s.box for s in parsed.segments if s.seg_index is not None}
            for j in range(k):
                all_hidden.append(hidden[b][seg_t[j]])
                all_index.append(b)
                box = box_by_seg.get(j)
                all_boxes.append(geo.boxes_to_input(box)[0] if box is not None else np.full(4, np.nan, np.float32))
            counts.append(k)
            answers.append(GeneratedAnswer(text, parsed, seq, None, None, None if prob is None else prob[b],
                                           None if maps is None else maps[b]))
        if all_hidden:
            dev = image_embeddings.device
            states = torch.stack(all_hidden)
            index = torch.tensor(all_index, device=dev)
            logits, iou, prior = self.decode_masks(
                image_embeddings, states, index, torch.from_numpy(np.stack(all_boxes)).to(dev)
            )
            best = None
            if self.mask_verifier is not None:
                logits, best = self.verify_masks(image_embeddings, states, index, logits, prior, groups=all_index,
                                                 images=self._verifier_images(batch))
            elif self.options.mask_one_part is not None:
                logits = keep_one_part(logits, self.options.mask_one_part, groups=all_index)
            if self.options.min_mask_cells:
                logits = empty_specks(logits, self.options.min_mask_cells / math.prod(self.mask_head.embedding_size))
            start = 0
            for a, k, geo in zip(answers, counts, batch.geometries):
                if k:
                    a.mask_logits = logits[start : start + k]
                    a.scores = iou[start : start + k, 0]
                    if self.options.prune_phrases is not None:
                        self._prune_phrases(a, None if best is None else best[start : start + k], geo)
                start += k
            if self.options.complete_captions:
                valid = batch.image_valid_masks
                for b, a in enumerate(answers):
                    self._complete_caption(a, valid[b], batch.geometries[b])
            for a, geo in zip(answers, batch.geometries):
                self._write_seg_boxes(a, geo)
        return answers

    def verify_masks(self, image_embeddings, seg_hidden, image_index, logits, prior, groups=None, presence=False,
                     images=None):
        """Cut N [SEG] masks (low-res logits N x 1 x h' x w') to the candidate the verifier scores highest against
        each state (``HeadOptions.verifier``; ``heads.select_parts``, rows of one group taking different
        candidates). Returns (the cut logits, N best verifier logits; -inf where a mask has no candidate).
        ``presence``: the N best logits are the presence verifier's (``HeadOptions.presence_verifier``) where
        the model has one. ``images``: B x 3 x S x S, the batch's input images (``GroundingBatch.sam_images``), read by
        a verifier of pixel colour (``HeadOptions.verifier_colour``)."""
        cands = mask_parts(logits, self.options.verify_thresholds)
        if len(cands) == 0:
            return select_parts(logits, cands, logits.new_zeros(0), groups)
        owner = cands.owner.to(image_embeddings.device)
        feats = self.mask_verifier.features(
            cands.masks, image_embeddings, image_index[owner], logits[owner], None if prior is None else prior[owner],
            images=images,
        )
        scores = self.mask_verifier(seg_hidden, feats, owner).float()
        cut, best = select_parts(logits, cands, scores, groups)
        if presence and self.presence_verifier is not None:
            evidence = self.presence_verifier(seg_hidden, feats, owner).float()
            best = torch.full_like(best, float("-inf")).scatter_reduce(0, owner, evidence, "amax")
        return cut, best

    @property
    def _stop_ids(self) -> set[int]:
        """Tokens that end a generated answer."""
        return {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}

    def _generate_tokens(self, batch, image_embeddings, max_new_tokens, force, generate_kwargs):
        """Greedy tokens of every row (cut at the first stop token), their states (B x T x D) and the first
        step's scores (B x V). ``force``: {row: token} forced as that row's first token."""
        control = _FirstTokenControl(force)
        kwargs = dict(generate_kwargs)
        kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", []), control])
        gen = self.vision_llm.generate(
            batch.input_ids,
            batch.attention_mask,
            batch.image_inputs,
            batch.token_fields,
            image_features=image_embeddings if self.vision_llm.uses_mask_head_features else None,
            inject=self._inject(image_embeddings, batch.regions),
            max_new_tokens=max_new_tokens,
            **kwargs,
        )
        stop = self._stop_ids
        seqs = []
        for b in range(batch.batch_size):
            seq = gen.sequences[b].tolist()
            seqs.append(seq[: next((t for t, i in enumerate(seq) if i in stop), len(seq))])
        return seqs, list(gen.hidden), control.first

    def _presence_maps(self, image_embeddings, hidden) -> torch.Tensor | None:
        """Presence maps B x 1 x h x w from the states that predicted each answer's first token (the state that has
        read the question; a forced first token does not change it), or None (no head)."""
        if self.presence_head is None or any(h.shape[0] == 0 for h in hidden):
            return None
        dev = image_embeddings.device
        first = torch.stack([h[0] for h in hidden])
        return self.presence_head(first, image_embeddings, torch.arange(len(hidden), device=dev))

    def _presence(self, batch, maps: torch.Tensor) -> torch.Tensor:
        """Presence logits B of the answers' presence maps (their largest logit over the image's pixels)."""
        return presence_scores(maps, batch.image_valid_masks.to(maps.device))

    def _complete_caption(self, answer: GeneratedAnswer, valid: torch.Tensor, geometry) -> None:
        """``HeadOptions.complete_captions`` for one answer, in place: each object its presence map finds that none
        of its masks covers is appended as ``<p>an object</p> [SEG]`` after its last [SEG] (or its box), the last after
        " and ", with that part as its mask (logits: the map's inside the part, ``-|map|`` outside), and the list
        rejoined (``parse.relist_segments``: "A and B, C and D" -> "A, B, C and D"); ``scores`` get the part's mean
        probability. Answers without phrase-grounded [SEG]s, or whose masks and [SEG]s disagree, are left alone."""
        if answer.presence_map is None or answer.mask_logits is None or len(answer.mask_logits) != answer.parsed.num_seg:
            return
        if not any(s.phrase is not None and s.seg_index is not None for s in answer.parsed.segments):
            return
        low = answer.mask_logits
        hw = low.shape[-2:]
        m = F.interpolate(answer.presence_map[None].float(), hw, mode="bilinear", align_corners=False)[0, 0]
        ok = F.interpolate(valid[None, None].float(), hw, mode="nearest")[0, 0].to(m.device) > 0.5
        parts = uncovered_parts(m, (low > 0).any(0)[0].to(m.device), ok)
        if not parts:
            return
        new = torch.stack([torch.where(p, m, -m.abs()) for p in parts])[:, None].to(low.dtype)
        answer.mask_logits = torch.cat([low, new.to(low.device)])
        prob = torch.stack([torch.sigmoid(m[p]).mean() for p in parts]).to(answer.scores.device, answer.scores.dtype)
        answer.scores = torch.cat([answer.scores, prob])
        at = answer.text.rfind(SEG) + len(SEG)
        if answer.text.startswith(BOX_END, at):  # a last "<box>[SEG]</box>": after its box
            at += len(BOX_END)
        item = f"{PHRASE_START}{COMPLETED_PHRASE}{PHRASE_END} {SEG}"
        added = "".join(f", {item}" for _ in parts[1:]) + f" and {item}"  # the list's new last item after "and"
        h, w = geometry.original_hw
        text = answer.text[:at] + added + answer.text[at:]
        answer.text, _ = relist_segments(text, parse_answer(text, self.box_codec, (w, h)))
        answer.parsed = parse_answer(answer.text, self.box_codec, (w, h))

    def _prune_phrases(self, answer: GeneratedAnswer, best: torch.Tensor | None, geometry) -> None:
        """``HeadOptions.prune_phrases`` for one answer, in place. ``best``: its [SEG]s' best verifier logits (None:
        no verifier, only empty masks go)."""
        logits = answer.mask_logits
        if logits is None or len(logits) != answer.parsed.num_seg:
            return
        phrased = [s.seg_index for s in answer.parsed.segments if s.seg_index is not None and s.phrase is not None]
        if len(phrased) < 2:
            return
        empty = ~(logits > 0).flatten(1).any(1)
        weak = torch.zeros_like(empty)
        if best is not None:
            weak = torch.sigmoid(best.float()).to(empty.device) < self.options.prune_phrases
        drop = [j for j in phrased if bool(empty[j] or weak[j])]
        if not drop:
            return
        h, w = geometry.original_hw
        answer.text, kept = relist_segments(answer.text, answer.parsed, drop)
        answer.parsed = parse_answer(answer.text, self.box_codec, (w, h))
        answer.mask_logits = logits[kept]
        answer.scores = answer.scores[kept]

    def _seg_evidence(self, batch, image_embeddings, seqs, hidden, rows) -> dict[int, float]:
        """{row: the evidence of its answer's [SEG] state} for the given rows whose answer has exactly one [SEG]: the
        verifier's best logit over its candidates (``HeadOptions.verifier_presence``), else the largest seg-prior
        logit over its image (``HeadOptions.presence_fusion``). With ``verifier_presence_multi`` also rows with
        several [SEG]: the largest of their states' best logits."""
        multi = self._verifier_decides and self.options.verifier_presence_multi
        owners, states = [], []
        for b in rows:
            at = [t for t, i in enumerate(seqs[b]) if i == self.tokens.seg]
            if len(at) == 1 or (multi and at):
                owners.extend([b] * len(at))
                states.extend(hidden[b][t] for t in at)
        if not owners:
            return {}
        dev = image_embeddings.device
        index = torch.tensor(owners, device=dev)
        states = torch.stack(states)
        if self._verifier_decides:  # the verifier's best logit over the [SEG]'s candidates
            logits, _, prior = self.decode_masks(image_embeddings, states, index, None)
            _, best = self.verify_masks(image_embeddings, states, index, logits, prior, presence=True,
                                        images=self._verifier_images(batch))
            out: dict[int, float] = {}
            for b, v in zip(owners, best.tolist()):
                out[b] = max(out.get(b, float("-inf")), v)
            return out
        maps = self.seg_prior(states, image_embeddings, index)
        return dict(zip(owners, presence_scores(maps, batch.image_valid_masks.to(dev)[index]).tolist()))

    def _verifier_images(self, batch):
        """The batch's input images where the verifiers read pixel colour (``HeadOptions.verifier_colour``), else None."""
        return batch.sam_images if self.options.verifier_colour else None

    @property
    def _verifier_decides(self) -> bool:
        """Whether the verifier decides the presence of one-[SEG] answers (``HeadOptions.verifier_presence``)."""
        return self.mask_verifier is not None and self.options.verifier_presence

    def _presence_probability(self, head_logit: float, evidence: float | None) -> float:
        """The presence head's probability; for an answer with evidence (one [SEG], or several with
        ``verifier_presence_multi``), the verifier's probability
        (``HeadOptions.verifier_presence``) or the head fused with the seg prior (``presence_fusion``)."""
        fusion = self.options.presence_fusion
        logit = head_logit
        if self._verifier_decides and evidence is not None:
            logit = evidence
            vf = self.options.verifier_fusion
            if vf is not None and math.isfinite(evidence):  # (no candidate at all, -inf: absent whatever the head)
                logit = vf[0] * head_logit + vf[1] * evidence + vf[2]
        elif fusion is not None and evidence is not None:
            w_head, w_prior, bias = fusion
            logit = w_head * head_logit + w_prior * evidence + bias
        return 1.0 / (1.0 + math.exp(-min(max(logit, -60.0), 60.0)))

    def _accepts(self, prob: float, evidence: float | None) -> bool:
        """Whether a [SEG] answer of this presence probability grounds something: above ``verifier_threshold``
        where the verifier decided it (one [SEG], ``verifier_presence``), else above ``presence_threshold``."""
        t = self.options.verifier_threshold
        if t is None or evidence is None or not self._verifier_decides:
            t = self.options.presence_threshold
        return prob > t

    def _revise_by_presence(self, batch, image_embeddings, max_new_tokens, generate_kwargs, seqs, hidden, first, presence,
                            refuse: Sequence[int] = ()):
        """Where an answer's having [SEG] disagrees with the presence probability (``HeadOptions.presence_threshold``;
        fused with the [SEG]'s seg-prior evidence with ``presence_fusion``), generate it again from the language
        model's next-best first tokens (up to ``presence_retries``) and keep the first answer that agrees (in place).
        Returns each row's presence probability (of the answer kept, or of the best [SEG] answer checked)."""
        opts = self.options
        # evidence from the verifier, or from the seg prior (__init__ made sure there is one to fuse)
        fused = opts.presence_fusion is not None or self._verifier_decides
        heads = presence.float().tolist()
        has_seg = [self.tokens.seg in seq for seq in seqs]
        evidence = self._seg_evidence(batch, image_embeddings, seqs, hidden, range(len(seqs))) if fused else {}
        prob = [self._presence_probability(h, evidence.get(b)) for b, h in enumerate(heads)]
        if fused:  # an answer without [SEG] is re-checked with a [SEG] answer where the head leans towards one
            want = [self._accepts(p, evidence.get(b)) if has_seg[b] else (p > opts.presence_recheck) for b, p in enumerate(prob)]
        else:
            want = [p > opts.presence_threshold for p in prob]
        for b in refuse:  # generate(refuse=...): answered without [SEG] whatever the presence call
            want[b] = False
        todo = [b for b in range(len(seqs)) if has_seg[b] != want[b]]
        if not todo or first is None:
            return prob
        stop = self._stop_ids
        n = opts.presence_retries
        ranked = first.float().topk(min(first.shape[-1], n + len(stop) + 1), dim=-1).indices.tolist()
        # next-best first tokens of each row: not the one it chose, not a stop token (an empty answer)
        alternatives = {b: [t for t in ranked[b] if t not in stop and t != (seqs[b][0] if seqs[b] else None)][:n] for b in todo}
        checked: set[int] = set()
        for r in range(n):
            force = {b: alternatives[b][r] for b in todo if r < len(alternatives[b])}
            if not force:
                break
            new_seqs, new_hidden, _ = self._generate_tokens(batch, image_embeddings, max_new_tokens, force, generate_kwargs)
            new_evidence = self._seg_evidence(batch, image_embeddings, new_seqs, new_hidden, [b for b in force if want[b]]) if fused else {}
            for b in force:
                if (self.tokens.seg in new_seqs[b]) != want[b]:
                    continue
                if want[b] and fused:  # a [SEG] answer found for an answer without: its (fused) probability decides
                    p = self._presence_probability(heads[b], new_evidence.get(b))
                    prob[b] = p if b not in checked else max(prob[b], p)
                    checked.add(b)
                    if not self._accepts(p, new_evidence.get(b)):
                        continue
                seqs[b], hidden[b] = new_seqs[b], new_hidden[b]
            todo = [b for b in todo if (self.tokens.seg in seqs[b]) != want[b]]
            if not todo:
                break
        return prob

    def _write_seg_boxes(self, answer: GeneratedAnswer, geometry) -> None:
        """Write the box of each ``<box>[SEG]</box>`` (``ProcessorConfig.box_from_seg``) into the text: it
        becomes ``<box>[x1, y1, x2, y2]</box> [SEG]`` with the box of that [SEG]'s mask in the original frame
        (the box then reads like any written box, and the [SEG] keeps its mask); the answer is parsed again.
        The box is that of the mask's main parts (``data.masks.dominant_box``: stray specks left out)."""
        text = answer.text
        if f"{BOX_START}{SEG}{BOX_END}" not in text or answer.mask_logits is None:
            return
        h, w = geometry.original_hw
        pieces = text.split(SEG)
        out = [pieces[0]]
        for j, rest in enumerate(pieces[1:]):
            if j < len(answer.mask_logits) and out[-1].endswith(BOX_START) and rest.startswith(BOX_END):
                # only this [SEG]'s mask goes to full resolution (the others stay low-res for the caller)
                logit = geometry.logits_to_original(answer.mask_logits[j : j + 1].float())[0, 0]
                mask = (logit > 0).cpu().numpy()
                if mask.any():
                    box = dominant_box(mask)
                else:  # an empty mask: the box of its most confident pixel
                    y, x = divmod(int(logit.argmax()), logit.shape[1])
                    box = np.array([x, y, x + 1, y + 1], np.float32)
                out[-1] = out[-1][: -len(BOX_START)] + self.box_codec.encode(box, (w, h)) + " "
                rest = rest[len(BOX_END) :]
            out.append(SEG)
            out.append(rest)
        answer.text = "".join(out)
        answer.parsed = parse_answer(answer.text, self.box_codec, (w, h))
