"""HeadOptions.verifier in the model (mask choice, presence) and its fitting stage (grounding fit-verifier)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from conftest import build_tiny, tiny_lit, two_images_batch, two_squares_sample
from heads import keep_one_part, mask_parts, select_parts


def _decoded() -> torch.Tensor:
    decoded = torch.full((1, 1, 16, 16), -5.0)
    decoded[0, 0, 1:4, 1:4] = 0.5  # the decoder's weaker object
    decoded[0, 0, 9:12, 9:12] = 1.5  # and its stronger one
    return decoded


def test_generate_keeps_the_candidate_the_verifier_prefers(monkeypatch, sample):
    model, proc = build_tiny("composed", verifier=True, mask_one_part=-1.0)
    seg = model.tokens.seg
    decoded = _decoded()
    monkeypatch.setattr(model, "_generate_tokens", lambda *a: ([[7, seg]], [torch.randn(2, model.vision_llm.hidden_size)], None))
    monkeypatch.setattr(model, "decode_masks", lambda *a, **k: (decoded.clone(), torch.ones(1, 1), None))
    seen = {}

    def prefer_first(hidden, features, owner):  # the verifier's scores: the first candidate (the weak object) best
        seen["n"] = features.shape[0]
        return -torch.arange(features.shape[0], dtype=torch.float32)

    monkeypatch.setattr(model.mask_verifier, "forward", prefer_first)
    batch = proc.collate([proc.encode_request(sample.image, "Please segment the red square.")], padding_side="left")
    with torch.no_grad():
        got = model.generate(batch, max_new_tokens=4)[0].mask_logits
    assert seen["n"] == 2  # the two objects, found at -1 and not again at -3
    want, _ = select_parts(decoded, mask_parts(decoded, (-1.0, -3.0)), torch.tensor([0.0, -1.0]), groups=[0])
    assert torch.equal(got, want)
    assert (got[0, 0, 1:4, 1:4] > 0).all() and not (got[0, 0, 8:] > 0).any()
    # without the verifier, mask_one_part keeps the decoder's stronger object
    assert (keep_one_part(decoded, -1.0)[0, 0, 9:12, 9:12] > 0).all()


def test_verifier_decides_the_presence_of_one_seg_answers(monkeypatch):
    lit = tiny_lit(presence=True, seg_prior=True, verifier=True)
    lit.eval()
    m, seg = lit.model, lit.model.tokens.seg
    d = m.vision_llm.hidden_size
    emb = torch.randn(2, m.mask_head.embed_dim, *m.mask_head.embedding_size)
    requests = type("Requests", (), {"image_valid_masks": two_images_batch(lit).image_valid_masks})()
    seqs = [[5, seg, 6], [seg, 6, seg]]
    hidden = [torch.randn(len(q), d) for q in seqs]
    with torch.no_grad():
        got = m._seg_evidence(requests, emb, seqs, hidden, [0, 1])
        logits, _, prior = m.decode_masks(emb[:1], hidden[0][1:2], torch.tensor([0]), None)
        _, best = m.verify_masks(emb[:1], hidden[0][1:2], torch.tensor([0]), logits, prior)
    assert set(got) == {0}  # two [SEG]: the head decides
    assert got[0] == pytest.approx(float(best[0]), abs=1e-5)
    m.options.verifier_presence_multi = True  # ... unless the verifier decides those too: their states' largest best
    with torch.no_grad():
        both = m._seg_evidence(requests, emb, seqs, hidden, [0, 1])
        states = hidden[1][[0, 2]]
        logits, _, prior = m.decode_masks(emb[1:], states, torch.tensor([0, 0]), None)
        _, best1 = m.verify_masks(emb[1:], states, torch.tensor([0, 0]), logits, prior)
    assert set(both) == {0, 1} and both[0] == pytest.approx(got[0], abs=1e-5)
    assert both[1] == pytest.approx(float(best1.max()), abs=1e-5) and float(best1.min()) < float(best1.max())
    m.options.verifier_presence_multi = False
    # the verifier's probability replaces the head's for an answer with evidence; without, the head's stays
    assert m._presence_probability(4.0, -2.0) == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))
    assert m._presence_probability(4.0, None) == pytest.approx(float(torch.sigmoid(torch.tensor(4.0))))
    assert m._presence_probability(0.0, float("-inf")) < 1e-20  # no candidate at all: absent
    # the verifier's own threshold applies to the answers it decided; the head's threshold to the others
    m.options.presence_threshold, m.options.verifier_threshold = 0.5, 0.25
    assert m._accepts(0.3, -0.85) and not m._accepts(0.2, -1.4)
    assert not m._accepts(0.3, None) and m._accepts(0.6, None)
    m.options.verifier_threshold = None  # falls back to presence_threshold
    assert not m._accepts(0.3, -0.85)
    m.options.verifier_fusion = (1.0, 0.5, -1.0)  # the head and the verifier together
    assert m._presence_probability(2.0, -2.0) == pytest.approx(0.5)
    assert m._presence_probability(-1.0, 4.0) == pytest.approx(float(torch.sigmoid(torch.tensor(0.0))))
    assert m._presence_probability(9.0, float("-inf")) < 1e-20  # no candidate: absent whatever the head says
    m.options.verifier_fusion = None
    m.options.verifier_presence = False  # the head alone again (no fusion set)
    assert m._presence_probability(4.0, -2.0) == pytest.approx(float(torch.sigmoid(torch.tensor(4.0))))
    m.options.verifier_threshold = 0.25  # and with it the head's threshold
    assert not m._accepts(0.3, -0.85)


def test_presence_verifier_gives_the_evidence_and_the_mask_verifier_the_mask(monkeypatch):
    """With HeadOptions.presence_verifier a one-[SEG] answer's evidence is the presence verifier's best logit over
    the [SEG]'s candidates, while the mask is still the mask verifier's pick."""
    lit = tiny_lit(presence=True, seg_prior=True, verifier=True, presence_verifier=True)
    lit.eval()
    m, seg = lit.model, lit.model.tokens.seg
    d = m.vision_llm.hidden_size
    emb = torch.randn(1, m.mask_head.embed_dim, *m.mask_head.embedding_size)
    decoded = _decoded()
    monkeypatch.setattr(m, "decode_masks", lambda *a, **k: (decoded.clone(), torch.ones(1, 1), None))
    monkeypatch.setattr(m.mask_verifier, "forward", lambda h, f, o: torch.tensor([2.0, -1.0]))  # picks the weak object
    monkeypatch.setattr(m.presence_verifier, "forward", lambda h, f, o: torch.tensor([-3.0, -0.5]))
    requests = type("Requests", (), {"image_valid_masks": torch.ones(1, 16, 16, dtype=torch.bool)})()
    states = torch.randn(1, d)
    with torch.no_grad():
        got = m._seg_evidence(requests, emb, [[5, seg, 6]], [torch.randn(3, d)], [0])
        cut, pick = m.verify_masks(emb, states, torch.tensor([0]), decoded, None)
        cut_p, pres = m.verify_masks(emb, states, torch.tensor([0]), decoded, None, presence=True)
    assert got == {0: pytest.approx(-0.5)}  # the presence verifier's best, not the mask verifier's 2.0
    assert float(pick[0]) == pytest.approx(2.0) and float(pres[0]) == pytest.approx(-0.5)
    assert torch.equal(cut, cut_p) and (cut[0, 0, 1:4, 1:4] > 0).all() and not (cut[0, 0, 8:] > 0).any()


def test_fit_presence_weight_adds_the_best_candidate_term():
    """fit's multiple-instance term: BCE of each state's best candidate logit against "one of its candidates is
    positive" (absent objects: 0), weighted; checked by hand with the weights frozen (lr 0, one step)."""
    import torch.nn.functional as F

    from grounding.verifier_fit import VerifierData, fit
    from heads import MaskVerifier

    torch.manual_seed(0)
    v = MaskVerifier(8, 4, dim=8, crop=8)
    owner = torch.tensor([0, 0, 1, 1, 1, 2])
    labels = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # state 0 has its object; 1 does not; 2 is absent
    data = VerifierData(torch.randn(6, v.n_inputs), owner, labels, labels.clone(), torch.randn(3, 8),
                        ["res", "res", "res_none"], torch.tensor([False, False, True]))
    with torch.no_grad():
        logit = v(data.states, data.features, owner)
    best = torch.stack([logit[owner == i].max() for i in range(3)])
    plain = F.binary_cross_entropy_with_logits(logit, labels)
    mil = F.binary_cross_entropy_with_logits(best, torch.tensor([1.0, 0.0, 0.0]))
    assert fit(v, data, epochs=1, lr=0.0, weight_decay=0.0, states_per_step=8)[0] == pytest.approx(float(plain), rel=1e-5)
    got = fit(v, data, epochs=1, lr=0.0, weight_decay=0.0, states_per_step=8, presence_weight=0.5)[0]
    assert got == pytest.approx(float(plain + 0.5 * mil), rel=1e-5)
    with pytest.raises(ValueError, match="presence_weight"):
        fit(v, data, presence_weight=-1.0)


