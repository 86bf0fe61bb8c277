"""Test helpers for the inference API: make a predictor's vision-LLM "generate" given answers, and
hand-made image files (EXIF-rotated JPEG, PNGs whose header claims any size)."""

from __future__ import annotations

import io
import struct
import zlib
from contextlib import contextmanager

import numpy as np
import torch

from grounding.vision_llm.base import GenerationOutput


def one_torch_thread():
    """Fixture body: torch on one thread while a test module runs (tiny models gain nothing from more, and
    on a busy 2-core machine every extra thread waits at OpenMP barriers: tens of times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ONE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the same for subprocesses


@contextmanager
def scripted_answers(predictor, answers, *, eos: bool = True):
    """While active, ``predictor``'s vision-LLM answers request ``i`` of each batch with ``answers[i]`` (one
    string: every request), as the real tokenizer's ids, with fixed random hidden states; the rest of the
    path (token ids -> text -> parse -> [SEG] masks -> results) is the real one. An answer given as a tuple of
    strings is tokenised piece by piece (so ``("[S", "EG]")`` is the text "[SEG]" without the [SEG] token)."""
    vlm = predictor.model.vision_llm
    tok = vlm.tokenizer
    texts = [answers] if isinstance(answers, (str, tuple)) else list(answers)
    original = vlm.generate

    def generate(input_ids, attention_mask, image_inputs, token_fields=None, image_features=None, inject=None,
                 max_new_tokens=64, **kwargs):
        b = input_ids.shape[0]
        seqs = []
        for i in range(b):
            text = texts[i % len(texts)]
            pieces = text if isinstance(text, tuple) else (text,)
            ids = [t for p in pieces for t in tok(p, add_special_tokens=False)["input_ids"]][:max_new_tokens]
            if eos and len(ids) < max_new_tokens:
                ids = ids + [tok.eos_token_id]
            seqs.append(ids)
        t = max(1, max(len(s) for s in seqs))
        seq = torch.full((b, t), tok.pad_token_id, dtype=torch.long)
        for i, s in enumerate(seqs):
            seq[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(b, t, vlm.hidden_size, generator=g).to(input_ids.device)
        return GenerationOutput(seq.to(input_ids.device), hidden)

    vlm.generate = generate
    try:
        yield
    finally:
        vlm.generate = original


class EncoderCounter:
    """Counts images through the mask head's image encoder (calls and images)."""

    def __init__(self, predictor):
        self.head = predictor.model.mask_head
        self.calls = 0
        self.images = 0

    def __enter__(self):
        self._orig = self.head.encode_image

        def counted(x, *a, **k):
            self.calls += 1
            self.images += int(x.shape[0])
            return self._orig(x, *a, **k)

        self.head.encode_image = counted
        return self

    def __exit__(self, *exc):
        self.head.encode_image = self._orig


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (RGB) followed by almost no data: a decompression-bomb
    stand-in that costs nothing to make (any decoder that trusts the header would allocate the full size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def exif_rotated_jpeg(image: np.ndarray, orientation: int = 6) -> bytes:
    """``image`` stored as a JPEG with an EXIF orientation tag (6: the viewer rotates it 90 degrees clockwise)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def scene(h: int = 72, w: int = 96, seed: int = 0) -> np.ndarray:
    """A small RGB test image: noise with a red disc."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h / 2) ** 2 + (xx - w / 3) ** 2 < (min(h, w) / 5) ** 2] = (220, 30, 35)
    return img
