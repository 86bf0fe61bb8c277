"""Templates: structure of turns (tasks, references, expressions) and natural wording."""

from __future__ import annotations

import numpy as np
import pytest

from data.sample import GroundRef, RegionRef, Task
from data.templates import (
    bare_noun_phrase,
    caption_turn,
    no_target_answer,
    reasoning_turn,
    rec_turn,
    referring_turn,
    region_turn,
    restyle_prompt,
    sentence_case,
    with_determiner,
)


def _answer_text(turn) -> str:
    return "".join(p if isinstance(p, str) else "[SEG]" for p in turn.answer)


@pytest.mark.parametrize("targets,task", [([0], Task.RES), ([0, 2, 1], Task.RES_MULTI), ([], Task.RES_NONE)])
def test_referring_turn_task_and_refs(targets, task):
    rng = np.random.default_rng(0)
    t = referring_turn("the red circle", targets, rng)
    assert t.task == task
    assert t.expression == "the red circle"
    assert t.target_indices == targets
    assert all(g.seg and not g.box and g.phrase is None for g in t.grounds)
    assert "the red circle" in t.prompt_text()


def test_referring_answers_read_naturally():
    rng = np.random.default_rng(0)
    assert _answer_text(referring_turn("the red circle", [3], rng)) == "Sure, it is [SEG]."
    assert _answer_text(referring_turn("all the circles", [0, 1], rng)) == "Sure, they are [SEG] and [SEG]."
    assert _answer_text(referring_turn("all the circles", [0, 1, 2], rng)) == "Sure, they are [SEG], [SEG] and [SEG]."
    assert _answer_text(referring_turn("the red circle", [], rng)) == "There is no red circle in the image."
    assert _answer_text(referring_turn("all the red shapes", [], rng)) == "There are no red shapes in the image."
    assert _answer_text(referring_turn("man in red shirt", [], rng)) == "There is no man in red shirt in the image."


def test_referring_prompts_vary_and_agree():
    rng = np.random.default_rng(1)
    singular = {referring_turn("the blue square", [0], rng).prompt_text() for _ in range(200)}
    plural = {referring_turn("all the blue shapes", [0, 1], rng).prompt_text() for _ in range(200)}
    assert len(singular) >= 6 and len(plural) >= 6
    assert "Please segment the blue square." in singular
    assert not any("Where are" in p or "their" in p for p in singular)
    assert not any("Where is" in p or " its " in p for p in plural)
    # RefCOCO-style expressions without a determiner get one.
    assert "the man on the left" in referring_turn("man on the left", [0], rng).prompt_text()


def test_explicit_task_is_kept():
    t = referring_turn("all the red shapes", [4], np.random.default_rng(0), task=Task.RES_MULTI)
    assert t.task == Task.RES_MULTI and t.target_indices == [4]


def test_determiner_helpers():
    assert with_determiner("red circle") == "the red circle"
    assert with_determiner("all the red shapes") == "all the red shapes"
    assert bare_noun_phrase("all the red shapes") == "red shapes"
    assert no_target_answer("the purple star") == "There is no purple star in the image."


def test_reasoning_turn():
    rng = np.random.default_rng(0)
    t = reasoning_turn("Which shape is the largest?", [2], rng)
    assert t.task == Task.REASON and t.target_indices == [2]
    assert t.prompt_text().startswith("Which shape is the largest?")
    t = reasoning_turn("the shape left of the blue circle", [1], rng)
    assert "the shape left of the blue circle" in t.prompt_text() and t.target_indices == [1]
    t = reasoning_turn("Which shape is left of the green star?", [], rng)
    assert t.target_indices == [] and t.task == Task.REASON


def test_rec_turn():
    rng = np.random.default_rng(0)
    t = rec_turn("the blue square", 1, rng)
    assert t.task == Task.REC
    assert t.grounds == [GroundRef(1, box=True, seg=False)]
    prompts = {rec_turn("the blue square", 1, rng).prompt_text() for _ in range(100)}
    assert "Where is the blue square? Give its bounding box." in prompts
    t = rec_turn("the blue square", None, rng)
    assert t.grounds == [] and _answer_text(t) == "There is no blue square in the image."