def test_verifier_data_scores_in_chunks_and_subsets_renumber():
    """VerifierData.scores gives a context verifier's logits whatever the chunk (candidates attend within their own
    state); subset keeps the chosen states' candidates and renumbers their owners; best is the per-state max."""
    from grounding.verifier_fit import VerifierData
    from heads import MaskVerifier

    torch.manual_seed(0)
    v = MaskVerifier(8, 4, dim=8, crop=8, context=1)
    owner = torch.tensor([0, 0, 1, 2, 2, 2])
    data = VerifierData(torch.randn(6, v.n_inputs), owner, torch.tensor([0.0, 1, 1, 0, 0, 1]), torch.rand(6),
                        torch.randn(3, 8), ["res", "rec", "res_none"], torch.tensor([False, False, True]))
    with torch.no_grad():
        whole = v.eval()(data.states, data.features, owner)
    for chunk in (1, 2, 3):
        assert torch.allclose(data.scores(v, chunk=chunk), whole, atol=1e-5)
    assert torch.equal(data.best(torch.arange(6.0)), torch.tensor([1.0, 2.0, 5.0]))
    part = data.subset(np.array([2, 0]))
    assert part.tasks == ["res_none", "res"] and torch.equal(part.owner, torch.tensor([1, 1, 0, 0, 0]))
    assert torch.equal(part.features, data.features[[0, 1, 3, 4, 5]]) and torch.equal(part.absent, torch.tensor([True, False]))


