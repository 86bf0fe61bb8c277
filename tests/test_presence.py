"""HeadOptions.presence: the state that starts each answer, mapped against the image embedding, says whether the
answer grounds anything; ``generate`` re-answers from the next-best first tokens where the text disagrees."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import tiny_lit, two_images_batch, two_squares_sample
from grounding.losses import LossWeights, answer_targets, grounding_loss, mask_bce, presence_scores, upsample_to
from grounding.model import HeadOptions, answer_start_positions
from grounding.lit_module import GroundingLitModule
from grounding.presets import TinyPreset
from grounding.processor import IGNORE_INDEX


def _lit(**heads):
    return tiny_lit(presence=True, **heads)


_batch = two_images_batch


def test_answer_start_positions_mark_the_state_before_each_answer():
    x = IGNORE_INDEX
    labels = torch.tensor([[x, x, 5, 6, x, x, 7, x], [x, 3, x, x, x, 4, 4, 4]])
    got = answer_start_positions(labels)
    want = torch.zeros_like(got)
    want[0, [1, 5]] = True
    want[1, [0, 4]] = True
    assert torch.equal(got, want)


def test_presence_scores_are_the_largest_logit_on_image_pixels():
    maps = torch.full((2, 1, 4, 4), -3.0)
    maps[0, 0, 0, 0] = 2.0  # on the image
    maps[1, 0, 3, 3] = 9.0  # on padding: ignored
    maps[1, 0, 1, 1] = -1.0
    valid = torch.zeros(2, 8, 8, dtype=torch.bool)
    valid[:, :4, :4] = True
    got = presence_scores(maps, valid)
    assert got[0] == pytest.approx(float(upsample_to(maps[:1], 8)[0, :4, :4].max()))
    assert float(got[1]) < 0  # the padding's 9 is not counted
    assert got[1] == pytest.approx(float(upsample_to(maps[1:], 8)[0, :4, :4].max()))


def test_forward_maps_every_answer_and_its_loss_sees_their_masks():
    lit = _lit()
    batch = _batch(lit)
    lit.train()
    fwd = lit.model(batch)
    turns = [t for s in batch.samples for t in s.turns]
    T = len(turns)
    h, w = fwd.image_embeddings.shape[-2:]
    assert fwd.presence_logits.shape == (T, 1, h, w)
    assert fwd.answer_image_index.tolist() == [b for b, s in enumerate(batch.samples) for _ in s.turns]
    # each [SEG] belongs to the answer that holds it
    want = [a for a, t in enumerate(turns) for part in t.answer if getattr(part, "seg", False)]
    assert fwd.seg_answer_index.tolist() == want
    union, valid, has = answer_targets(batch, fwd.answer_image_index, fwd.seg_answer_index)
    assert has.tolist() == [a in want for a in range(T)]
    gcg = next(a for a, t in enumerate(turns) if t.task.value == "gcg")
    segs = [i for i, a in enumerate(want) if a == gcg]
    assert len(segs) == 2
    assert torch.equal(union[gcg], batch.seg_masks[segs[0]] | batch.seg_masks[segs[1]])
    none = next(a for a, t in enumerate(turns) if t.task.value == "res_none")
    assert not union[none].any() and valid[none].any()
    loss, parts = grounding_loss(fwd, batch, LossWeights())
    maps = upsample_to(fwd.presence_logits.float(), union.shape[-1])
    torch.testing.assert_close(parts["presence_map_bce"], mask_bce(maps, union, valid))
    assert {"presence_bce", "presence_map_dice", "presence_acc"} <= set(parts)
    assert "presence_bce" not in grounding_loss(fwd, batch, LossWeights(presence=0.0))[1]
    loss.backward()
    grads = [p.grad for n, p in lit.named_parameters() if n.startswith("model.presence_head.")]
    assert grads and all(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_presence_option_without_module_is_refused_and_off_by_default():
    lit = _lit()
    m = lit.model
    with pytest.raises(ValueError, match="presence"):
        type(m)(m.vision_llm, m.mask_head, m.seg_projector, m.region_encoder, options=HeadOptions(presence=True))
    for bad, match in ((dict(presence_threshold=1.5), "presence_threshold"), (dict(presence_retries=-1), "presence_retries")):
        with pytest.raises(ValueError, match=match):
            type(m)(m.vision_llm, m.mask_head, m.seg_projector, m.region_encoder, options=HeadOptions(presence=True, **bad),
                    presence_head=m.presence_head)
    plain = GroundingLitModule(TinyPreset("composed"))
    assert plain.model.presence_head is None
    assert not any("presence" in n for n, _ in plain.named_parameters())


def _scripted(lit, monkeypatch, outputs):
    """Replace the token generation by scripted answers: ``outputs[k]`` is the k-th call's {row: tokens}; the
    first step's scores rank the first tokens 7, (eos), (pad), 13, 9, 11."""
    calls = []
    tok = lit.model.tokenizer
    first = torch.zeros(2, len(tok))
    first[:, 7], first[:, 13], first[:, 9], first[:, 11] = 4.0, 3.0, 2.0, 1.0
    first[:, [tok.eos_token_id, tok.pad_token_id]] = 3.5  # stop tokens are never forced (an empty answer)

    def fake(batch, image_embeddings, max_new_tokens, force, generate_kwargs):
        calls.append(force)
        rows = outputs[len(calls) - 1]
        seqs = [list(rows[b]) for b in range(2)]
        hidden = [torch.randn(max(1, len(s)), lit.model.vision_llm.hidden_size) for s in seqs]
        return seqs, hidden, first

    monkeypatch.setattr(lit.model, "_generate_tokens", fake)
    return calls


