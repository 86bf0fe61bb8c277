"""heads.mask_verifier: candidate parts, their inputs, the choice among them, and that the verifier can learn shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads import MaskVerifier, mask_parts, select_parts
from heads.mask_verifier import per_image_sums, square_crops


def _two_objects(weak: float = 0.5, strong: float = 1.5) -> torch.Tensor:
    logits = torch.full((1, 1, 32, 32), -5.0)
    logits[0, 0, 2:8, 2:8] = weak
    logits[0, 0, 20:28, 20:30] = strong
    logits[0, 0, 15, 15] = -2.0  # a speck seen only at the lower threshold
    return logits


def test_mask_parts_cuts_each_row_at_each_threshold_without_repeats():
    logits = torch.cat([_two_objects(), torch.full((1, 1, 32, 32), -9.0)])
    cands = mask_parts(logits, (-1.0, -3.0), min_pixels=1)
    # row 0: the two objects at -1; at -3 the same two again (dropped as repeats) and the speck; row 1: nothing
    assert len(cands) == 3 and cands.owner.tolist() == [0, 0, 0]
    assert cands.threshold.tolist() == [-1.0, -1.0, -3.0]
    assert [int(m.sum()) for m in cands.masks] == [36, 80, 1]
    assert mask_parts(logits, (-1.0, -3.0), min_pixels=4).masks.shape[0] == 2  # the speck is too small
    with pytest.raises(ValueError, match="N x 1 x S x S"):
        mask_parts(logits[:, 0], (-1.0,))
    with pytest.raises(ValueError, match="at least one threshold"):
        mask_parts(logits, ())


def test_square_crops_keep_the_aspect_of_the_mask():
    m = torch.zeros(1, 64, 64, dtype=torch.bool)
    m[0, 10:30, 20:30] = True  # 20 high, 10 wide
    crop = square_crops(m, 16)[0, 0]
    assert crop.shape == (16, 16)
    cols = crop.mean(0)
    assert cols[6:10].min() > 0.9 and cols[:3].max() < 0.1 and cols[-3:].max() < 0.1  # centred, half as wide
    assert crop[1:-1, 6:10].min() > 0.8  # the full height
    assert square_crops(torch.zeros(0, 8, 8, dtype=torch.bool), 16).shape == (0, 1, 16, 16)


def test_features_are_the_candidates_appearance_geometry_and_evidence():
    ver = MaskVerifier(in_dim=8, embed_dim=4, dim=8, crop=8)
    emb = torch.zeros(1, 4, 8, 8)
    emb[0, :, :4, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None]  # one embedding in the top-left quarter
    masks = torch.zeros(1, 32, 32, dtype=torch.bool)
    masks[0, :16, :16] = True  # exactly that quarter (4 input pixels per cell)
    logits = torch.full((1, 1, 32, 32), -10.0)
    logits[0, 0, :16, :16] = 2.0
    logits[0, 0, 0, 0] = 6.0
    prior = torch.full((1, 1, 8, 8), -4.0)
    prior[0, 0, :4, :4] = 3.0
    f = ver.features(masks, emb, torch.zeros(1, dtype=torch.long), logits, prior)
    assert f.shape == (1, ver.n_inputs)
    assert torch.allclose(f[0, :4], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    geometry = f[0, 4 + 64 : 4 + 64 + 5]
    assert torch.allclose(geometry, torch.tensor([0.0, 0.0, 0.5, 0.5, 0.5]))
    evidence = f[0, -3:] * ver.logit_scale
    # on the 8 x 8 grid (4 x 4 pixels a cell) cell (0, 0) averages one 6 with fifteen 2s: 2.25, its 15 neighbours 2
    assert torch.allclose(evidence, torch.tensor([(15 * 2.0 + 2.25) / 16, 2.25, 3.0]), atol=1e-5)
    assert ver.features(masks[:0], emb, torch.zeros(0, dtype=torch.long), logits[:0], None).shape == (0, ver.n_inputs)


def test_per_image_sums_weigh_each_rows_own_image():
    values = torch.tensor([[[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]],  # image 0: 2 channels x 3 pixels
                           [[-1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]])  # image 1
    weight = torch.tensor([[1.0, 0.0, 1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 2.0]])
    out = per_image_sums(weight, values, torch.tensor([1, 0, 1]))
    assert torch.allclose(out, torch.tensor([[4.0, 0.0], [1.5, 15.0], [10.0, 0.0]]))
    assert per_image_sums(weight[:0], values, torch.zeros(0, dtype=torch.long)).shape == (0, 2)
    # the appearance input is those sums over the cells each candidate covers, for candidates of different images
    ver = MaskVerifier(in_dim=8, embed_dim=2, dim=8, crop=8)
    emb = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 3.0)])
    emb[1, :, :2] = 7.0  # image 1: 7 in its top half, 3 below
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:8] = True  # half in the top half, half in the bottom
    f = ver.features(masks, emb, torch.tensor([0, 1]), torch.zeros(2, 1, 16, 16), None)
    assert torch.allclose(f[:, :2], torch.tensor([[1.0, 1.0], [5.0, 5.0]]))
    # the same in float32 under bf16 autocast (as in bf16-mixed evaluation), with colour too
    ver_c = MaskVerifier(in_dim=8, embed_dim=2, dim=8, crop=8, colour=True)
    images = torch.rand(2, 3, 16, 16) * 3.0
    plain = ver_c.features(masks, emb, torch.tensor([0, 1]), torch.zeros(2, 1, 16, 16), None, images=images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = ver_c.features(masks, emb, torch.tensor([0, 1]), torch.zeros(2, 1, 16, 16), None, images=images)
        sums = per_image_sums(weight, values, torch.tensor([1, 0, 1]))
    assert auto.dtype == torch.float32 and torch.allclose(auto, plain)
    assert sums.dtype == torch.float32 and torch.equal(sums, out)


def _fit_one_per_state(ver, train, held, steps: int = 150) -> float:
    """Fit ``ver`` on (features, queries, labels) with one candidate per state; its held-out accuracy at logit 0."""
    f, q, y = train
    opt = torch.optim.Adam(ver.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ver(q, f, torch.arange(len(y))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    f, q, y = held
    with torch.no_grad():
        return float(((ver(q, f, torch.arange(len(y))) > 0).float() == y).float().mean())


def test_colour_features_are_each_channels_mean_and_spread_under_the_candidate():
    ver = MaskVerifier(in_dim=8, embed_dim=4, dim=8, crop=8, colour=True)
    assert ver.n_inputs == MaskVerifier(in_dim=8, embed_dim=4, dim=8, crop=8).n_inputs + 6
    emb = torch.zeros(2, 4, 8, 8)
    images = torch.zeros(2, 3, 16, 16)  # half the masks' resolution: resized to 32 x 32 first
    images[1, 0, :8, :] = 1.0  # image 1, red channel: 1 in the top half
    images[1, 2] = 0.25
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:24, 4:12] = True  # rows 8-23: half in the top half, half in the bottom
    logits = torch.zeros(2, 1, 32, 32)
    f = ver.features(masks, emb, torch.tensor([0, 1]), logits, None, images=images)
    colour = f[:, 4:10]
    # image 0: all zero; image 1: red 1 on half the pixels (mean 0.5, spread 0.5), green 0, blue 0.25 everywhere
    assert torch.allclose(colour[0], torch.zeros(6))
    assert torch.allclose(colour[1], torch.tensor([0.5, 0.0, 0.25, 0.5, 0.0, 0.0]), atol=1e-4)
    # the layout after the colour is the colour-free verifier's: shape crop, geometry, evidence
    plain = MaskVerifier(in_dim=8, embed_dim=4, dim=8, crop=8).features(masks, emb, torch.tensor([0, 1]), logits, None)
    assert torch.allclose(torch.cat([f[:, :4], f[:, 10:]], 1), plain)
    with pytest.raises(ValueError, match="needs the input images"):
        ver.features(masks, emb, torch.tensor([0, 1]), logits, None)
    with pytest.raises(ValueError, match="B x 3"):
        ver.features(masks, emb, torch.tensor([0, 1]), logits, None, images=images[:, :1])
    assert ver(torch.zeros(2, 8), f, torch.tensor([0, 1])).shape == (2,)


def test_only_a_colour_verifier_learns_which_candidate_has_the_asked_colour():
    """Candidates of one shape and one embedding whose pixels are red or blue; the query asks for one colour. Only
    the pixels tell them apart: the colour verifier must learn it, the one without colour cannot."""
    rng = np.random.default_rng(0)
    emb = torch.ones(1, 4, 16, 16)

    def batch(ver, n):
        masks, images, labels, queries = [], [], [], []
        for _ in range(n):
            r = int(rng.integers(6, 14))
            cx, cy = (int(v) for v in rng.integers(r + 1, 64 - r - 1, 2))
            m = _disc(64, cx, cy, r)
            red = bool(rng.integers(2))
            img = torch.full((3, 64, 64), 0.5)
            img[0 if red else 2][torch.from_numpy(m)] = 0.9
            ask_red = bool(rng.integers(2))
            masks.append(m)
            images.append(img)
            queries.append([1.0, 0, 0, 0] if ask_red else [0, 1.0, 0, 0])
            labels.append(float(red == ask_red))
        m = torch.from_numpy(np.stack(masks))
        f = ver.features(m, emb.expand(n, -1, -1, -1), torch.arange(n), torch.zeros(n, 1, 64, 64), None,
                         images=torch.stack(images))
        return f, torch.tensor(queries), torch.tensor(labels)

    accuracy = {}
    for colour in (True, False):
        torch.manual_seed(0)
        ver = MaskVerifier(in_dim=4, embed_dim=4, dim=16, crop=8, colour=colour)
        accuracy[colour] = _fit_one_per_state(ver, batch(ver, 256), batch(ver, 128))
    assert accuracy[True] > 0.95 and accuracy[False] < 0.7, accuracy


def test_select_parts_takes_the_best_scored_candidate_and_different_ones_within_a_group():
    logits = torch.cat([_two_objects()] * 3 + [torch.full((1, 1, 32, 32), -9.0)])
    cands = mask_parts(logits, (-1.0,))
    assert cands.owner.tolist() == [0, 0, 1, 1, 2, 2]
    # every row prefers the weak object (the first candidate); the decoder's mean would pick the strong one
    scores = torch.tensor([3.0, 1.0, 3.0, 1.0, 3.0, 1.0])
    out, best = select_parts(logits, cands, scores, groups=[0, 0, 1, 2])
    weak = torch.zeros(32, 32, dtype=torch.bool)
    weak[2:8, 2:8] = True
    assert torch.equal(out[0, 0] > 0, weak)
    assert torch.equal(out[1, 0] > 0, cands.masks[3])  # same answer as row 0: the other object
    assert torch.equal(out[2, 0] > 0, weak)  # its own answer: free to take the weak one
    assert not (out[3] > 0).any() and best[3] == float("-inf")  # no candidate: an empty mask
    assert best[:3].tolist() == [3.0, 1.0, 3.0]
    # inside the kept part the logits are shifted by minus its threshold, so they stay ordered
    assert torch.allclose(out[0, 0][weak], torch.full((36,), 1.5))
    with pytest.raises(ValueError, match="groups"):
        select_parts(logits, cands, scores, groups=[0])
    with pytest.raises(ValueError, match="scores"):
        select_parts(logits, cands, scores[:2])


def test_forward_checks_its_inputs():
    ver = MaskVerifier(in_dim=8, embed_dim=4, dim=8, crop=8)
    x = torch.zeros(3, ver.n_inputs)
    assert ver(torch.zeros(2, 8), x, torch.tensor([0, 1, 1])).shape == (3,)
    with pytest.raises(ValueError, match="hidden"):
        ver(torch.zeros(2, 7), x, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="features"):
        ver(torch.zeros(2, 8), x[:, 1:], torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="owner"):
        ver(torch.zeros(2, 8), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="multiple of 8"):
        MaskVerifier(8, crop=12)


def _disc(size: int, cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _square(size: int, cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[cy - r : cy + r, cx - r : cx + r] = True
    return m


def test_the_verifier_learns_which_candidate_has_the_asked_shape():
    """Candidates with one appearance, place-independent: only the shape crop tells a disc from a square; the
    query says which is asked for. A few hundred steps must learn it on held-out candidates."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ver = MaskVerifier(in_dim=4, embed_dim=4, dim=16, crop=16)
    emb = torch.ones(1, 4, 16, 16)
    logits = torch.zeros(1, 1, 64, 64)

    def batch(n):
        masks, labels, queries = [], [], []
        for _ in range(n):
            r = int(rng.integers(6, 14))
            cx, cy = (int(v) for v in rng.integers(r + 1, 64 - r - 1, 2))
            disc = bool(rng.integers(2))
            masks.append(_disc(64, cx, cy, r) if disc else _square(64, cx, cy, r))
            ask_disc = bool(rng.integers(2))
            queries.append([1.0, 0, 0, 0] if ask_disc else [0, 1.0, 0, 0])
            labels.append(float(disc == ask_disc))
        m = torch.from_numpy(np.stack(masks))
        f = ver.features(m, emb, torch.zeros(n, dtype=torch.long), logits.expand(n, -1, -1, -1), None)
        return f, torch.tensor(queries), torch.tensor(labels)

    assert _fit_one_per_state(ver, batch(256), batch(128)) > 0.9