def test_verifier_options_are_checked():
    from grounding.model import GroundingModel, HeadOptions

    model, _ = build_tiny("composed")
    parts = dict(vision_llm=model.vision_llm, mask_head=model.mask_head, seg_projector=model.seg_projector)
    with pytest.raises(ValueError, match="no mask_verifier"):
        GroundingModel(**parts, options=HeadOptions(verifier=True))
    with pytest.raises(ValueError, match="verify_thresholds"):
        build_tiny("composed", verifier=True, verify_thresholds=())
    with pytest.raises(ValueError, match="presence_verifier needs the mask verifier"):
        build_tiny("composed", presence_verifier=True)
    with pytest.raises(ValueError, match="verifier_threshold"):
        build_tiny("composed", verifier=True, verifier_threshold=1.5)
    with pytest.raises(ValueError, match="verifier_fusion"):
        build_tiny("composed", verifier=True, verifier_fusion=(1.0, 2.0))
    with pytest.raises(ValueError, match="min_mask_cells"):
        build_tiny("composed", min_mask_cells=-1.0)
    from heads import MaskVerifier

    plain = MaskVerifier(model.vision_llm.hidden_size, model.mask_head.embed_dim)
    with pytest.raises(ValueError, match="mask_verifier does not read colour but HeadOptions.verifier_colour is True"):
        GroundingModel(**parts, options=HeadOptions(verifier=True, verifier_colour=True), mask_verifier=plain)


def test_a_colour_verifier_reads_the_batch_images_in_generation(monkeypatch, sample):
    """With HeadOptions.verifier_colour the candidates' inputs carry the pixel colour of the request's own image."""
    from heads.mask_verifier import colour_stats

    model, proc = build_tiny("composed", verifier=True, verifier_colour=True)
    assert model.mask_verifier.colour is not None
    seg = model.tokens.seg
    decoded = _decoded()
    monkeypatch.setattr(model, "_generate_tokens", lambda *a: ([[7, seg]], [torch.randn(2, model.vision_llm.hidden_size)], None))
    monkeypatch.setattr(model, "decode_masks", lambda *a, **k: (decoded.clone(), torch.ones(1, 1), None))
    seen = {}

    def score(hidden, features, owner):
        seen["features"] = features
        return -torch.arange(features.shape[0], dtype=torch.float32)

    monkeypatch.setattr(model.mask_verifier, "forward", score)
    batch = proc.collate([proc.encode_request(sample.image, "Please segment the red square.")], padding_side="left")
    with torch.no_grad():
        model.generate(batch, max_new_tokens=4)
    cands = mask_parts(decoded, (-1.0, -3.0))
    a = model.mask_head.embed_dim
    want = colour_stats(cands.masks, batch.sam_images, torch.zeros(len(cands), dtype=torch.long))
    assert torch.allclose(seen["features"][:, a : a + 6], want)
    assert not torch.allclose(want[0], want[1])  # the two objects' pixels differ (the sample's red and blue squares)


