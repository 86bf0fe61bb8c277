import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grounding.box_codecs import make_box_codec
from heads.box_codec import PixelJsonBoxCodec, Qwen2VLBoxCodec, TextBoxCodec


def test_default_format_and_round_trip():
    c = make_box_codec("default")
    text = c.encode([0, 0, 640, 480], (640, 480))
    assert text == "<box>[0, 0, 999, 999]</box>"
    box = c.decode("It is " + c.encode([10, 20, 330, 240], (640, 480)) + ".", (640, 480)).boxes[0]
    assert np.allclose(box, [10, 20, 330, 240], atol=640 / 999)


def test_qwen_formats():
    q = Qwen2VLBoxCodec()
    t = q.encode([50, 25, 100, 50], (100, 50))
    assert t == "<|box_start|>(500,500),(1000,1000)<|box_end|>"
    assert np.allclose(q.decode(t, (100, 50)).boxes[0], [50, 25, 100, 50])
    p = PixelJsonBoxCodec()
    text = '```json\n[{"bbox_2d": [12, 30, 200, 140], "label": "red circle"}, {"bbox_2d": [1, 2, 3]}]\n```'
    d = p.decode(text, (640, 480))
    assert np.allclose(d.boxes, [[12, 30, 200, 140]]) and d.spans[0].label == "red circle"
    assert len(d.skipped) == 1


@pytest.mark.parametrize(
    "text, n, skipped",
    [
        ("<box>[1, 2, 3, 4]</box>", 1, 0),
        ("<box>[1, 2, 3</box>", 0, 1),
        ("<box>[1, 2, 3, 4", 0, 1),  # truncated
        ("<box>[a, b, c, d]</box> <box>[5, 6, 7, 8]</box>", 1, 1),
        ("<box><box>[1, 2, 3, 4]</box>", 1, 1),
        ("no boxes", 0, 0),
        ("<box>[9, 8, 1, 2]</box>", 1, 0),  # swapped corners are ordered
    ],
)
def test_malformed_text_is_reported_not_raised(text, n, skipped):
    d = TextBoxCodec().decode(text, (100, 100))
    assert len(d.spans) == n and len(d.skipped) == skipped
    for b in d.boxes:
        assert b[0] <= b[2] and b[1] <= b[3]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<box>[]/0123456789, -.|()_{}\":abcdefgilnprst2")), max_size=80))
def test_decoding_never_raises(text):
    for codec in (TextBoxCodec(), Qwen2VLBoxCodec(), PixelJsonBoxCodec()):
        d = codec.decode(text, (320, 240))
        assert d.boxes.shape[1] == 4
        assert np.all(d.boxes >= 0) and np.all(d.boxes[:, [0, 2]] <= 320) and np.all(d.boxes[:, [1, 3]] <= 240)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1),
    st.integers(1, 4000), st.integers(1, 4000),
)
def test_round_trip_error_is_within_quantisation(a, b, c, d, w, h):
    box = np.array([min(a, c) * w, min(b, d) * h, max(a, c) * w, max(b, d) * h])
    codec = TextBoxCodec()
    back = codec.decode(codec.encode(box, (w, h)), (w, h)).boxes[0]
    step = np.array([w, h, w, h]) / 999
    assert np.all(np.abs(back - box) <= step / 2 * (1 + 1e-6) + 1e-4)


def _relist(text: str, drop=()) -> str:
    from grounding.parse import parse_answer, relist_segments

    parsed = parse_answer(text, make_box_codec("default"), (100, 100))
    out, kept = relist_segments(text, parsed, drop)
    assert kept == [i for i in range(parsed.num_seg) if i not in drop] or (kept == [min(drop)] and len(drop) == parsed.num_seg)
    assert len(kept) == out.count("[SEG]")
    return out


def test_relist_segments_takes_items_out_of_a_list_and_rejoins_it():
    caption = ("The image shows <p>a square</p> [SEG], <p>a star</p> [SEG], <p>a speck</p> [SEG] and <p>a circle</p> [SEG]"
               " on a black background.")
    assert _relist(caption) == caption  # nothing dropped, already one list
    assert _relist(caption, {2}) == ("The image shows <p>a square</p> [SEG], <p>a star</p> [SEG] and <p>a circle</p> [SEG]"
                                     " on a black background.")
    assert _relist(caption, {3}) == ("The image shows <p>a square</p> [SEG], <p>a star</p> [SEG] and <p>a speck</p> [SEG]"
                                     " on a black background.")  # the last item: "and" moves to the new last
    assert _relist(caption, {0, 1, 2}) == "The image shows <p>a circle</p> [SEG] on a black background."
    assert _relist(caption, {0, 1, 2, 3}) == "The image shows <p>a square</p> [SEG] on a black background."  # never empty
    # items appended after a list's "and" join it; an Oxford comma is kept for three or more, not for two
    assert _relist("<p>A</p> [SEG] and <p>B</p> [SEG], <p>C</p> [SEG] here.") == "<p>A</p> [SEG], <p>B</p> [SEG] and <p>C</p> [SEG] here."
    oxford = "<p>A</p> [SEG], <p>B</p> [SEG], and <p>C</p> [SEG]."
    assert _relist(oxford) == oxford and _relist(oxford, {1}) == "<p>A</p> [SEG] and <p>C</p> [SEG]."
    assert _relist("<p>A</p> [SEG], <p>B</p> [SEG], <p>C</p> [SEG].", {0}) == "<p>B</p> [SEG], <p>C</p> [SEG]."  # no "and": commas
    # a segment outside a list keeps its words, ungrounded; a box before a [SEG] goes with it
    assert _relist("There is <p>a circle</p> [SEG] next to <p>a speck</p> [SEG].", {1}) == \
        "There is <p>a circle</p> [SEG] next to a speck."
    boxed = "<p>A</p> <box>[10, 10, 20, 20]</box> [SEG], <p>B</p> <box>[30, 30, 40, 40]</box> [SEG] and <p>C</p> [SEG]."
    assert _relist(boxed, {0}) == "<p>B</p> <box>[30, 30, 40, 40]</box> [SEG] and <p>C</p> [SEG]."
    assert _relist("no grounding here", {0}) == "no grounding here"
