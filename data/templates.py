"""Instruction templates: turn an expression and its targets into a structured ``Turn``.

Prompts vary their wording (sampled with the caller's ``numpy.random.Generator``, so a seeded dataset stays
deterministic); answers are short and use one canonical form per task, so a model learns them quickly. Answers
are structured parts: ``GroundRef`` marks where the model's processor writes ``[SEG]``, a box or a phrase span.
No token strings appear here.

Expressions are noun phrases. With or without a determiner both work: ``"the red circle"``,
``"all the red shapes"`` and RefCOCO-style ``"man in red shirt"`` (given ``"the "`` in prompts).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from data.sample import AnswerPart, GroundRef, PromptPart, RegionRef, Task, Turn

# Words that already start a determined noun phrase: no "the" is added before them.
_DETERMINERS = frozenset(
    "the a an all both every each any some this that these those my your his her its our their no "
    "one two three four five six seven eight nine ten several many".split()
)
# First words that make the phrase plural (verb agreement: "are", pronoun "them"/"their").
_PLURAL_DETERMINERS = frozenset(
    "all both these those two three four five six seven eight nine ten several many".split()
)

_SINGULAR_PROMPTS: tuple[str, ...] = (
    "Please segment {e}.",
    "Segment {e}.",
    "Can you segment {e} in this image?",
    "Could you segment {e}?",
    "Where is {e}? Please output its segmentation mask.",
    "What is {e} in this picture? Please respond with a segmentation mask.",
    "Please highlight {e} with a mask.",
    "Give me the mask of {e}.",
    "Find {e} and segment it.",
    "Show me {e} in the image with a mask.",
)
_PLURAL_PROMPTS: tuple[str, ...] = (
    "Please segment {e}.",
    "Segment {e}.",
    "Can you segment {e} in this image?",
    "Could you segment {e}?",
    "Where are {e}? Please output their segmentation masks.",
    "Please highlight {e} with masks.",
    "Give me the masks of {e}.",
    "Find {e} and segment them.",
    "Show me {e} in the image with masks.",
)
_REASON_SENTENCE_PROMPTS: tuple[str, ...] = (
    "{q} Please output the segmentation mask.",
    "{q} Please respond with a segmentation mask.",
    "{q} Segment it.",
    "{q}",
)
_REASON_PHRASE_PROMPTS: tuple[str, ...] = (
    "What is {e} in this image? Please output the segmentation mask.",
    "Please segment {e}.",
    "Which object is {e}? Please respond with a segmentation mask.",
    "Can you find {e}? Please segment it.",
)
_REC_PROMPTS: tuple[str, ...] = (
    "Where is {e}? Give its bounding box.",
    "Please give the bounding box of {e}.",
    "Locate {e} and output its bounding box.",
    "What are the box coordinates of {e}?",
    "Detect {e}.",
    "Find {e} in the image and give its box.",
    "Output the bounding box of {e}.",
)
_CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image with grounded phrases.",
    "Can you describe this image? Please output interleaved segmentation masks.",
    "Please describe the image and segment each object you mention.",
    "Give a grounded caption of this image.",
    "What is in this image? Answer with a caption where every object has its mask.",
    "Describe the scene and ground each object.",
)
# Region prompts: (before, after) the RegionRef.
_REGION_PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is in ", "?"),
    ("What is the object in ", "?"),
    ("What is ", "?"),
    ("Please describe ", " briefly."),
    ("Can you tell me what ", " is?"),
    ("Name the object in ", "."),
    ("What kind of object is in ", "?"),
)


def _choice(options: Sequence, rng: np.random.Generator):
    return options[int(rng.integers(len(options)))]


def _first_word(expression: str) -> str:
    words = expression.strip().split()
    return words[0].lower() if words else ""


def with_determiner(expression: str) -> str:
    """``expression`` as a determined noun phrase: ``"red circle"`` -> ``"the red circle"``; phrases that
    already start with a determiner (``"the ..."``, ``"all the ..."``, ``"two ..."``) are kept as they are."""
    e = expression.strip().rstrip(".?!").strip()
    return e if _first_word(e) in _DETERMINERS else f"the {e}"


def bare_noun_phrase(expression: str) -> str:
    """``expression`` without its leading determiners: ``"all the red shapes"`` -> ``"red shapes"``."""
    words = expression.strip().rstrip(".?!").strip().split()
    while len(words) > 1 and words[0].lower() in _DETERMINERS and words[0].lower() not in ("no",):
        words = words[1:]
    return " ".join(words)


def is_plural(expression: str) -> bool:
    """Whether ``expression`` names several things, judged by its first word (``all``, ``both``, numerals)."""
    return _first_word(expression) in _PLURAL_DETERMINERS


def no_target_answer(expression: str, plural: bool | None = None) -> str:
    """The answer when nothing matches: ``"There is no red circle in the image."`` /
    ``"There are no red shapes in the image."``."""
    plural = is_plural(expression) if plural is None else plural
    noun = bare_noun_phrase(expression)
    return f"There are no {noun} in the image." if plural else f"There is no {noun} in the image."


def ground_list(targets: Sequence[int], **ref_kwargs) -> tuple[AnswerPart, ...]:
    """``GroundRef`` parts joined as an English list: ``(g0,)``, ``(g0, " and ", g1)``,
    ``(g0, ", ", g1, " and ", g2)``."""
    refs = [GroundRef(int(t), **ref_kwargs) for t in targets]
    parts: list[AnswerPart] = []
    for i, r in enumerate(refs):
        if i > 0:
            parts.append(" and " if i == len(refs) - 1 else ", ")
        parts.append(r)
    return tuple(parts)


def segmentation_answer(targets: Sequence[int], expression: str, plural: bool | None = None) -> tuple[AnswerPart, ...]:
    """Canonical segmentation answer: ``"Sure, it is [SEG]."``, ``"Sure, they are [SEG], [SEG] and [SEG]."``;
    with no targets the no-target sentence (no ``GroundRef``)."""
    if len(targets) == 0:
        return (no_target_answer(expression, plural),)
    if len(targets) == 1:
        return ("Sure, it is ", *ground_list(targets), ".")
    return ("Sure, they are ", *ground_list(targets), ".")


def _default_task(targets: Sequence[int]) -> Task:
    if len(targets) == 0:
        return Task.RES_NONE
    return Task.RES if len(targets) == 1 else Task.RES_MULTI


def referring_turn(
    expression: str,
    targets: Sequence[int],
    rng: np.random.Generator,
    task: Task | None = None,
    plural: bool | None = None,
) -> Turn:
    """A referring-segmentation turn: the prompt asks to segment ``expression``; the answer has one
    ``GroundRef(index, seg=True)`` per target, in the given order (none for zero targets).

    ``task`` defaults to RES / RES_MULTI / RES_NONE by ``len(targets)``. ``plural`` (verb agreement in the
    prompt and the no-target answer) defaults to the expression's first word, or to several targets.
    """
    targets = [int(t) for t in targets]
    e = with_determiner(expression)
    if plural is None:
        plural = is_plural(e) or len(targets) > 1
    template = _choice(_PLURAL_PROMPTS if plural else _SINGULAR_PROMPTS, rng)
    return Turn(
        prompt=(template.format(e=e),),
        answer=segmentation_answer(targets, e, plural),
        task=_default_task(targets) if task is None else task,
        expression=expression,
    )


def reasoning_turn(question: str, targets: Sequence[int], rng: np.random.Generator) -> Turn:
    """A reasoning-segmentation turn (ReasonSeg style, task REASON).

    ``question`` is a full sentence (ends with ``?`` or ``.``: "Which shape is the largest?") or a descriptive
    noun phrase ("the shape left of the blue circle"); the answer is as in ``referring_turn``. With zero targets
    the answer says nothing in the image matches.
    """
    targets = [int(t) for t in targets]
    q = question.strip()
    if q.endswith(("?", ".")):
        prompt = _choice(_REASON_SENTENCE_PROMPTS, rng).format(q=q)
        if targets:
            answer = segmentation_answer(targets, q)
        else:
            answer = ("There is no such object in the image.",)
    else:
        e = with_determiner(q)
        prompt = _choice(_REASON_PHRASE_PROMPTS, rng).format(e=e)
        answer = segmentation_answer(targets, e, plural=is_plural(e) or len(targets) > 1)
    return Turn(prompt=(prompt,), answer=answer, task=Task.REASON, expression=question)


def rec_turn(expression: str, target: int | None, rng: np.random.Generator) -> Turn:
    """Referring expression comprehension (task REC): the answer writes the target's box as text,
    ``("It is at ", GroundRef(target, box=True, seg=False), ".")``; ``None`` -> the no-target sentence."""
    e = with_determiner(expression)
    prompt = _choice(_REC_PROMPTS, rng).format(e=e)
    if target is None:
        answer: tuple[AnswerPart, ...] = (no_target_answer(e, plural=False),)
    else:
        answer = ("It is at ", GroundRef(int(target), box=True, seg=False), ".")
    return Turn(prompt=(prompt,), answer=answer, task=Task.REC, expression=expression)


def caption_turn(parts: Sequence[str | tuple[str, int]], rng: np.random.Generator) -> Turn:
    """A grounded caption (task GCG). ``parts`` interleave plain text and ``(phrase, target_index)`` pairs;
    each pair becomes ``GroundRef(index, phrase=phrase, seg=True)`` (written ``<p>phrase</p> [SEG]``)."""
    answer: list[AnswerPart] = []
    for p in parts:
        if isinstance(p, str):
            if p:
                answer.append(p)
        else:
            phrase, index = p
            answer.append(GroundRef(int(index), phrase=str(phrase), seg=True))
    return Turn(prompt=(_choice(_CAPTION_PROMPTS, rng),), answer=tuple(answer), task=Task.GCG)


def region_turn(region: int, answer: str, rng: np.random.Generator) -> Turn:
    """A question about a user-given region (task REGION): the prompt holds ``RegionRef(region)`` (an index
    into ``GroundingSample.regions``); ``answer`` is plain text, e.g. ``"It is a red circle."``."""
    before, after = _choice(_REGION_PROMPTS, rng)
    prompt: tuple[PromptPart, ...] = (before, RegionRef(int(region)), after)
    return Turn(prompt=prompt, answer=(answer,), task=Task.REGION)


# Ways a user may type a prompt that the templates above never do (``restyle_prompt``).
PROMPT_STYLES: tuple[str, ...] = ("bare", "lower", "upper", "title", "unpunctuated")
# Tasks whose prompt may be the expression alone: a bare noun phrase asks for its mask.
_BARE_TASKS = frozenset({Task.RES, Task.RES_MULTI, Task.RES_NONE, Task.REASON})


def _restyle_text(text: str, style: str) -> str:
    if style == "lower":
        return text.lower()
    if style == "upper":
        return text.upper()
    if style == "title":
        return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))
    return text.rstrip(".?! ")  # "unpunctuated"


_WORD = re.compile(r"[^\W\d_][\w'-]*")
_SENTENCE_START = re.compile(r"(^|[.?!]\s+)([^\W\d_])")


def sentence_case(text: str, keep: Sequence[str] = ()) -> str:
    """``text`` typed in capitals ("SEGMENT THE RED CIRCLE.") or with every word capitalised ("Segment The Red
    Circle.") rewritten in sentence case, as the templates write prompts ("Segment the red circle."); any other text
    is returned unchanged, so ordinary prompts, proper nouns in them included, are left alone. ``keep``: substrings
    (placeholders such as ``<region>``) ignored when judging the case and kept as they are. The inverse of
    ``restyle_prompt``'s "upper" and "title" styles."""
    probe = text
    for k in keep:
        probe = probe.replace(k, " ")
    words = _WORD.findall(probe)
    letters = [c for w in words for c in w if c.isalpha()]
    shouted = len(letters) >= 2 and all(c.isupper() for c in letters)
    titled = len(words) >= 2 and all(w[0].isupper() for w in words)
    if not (shouted or titled):
        return text
    pieces = re.split("(" + "|".join(re.escape(k) for k in keep) + ")", text) if keep else [text]
    out = "".join(p if p in keep else p.lower() for p in pieces)
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), out)