def test_generate_re_answers_where_the_presence_head_disagrees(monkeypatch):
    lit = _lit(presence_threshold=0.5, presence_retries=2)
    lit.eval()
    seg = lit.model.tokens.seg
    assert not {lit.model.tokenizer.eos_token_id, lit.model.tokenizer.pad_token_id} & {7, 13, 9, 11}
    s = two_squares_sample()
    request = lit.processor.encode_request(s.image, "Please segment the red square.")
    batch = lit.processor.collate([request] * 2, padding_side="left")
    # the head says: row 0 has its object, row 1 has none
    monkeypatch.setattr(lit.model, "_presence", lambda *a: torch.tensor([3.0, -3.0]))
    no, yes = [7, 20, 21], [7, 22, seg, 23]
    outputs = [
        {0: no, 1: [7, 22, seg]},  # both disagree with the head
        {0: [13, 24], 1: [13, 22, seg]},  # 2nd-best first tokens: still no [SEG] for row 0, still [SEG] for row 1
        {0: [9, 22, seg, 25], 1: [9, 26]},  # 3rd-best: both agree now
    ]
    calls = _scripted(lit, monkeypatch, outputs)
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4)
    assert calls == [None, {0: 13, 1: 13}, {0: 9, 1: 9}]  # next-best non-stop first tokens, in rank order
    assert answers[0].token_ids == [9, 22, seg, 25] and answers[0].mask_logits is not None
    assert answers[1].token_ids == [9, 26] and answers[1].mask_logits is None
    assert answers[0].presence == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))

    # an answer that already agrees is not generated again; nor is anything with the threshold off
    calls = _scripted(lit, monkeypatch, [{0: yes, 1: no}])
    with torch.no_grad():
        lit.model.generate(batch, max_new_tokens=4)
    assert calls == [None]
    lit.model.options.presence_threshold = None
    calls = _scripted(lit, monkeypatch, [{0: no, 1: yes}])
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4)
    assert calls == [None] and answers[0].token_ids == no and answers[0].presence is not None


