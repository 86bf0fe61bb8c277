"""Backgrounds for the synthetic world: plain colours and real photo textures from ``skimage.data``.

The textures ship inside scikit-image's wheel (no download). They are grey-level photographs; each use crops a
random window, flips it, reduces its contrast and gives it a faint tint, so that the saturated colours of the
shapes stay distinct from the background (the colour words must stay true on every background).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# name in captions -> skimage.data loader name (all H x W uint8 grey-level, bundled with the wheel)
TEXTURES: tuple[tuple[str, str], ...] = (
    ("grass", "grass"),
    ("gravel", "gravel"),
    ("brick", "brick"),
    ("rock", "moon"),
)
# name in captions -> RGB; greys only, so no background can be mistaken for a shape colour
PLAIN_BACKGROUNDS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("white", (245, 245, 245)),
    ("light gray", (200, 200, 200)),
    ("gray", (128, 128, 128)),
    ("dark gray", (64, 64, 64)),
    ("black", (12, 12, 12)),
)


@dataclass(frozen=True)
class Background:
    """A rendered background: ``image`` H x W x 3 uint8 RGB; ``name`` for captions ("grass", "plain white");
    ``texture``: whether it is a photo texture."""

    image: np.ndarray
    name: str
    texture: bool


@lru_cache(maxsize=None)
def load_texture(loader: str) -> np.ndarray:
    """The grey-level texture ``skimage.data.<loader>()`` as H x W uint8 (cached; read-only)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, loader)())
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    out = np.ascontiguousarray(img.astype(np.uint8))
    out.setflags(write=False)
    return out


def texture_background(rng: np.random.Generator, size: tuple[int, int], index: int | None = None) -> Background:
    """A random crop of one photo texture, resized to ``size`` = (height, width).

    Contrast is scaled to 45-85 % around a random grey level and a faint tint (at most 12 % per channel) is added.
    """
    h, w = size
    k = int(rng.integers(len(TEXTURES))) if index is None else index
    name, loader = TEXTURES[k]
    tex = load_texture(loader)
    th, tw = tex.shape
    # crop a window with the output's aspect ratio, between 40 % and 100 % of the texture
    scale = rng.uniform(0.4, 1.0)
    ch = max(8, int(round(min(th, tw * h / w) * scale)))
    cw = max(8, int(round(ch * w / h)))
    ch, cw = min(ch, th), min(cw, tw)
    y0 = int(rng.integers(th - ch + 1))
    x0 = int(rng.integers(tw - cw + 1))
    crop = tex[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
    contrast = rng.uniform(0.45, 0.85)
    level = rng.uniform(90.0, 170.0)
    tint = 1.0 + rng.uniform(-0.12, 0.12, size=3)
    # grey value v -> channel c: clip(((v - mean) * contrast + level) * tint[c]), as three lookup tables
    grey = (np.arange(256, dtype=np.float64) - float(crop.mean())) * contrast + level
    luts = [np.clip(grey * t, 0, 255).astype(np.uint8) for t in tint]
    rgb = np.stack([lut[crop] for lut in luts], axis=-1)
    return Background(rgb, name, True)


PLAIN_GREYS = ("levels", "range")
PLAIN_JITTER = 8  # a plain level's per-image brightness jitter: +- this many grey levels


def check_plain_greys(greys: str) -> str:
    """``greys`` if it names a way to draw plain backgrounds (``PLAIN_GREYS``), else a ValueError."""
    if greys not in PLAIN_GREYS:
        raise ValueError(f"unknown plain greys {greys!r}; expected one of {PLAIN_GREYS}")
    return greys


def plain_background(rng: np.random.Generator, size: tuple[int, int], greys: str = "levels") -> Background:
    """A uniform grey background of ``size`` = (height, width). ``greys``: "levels" (one of ``PLAIN_BACKGROUNDS``
    with a brightness jitter of +- 8) or "range" (any grey from 0 to 255, pure black and white included, from the
    same random draw: level k and jitter j become grey (17 k + j + 8) / 84 of the way from 0 to 255; named after the
    nearest level)."""
    check_plain_greys(greys)
    k = int(rng.integers(len(PLAIN_BACKGROUNDS)))
    jitter = int(rng.integers(-PLAIN_JITTER, PLAIN_JITTER + 1))
    if greys == "range":  # the (level, jitter) draw as one of span x levels evenly spaced greys
        span = 2 * PLAIN_JITTER + 1
        grey = int(round((span * k + jitter + PLAIN_JITTER) * 255 / (span * len(PLAIN_BACKGROUNDS) - 1)))
        colour = np.full(3, grey, np.uint8)
        k = int(np.argmin([abs(int(rgb[0]) - grey) for _, rgb in PLAIN_BACKGROUNDS]))
    else:
        colour = np.clip(np.asarray(PLAIN_BACKGROUNDS[k][1], np.int16) + jitter, 0, 255).astype(np.uint8)
    img = np.full((size[0], size[1], 3), colour, np.uint8)
    return Background(img, f"plain {PLAIN_BACKGROUNDS[k][0]}", False)


def random_background(
    rng: np.random.Generator,
    size: tuple[int, int],
    textures: bool = True,
    texture_prob: float = 0.6,
    plain_greys: str = "levels",
) -> Background:
    """A texture background with probability ``texture_prob`` (if ``textures``), else a plain one (``plain_greys``:
    see ``plain_background``)."""
    if textures and rng.random() < texture_prob:
        return texture_background(rng, size)
    return plain_background(rng, size, plain_greys)