def test_group_ranks_are_within_each_group():
    from heads.mask_verifier import group_ranks

    values = torch.tensor([[3.0], [1.0], [2.0], [5.0], [5.0], [0.0]])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    got = group_ranks(values, groups)[:, 0].tolist()
    assert got == [1.0, 0.0, 0.5, 0.5, 0.5, 0.5]  # ranks within group 0; a tie; a group of one


def _discs_and_a_square(rng, n: int, size: int = 64) -> tuple[list[np.ndarray], int]:
    """A large square and n small discs at random places along a row; returns the masks (the square last) and the
    index of the disc nearest the square."""
    xs = rng.choice(np.arange(6, size - 6, 4), size=n + 1, replace=False)
    masks = [_disc(size, int(x), 32, 2) for x in xs[:n]] + [_square(size, int(xs[n]), 32, 5)]
    return masks, int(np.argmin(np.abs(xs[:n] - xs[n])))


@pytest.mark.parametrize("context", [0, 1])
def test_only_a_set_context_verifier_learns_the_disc_nearest_the_square(context):
    """Each [SEG] asks for "the disc nearest the square" among its candidates (2 or 3 discs and the square, anywhere
    along a row): a disc's own place does not tell whether it is the nearest, the square's place does, which only
    a verifier whose candidates see each other can read."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ver = MaskVerifier(in_dim=4, embed_dim=4, dim=32, crop=8, context=context)
    emb = torch.ones(1, 4, 16, 16)

    def batch(states):
        masks, owner, labels = [], [], []
        for i in range(states):
            cands, nearest = _discs_and_a_square(rng, int(rng.integers(2, 4)))
            masks += cands
            owner += [i] * len(cands)
            labels += [float(k == nearest) for k in range(len(cands))]
        m = torch.from_numpy(np.stack(masks))
        f = ver.features(m, emb, torch.zeros(len(m), dtype=torch.long), torch.zeros(len(m), 1, 64, 64), None)
        return f, torch.tensor(owner), torch.tensor(labels), torch.ones(states, 4)

    def picks(f, owner, y, q):
        s = ver(q, f, owner)
        return np.mean([float(y[owner == i][s[owner == i].argmax()]) for i in range(len(q))])

    train, held = batch(300), batch(150)
    opt = torch.optim.Adam(ver.parameters(), lr=3e-3)
    for _ in range(300):
        f, owner, y, q = train
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ver(q, f, owner), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = picks(*held)
    print(context, acc)
    if context:
        assert acc > 0.85
    else:
        assert acc < 0.75