def test_trained_presence_head_tells_present_from_absent_objects():
    """A few steps on one-question samples: the head must answer "present" for the red square and "absent" for the
    green star, also through ``generate`` (its presence comes from the generation's own first state)."""
    lit = _lit()
    s = two_squares_sample()
    questions = {"Please segment the red square.": True, "Please segment the green star.": False}
    turns = [t for t in s.turns if t.prompt[0] in questions]
    batch = lit.processor.collate([lit.processor.encode(dataclasses.replace(s, turns=(t,))) for t in turns])
    opt = torch.optim.AdamW([p for p in lit.parameters() if p.requires_grad], lr=3e-3)
    lit.train()
    for step in range(100):
        loss, parts = grounding_loss(lit.model(batch), batch, LossWeights())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(parts["presence_acc"]) == 1.0 and float(parts["presence_bce"]) < 0.05:
            break
    assert float(parts["presence_acc"]) == 1.0, f"presence accuracy {float(parts['presence_acc']):.2f} after {step} steps"
    lit.eval()
    lit.model.options.presence_threshold = None  # report only: the tiny model's text is not what is tested
    reqs = [lit.processor.encode_request(s.image, q) for q in questions]
    with torch.no_grad():
        answers = lit.model.generate(lit.processor.collate(reqs, padding_side="left"), max_new_tokens=2)
    assert [a.presence > 0.5 for a in answers] == list(questions.values()), [a.presence for a in answers]


def test_fused_presence_rechecks_answers_and_decides_on_the_seg_evidence(monkeypatch):
    """``presence_fusion``: p = sigmoid(w_head * head + w_prior * [SEG] evidence + bias). An answer with [SEG] is
    kept only if p > threshold; an answer without one, where the head alone exceeds ``presence_recheck``, is generated
    again and a [SEG] answer replaces it only if that answer's fused p exceeds the threshold."""
    lit = _lit(seg_prior=True, presence_fusion=(1.0, 1.0, 0.0), presence_threshold=0.5, presence_recheck=0.3)
    lit.eval()
    seg = lit.model.tokens.seg
    s = two_squares_sample()
    batch = lit.processor.collate([lit.processor.encode_request(s.image, "Please segment the red square.")] * 2,
                                  padding_side="left")
    monkeypatch.setattr(lit.model, "_presence", lambda *a: torch.tensor([0.0, 0.0]))  # head alone: 0.5 each
    evidence = {(7, 22, seg): -2.0, (13, 22, seg): -1.0, (9, seg): 2.0}  # largest seg-prior logit of each answer
    monkeypatch.setattr(lit.model, "_seg_evidence", lambda batch, emb, seqs, hidden, rows: {
        b: evidence[tuple(seqs[b])] for b in rows if seg in seqs[b]})
    outputs = [
        {0: [7, 20], 1: [7, 22, seg]},  # row 0: no [SEG] but the head leans to one; row 1: [SEG] with weak evidence
        {0: [13, 22, seg], 1: [13, 24]},  # row 0's [SEG] answer: too weak (p 0.27); row 1 now grounds nothing
        {0: [9, seg], 1: [9, 26]},  # row 0's next [SEG] answer: strong (p 0.88)
    ]
    calls = _scripted(lit, monkeypatch, outputs)
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4)
    assert calls == [None, {0: 13, 1: 13}, {0: 9}]
    assert answers[0].token_ids == [9, seg] and answers[0].mask_logits is not None
    assert answers[0].presence == pytest.approx(float(torch.sigmoid(torch.tensor(2.0))))
    assert answers[1].token_ids == [13, 24] and answers[1].mask_logits is None
    assert answers[1].presence == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))

    # every [SEG] answer checked is too weak: the answer without [SEG] stays, reporting the best probability seen
    calls = _scripted(lit, monkeypatch, [{0: [7, 20], 1: [7, 20]}, {0: [13, 22, seg], 1: [13, 22, seg]},
                                         {0: [7, 22, seg], 1: [7, 22, seg]}])
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4)
    assert len(calls) == 3 and [a.token_ids for a in answers] == [[7, 20], [7, 20]]
    assert answers[0].presence == pytest.approx(float(torch.sigmoid(torch.tensor(-1.0))))
    # a head below presence_recheck: the answer without [SEG] is not checked
    monkeypatch.setattr(lit.model, "_presence", lambda *a: torch.tensor([-2.0, -2.0]))
    calls = _scripted(lit, monkeypatch, [{0: [7, 20], 1: [7, 20]}])
    with torch.no_grad():
        lit.model.generate(batch, max_new_tokens=4)
    assert calls == [None]


