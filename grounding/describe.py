"""Re-describe the phrases of an answer from its own masks (``HeadOptions.describe_phrases``).

A grounded caption is written phrase first: "<p>a red circle</p> [SEG], <p>a blue star</p> [SEG] ...". The
language model must name each object from its few pooled image tokens before the [SEG] that finds it, and a
small model names them badly even where its masks find the right objects. The region encoder reads an object
from SAM's full-resolution features instead (the task the model answers best). So, after generation, each
phrase that grounds a [SEG] is asked again as a region question about the box of that [SEG]'s own mask,
``"What is in <region>?"``, and the phrase becomes the answer's noun phrase ("It is a red circle." ->
"a red circle"). The masks and the rest of the text are kept; ``GeneratedAnswer.token_ids`` stay those the
language model generated.

It runs where answers meet the processor: ``GroundingPredictor`` (API, CLI, server) and the ``Evaluator``
(``grounding validate`` / ``test``), so what is measured is what users get.

The same region question checks answers the presence call is unsure of (``HeadOptions.check_by_description``,
:func:`check_by_description`): "Sure, it is [SEG]." to "Segment the blue circle." whose mask the model itself
describes as "a green circle" grounded some other object, and is generated again without [SEG].
"""

from __future__ import annotations

import re

import numpy as np
import torch

from data.masks import dominant_box
from grounding.parse import parse_answer
from grounding.tokens import PHRASE_END, PHRASE_START, REGION

DESCRIBE_PROMPT = f"What is in {REGION}?"
"""The region question each phrase is asked again with (one of the region prompts the model was trained on)."""

_BARE_SUBJECT = re.compile(r"\s*(?:it|this|that|there)(?:'s|\s+is|\s+are)?\s*", re.IGNORECASE)
_SUBJECT = re.compile(r"^\s*(?:it|this|that|there)\s*(?:'s|\s+is|\s+are|\s+shows)\s+", re.IGNORECASE)


def answer_phrase(text: str) -> str | None:
    """The noun phrase of a short answer about one region: "It is a red circle." -> "a red circle" (a leading
    "it is" / "this is" / "that's" ... and the final punctuation removed); None when nothing is left."""
    t = re.sub(r"[\s.!?;:,]+$", "", text.strip())
    if _BARE_SUBJECT.fullmatch(t):
        return None
    t = _SUBJECT.sub("", t).strip()
    if not t or PHRASE_START in t or PHRASE_END in t:
        return None
    first = t.split()[0]
    return t if len(first) > 1 and first.isupper() else t[0].lower() + t[1:]  # (an acronym keeps its capitals)


def _describe_boxes(model, processor, images, image_embeddings, jobs, max_new_tokens: int = 24) -> list[str]:
    """The model's answers (grounding tokens removed) to :data:`DESCRIBE_PROMPT` about each (image index, box) of
    ``jobs``, in one left-padded batch that reuses those images' embeddings."""
    reqs = [processor.encode_request(images[a], DESCRIBE_PROMPT, box[None]) for a, box in jobs]
    dev = image_embeddings.device
    batch = processor.collate(reqs, padding_side="left").to(dev)
    emb = image_embeddings[torch.tensor([a for a, _ in jobs], device=dev)]
    return [d.parsed.clean_text for d in model.generate(batch, max_new_tokens=max_new_tokens, image_embeddings=emb)]


@torch.no_grad()
def describe_phrases(model, processor, images, answers, geometries, image_embeddings, max_new_tokens: int = 24) -> int:
    """Re-write, in place, each ``<p>phrase</p>`` that grounds a [SEG] of ``answers`` (one per image of
    ``images`` / ``geometries`` / ``image_embeddings`` rows) with the model's answer to :data:`DESCRIBE_PROMPT`
    about the box of that [SEG]'s mask; the answers are parsed again. Phrases whose mask is empty or whose
    region answer has no phrase are kept. Returns how many phrases were asked."""
    jobs: list[tuple[int, int, np.ndarray]] = []  # (answer, phrase start in its text, region box)
    for a, ans in enumerate(answers):
        if ans.mask_logits is None:
            continue
        full = None
        for s in ans.parsed.segments:
            if s.phrase is None or s.seg_index is None or s.seg_index >= len(ans.mask_logits):
                continue
            if full is None:
                full = geometries[a].logits_to_original(ans.mask_logits.float()).cpu().numpy()[:, 0] > 0
            box = dominant_box(full[s.seg_index])
            if box[2] > box[0] and box[3] > box[1]:
                jobs.append((a, s.start, box))
    if not jobs:
        return 0
    described = _describe_boxes(model, processor, images, image_embeddings, [(a, box) for a, _, box in jobs], max_new_tokens)
    edits: dict[int, list[tuple[int, str]]] = {}
    for (a, start, _), d in zip(jobs, described):
        phrase = answer_phrase(d)
        if phrase is not None:
            edits.setdefault(a, []).append((start, phrase))
    for a, items in edits.items():
        ans, text = answers[a], answers[a].text
        for start, phrase in sorted(items, reverse=True):  # from the end, so earlier offsets stay valid
            at = start + len(PHRASE_START)
            end = text.find(PHRASE_END, at)
            if text.startswith(PHRASE_START, start) and end >= 0:
                text = text[:at] + phrase + text[end:]
        h, w = geometries[a].original_hw
        ans.text = text
        ans.parsed = parse_answer(text, model.box_codec, (w, h))
    return len(jobs)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower()))


