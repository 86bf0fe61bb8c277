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
    reqs = [processor.encode_request(images[a], DESCRIBE_PROMPT, box[None]) for a, _, box in jobs]
    dev = image_embeddings.device
    batch = processor.collate(reqs, padding_side="left").to(dev)
    emb = image_embeddings[torch.tensor([a for a, _, _ in jobs], device=dev)]
    described = model.generate(batch, max_new_tokens=max_new_tokens, image_embeddings=emb)
    edits: dict[int, list[tuple[int, str]]] = {}
    for (a, start, _), d in zip(jobs, described):
        phrase = answer_phrase(d.parsed.clean_text)
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