def test_collect_labels_candidates_and_fit_learns_them():
    """Candidates of the hand-made sample's [SEG]s: the no-target question is teacher-forced with a [SEG] whose
    candidates are all negative; a positive is a candidate at IoU >= 0.5 with its target. Fitting lowers the loss."""
    from grounding.verifier_fit import collect, evaluate, fit

    lit = tiny_lit(seg_prior=True, verifier=True)
    lit.eval()
    s = two_squares_sample()
    data = collect(lit.model, lit.processor, [s, two_squares_sample(56, 40, "b")])
    assert data.head is None  # no presence head
    assert set(data.tasks) <= {"res", "rec", "gcg", "res_none"} and "res_none" in data.tasks
    for i in range(len(data)):
        rows = data.owner == i
        assert rows.any()
        if data.absent[i]:
            assert data.tasks[i] == "res_none" and not data.labels[rows].any()
        else:
            assert torch.equal(data.labels[rows].bool(), data.target_iou[rows] >= 0.5)
    assert data.features.shape == (len(data.labels), lit.model.mask_verifier.n_inputs)
    losses = fit(lit.model.mask_verifier, data, epochs=30, lr=3e-3, states_per_step=4)
    assert losses[-1] < 0.5 * losses[0]
    report = evaluate(lit.model.mask_verifier, data)
    assert "absent" in report and any(k.startswith("pick/") for k in report) and any(k.startswith("present/") for k in report)
    for k in (k for k in report if k.startswith("pick/")):  # the best candidate bounds both choices
        task = k[5:]
        assert report[f"oracle/{task}"] >= max(report[k], report[f"decoder/{task}"]) - 1e-9
    with torch.no_grad():
        scores = lit.model.mask_verifier(data.states, data.features.float(), data.owner)
    # thresholds below / above every score: everything present / absent
    low, high = (evaluate(lit.model.mask_verifier, data, float(torch.sigmoid(x.double()))) for x in (scores.min() - 1, scores.max() + 1))
    assert low["absent"] == 0.0 and high["absent"] == 1.0
    assert all(low[k] == 1.0 and high[k] == 0.0 for k in low if k.startswith("present/"))
    assert {k: v for k, v in low.items() if k.startswith("pick/")} == {k: v for k, v in high.items() if k.startswith("pick/")}
    # another verifier's presence calls (HeadOptions.presence_verifier): the picks stay this one's
    from heads import MaskVerifier

    other = MaskVerifier(lit.model.vision_llm.hidden_size, lit.model.mask_head.embed_dim)
    with torch.no_grad():
        other_scores = other(data.states, data.features.float(), data.owner)
        mixed = evaluate(lit.model.mask_verifier, data, float(torch.sigmoid(other_scores.max().double() + 1)), other)
    assert mixed["absent"] == 1.0 and all(mixed[k] == 0.0 for k in mixed if k.startswith("present/"))
    assert all(mixed[k] == report[k] for k in report if k.startswith("pick/"))


def test_collect_with_plural_absent_answers_plural_questions_with_two_absent_segs():
    """``plural_absent``: an absent thing asked about in the plural is teacher-forced "Sure, they are [SEG] and
    [SEG].": two absent states, every candidate negative; a singular one keeps its one [SEG]; without the option
    the plural one gets one [SEG] too."""
    import dataclasses

    from data import Task, Turn
    from grounding.verifier_fit import _with_absent_seg, collect

    lit = tiny_lit(seg_prior=True, verifier=True)
    lit.eval()
    s = two_squares_sample()
    plural = Turn(("Segment all the green stars.",), ("There are no green stars in the image.",), Task.RES_NONE,
                  "all the green stars")
    s = dataclasses.replace(s, turns=[s.turns[0], s.turns[4], plural])  # present, absent (singular), absent (plural)
    forced, absent = _with_absent_seg(s, plural=True)
    assert absent == [False, True, True]
    assert forced.turns[2].answer[0] == "Sure, they are " and sum(not isinstance(p, str) for p in forced.turns[2].answer) == 2
    assert sum(not isinstance(p, str) for p in forced.turns[1].answer) == 1
    counts = {}
    for flag in (False, True):
        data = collect(lit.model, lit.processor, [s], plural_absent=flag)
        counts[flag] = int(data.absent.sum())
        assert not data.labels[data.absent[data.owner]].any()  # every candidate of an absent state is negative
        assert len(data) - counts[flag] == 1  # the present question's one state
    assert counts == {False: 2, True: 3}