def contradicts(prompt: str, description: str, groups) -> bool:
    """Whether ``description`` names another word of a group ``prompt`` names exactly one word of: "the blue
    circle" / "It is a green circle." with groups (colours, shapes) -> True; a group the prompt names two or more
    words of (two objects: "the circle left of the square") or none of, or the description none of, says nothing."""
    asked, said = _words(prompt), _words(description)
    for group in groups:
        g = {w.lower() for w in group}
        p, d = asked & g, said & g
        if len(p) == 1 and d and not (p & d):
            return True
    return False


@torch.no_grad()
def check_by_description(model, processor, images, prompts, regions, answers, geometries, image_embeddings,
                         max_new_tokens: int = 64) -> list[int]:
    """``HeadOptions.check_by_description``, in place: each answer with [SEG] (not a caption's phrases) whose presence
    probability is below the option, to a prompt naming exactly one word of a group of
    ``HeadOptions.description_words``, is checked by asking :data:`DESCRIBE_PROMPT` about the box of each of its
    masks; an answer all of whose descriptions :func:`contradicts` ("all the yellow shapes" whose two masks are
    described as orange) is generated again without [SEG] (``GroundingModel.generate(refuse=...)``) and replaced
    where that finds such an answer. ``prompts`` / ``regions`` / ``images``: the requests' own (a prompt: str or
    ``Turn``; regions: R x 4 or None). A replacing refusal keeps the descriptions in ``GeneratedAnswer.refused_by``.
    Returns the indices of the answers replaced."""
    below, groups = model.options.check_by_description, model.options.description_words
    if below is None:
        return []
    jobs: list[tuple[int, np.ndarray]] = []  # (answer, box of one of its [SEG] masks)
    asked: dict[int, str] = {}  # the prompts of the answers checked, as the model read them
    for a, ans in enumerate(answers):
        n = ans.parsed.num_seg
        if ans.presence is None or ans.presence >= below or n == 0 or ans.mask_logits is None or len(ans.mask_logits) != n:
            continue
        if any(s.phrase is not None for s in ans.parsed.segments):  # a caption: its phrases are described instead
            continue
        text = processor.render_prompt(prompts[a])
        words = _words(text)
        if not any(len(words & {w.lower() for w in g}) == 1 for g in groups):
            continue
        asked[a] = text
        masks = geometries[a].logits_to_original(ans.mask_logits.float()).cpu().numpy()[:, 0] > 0
        jobs.extend((a, dominant_box(m)) for m in masks if m.any())
    if not jobs:
        return []
    said: dict[int, list[str]] = {}  # an answer is wrong when every one of its masks is described otherwise
    for (a, _), d in zip(jobs, _describe_boxes(model, processor, images, image_embeddings, jobs)):
        said.setdefault(a, []).append(d)
    wrong = [a for a, ds in said.items() if all(contradicts(asked[a], d, groups) for d in ds)]
    if not wrong:
        return []
    dev = image_embeddings.device
    reqs = [processor.encode_request(images[a], prompts[a], regions[a]) for a in wrong]
    batch = processor.collate(reqs, padding_side="left").to(dev)
    again = model.generate(batch, max_new_tokens=max_new_tokens, image_embeddings=image_embeddings[wrong],
                           refuse=range(len(wrong)))
    replaced = []
    for a, ans in zip(wrong, again):
        if ans.parsed.num_seg == 0:
            ans.refused_by = said[a]
            answers[a] = ans
            replaced.append(a)
    return replaced