def restyle_prompt(turn: Turn, rng: np.random.Generator, style: str | None = None) -> Turn:
    """``turn`` with its prompt typed another way; the answer is unchanged.

    ``style`` (default: drawn with ``rng`` from ``PROMPT_STYLES``): ``"bare"`` the expression alone, as a
    search box gets it (``"red circle"``, ``"the red circle?"``; only for referring and reasoning turns with an
    expression, others fall back to another style), ``"lower"``, ``"upper"`` (``"SEGMENT THE RED CIRCLE."``),
    ``"title"`` (``"Segment The Red Circle."``) or ``"unpunctuated"`` (final ``.?!`` dropped). Region markers in
    the prompt are kept in place.
    """
    if style is not None and style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    bare_ok = turn.task in _BARE_TASKS and bool(turn.expression)
    if style is None or (style == "bare" and not bare_ok):
        style = _choice(PROMPT_STYLES if style is None and bare_ok else PROMPT_STYLES[1:], rng)
    if style == "bare":
        e = str(turn.expression).strip()
        if not e.endswith(("?", ".")):  # a phrase: with or without its article, and sometimes "?" or "."
            e = bare_noun_phrase(e) if rng.random() < 0.5 else with_determiner(e)
            e += _choice(("", "", "?", "."), rng)
        prompt: tuple[PromptPart, ...] = (e,)
    elif style == "unpunctuated":  # only the last part ends the prompt
        last = turn.prompt[-1]
        prompt = (*turn.prompt[:-1], _restyle_text(last, style)) if isinstance(last, str) else turn.prompt
        prompt = tuple(p for p in prompt if p != "")
    else:
        prompt = tuple(_restyle_text(p, style) if isinstance(p, str) else p for p in turn.prompt)
    return dataclasses.replace(turn, prompt=prompt)


__all__ = [
    "bare_noun_phrase",
    "caption_turn",
    "ground_list",
    "is_plural",
    "no_target_answer",
    "reasoning_turn",
    "rec_turn",
    "referring_turn",
    "region_turn",
    "restyle_prompt",
    "sentence_case",
    "PROMPT_STYLES",
    "segmentation_answer",
    "with_determiner",
]
