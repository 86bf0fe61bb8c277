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