def test_seg_evidence_is_the_largest_prior_logit_of_a_one_seg_answer():
    lit = _lit(seg_prior=True)
    lit.eval()
    m, seg = lit.model, lit.model.tokens.seg
    d = m.vision_llm.hidden_size
    # rows 0 and 2 ask about image 0 (a batch of requests may repeat an image); row 1 has two [SEG], row 3 none
    image = [0, 1, 0, 1]
    emb = torch.randn(2, m.mask_head.embed_dim, 16, 16)[image]
    valid = two_images_batch(lit).image_valid_masks[image]
    requests = type("Requests", (), {"image_valid_masks": valid})()  # all _seg_evidence reads of a batch
    seqs = [[5, seg, 6], [seg, 6, seg], [seg], [5, 6]]
    hidden = [torch.randn(len(q), d) for q in seqs]
    with torch.no_grad():
        got = m._seg_evidence(requests, emb, seqs, hidden, [0, 1, 2, 3])
        maps = m.seg_prior(torch.stack([hidden[0][1], hidden[2][0]]), emb, torch.tensor([0, 2]))
        want = presence_scores(maps, valid[[0, 2]])
    assert set(got) == {0, 2}
    assert got[0] == pytest.approx(float(want[0]), abs=1e-5) and got[2] == pytest.approx(float(want[1]), abs=1e-5)
    assert m._seg_evidence(requests, emb, seqs, hidden, [1, 3]) == {}


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(presence_fusion=(1.0, 1.0)), "presence_fusion must be"),
        (dict(presence_recheck=1.0), "presence_recheck"),
    ],
)
def test_presence_fusion_options_are_checked(options, match):
    lit = _lit(seg_prior=True)
    m = lit.model
    with pytest.raises(ValueError, match=match):
        type(m)(m.vision_llm, m.mask_head, m.seg_projector, m.region_encoder, options=HeadOptions(presence=True, seg_prior=True, **options),
                seg_prior=m.seg_prior, presence_head=m.presence_head)
    with pytest.raises(ValueError, match="set presence and seg_prior"):
        type(m)(m.vision_llm, m.mask_head, m.seg_projector, m.region_encoder,
                options=HeadOptions(presence=True, presence_fusion=(1.0, 1.0, 0.0)), presence_head=m.presence_head)


def test_generate_refuse_re_answers_a_row_without_seg_whatever_the_presence_head(monkeypatch):
    """``generate(refuse=rows)`` (``HeadOptions.check_by_description``): those rows' [SEG] answers are generated
    again from the next-best first tokens until one grounds nothing, though the head says present; other rows keep
    theirs; a row for which no answer without [SEG] is found keeps its own."""
    lit = _lit(presence_threshold=0.5, presence_retries=2)
    lit.eval()
    seg = lit.model.tokens.seg
    s = two_squares_sample()
    batch = lit.processor.collate([lit.processor.encode_request(s.image, "Please segment the red square.")] * 2,
                                  padding_side="left")
    monkeypatch.setattr(lit.model, "_presence", lambda *a: torch.tensor([3.0, 3.0]))  # the head: present (0.95)
    outputs = [{0: [7, seg], 1: [7, seg]}, {0: [13, 22, seg], 1: [13, seg]}, {0: [9, 24], 1: [9, 24]}]
    calls = _scripted(lit, monkeypatch, outputs)
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4, refuse=[0])
    assert calls == [None, {0: 13}, {0: 9}]
    assert answers[0].token_ids == [9, 24] and answers[0].mask_logits is None
    assert answers[1].token_ids == [7, seg] and answers[1].mask_logits is not None
    # no answer without [SEG] among the next-best first tokens: the row keeps its own
    calls = _scripted(lit, monkeypatch, [{0: [7, seg], 1: [7, seg]}, {0: [13, seg], 1: [13, seg]}, {0: [9, seg], 1: [9, seg]}])
    with torch.no_grad():
        answers = lit.model.generate(batch, max_new_tokens=4, refuse=[1])
    assert len(calls) == 3 and answers[1].token_ids == [7, seg]


def test_generate_refuse_needs_the_presence_head():
    lit = tiny_lit()
    lit.eval()
    s = two_squares_sample()
    batch = lit.processor.collate([lit.processor.encode_request(s.image, "Please segment the red square.")])
    with pytest.raises(ValueError, match="refuse"):
        lit.model.generate(batch, max_new_tokens=2, refuse=[0])