def test_caption_turn():
    t = caption_turn([("a red circle", 0), " next to ", ("a blue square", 1), "."], np.random.default_rng(0))
    assert t.task == Task.GCG
    assert t.grounds == [GroundRef(0, phrase="a red circle"), GroundRef(1, phrase="a blue square")]
    assert t.answer[1] == " next to "


def test_region_turn():
    t = region_turn(0, "It is a red circle.", np.random.default_rng(0))
    assert t.task == Task.REGION
    assert RegionRef(0) in t.prompt and t.answer == ("It is a red circle.",)
    assert "<region>" in t.prompt_text()


def test_restyle_prompt_each_style_keeps_the_answer():
    rng = np.random.default_rng(0)
    t = referring_turn("red circle", [0], rng)
    original = t.prompt_text()
    assert original.endswith((".", "?"))
    upper = restyle_prompt(t, rng, "upper")
    assert upper.prompt_text() == original.upper() and upper.answer == t.answer and upper.task == t.task
    assert restyle_prompt(t, rng, "lower").prompt_text() == original.lower()
    title = restyle_prompt(t, rng, "title").prompt_text()
    assert "Red Circle" in title and title.lower() == original.lower()
    assert restyle_prompt(t, rng, "unpunctuated").prompt_text() == original.rstrip(".?")
    bares = {restyle_prompt(t, np.random.default_rng(s), "bare").prompt_text() for s in range(40)}
    # the expression alone, with or without its article and final mark; never a template's words
    assert bares <= {f"{a}red circle{m}" for a in ("", "the ") for m in ("", "?", ".")}
    assert {"red circle", "the red circle"} <= bares
    with pytest.raises(ValueError, match="unknown prompt style"):
        restyle_prompt(t, rng, "shout")


def test_restyle_prompt_draws_styles_and_keeps_regions():
    q = reasoning_turn("Which shape is the largest?", [1], np.random.default_rng(0))
    assert restyle_prompt(q, np.random.default_rng(0), "bare").prompt_text() == "Which shape is the largest?"
    r = region_turn(0, "It is a red circle.", np.random.default_rng(0))
    drawn = [restyle_prompt(r, np.random.default_rng(s)) for s in range(30)]
    assert all(RegionRef(0) in d.prompt and d.answer == r.answer for d in drawn)
    # a region question has no expression to go bare: it falls back to a change of case or punctuation
    assert all(d.prompt_text() != "<region>" for d in drawn)
    assert len({d.prompt_text() for d in drawn}) >= 3
    t = referring_turn("the blue star", [], np.random.default_rng(1))
    styles = {restyle_prompt(t, np.random.default_rng(s)).prompt_text() for s in range(60)}
    assert any(s.isupper() for s in styles) and any("segment" not in s.lower() for s in styles)


def test_sentence_case_undoes_capitals_and_title_case_and_leaves_other_prompts():
    rng = np.random.default_rng(0)
    for e in ("red circle", "the largest blue star", "all the green shapes"):
        t = referring_turn(e, [0], rng)
        original = t.prompt_text()
        for style in ("upper", "title"):
            assert sentence_case(restyle_prompt(t, rng, style).prompt_text()) == original
        assert sentence_case(original) == original
    assert sentence_case("WHERE IS THE RED CIRCLE? GIVE ITS BOX.") == "Where is the red circle? Give its box."
    for kept in ("Segment Barack Obama, please.", "Segment the NASA logo.", "red circle", "I", "3D", ""):
        assert sentence_case(kept) == kept  # mixed case, one word, nothing to judge: as typed
    # a placeholder is neither judged nor changed
    assert sentence_case("WHAT IS IN <region>?", keep=("<region>",)) == "What is in <region>?"
    assert sentence_case("What Is In <REGION>?", keep=("<REGION>",)) == "What is in <REGION>?"
