"""The box codecs the project knows, built with the project's tokens (the codec classes live in ``heads``)."""

from __future__ import annotations

from heads.box_codec import PixelJsonBoxCodec, Qwen2VLBoxCodec, TextBoxCodec

from grounding.tokens import BOX_END, BOX_START

BOX_CODECS = {
    "default": lambda: TextBoxCodec(BOX_START, BOX_END, scale=999),
    "qwen2vl": lambda: Qwen2VLBoxCodec(),
    "qwen25vl": lambda: PixelJsonBoxCodec(),
}


def make_box_codec(name: str = "default"):
    """``default``: ``<box>[x1, y1, x2, y2]</box>`` 0..999; ``qwen2vl``: Qwen2-VL's native 0..1000 format;
    ``qwen25vl``: Qwen2.5-VL's absolute-pixel JSON."""
    try:
        return BOX_CODECS[name]()
    except KeyError:
        raise ValueError(f"unknown box codec {name!r}; known: {sorted(BOX_CODECS)}") from None