def test_collect_records_the_presence_head_logit_of_each_question():
    """With a presence head, each collected state carries its question's head logit: the presence map's largest
    logit of that turn in the teacher-forced forward (the question's, whatever answer is forced)."""
    from grounding.losses import presence_scores
    from grounding.verifier_fit import _with_absent_seg, collect

    lit = tiny_lit(seg_prior=True, presence=True, verifier=True)
    lit.eval()
    s = two_squares_sample()
    with torch.no_grad():
        data = collect(lit.model, lit.processor, [s])
        forced, _ = _with_absent_seg(s)
        batch = lit.processor.collate([lit.processor.encode(forced)])
        f = lit.model(batch)
        want = presence_scores(f.presence_logits.float(), batch.image_valid_masks[:1].expand(len(f.presence_logits), -1, -1))
    assert data.head is not None and data.head.shape == (len(data),) and torch.isfinite(data.head).all()
    assert {round(float(h), 4) for h in data.head} <= {round(float(w), 4) for w in want}



def test_verifier_data_concat_renumbers_owners_and_keeps_heads():
    from grounding.verifier_fit import VerifierData

    def part(states, cands, head):
        return VerifierData(torch.randn(cands, 5), torch.arange(cands) % states, torch.ones(cands), torch.rand(cands),
                            torch.randn(states, 3), ["res"] * states, torch.zeros(states, dtype=torch.bool), head)

    a, b = part(2, 4, torch.tensor([0.5, -1.0])), part(3, 3, None)
    both = VerifierData.concat([a, b])
    assert len(both) == 5 and both.owner.tolist() == [0, 1, 0, 1, 2, 3, 4]
    assert torch.equal(both.features, torch.cat([a.features, b.features])) and both.tasks == ["res"] * 5
    assert both.head[:2].tolist() == [0.5, -1.0] and torch.isnan(both.head[2:]).all()
    assert VerifierData.concat([b, b]).head is None
    wide = part(1, 1, None)
    wide.features = torch.randn(1, 6)
    with pytest.raises(ValueError, match="different verifier inputs"):
        VerifierData.concat([a, wide])


def _tiny_source(tmp_path):
    """A tiny trained-parts folder (seg prior and presence head, no verifier) to fit a verifier on."""
    from grounding.checkpoint import save_trained_folder

    lit = tiny_lit(seg_prior=True, presence=True)
    config = {"preset": {"class_path": "grounding.presets.TinyPreset", "init_args": {"vision_llm": "composed"}},
              "heads": {"seg_prior": True, "presence": True},
              "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    return lit, save_trained_folder(lit, tmp_path / "src", config)


@pytest.mark.slow
def test_fit_verifier_command_writes_a_folder_that_loads_with_the_verifier(tmp_path):
    from grounding.checkpoint import load_trained_weights
    from grounding.cli import main
    from grounding.hub import load_model

    lit, src = _tiny_source(tmp_path)
    out = tmp_path / "out"
    assert main(["fit-verifier", "--model", str(src), "--out", str(out), "--scenes", "2", "--start", "0",
                 "--val-scenes", "1", "--epochs", "1", "--presence-threshold", "0.3"]) == 0
    heads = yaml.safe_load((out / "config.yaml").read_text())["heads"]
    assert heads["verifier"] is True and heads["verifier_threshold"] == 0.3
    model, _ = load_model(str(out))
    assert model.mask_verifier is not None
    # the source's trained parts are carried over unchanged
    from safetensors.torch import load_file

    before, after = load_file(str(src / "trained.safetensors")), load_file(str(out / "trained.safetensors"))
    assert set(before) < set(after) and any(k.startswith("model.mask_verifier.") for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="do not exist in the model"):  # a model without a verifier refuses them
        load_trained_weights(lit, out / "trained.safetensors")


def test_fit_verifier_refuses_a_folder_without_trained_parts(tmp_path, capsys):
    from grounding.cli import main

    assert main(["fit-verifier", "--model", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "not a trained-parts folder" in capsys.readouterr().err
    assert main(["fit-verifier", "--out", str(tmp_path / "o"), "--presence-threshold", "1.5"]) == 2
    assert "--presence-threshold must be in (0, 1)" in capsys.readouterr().err
    assert main(["fit-verifier", "--out", str(tmp_path / "o"), "--presence-verifier", "0"]) == 2
    assert "--presence-verifier must be > 0" in capsys.readouterr().err
    assert main(["fit-verifier", "--out", str(tmp_path / "o"), "--aspect", "0.5"]) == 2
    assert "--aspect must be a finite ratio >= 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_empty_specks_empties_masks_below_the_fraction_and_keeps_their_order():
    from heads import empty_specks

    logits = torch.full((3, 1, 16, 16), -4.0)
    logits[0, 0, 2:8, 2:8] = 3.0  # 36 of 256 pixels: kept
    logits[1, 0, 5, 5], logits[1, 0, 9, 9] = 2.0, 1.0  # 2 pixels: a speck
    got = empty_specks(logits, 4 / 256)
    assert torch.equal(got[0], logits[0]) and torch.equal(got[2], logits[2])  # big and empty masks untouched
    assert not (got[1] > 0).any()
    assert int(got[1].flatten().argmax()) == 5 * 16 + 5  # its most confident pixel stays the most confident
    assert float(got[1, 0, 5, 5] - got[1, 0, 9, 9]) == pytest.approx(1.0)
    assert empty_specks(logits, 1 / 256) is logits  # nothing below the fraction: no copy


def test_generate_empties_a_speck_mask_with_min_mask_cells(monkeypatch, sample):
    model, proc = build_tiny("composed", min_mask_cells=1.0)
    seg = model.tokens.seg
    s = model.mask_head.embedding_size
    decoded = torch.full((1, 1, 4 * s[0], 4 * s[1]), -5.0)
    decoded[0, 0, 3, 3] = 2.0  # one pixel of 16 x 16 per cell: below one embedding cell
    monkeypatch.setattr(model, "_generate_tokens", lambda *a: ([[7, seg]], [torch.randn(2, model.vision_llm.hidden_size)], None))
    monkeypatch.setattr(model, "decode_masks", lambda *a, **k: (decoded.clone(), torch.ones(1, 1), None))
    batch = proc.collate([proc.encode_request(sample.image, "Please segment the red square.")], padding_side="left")
    with torch.no_grad():
        got = model.generate(batch, max_new_tokens=4)[0].mask_logits
    assert not (got > 0).any()
    model.options.min_mask_cells = None
    with torch.no_grad():
        assert (model.generate(batch, max_new_tokens=4)[0].mask_logits > 0).sum() == 1


@pytest.mark.slow
def test_fit_verifier_reuses_its_collected_candidates_and_fits_a_set_context_verifier(tmp_path, monkeypatch, capsys):
    import grounding.verifier_fit as vf
    from grounding.cli import main
    from grounding.hub import load_model

    _, src = _tiny_source(tmp_path)
    cands = tmp_path / "cands.pt"
    args = ["fit-verifier", "--model", str(src), "--scenes", "2", "--start", "0", "--val-scenes", "1", "--epochs", "1",
            "--candidates", str(cands)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cands.is_file()

    def no_collect(*a, **k):
        raise AssertionError("collected again")

    monkeypatch.setattr(vf, "collect", no_collect)
    # read from the file, not collected; with a presence verifier fitted on the same candidates
    assert main([*args, "--out", str(tmp_path / "b"), "--context", "1", "--presence-verifier", "0.5"]) == 0
    heads = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["heads"]
    assert heads["verifier_context"] == 1 and heads["presence_verifier"] is True
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["verifier"]["presence_weight"] == 0.5
    model, _ = load_model(str(tmp_path / "b"))
    assert model.mask_verifier.context is not None and len(model.mask_verifier.context) == 1
    assert model.presence_verifier is not None and len(model.presence_verifier.context) == 1
    pv, mv = model.presence_verifier.state_dict(), model.mask_verifier.state_dict()
    assert any(not torch.equal(pv[k], mv[k]) for k in pv)  # fitted on its own, not a copy

    capsys.readouterr()
    # another collection's candidates are fitted on with this run's: here the same file again, twice the states
    assert main([*args, "--out", str(tmp_path / "h"), "--add-candidates", str(cands)]) == 0
    once = torch.load(str(cands), weights_only=True)["train"]["states"].shape[0]
    assert f"of {2 * once} [SEG] states" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "i"), "--add-candidates", str(tmp_path / "none.pt")]) == 2
    assert "--add-candidates: no such file" in capsys.readouterr().err and not (tmp_path / "i").exists()
    (tmp_path / "other.pt").write_text("not candidates")
    assert main([*args, "--out", str(tmp_path / "i"), "--add-candidates", str(tmp_path / "other.pt")]) == 2
    assert "is not a candidates file" in capsys.readouterr().err and not (tmp_path / "i").exists()
    # a file of other scenes is refused in one line, and nothing is written
    assert main([*args[:6], "1", *args[7:], "--out", str(tmp_path / "c")]) == 2
    assert "holds the candidates of" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    # so is a file of the same scenes in the palette's colours when band colours are asked for
    assert main([*args, "--out", str(tmp_path / "c"), "--colours", "bands"]) == 2
    assert "'colours': 'bands'" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main([*args, "--out", str(tmp_path / "c"), "--plain-greys", "range"]) == 2
    assert "'plain_greys': 'range'" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main([*args, "--out", str(tmp_path / "c"), "--aspect", "2"]) == 2  # (frames of other shapes)
    assert "'aspect': 2.0" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main([*args, "--out", str(tmp_path / "d"), "--context", "-1"]) == 2
    # a source with a presence verifier, fitted again without one: its presence verifier is left out, none written
    monkeypatch.undo()
    assert main(["fit-verifier", "--model", str(tmp_path / "b"), "--scenes", "1", "--start", "0", "--val-scenes", "1",
                 "--epochs", "1", "--out", str(tmp_path / "e")]) == 0
    assert yaml.safe_load((tmp_path / "e" / "config.yaml").read_text())["heads"]["presence_verifier"] is False
    assert load_model(str(tmp_path / "e"))[0].presence_verifier is None
    # the verifier is fitted from scratch: from a source with a verifier ("b") it comes out as from one without
    monkeypatch.setattr(vf, "collect", no_collect)
    assert main([*args, "--out", str(tmp_path / "f"), "--context", "1"]) == 0
    assert main([*args[:2], str(tmp_path / "b"), *args[3:], "--out", str(tmp_path / "g"), "--context", "1"]) == 2
    assert "holds the candidates of" in capsys.readouterr().err  # (the file names the source model it came from)
    monkeypatch.undo()
    for name, source in (("f2", src), ("g2", tmp_path / "b")):
        assert main(["fit-verifier", "--model", str(source), "--scenes", "1", "--start", "0", "--val-scenes", "0",
                     "--epochs", "1", "--context", "1", "--out", str(tmp_path / name)]) == 0
    f2, g2 = (load_model(str(tmp_path / n))[0].mask_verifier.state_dict() for n in ("f2", "g2"))
    assert all(torch.equal(f2[k], g2[k]) for k in f2)


@pytest.mark.slow
def test_fit_verifier_colour_fits_a_verifier_of_pixel_colour(tmp_path, monkeypatch, capsys):
    from grounding.cli import main
    from grounding.hub import load_model

    _, src = _tiny_source(tmp_path)
    cands = tmp_path / "cands.pt"
    args = ["fit-verifier", "--model", str(src), "--scenes", "1", "--start", "0", "--val-scenes", "1", "--epochs", "1",
            "--candidates", str(cands)]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # without colour: its candidates file
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b"), "--colour"]) == 2  # that file has no colour columns
    assert "holds the candidates of" in capsys.readouterr().err and not (tmp_path / "b").exists()
    cands.unlink()
    assert main([*args, "--out", str(tmp_path / "b"), "--colour"]) == 0
    assert torch.load(str(cands), weights_only=True)["key"]["colour"] is True
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["heads"]["verifier_colour"] is True
    model, _ = load_model(str(tmp_path / "b"))
    assert model.mask_verifier.colour is not None
    # refitted from that folder with --no-colour: a plain verifier again
    assert main(["fit-verifier", "--model", str(tmp_path / "b"), "--scenes", "1", "--start", "0", "--val-scenes", "0",
                 "--epochs", "1", "--no-colour", "--out", str(tmp_path / "c")]) == 0
    assert load_model(str(tmp_path / "c"))[0].mask_verifier.colour is None
