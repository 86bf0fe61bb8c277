"""A deterministic synthetic grounding world: scenes and videos of coloured shapes with exact ground truth.

Frames and shapes used throughout:

- Images are ``H x W x 3`` uint8 RGB; masks are boolean ``H x W``; boxes are ``xyxy`` float32 in absolute pixels of
  the image, from the *visible* mask, with ``x2 = max x + 1`` and ``y2 = max y + 1`` (pixel ``(x, y)`` covers
  ``[x, x + 1) x [y, y + 1)``). Object centres are continuous ``(x, y)`` pixel coordinates in the same frame.
- Objects are drawn back to front without anti-aliasing, so a mask is exactly the set of pixels painted with the
  object's colour (``masks``: visible pixels after occlusion; ``full_masks``: the whole shape, amodal).

Language is generated from typed queries (``The``, ``All``, ``And``, ``Extreme``, ``Compare``, ``Relation``,
``Closest`` and, for videos, ``Moving``/``Entering``/``Leaving``/``Still``). Each query evaluates itself on a
scene with a three-valued geometry (holds / fails / too close to call); only queries whose answer is
unambiguous are used. ``parse_expression`` reads the generated English back into a query, and ``check_turn`` /
``check_video`` verify that every expression selects exactly its targets.

Datasets: ``SyntheticGrounding`` (``GroundingSample`` items, all ``Task`` values) and ``SyntheticVideos``
(``VideoSample`` items). Items are deterministic per ``(seed, split, index)``; splits draw from disjoint seed
streams.
"""

from __future__ import annotations

import colorsys
import math
import re
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence, Union

import cv2
import numpy as np
from torch.utils.data import Dataset

from data.sample import (
    GroundingSample,
    RegionRef,
    Target,
    Task,
    Turn,
    VideoExpression,
    VideoSample,
    VideoTarget,
)
from data.templates import caption_turn, reasoning_turn, rec_turn, referring_turn, region_turn, restyle_prompt
from data.textures import Background, check_plain_greys, random_background

# ----------------------------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon")
COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (220, 30, 35),
        "green": (35, 175, 55),
        "blue": (35, 75, 230),
        "yellow": (245, 215, 25),
        "purple": (145, 45, 200),
        "orange": (250, 135, 20),
    }
)
# "bands" colouring (``render_scene(colours="bands")``): each name covers a band of hue (degrees, HSV; red wraps
# around 0), saturation and value, so that pure and web colours ((0, 0, 255), (255, 165, 0), (0, 128, 0), ...) fall
# inside their name's band; the gaps between the hue bands keep every drawn colour unambiguous. Every ``COLOURS``
# entry lies inside its own band.
COLOUR_BANDS: Mapping[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = MappingProxyType(
    {
        "red": ((-10.0, 6.0), (0.7, 1.0), (0.6, 1.0)),
        "orange": ((20.0, 40.0), (0.75, 1.0), (0.85, 1.0)),
        "yellow": ((50.0, 62.0), (0.75, 1.0), (0.8, 1.0)),
        "green": ((90.0, 145.0), (0.6, 1.0), (0.45, 1.0)),
        "blue": ((205.0, 242.0), (0.65, 1.0), (0.6, 1.0)),
        "purple": ((270.0, 300.0), (0.6, 1.0), (0.45, 0.9)),
    }
)
COLOURINGS: tuple[str, ...] = ("palette", "bands")
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_WORDS: Mapping[str, str] = MappingProxyType({"small": "small", "medium": "medium-sized", "large": "large"})
# circle-equivalent radius (area = pi r^2) as a fraction of min(H, W), per size class; the gaps between the bands
# make size words visible (areas differ by >= 1.6x between classes)
SIZE_RADIUS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"small": (0.055, 0.072), "medium": (0.092, 0.115), "large": (0.145, 0.175)}
)
SIZE_PROBS: tuple[float, ...] = (0.35, 0.4, 0.25)
SPLITS: Mapping[str, int] = MappingProxyType({"train": 0, "val": 1, "test": 2})
ALL_TASKS: tuple[Task, ...] = tuple(Task)

# geometry margins, as fractions of min(H, W) or ratios
POSITION_MARGIN = 0.05  # an extreme position must beat the runner-up by this much (centre and edge)
AREA_RATIO = 1.35  # "largest"/"smallest"/"larger": area ratio to the runner-up
CLOSEST_RATIO = 0.7  # "closest to": distance <= this times the runner-up's distance
MIN_VISIBLE_FRACTION = 0.5  # in still scenes every object keeps at least half of its pixels visible


# ----------------------------------------------------------------------------------------------------------------
# Objects and scenes
# ----------------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def unit_polygon(shape: str) -> tuple[np.ndarray, float]:
    """Vertices (N x 2, xy, y down) of ``shape`` with circumradius 1, pointing up, and the polygon's area."""
    if shape == "circle":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "square":
        a = np.pi / 4 + np.arange(4) * np.pi / 2
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "triangle":
        a = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "hexagon":
        a = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(a), np.sin(a)], 1)
    elif shape == "star":
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.47)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    pts = pts.astype(np.float64)
    pts.setflags(write=False)
    return pts, area


@dataclass(frozen=True)
class ShapeObject:
    """One shape: attributes (``shape``, ``colour``, ``size`` class) and pose.

    ``center``: (x, y) in pixels, image frame. ``radius``: circle-equivalent radius in pixels (the whole shape's
    area is about ``pi * radius**2`` whatever its kind). ``angle``: rotation in degrees. ``rgb``: fill colour.
    """

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    radius: float
    angle: float = 0.0
    rgb: tuple[int, int, int] = (0, 0, 0)

    @property
    def label(self) -> str:
        """``"red circle"``: colour and shape (the ``Target.label``)."""
        return f"{self.colour} {self.shape}"

    @property
    def circumradius(self) -> float:
        """Distance from the centre to the farthest vertex, in pixels."""
        return self.radius * math.sqrt(math.pi / unit_polygon(self.shape)[1])

    def polygon(self) -> np.ndarray:
        """N x 2 vertices, continuous (x, y) pixel coordinates of the image frame."""
        pts, _ = unit_polygon(self.shape)
        t = math.radians(self.angle)
        rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        return pts @ rot.T * self.circumradius + np.asarray(self.center)

    def draw_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The whole shape rasterised without anti-aliasing: ``size`` = (H, W) -> H x W bool (clipped to the image)."""
        mask = np.zeros(size, np.uint8)
        # cv2 puts integer coordinates at pixel centres: continuous x maps to x - 0.5; 4 fractional bits
        pts = np.round((self.polygon() - 0.5) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
        return mask.view(bool)

    def moved(self, center: tuple[float, float]) -> "ShapeObject":
        return replace(self, center=(float(center[0]), float(center[1])))


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """xyxy float32 box of a bool H x W mask (``x2 = max x + 1``); NaNs for an empty mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    if len(cols) == 0:
        return np.full(4, np.nan, np.float32)
    rows = np.flatnonzero(mask.any(axis=1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


@dataclass(frozen=True)
class ObjectFacts:
    """Geometry used by the language: the whole shape's box (xyxy pixels), its centre, its area (pixels), the
    visible area (pixels) and ``scale``, the image's short side (pixels) that position margins are relative to."""

    x1: float
    y1: float
    x2: float
    y2: float
    area: int
    visible_area: int
    scale: float = 256.0

    @property
    def cx(self) -> float:
        return 0.5 * (self.x1 + self.x2)

    @property
    def cy(self) -> float:
        return 0.5 * (self.y1 + self.y2)


@dataclass
class Scene:
    """A rendered still scene.

    ``image``: H x W x 3 uint8 RGB. ``objects``: in drawing order (later ones occlude earlier ones); index ``i``
    is target ``i`` of the samples made from this scene. ``masks``: N x H x W bool visible pixels; ``full_masks``:
    N x H x W bool whole shapes (clipped to the image). ``background``: its name in captions ("grass",
    "plain white"). ``boxes``: N x 4 xyxy float32 from the visible masks.
    """

    image: np.ndarray
    objects: list[ShapeObject]
    masks: np.ndarray
    full_masks: np.ndarray
    background: str = ""
    boxes: np.ndarray = field(init=False)

    def __post_init__(self):
        self.boxes = np.stack([mask_to_box(m) for m in self.masks]) if len(self.masks) else np.zeros((0, 4), np.float32)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @cached_property
    def facts(self) -> list[ObjectFacts]:
        out = []
        for full, vis in zip(self.full_masks, self.masks):
            x1, y1, x2, y2 = mask_to_box(full)
            out.append(
                ObjectFacts(
                    float(x1),
                    float(y1),
                    float(x2),
                    float(y2),
                    int(np.count_nonzero(full)),
                    int(np.count_nonzero(vis)),
                    _scale(self.size),
                )
            )
        return out

    def targets(self) -> list[Target]:
        """One ``Target`` per object (visible mask, its box, label "red circle")."""
        return [Target(box=b, mask=m, label=o.label) for o, m, b in zip(self.objects, self.masks, self.boxes)]


def _scale(size: tuple[int, int]) -> float:
    return float(min(size))


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


def band_rgb(colour: str, position: Sequence[float]) -> tuple[int, int, int]:
    """The RGB fill at ``position`` (three numbers in [0, 1]: where in the hue, saturation and value ranges) of
    ``colour``'s band (``COLOUR_BANDS``)."""
    (h0, h1), (s0, s1), (v0, v1) = COLOUR_BANDS[colour]
    u, v, w = (float(x) for x in position)
    hue = ((h0 + u * (h1 - h0)) % 360.0) / 360.0
    rgb = colorsys.hsv_to_rgb(hue, s0 + v * (s1 - s0), v0 + w * (v1 - v0))
    return tuple(int(round(255 * c)) for c in rgb)


def check_aspect(aspect: float) -> float:
    """``aspect`` as a float, or ValueError: a frame's longer side over its shorter one must be finite and >= 1."""
    if not (math.isfinite(aspect) and aspect >= 1.0):
        raise ValueError(f"aspect must be a finite ratio >= 1 (longer side over shorter side), got {aspect}")
    return float(aspect)


def _check_colouring(colours: str) -> str:
    if colours not in COLOURINGS:
        raise ValueError(f"unknown colouring {colours!r}; expected one of {COLOURINGS}")
    return colours


def _sample_object(
    rng: np.random.Generator,
    size: tuple[int, int],
    existing: Sequence[ShapeObject],
    copy_prob: float = 0.3,
    colours: str = "palette",
) -> ShapeObject:
    """Random attributes (sometimes copying an existing object's colour or shape, so that scenes hold several
    objects of one kind) and a pose that keeps the whole shape inside the image. ``colours``: "palette" fills with
    the name's ``COLOURS`` entry +- 12 per channel, "bands" anywhere in its ``COLOUR_BANDS`` (25 steps a
    dimension, from the same random draw, so that only the fills differ between the two)."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = tuple(COLOURS)[int(rng.integers(len(COLOURS)))]
    if existing and rng.random() < copy_prob:
        shape = existing[int(rng.integers(len(existing)))].shape
    if existing and rng.random() < copy_prob:
        colour = existing[int(rng.integers(len(existing)))].colour
    size_class = SIZES[int(rng.choice(len(SIZES), p=SIZE_PROBS))]
    lo, hi = SIZE_RADIUS[size_class]
    radius = rng.uniform(lo, hi) * _scale(size)
    jitter = {"circle": 0.0, "square": 12.0, "triangle": 12.0, "star": 12.0, "hexagon": 30.0}[shape]
    angle = float(rng.uniform(-jitter, jitter))
    shift = rng.integers(-12, 13, size=3)
    if colours == "bands":  # the same draw placed in the band: the scenes of both colourings differ in fills only
        rgb = band_rgb(colour, (shift + 12.5) / 25.0)
    else:
        rgb = tuple(int(c) for c in np.clip(np.asarray(COLOURS[colour], np.int16) + shift, 0, 255))
    obj = ShapeObject(shape, colour, size_class, (0.0, 0.0), float(radius), angle, rgb)
    r = obj.circumradius + 1.0
    h, w = size
    cx = rng.uniform(r, max(r, w - r))
    cy = rng.uniform(r, max(r, h - r))
    return obj.moved((cx, cy))


def render_scene(
    rng: np.random.Generator,
    image_size: int | Sequence[int] = 256,
    num_objects: int | None = None,
    min_objects: int = 2,
    max_objects: int = 5,
    textures: bool = True,
    background: Background | None = None,
    colours: str = "palette",
    plain_greys: str = "levels",
) -> Scene:
    """Render a still scene of ``num_objects`` shapes (default: uniform in [min_objects, max_objects]).
    ``colours``: how a colour name becomes a fill ("palette" or "bands", see ``_sample_object``); ``plain_greys``:
    the grey levels of plain backgrounds ("levels" or "range", see ``data.textures.plain_background``).

    ``image_size``: int or (H, W). Objects lie wholly inside the image; they may overlap, but every object keeps
    at least ``MIN_VISIBLE_FRACTION`` of its pixels visible, and objects of the same colour never touch (so that
    every mask is visible as a separate shape).
    """
    size = _as_size(image_size)
    _check_colouring(colours)
    n = int(rng.integers(min_objects, max_objects + 1)) if num_objects is None else int(num_objects)
    bg = background if background is not None else random_background(rng, size, textures, plain_greys=plain_greys)
    objects: list[ShapeObject] = []
    fulls: list[np.ndarray] = []
    visible: list[np.ndarray] = []
    full_counts: list[int] = []
    visible_counts: list[int] = []
    min_pixels = max(12, int(0.002 * size[0] * size[1]))
    for _ in range(n):
        for _attempt in range(40):
            obj = _sample_object(rng, size, objects, colours=colours)
            if any(
                o.colour == obj.colour
                and math.dist(o.center, obj.center) < o.circumradius + obj.circumradius + 3
                for o in objects
            ):
                continue
            full = obj.draw_mask(size)
            count = int(np.count_nonzero(full))
            if count < min_pixels:
                continue
            box = _window(obj, size)
            covered = [int(np.count_nonzero(v[box] & full[box])) for v in visible]
            if all(vc - c >= MIN_VISIBLE_FRACTION * fc for vc, c, fc in zip(visible_counts, covered, full_counts)):
                for v in visible:
                    v[box] &= ~full[box]
                visible_counts = [vc - c for vc, c in zip(visible_counts, covered)]
                objects.append(obj)
                fulls.append(full)
                full_counts.append(count)
                visible.append(full.copy())
                visible_counts.append(count)
                break
    image = bg.image.copy()
    for obj, full in zip(objects, fulls):
        box = _window(obj, size)
        image[box][full[box]] = obj.rgb
    empty = np.zeros((0, *size), bool)
    return Scene(
        image=image,
        objects=objects,
        masks=np.stack(visible) if visible else empty,
        full_masks=np.stack(fulls) if fulls else empty,
        background=bg.name,
    )


def _window(obj: ShapeObject, size: tuple[int, int]) -> tuple[slice, slice]:
    """(rows, cols) slices of the image that contain every pixel of ``obj``'s whole shape."""
    pts = obj.polygon()
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
    h, w = size
    return slice(max(0, y0), max(0, min(h, y1))), slice(max(0, x0), max(0, min(w, x1)))


# ----------------------------------------------------------------------------------------------------------------
# Queries: typed referring expressions that evaluate themselves on a scene
# ----------------------------------------------------------------------------------------------------------------

Ambiguous = None  # what ``evaluate`` returns when geometry is too close to call or the reference is not unique


@dataclass(frozen=True)
class Category:
    """A filter on attributes; ``None`` means any. Written "small red circle" / "red shapes" / "shape"."""

    shape: str | None = None
    colour: str | None = None
    size: str | None = None

    def matches(self, obj: ShapeObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )

    def select(self, objects: Sequence[ShapeObject]) -> list[int]:
        return [i for i, o in enumerate(objects) if self.matches(o)]

    def noun(self, plural: bool = False) -> str:
        words = []
        if self.size is not None:
            words.append(SIZE_WORDS[self.size])
        if self.colour is not None:
            words.append(self.colour)
        words.append((self.shape or "shape") + ("s" if plural else ""))
        return " ".join(words)

    @property
    def generic(self) -> bool:
        return self.shape is None and self.colour is None and self.size is None


def _left_to_right(indices: Iterable[int], facts: Sequence[ObjectFacts]) -> tuple[int, ...]:
    return tuple(sorted(indices, key=lambda i: (facts[i].cx, facts[i].cy, i)))


@dataclass(frozen=True)
class The:
    """"the red circle": exactly one object of the category (zero -> no target; several -> ambiguous)."""

    category: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()}"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        hits = self.category.select(objects)
        return tuple(hits) if len(hits) <= 1 else Ambiguous


@dataclass(frozen=True)
class All:
    """"all the red shapes" (or "both circles" when ``both``): every object of the category, left to right."""

    category: Category
    both: bool = False

    def phrase(self) -> str:
        noun = self.category.noun(plural=True)
        return f"both {noun}" if self.both else f"all the {noun}"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        hits = self.category.select(objects)
        if self.both and len(hits) != 2:
            return Ambiguous
        return _left_to_right(hits, facts)


@dataclass(frozen=True)
class And:
    """"the red circle and the blue square": each part names one object; targets in order of mention."""

    parts: tuple[The, ...]

    def phrase(self) -> str:
        names = [p.phrase() for p in self.parts]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        out: list[int] = []
        for p in self.parts:
            r = p.evaluate(objects, facts)
            if r is None or len(r) != 1 or r[0] in out:
                return Ambiguous
            out.append(r[0])
        return tuple(out)


EXTREMES: tuple[str, ...] = ("largest", "smallest", "leftmost", "rightmost", "topmost", "bottommost")


def _extreme_key(kind: str, f: ObjectFacts) -> tuple[float, ...]:
    """Keys to minimise (all must agree): centre and edge for positions; whole and visible area for sizes."""
    return {
        "leftmost": (f.cx, f.x1),
        "rightmost": (-f.cx, -f.x2),
        "topmost": (f.cy, f.y1),
        "bottommost": (-f.cy, -f.y2),
        "largest": (-math.log(f.area), -math.log(max(f.visible_area, 1))),
        "smallest": (math.log(f.area), math.log(max(f.visible_area, 1))),
    }[kind]


def _margins(kind: str, scale: float) -> tuple[float, ...]:
    if kind in ("largest", "smallest"):
        return (math.log(AREA_RATIO), 0.0)
    return (POSITION_MARGIN * scale, POSITION_MARGIN * scale * 0.5)


def _winner(kind: str, candidates: Sequence[int], facts: Sequence[ObjectFacts], scale: float) -> int | None:
    """The candidate that is clearly ``kind`` (beats every other one by the margins on every key) or None."""
    margins = _margins(kind, scale)
    keys = {i: _extreme_key(kind, facts[i]) for i in candidates}
    best = min(candidates, key=lambda i: keys[i])
    for j in candidates:
        if j != best and any(keys[j][k] - keys[best][k] <= margins[k] for k in range(len(margins))):
            return None
    return best


@dataclass(frozen=True)
class Extreme:
    """"the largest red shape", "the leftmost circle": superlative over the objects of a category."""

    kind: str
    category: Category

    def phrase(self) -> str:
        return f"the {self.kind} {self.category.noun()}"

    def question(self) -> str:
        return f"Which {self.category.noun()} is the {self.kind}?"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        cands = self.category.select(objects)
        if len(cands) <= 1:
            return tuple(cands)
        w = _winner(self.kind, cands, facts, _facts_scale(facts))
        return Ambiguous if w is None else (w,)


@dataclass(frozen=True)
class Compare:
    """"the larger red circle": comparative between exactly two objects of a category."""

    kind: str  # "larger" | "smaller"
    category: Category

    def phrase(self) -> str:
        return f"the {self.kind} {self.category.noun()}"

    def question(self) -> str:
        return f"Which of the two {self.category.noun(plural=True)} is {self.kind}?"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        cands = self.category.select(objects)
        if len(cands) != 2:
            return Ambiguous
        w = _winner("largest" if self.kind == "larger" else "smallest", cands, facts, _facts_scale(facts))
        return Ambiguous if w is None else (w,)


RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
_RELATION_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "left of": ("left of", "to the left of"),
        "right of": ("to the right of", "right of"),
        "above": ("above",),
        "below": ("below",),
    }
)


def relation_holds(rel: str, b: ObjectFacts, a: ObjectFacts) -> bool | None:
    """Whether ``b`` is ``rel`` ``a`` (three-valued; None: too close to call).

    True when the centre displacement points mostly along the relation's direction (at least as much as across
    it), b's centre is beyond a's near edge and b's far edge is beyond a's centre. False when b's centre is not
    beyond a's centre at all, or the displacement is mostly across (at most half along). None in between.
    """
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if rel == "left of":
        main, other, edge, far = -dx, dy, a.x1 - b.cx, a.cx - b.x2
    elif rel == "right of":
        main, other, edge, far = dx, dy, b.cx - a.x2, b.x1 - a.cx
    elif rel == "above":
        main, other, edge, far = -dy, dx, a.y1 - b.cy, a.cy - b.y2
    elif rel == "below":
        main, other, edge, far = dy, dx, b.cy - a.y2, b.y1 - a.cy
    else:
        raise ValueError(f"unknown relation {rel!r}")
    if main <= 0 or main <= 0.5 * abs(other):
        return False
    if edge >= 0 and far >= 0 and main >= abs(other):
        return True
    return None


@dataclass(frozen=True)
class Relation:
    """"the circle left of the blue square": the one object of ``category`` (other than the anchor) that is
    clearly ``rel`` the anchor, while every other one clearly is not."""

    rel: str
    category: Category
    anchor: Category
    wording: int = 0  # index into the relation's phrasings ("left of" / "to the left of")

    def _rel_text(self) -> str:
        words = _RELATION_WORDS[self.rel]
        return words[self.wording % len(words)]

    def phrase(self) -> str:
        return f"the {self.category.noun()} {self._rel_text()} the {self.anchor.noun()}"

    def question(self) -> str:
        return f"Which {self.category.noun()} is {self._rel_text()} the {self.anchor.noun()}?"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        anchors = self.anchor.select(objects)
        if len(anchors) != 1:
            return Ambiguous
        a = anchors[0]
        hits = []
        for i in self.category.select(objects):
            if i == a:
                continue
            h = relation_holds(self.rel, facts[i], facts[a])
            if h is None:
                return Ambiguous
            if h:
                hits.append(i)
        return tuple(hits) if len(hits) <= 1 else Ambiguous


@dataclass(frozen=True)
class Closest:
    """"the shape closest to the red star": nearest centre, clearly nearer than every other candidate."""

    category: Category
    anchor: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()} closest to the {self.anchor.noun()}"

    def question(self) -> str:
        return f"Which {self.category.noun()} is closest to the {self.anchor.noun()}?"

    def evaluate(self, objects: Sequence[ShapeObject], facts: Sequence[ObjectFacts]) -> tuple[int, ...] | None:
        anchors = self.anchor.select(objects)
        if len(anchors) != 1:
            return Ambiguous
        a = facts[anchors[0]]
        cands = [i for i in self.category.select(objects) if i != anchors[0]]
        if len(cands) <= 1:
            return tuple(cands)
        dist = sorted((math.hypot(facts[i].cx - a.cx, facts[i].cy - a.cy), i) for i in cands)
        if dist[0][0] > CLOSEST_RATIO * dist[1][0]:
            return Ambiguous
        return (dist[0][1],)


Query = Union[The, All, And, Extreme, Compare, Relation, Closest]
ReasonQuery = Union[Extreme, Compare, Relation, Closest]


def _facts_scale(facts: Sequence[ObjectFacts]) -> float:
    return facts[0].scale if facts else 256.0


# ----------------------------------------------------------------------------------------------------------------
# Video queries: motion and presence over a whole video
# ----------------------------------------------------------------------------------------------------------------

DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")


@dataclass(frozen=True)
class Moving:
    """"the red shape moving left": the one object of the category that moves steadily in ``direction``."""

    direction: str
    category: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()} moving {self.direction}"


@dataclass(frozen=True)
class Entering:
    """"the circle entering the frame": outside the frame on the first frame, inside later."""

    category: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()} entering the frame"


@dataclass(frozen=True)
class Leaving:
    """"the circle leaving the frame": inside the frame on the first frame, outside on the last."""

    category: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()} leaving the frame"


@dataclass(frozen=True)
class Still:
    """"the square that does not move"."""

    category: Category

    def phrase(self) -> str:
        return f"the {self.category.noun()} that does not move"


VideoQuery = Union[The, All, And, Moving, Entering, Leaving, Still]


# ----------------------------------------------------------------------------------------------------------------
# Parsing generated English back into queries (the checker's independent path from text to targets)
# ----------------------------------------------------------------------------------------------------------------

_WORD_TO_SIZE: Mapping[str, str] = MappingProxyType({v: k for k, v in SIZE_WORDS.items()})
_REL_WORD_TO_REL: Mapping[str, tuple[str, int]] = MappingProxyType(
    {w: (rel, k) for rel, words in _RELATION_WORDS.items() for k, w in enumerate(words)}
)


def _cat_re(p: str, plural: bool = False) -> str:
    sizes = "|".join(re.escape(w) for w in SIZE_WORDS.values())
    colours = "|".join(COLOURS)
    shapes = "|".join((*SHAPES, "shape"))
    s = "s" if plural else ""
    return rf"(?:(?P<{p}size>{sizes}) )?(?:(?P<{p}colour>{colours}) )?(?P<{p}shape>{shapes}){s}"


def _cat(m: re.Match, p: str) -> Category:
    shape = m.group(p + "shape")
    size = m.group(p + "size")
    return Category(None if shape == "shape" else shape, m.group(p + "colour"), _WORD_TO_SIZE[size] if size else None)


@lru_cache(maxsize=None)
def _patterns() -> tuple[tuple[str, re.Pattern], ...]:
    t, a, tp = _cat_re("t"), _cat_re("a"), _cat_re("t", plural=True)
    ext = "|".join(EXTREMES)
    rel = "|".join(sorted(_REL_WORD_TO_REL, key=len, reverse=True))
    raw = (
        ("extreme", rf"the (?P<kind>{ext}) {t}"),
        ("compare", rf"the (?P<kind>larger|smaller) {t}"),
        ("relation", rf"the {t} (?P<rel>{rel}) the {a}"),
        ("closest", rf"the {t} closest to the {a}"),
        ("moving", rf"the {t} moving (?P<dir>{'|'.join(DIRECTIONS)})"),
        ("entering", rf"the {t} entering the frame"),
        ("leaving", rf"the {t} leaving the frame"),
        ("still", rf"the {t} that does not move"),
        ("and", rf"the {t}(?P<rest>(?:, the {_cat_re('x')})*) and the {a}"),
        ("all", rf"all the {tp}"),
        ("both", rf"both {tp}"),
        ("the", rf"the {t}"),
        ("q_extreme", rf"Which {t} is the (?P<kind>{ext})\?"),
        ("q_compare", rf"Which of the two {tp} is (?P<kind>larger|smaller)\?"),
        ("q_relation", rf"Which {t} is (?P<rel>{rel}) the {a}\?"),
        ("q_closest", rf"Which {t} is closest to the {a}\?"),
    )
    return tuple((name, re.compile(rx)) for name, rx in raw)


def parse_expression(text: str) -> Query | VideoQuery:
    """Read an expression generated by this module back into its query; ``ValueError`` if it is not one."""
    text = text.strip()
    for name, rx in _patterns():
        m = rx.fullmatch(text)
        if m is None:
            continue
        if name in ("extreme", "q_extreme"):
            return Extreme(m.group("kind"), _cat(m, "t"))
        if name in ("compare", "q_compare"):
            return Compare(m.group("kind"), _cat(m, "t"))
        if name in ("relation", "q_relation"):
            rel, wording = _REL_WORD_TO_REL[m.group("rel")]
            return Relation(rel, _cat(m, "t"), _cat(m, "a"), wording)
        if name in ("closest", "q_closest"):
            return Closest(_cat(m, "t"), _cat(m, "a"))
        if name == "moving":
            return Moving(m.group("dir"), _cat(m, "t"))
        if name == "entering":
            return Entering(_cat(m, "t"))
        if name == "leaving":
            return Leaving(_cat(m, "t"))
        if name == "still":
            return Still(_cat(m, "t"))
        if name == "and":
            middle = [_cat(mm, "x") for mm in re.finditer(rf", the {_cat_re('x')}", m.group("rest"))]
            return And(tuple(The(c) for c in [_cat(m, "t"), *middle, _cat(m, "a")]))
        if name in ("all", "both"):
            return All(_cat(m, "t"), both=name == "both")
        return The(_cat(m, "t"))
    raise ValueError(f"not an expression of the synthetic world: {text!r}")


# ----------------------------------------------------------------------------------------------------------------
# Turn generation for still scenes
# ----------------------------------------------------------------------------------------------------------------

# weights of attribute subsets (size, colour, shape) when naming one object
_DESCRIPTION_WEIGHTS: Mapping[tuple[bool, bool, bool], float] = MappingProxyType(
    {
        (False, True, True): 4.0,
        (False, False, True): 2.0,
        (False, True, False): 2.0,
        (True, True, True): 1.0,
        (True, False, True): 1.0,
        (True, True, False): 1.0,
        (True, False, False): 0.5,
    }
)


def _category_of(obj: ShapeObject, use: tuple[bool, bool, bool]) -> Category:
    return Category(obj.shape if use[2] else None, obj.colour if use[1] else None, obj.size if use[0] else None)


def unique_descriptions(objects: Sequence[ShapeObject]) -> list[list[tuple[Category, float]]]:
    """For each object, the attribute descriptions that select it alone, with their sampling weights."""
    out: list[list[tuple[Category, float]]] = []
    for i, o in enumerate(objects):
        cats = []
        for use, w in _DESCRIPTION_WEIGHTS.items():
            c = _category_of(o, use)
            if c.select(objects) == [i]:
                cats.append((c, w))
        out.append(cats)
    return out


def _pick(rng: np.random.Generator, items: Sequence, weights: Sequence[float] | None = None):
    if not items:
        return None
    if weights is None:
        return items[int(rng.integers(len(items)))]
    p = np.asarray(weights, np.float64)
    return items[int(rng.choice(len(items), p=p / p.sum()))]


def _article(noun_phrase: str) -> str:
    return f"an {noun_phrase}" if noun_phrase[0] in "aeiou" else f"a {noun_phrase}"


def object_phrase(obj: ShapeObject) -> str:
    """Caption phrase: "a small red circle", "an orange star", "a large blue hexagon" (medium has no size word)."""
    words = ([obj.size] if obj.size != "medium" else []) + [obj.colour, obj.shape]
    return _article(" ".join(words))


def region_answer(obj: ShapeObject) -> str:
    """"It is a red circle." / "It is an orange star."."""
    return f"It is {_article(obj.label)}."


class _TurnMaker:
    """Builds turns about one scene; remembers what earlier turns of the same sample asked, to vary them."""

    def __init__(self, scene: Scene, rng: np.random.Generator):
        self.scene = scene
        self.rng = rng
        self.objects = scene.objects
        self.facts = scene.facts
        self.descriptions = unique_descriptions(scene.objects)
        self.regions: list[np.ndarray] = []
        self.used_expressions: set[str] = set()
        self.used_targets: set[int] = set()

    # -- helpers ---------------------------------------------------------------------------------------------
    def _fresh(self, candidates: list, text) -> list:
        fresh = [c for c in candidates if text(c) not in self.used_expressions]
        return fresh

    def _describe(self, i: int) -> The:
        cats, weights = zip(*self.descriptions[i])
        return The(_pick(self.rng, cats, weights))

    def _single_query(self) -> The | None:
        cands = [i for i, d in enumerate(self.descriptions) if d]
        unused = [i for i in cands if i not in self.used_targets]
        for pool in (unused, cands):
            for i in self.rng.permutation(pool) if pool else []:
                q = self._describe(int(i))
                if q.phrase() not in self.used_expressions:
                    return q
        return None

    def _reason_query(self) -> ReasonQuery | None:
        kinds = ["size", "position", "compare", "relation", "closest"]
        weights = np.array([1.0, 1.0, 0.5, 1.6, 0.7])
        order = self.rng.choice(len(kinds), size=len(kinds), replace=False, p=weights / weights.sum())
        for k in order:
            cands = [q for q in self._reason_candidates(kinds[int(k)]) if q.phrase() not in self.used_expressions]
            if cands:
                return _pick(self.rng, cands)
        return None

    def _reason_categories(self, exclude: int | None = None) -> list[Category]:
        """Generic, colour and shape categories that hold at least two objects (besides ``exclude``)."""
        out = [Category()]
        for o in self.objects:
            out += [Category(colour=o.colour), Category(shape=o.shape)]
        seen, cats = set(), []
        for c in out:
            if c in seen:
                continue
            seen.add(c)
            if len([i for i in c.select(self.objects) if i != exclude]) >= 2:
                cats.append(c)
        return cats

    def _reason_candidates(self, kind: str) -> list[ReasonQuery]:
        objs, facts = self.objects, self.facts
        out: list[ReasonQuery] = []
        if kind in ("size", "position", "compare"):
            for c in self._reason_categories():
                n = len(c.select(objs))
                if kind == "compare":
                    qs = [Compare(k, c) for k in ("larger", "smaller")] if n == 2 else []
                else:
                    names = EXTREMES[:2] if kind == "size" else EXTREMES[2:]
                    qs = [Extreme(k, c) for k in names]
                out += [q for q in qs if _is_single(q.evaluate(objs, facts))]
            return out
        for a, descs in enumerate(self.descriptions):
            if not descs:
                continue
            anchor = _pick(self.rng, *zip(*descs))
            for c in self._reason_categories(exclude=a):
                if kind == "relation":
                    qs = [Relation(r, c, anchor, int(self.rng.integers(2))) for r in RELATIONS]
                else:
                    qs = [Closest(c, anchor)]
                out += [q for q in qs if _is_single(q.evaluate(objs, facts))]
        return out

    # -- tasks -----------------------------------------------------------------------------------------------
    def res(self) -> Turn | None:
        q = self._single_query()
        if q is None:
            return None
        return self._referring(q, Task.RES)

    def res_multi(self) -> Turn | None:
        objs, facts = self.objects, self.facts
        alls: list[All] = []
        weights: list[float] = []
        seen: set[Category] = set()
        for o in objs:
            for use, w in (
                ((False, True, False), 2.0),
                ((False, False, True), 2.0),
                ((False, True, True), 1.5),
                ((True, False, False), 0.4),
                ((True, False, True), 0.4),
                ((True, True, False), 0.4),
            ):
                c = _category_of(o, use)
                if c not in seen and len(c.select(objs)) >= 2:
                    seen.add(c)
                    both = len(c.select(objs)) == 2 and self.rng.random() < 0.3
                    alls.append(All(c, both))
                    weights.append(w)
        if len(objs) >= 2:
            alls.append(All(Category(), len(objs) == 2 and self.rng.random() < 0.3))
            weights.append(0.3)
        keep = [k for k, q in enumerate(alls) if q.phrase() not in self.used_expressions]
        alls, weights = [alls[k] for k in keep], [weights[k] for k in keep]
        nameable = [i for i, d in enumerate(self.descriptions) if d]
        use_and = len(nameable) >= 2 and (not alls or self.rng.random() < 0.35)
        if use_and:
            k = 3 if len(nameable) >= 3 and self.rng.random() < 0.25 else 2
            picked = self.rng.choice(nameable, size=k, replace=False)
            q: Query = And(tuple(self._describe(int(i)) for i in picked))
        elif alls:
            q = _pick(self.rng, alls, weights)
        else:
            return None
        return self._referring(q, Task.RES_MULTI)

    def res_none(self) -> Turn | None:
        objs = self.objects
        colours = {o.colour for o in objs}
        shapes = {o.shape for o in objs}
        cands: list[Category] = []
        weights: list[float] = []
        for c in COLOURS:
            for s in SHAPES:
                cat = Category(s, c)
                if not cat.select(objs):
                    cands.append(cat)
                    weights.append(3.0 if (c in colours and s in shapes) else 0.5)
            if c not in colours:
                cands.append(Category(colour=c))
                weights.append(1.5)
        for s in SHAPES:
            if s not in shapes:
                cands.append(Category(shape=s))
                weights.append(1.5)
        for _ in range(8):
            cat = _pick(self.rng, cands, weights)
            q: Query = All(cat) if self.rng.random() < 0.25 else The(cat)
            if q.phrase() not in self.used_expressions:
                return self._referring(q, Task.RES_NONE)
        return None

    def reason(self) -> Turn | None:
        q = self._reason_query()
        if q is None:
            return None
        targets = q.evaluate(self.objects, self.facts)
        text = q.question() if self.rng.random() < 0.5 else q.phrase()
        self._use(q, targets)
        return reasoning_turn(text, targets, self.rng)

    def rec(self) -> Turn | None:
        q: Query | None = None
        if self.rng.random() < 0.25:
            q = self._reason_query()
        if q is None:
            q = self._single_query()
        if q is None:
            return None
        targets = q.evaluate(self.objects, self.facts)
        self._use(q, targets)
        return rec_turn(q.phrase(), targets[0], self.rng)

    def gcg(self) -> Turn | None:
        if not self.objects:
            return None
        order = _left_to_right(range(len(self.objects)), self.facts)
        parts: list[str | tuple[str, int]] = ["The image shows "]
        for k, i in enumerate(order):
            if k > 0:
                parts.append(" and " if k == len(order) - 1 else ", ")
            parts.append((object_phrase(self.objects[i]), i))
        parts.append(f" on {_article(self.scene.background)} background.")
        return caption_turn(parts, self.rng)

    def region(self) -> Turn | None:
        cands = [i for i in range(len(self.objects)) if self._dominates_box(i)]
        unused = [i for i in cands if i not in self.used_targets]
        i = _pick(self.rng, unused or cands)
        if i is None:
            return None
        self.used_targets.add(int(i))
        self.regions.append(self.scene.boxes[i])
        return region_turn(len(self.regions) - 1, region_answer(self.objects[i]), self.rng)

    def make(self, task: Task) -> Turn | None:
        return {
            Task.RES: self.res,
            Task.RES_MULTI: self.res_multi,
            Task.RES_NONE: self.res_none,
            Task.REASON: self.reason,
            Task.REC: self.rec,
            Task.GCG: self.gcg,
            Task.REGION: self.region,
        }[Task(task)]()

    # -- internals -------------------------------------------------------------------------------------------
    def _use(self, q, targets: Sequence[int]) -> None:
        self.used_expressions.add(q.phrase())
        self.used_targets.update(int(t) for t in targets)

    def _referring(self, q: Query, task: Task) -> Turn:
        targets = q.evaluate(self.objects, self.facts)
        assert targets is not None, q
        self._use(q, targets)
        plural = isinstance(q, (All, And))
        return referring_turn(q.phrase(), targets, self.rng, task=task, plural=plural)

    def _dominates_box(self, i: int) -> bool:
        """Whether object ``i`` owns its own box: more than 1.5x the visible pixels of any other object there."""
        x1, y1, x2, y2 = (int(v) for v in self.scene.boxes[i])
        inside = self.scene.masks[:, y1:y2, x1:x2].reshape(len(self.objects), -1).sum(1)
        others = np.delete(inside, i)
        return bool(len(others) == 0 or inside[i] > 1.5 * others.max())


def _is_single(result: tuple[int, ...] | None) -> bool:
    return result is not None and len(result) == 1


# ----------------------------------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------------------------------

_REGION_ANSWER = re.compile(rf"It is an? (?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)})\.")
_CAPTION_PHRASE = re.compile(
    rf"an? (?:(?P<size>small|large) )?(?P<colour>{'|'.join(COLOURS)}) (?P<shape>{'|'.join(SHAPES)})"
)


def check_turn(scene: Scene, turn: Turn, regions: np.ndarray | None = None) -> None:
    """Verify a turn against the scene's geometry; ``ValueError`` naming the problem if it is wrong.

    Referring, reasoning and REC expressions are parsed back from text and re-evaluated: they must be
    unambiguous and select exactly the turn's targets (in answer order). Captions must ground every object once
    with a phrase naming its attributes; region answers must name the region's object.
    """
    objs, facts = scene.objects, scene.facts
    targets = tuple(turn.target_indices)
    where = f"turn {turn.task.value} {turn.prompt_text()!r} -> {turn.answer!r}"
    if turn.task in (Task.RES, Task.RES_MULTI, Task.RES_NONE, Task.REASON, Task.REC):
        if turn.expression is None:
            raise ValueError(f"{where}: no expression")
        q = parse_expression(turn.expression)
        got = q.evaluate(objs, facts)
        if got is None:
            raise ValueError(f"{where}: expression is ambiguous in this scene")
        if tuple(got) != targets:
            raise ValueError(f"{where}: expression selects {got}, answer grounds {targets}")
        n = len(targets)
        expected = {Task.RES_MULTI: ">=2", Task.RES_NONE: "0"}.get(turn.task, "1")
        if (expected == "1" and n != 1) or (expected == "0" and n != 0) or (expected == ">=2" and n < 2):
            raise ValueError(f"{where}: task {turn.task.value} expects {expected} targets, got {n}")
        if turn.task == Task.REC:
            if any(g.seg or not g.box for g in turn.grounds):
                raise ValueError(f"{where}: REC answers ground boxes as text, without masks")
        elif any(not g.seg or g.box for g in turn.grounds):
            raise ValueError(f"{where}: segmentation answers ground masks")
    elif turn.task == Task.GCG:
        if sorted(targets) != list(range(len(objs))):
            raise ValueError(f"{where}: caption grounds {targets}, expected every object once")
        for g in turn.grounds:
            m = _CAPTION_PHRASE.fullmatch(g.phrase or "")
            o = objs[g.index]
            size = o.size if o.size != "medium" else None
            if m is None or (m.group("colour"), m.group("shape"), m.group("size")) != (o.colour, o.shape, size):
                raise ValueError(
                    f"{where}: phrase {g.phrase!r} does not describe object {g.index} ({o.size} {o.label})"
                )
    elif turn.task == Task.REGION:
        refs = [p for p in turn.prompt if isinstance(p, RegionRef)]
        if len(refs) != 1 or regions is None:
            raise ValueError(f"{where}: a region question needs exactly one region")
        box = np.asarray(regions)[refs[0].index]
        owners = [i for i, b in enumerate(scene.boxes) if np.array_equal(b, box)]
        m = _REGION_ANSWER.fullmatch("".join(p for p in turn.answer if isinstance(p, str)))
        if not owners or m is None:
            raise ValueError(f"{where}: region {box} is no object's box, or the answer names no object")
        if not any((objs[i].colour, objs[i].shape) == (m.group("colour"), m.group("shape")) for i in owners):
            raise ValueError(f"{where}: the answer does not name the object in region {box}")
    else:  # pragma: no cover - Task is closed
        raise ValueError(f"{where}: unknown task")


def check_sample(scene: Scene, sample: GroundingSample) -> None:
    """``check_turn`` on every turn, plus the targets: masks are the scene's visible masks, boxes their boxes."""
    if len(sample.targets) != len(scene.objects):
        raise ValueError(f"{sample.source}: {len(sample.targets)} targets for {len(scene.objects)} objects")
    for i, t in enumerate(sample.targets):
        if not np.array_equal(t.mask, scene.masks[i]) or not np.array_equal(t.box, mask_to_box(t.mask)):
            raise ValueError(f"{sample.source}: target {i} mask or box disagrees with the scene")
    for turn in sample.turns:
        check_turn(scene, turn, sample.regions)


# ----------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------


def _as_task(task: Task | str) -> Task:
    """A ``Task`` from itself, its value ("rec") or its name ("REC")."""
    if isinstance(task, Task):
        return task
    try:
        return Task(task)
    except ValueError:
        try:
            return Task[str(task).upper()]
        except KeyError:
            raise ValueError(f"unknown task {task!r}; expected one of {[t.value for t in Task]}") from None


def _rng(seed: int, stream: int, split: str, index: int) -> np.random.Generator:
    """The generator of one item: disjoint streams per (seed, kind of item, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    seq = np.random.SeedSequence(entropy=int(seed), spawn_key=(stream, SPLITS[split], int(index)))
    return np.random.default_rng(seq)


class SyntheticGrounding(Dataset):
    """Still scenes of coloured shapes with turns for every task (``GroundingSample`` items).

    Args:
        split: "train", "val" or "test" (disjoint seed streams).
        length: number of items.
        image_size: int or (H, W), pixels.
        tasks: the tasks to draw turns from (default: every ``Task``; members, names "REC" or values "rec"),
            e.g. ``[Task.REC]`` for per-task evaluation. Turn ``j`` of item ``i`` asks
            ``tasks[(i * turns_per_sample + j) % len(tasks)]``, so tasks are balanced exactly; the turns of a sample
            are then shuffled.
        turns_per_sample: turns about the same image in one sample (several objects per forward pass).
        seed: base seed; items are deterministic per (seed, split, index).
        textures: allow photo-texture backgrounds (else plain grey levels only).
        min_objects, max_objects: objects per scene.
        scenes: number of distinct scenes; item ``i`` shows scene ``i % scenes`` with its turns drawn afresh
            (so frozen image features cached on disk serve several epochs of new questions). None: every item
            is its own scene.
        phrasing: probability that a turn's prompt is typed another way (``templates.restyle_prompt``: the bare
            expression "red circle", lower case, UPPER CASE, Title Case or no final punctuation), drawn from a
            stream of its own, so the scenes, questions and answers are those of ``phrasing=0``. 1.0 restyles
            every prompt: evaluation under phrasings the templates never write.
        colours: "palette" (each colour name one RGB, +- 12 per channel: the world the default model was trained
            on) or "bands" (anywhere in the name's hue, saturation and value band, ``COLOUR_BANDS``: pure and web
            colours included), e.g. to measure a model on colours its palette does not hold.
        plain_greys: "levels" (plain backgrounds at five grey levels +- 8, the default model's world) or "range"
            (any grey from pure black to white, the same scenes otherwise; ``data.textures.plain_background``).
        aspect: the largest ratio of a frame's longer side to its shorter one (>= 1). 1: every frame is
            ``image_size``. Above 1: each scene draws its frame (``frame_of``, from a stream of its own) with a
            ratio log-uniform between 1 and ``aspect``, landscape or portrait with equal chance, its longer side
            ``image_size``'s longer side; e.g. 2.0 trains a model on frames from 256 x 128 to 128 x 256.

    ``targets`` of every sample are all the scene's objects, in drawing order (``GroundRef.index`` is the object's
    index); ``regions`` are the boxes that region questions point at.
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 1000,
        image_size: int | tuple[int, int] = 256,
        tasks: Sequence[Task | str] | None = None,
        turns_per_sample: int = 1,
        seed: int = 0,
        textures: bool = True,
        min_objects: int = 2,
        max_objects: int = 5,
        scenes: int | None = None,
        phrasing: float = 0.0,
        colours: str = "palette",
        plain_greys: str = "levels",
        aspect: float = 1.0,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        if scenes is not None and scenes < 1:
            raise ValueError(f"scenes must be >= 1 or None, got {scenes}")
        if turns_per_sample < 1:
            raise ValueError(f"turns_per_sample must be >= 1, got {turns_per_sample}")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        self.split = split
        self.length = int(length)
        self.image_size = _as_size(image_size)
        self.tasks = tuple(_as_task(t) for t in (ALL_TASKS if tasks is None else tasks))
        if not self.tasks:
            raise ValueError("tasks must not be empty")
        self.turns_per_sample = int(turns_per_sample)
        self.seed = int(seed)
        self.textures = textures
        self.min_objects = int(min_objects)
        self.max_objects = int(max_objects)
        self.scenes = None if scenes is None else int(scenes)
        if not 0.0 <= phrasing <= 1.0:
            raise ValueError(f"phrasing must be a probability in [0, 1], got {phrasing}")
        self.phrasing = float(phrasing)
        self.colours = _check_colouring(colours)
        self.plain_greys = check_plain_greys(plain_greys)
        self.aspect = check_aspect(aspect)

    def __len__(self) -> int:
        return self.length

    def frame_of(self, scene_index: int) -> tuple[int, int]:
        """(H, W) of scene ``scene_index``'s frame: ``image_size``, or with ``aspect`` > 1 a drawn ratio."""
        if self.aspect == 1.0:
            return self.image_size
        rng = _rng(self.seed, 4, self.split, scene_index)
        ratio = float(np.exp(rng.uniform(0.0, np.log(self.aspect))))
        longer = max(self.image_size)
        shorter = max(1, int(round(longer / ratio)))
        return (shorter, longer) if rng.random() < 0.5 else (longer, shorter)

    def __getitem__(self, index: int) -> GroundingSample:
        return self.generate(index)[1]

    def tasks_of(self, index: int) -> list[Task]:
        """The tasks of item ``index``'s turns, before shuffling."""
        k = self.turns_per_sample
        return [self.tasks[(index * k + j) % len(self.tasks)] for j in range(k)]

    def generate(self, index: int) -> tuple[Scene, GroundingSample]:
        """The scene (objects with attributes, visible and whole masks) and the sample of item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        scene_index = index if self.scenes is None else index % self.scenes
        rng = _rng(self.seed, 0, self.split, scene_index)
        tasks = self.tasks_of(scene_index)
        frame = self.frame_of(scene_index)
        for attempt in range(60):
            # a scene that cannot serve a task (e.g. RES_MULTI needs two objects of a kind) is drawn again,
            # with the most objects after a few failures
            n = None if attempt < 10 else self.max_objects
            scene = render_scene(
                rng, frame, n, self.min_objects, self.max_objects, self.textures,
                colours=self.colours, plain_greys=self.plain_greys,
            )
            maker = _TurnMaker(scene, rng)
            turns = [maker.make(t) for t in tasks]
            if all(t is not None for t in turns):
                break
        else:
            raise RuntimeError(f"synthetic/{self.split}/{index}: could not build turns for tasks {tasks}")
        if scene_index != index:  # a revisited scene: new questions about the same image
            rng = _rng(self.seed, 2, self.split, index)
            maker = _TurnMaker(scene, rng)
            turns = []
            for t in self.tasks_of(index):
                turn = maker.make(t)
                for alt in rng.permutation(len(self.tasks)):
                    if turn is not None:
                        break
                    turn = maker.make(self.tasks[int(alt)])
                if turn is None:
                    raise RuntimeError(f"synthetic/{self.split}/{index}: no task fits scene {scene_index}")
                turns.append(turn)
        order = rng.permutation(len(turns))
        if self.phrasing > 0:
            style_rng = _rng(self.seed, 3, self.split, index)
            turns = [restyle_prompt(t, style_rng) if style_rng.random() < self.phrasing else t for t in turns]
        sample = GroundingSample(
            image=scene.image,
            turns=[turns[int(k)] for k in order],
            targets=scene.targets(),
            regions=np.stack(maker.regions) if maker.regions else np.zeros((0, 4), np.float32),
            source=f"synthetic/{self.split}/{index}",
        )
        return scene, sample


# ----------------------------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------------------------

MOTIONS: tuple[str, ...] = ("still", "linear", "bounce", "enter", "leave")
MOTION_PROBS: tuple[float, ...] = (0.1, 0.25, 0.3, 0.2, 0.15)


@dataclass
class VideoScene:
    """A rendered video.

    ``frames``: T arrays H x W x 3 uint8 RGB. ``objects``: attributes and pose on frame 0, in drawing order
    (object ``i`` has ``obj_id = i + 1``). ``centers``: N x T x 2 (x, y) pixels. ``masks``: N x T x H x W bool
    visible pixels (all False where the object is outside the frame or hidden). ``full_masks``: the whole shapes
    within the frame. ``motions``: how each object moves ("still", "linear", "bounce", "enter", "leave").
    """

    frames: list[np.ndarray]
    objects: list[ShapeObject]
    centers: np.ndarray
    masks: np.ndarray
    full_masks: np.ndarray
    motions: tuple[str, ...]
    background: str = ""

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames[0].shape[0]), int(self.frames[0].shape[1])

    @property
    def in_frame(self) -> np.ndarray:
        """N x T bool: some of the (whole) shape is inside the frame."""
        return self.full_masks.reshape(*self.full_masks.shape[:2], -1).any(-1)

    def targets(self) -> list[VideoTarget]:
        return [
            VideoTarget(obj_id=i + 1, masks=m, label=o.label) for i, (o, m) in enumerate(zip(self.objects, self.masks))
        ]


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into [lo, hi] (a bouncing coordinate)."""
    if hi <= lo:
        return np.full_like(x, lo)
    period = 2 * (hi - lo)
    y = np.mod(x - lo, period)
    return lo + np.where(y > hi - lo, period - y, y)


def _trajectory(rng: np.random.Generator, obj: ShapeObject, motion: str, t: int, size: tuple[int, int]) -> np.ndarray:
    """T x 2 centres (x, y) for ``motion``; "enter" starts wholly outside, "leave" ends wholly outside."""
    h, w = size
    s = _scale(size)
    r = obj.circumradius + 1.0
    steps = np.arange(t, dtype=np.float64)[:, None]
    theta = rng.uniform(0, 2 * np.pi)
    if motion == "still":
        return np.repeat(np.asarray(obj.center, np.float64)[None], t, 0)
    if motion in ("linear", "bounce"):
        speed = rng.uniform(0.03, 0.07) * s if motion == "linear" else rng.uniform(0.05, 0.1) * s
        v = speed * np.array([math.cos(theta), math.sin(theta)])
        if motion == "bounce":
            p = np.asarray(obj.center) + steps * v
            return np.stack([_fold(p[:, 0], r, w - r), _fold(p[:, 1], r, h - r)], 1)
        travel = (t - 1) * v
        lo = np.array([r, r]) - np.minimum(travel, 0)
        hi = np.array([w - r, h - r]) - np.maximum(travel, 0)
        if np.any(hi < lo):  # too fast to stay inside: slow down to fit
            travel = travel * 0.5 * min(w - 2 * r, h - 2 * r) / max(np.abs(travel).max(), 1e-6)
            lo = np.array([r, r]) - np.minimum(travel, 0)
            hi = np.array([w - r, h - r]) - np.maximum(travel, 0)
        p0 = rng.uniform(lo, np.maximum(lo, hi))
        return p0 + steps * travel / max(t - 1, 1)
    # enter / leave: cross one side of the frame, mostly along its normal
    speed = rng.uniform(0.05, 0.09) * s
    dev = rng.uniform(-math.pi / 6, math.pi / 6)
    normal, tangent = speed * math.cos(dev), speed * math.sin(dev)
    side = int(rng.integers(4))  # left, right, top, bottom
    length_t = h if side < 2 else w
    f_in = int(rng.integers(1, max(2, t - 2)))
    depth0 = -r + rng.uniform(0.5, 1.0) * normal  # at frame f_in: entering; at f_in - 1: wholly outside
    depth = depth0 + (steps[:, 0] - f_in) * normal
    along = rng.uniform(r, max(r, length_t - r)) + (steps[:, 0] - f_in) * tangent
    if side == 0:
        xy = np.stack([depth, along], 1)
    elif side == 1:
        xy = np.stack([w - depth, along], 1)
    elif side == 2:
        xy = np.stack([along, depth], 1)
    else:
        xy = np.stack([along, h - depth], 1)
    return xy[::-1].copy() if motion == "leave" else xy


def render_video(
    rng: np.random.Generator,
    num_frames: int = 8,
    image_size: int | Sequence[int] = 256,
    min_objects: int = 2,
    max_objects: int = 4,
    textures: bool = True,
) -> VideoScene:
    """Render a video of moving shapes over a static background.

    Objects keep their drawing order, so they occlude each other as they cross (an object may be hidden for a
    few frames). Objects of the same colour never touch; every object is visible on at least two frames.
    """
    size = _as_size(image_size)
    t = int(num_frames)
    n = int(rng.integers(min_objects, max_objects + 1))
    bg = random_background(rng, size, textures)
    objects: list[ShapeObject] = []
    paths: list[np.ndarray] = []
    motions: list[str] = []
    fulls: list[np.ndarray] = []
    min_pixels = max(12, int(0.002 * size[0] * size[1]))
    for _ in range(n):
        for _attempt in range(40):
            obj = _sample_object(rng, size, objects)
            motion = MOTIONS[int(rng.choice(len(MOTIONS), p=MOTION_PROBS))]
            path = _trajectory(rng, obj, motion, t, size)
            if any(
                o.colour == obj.colour
                and np.min(np.hypot(*(p - path).T)) < o.circumradius + obj.circumradius + 3
                for o, p in zip(objects, paths)
            ):
                continue
            full = np.stack([obj.moved(c).draw_mask(size) for c in path])
            if (full.reshape(t, -1).sum(1) >= min_pixels).sum() < min(2, t):
                continue
            objects.append(obj.moved(path[0]))
            paths.append(path)
            motions.append(motion)
            fulls.append(full)
            break
    full_masks = np.stack(fulls) if fulls else np.zeros((0, t, *size), bool)
    masks = full_masks.copy()
    for i in range(len(objects) - 2, -1, -1):  # later objects hide earlier ones
        masks[i] &= ~full_masks[i + 1 :].any(0)
    frames = []
    for f in range(t):
        img = bg.image.copy()
        for i, obj in enumerate(objects):
            img[full_masks[i, f]] = obj.rgb
        frames.append(img)
    return VideoScene(
        frames=frames,
        objects=objects,
        centers=np.stack(paths) if paths else np.zeros((0, t, 2)),
        masks=masks,
        full_masks=full_masks,
        motions=tuple(motions),
        background=bg.name,
    )


def _motion_holds(q: Moving | Entering | Leaving | Still, video: VideoScene, i: int) -> bool | None:
    """Three-valued motion predicate of object ``i`` (None: too close to call)."""
    if isinstance(q, Entering):
        inside = video.in_frame[i]
        return bool(not inside[0] and inside.any())
    if isinstance(q, Leaving):
        inside = video.in_frame[i]
        return bool(inside[0] and not inside[-1])
    d = np.diff(video.centers[i], axis=0)
    thr = 0.01 * _scale(video.size)
    if len(d) == 0:
        return None
    if isinstance(q, Still):
        step = np.hypot(d[:, 0], d[:, 1])
        if np.all(step == 0):
            return True
        return False if step.mean() >= thr else None
    axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[q.direction]
    along = sign * d[:, axis]
    across = np.abs(d[:, 1 - axis])
    if np.all(along >= thr) and along.mean() >= 1.5 * across.mean():
        return True
    if along.sum() <= 0 or across.mean() >= 3 * max(along.mean(), 0) or np.all(np.hypot(d[:, 0], d[:, 1]) < thr / 2):
        return False
    return None


def evaluate_video_query(q: VideoQuery, video: VideoScene) -> tuple[int, ...] | None:
    """Object indices (``obj_id - 1``) that ``q`` selects over the whole video (``All``: in index order;
    ``And``: in order of mention), or None if ambiguous."""
    objs = video.objects
    if isinstance(q, The):
        hits = q.category.select(objs)
        return tuple(hits) if len(hits) <= 1 else Ambiguous
    if isinstance(q, All):
        hits = q.category.select(objs)
        return Ambiguous if q.both and len(hits) != 2 else tuple(hits)
    if isinstance(q, And):
        out: list[int] = []
        for p in q.parts:
            r = evaluate_video_query(p, video)
            if r is None or len(r) != 1 or r[0] in out:
                return Ambiguous
            out.append(r[0])
        return tuple(out)
    if isinstance(q, (Moving, Entering, Leaving, Still)):
        hits = []
        for i in q.category.select(objs):
            h = _motion_holds(q, video, i)
            if h is None:
                return Ambiguous
            if h:
                hits.append(i)
        return tuple(hits) if len(hits) <= 1 else Ambiguous
    raise TypeError(f"not a video query: {q!r}")


def video_expressions(video: VideoScene, rng: np.random.Generator, max_expressions: int = 5) -> list[VideoExpression]:
    """Referring expressions that are unambiguous over the whole video: by attributes (one object, "all the ...",
    "the A and the B") and by motion ("moving left", "entering the frame", "that does not move")."""
    objs = video.objects
    descs = unique_descriptions(objs)
    chosen: list[VideoQuery] = []
    nameable = [i for i, d in enumerate(descs) if d]
    for i in rng.permutation(nameable)[: int(rng.integers(1, 3))] if nameable else []:
        cats, weights = zip(*descs[int(i)])
        chosen.append(The(_pick(rng, cats, weights)))
    alls = []
    for o in objs:
        for c in (Category(colour=o.colour), Category(shape=o.shape)):
            if len(c.select(objs)) >= 2 and All(c) not in alls:
                alls.append(All(c))
    if alls and rng.random() < 0.7:
        chosen.append(_pick(rng, alls))
    if len(nameable) >= 2 and rng.random() < 0.3:
        pair = rng.choice(nameable, size=2, replace=False)
        chosen.append(And(tuple(The(_pick(rng, *zip(*descs[int(i)]))) for i in pair)))
    cats = [Category()] + list({Category(colour=o.colour) for o in objs} | {Category(shape=o.shape) for o in objs})
    cats.sort(key=lambda c: (c.colour or "", c.shape or ""))
    motion_qs: list[VideoQuery] = []
    for c in cats:
        if len(c.select(objs)) < 2:
            continue
        for q in [Moving(d, c) for d in DIRECTIONS] + [Entering(c), Leaving(c), Still(c)]:
            if _is_single(evaluate_video_query(q, video)):
                motion_qs.append(q)
    for k in rng.permutation(len(motion_qs))[: int(rng.integers(1, 3))]:
        chosen.append(motion_qs[int(k)])
    out: list[VideoExpression] = []
    seen: set[str] = set()
    for q in chosen[:max_expressions]:
        text = q.phrase()
        ids = evaluate_video_query(q, video)
        if text in seen or not ids:
            continue
        seen.add(text)
        out.append(VideoExpression(text=text, obj_ids=tuple(i + 1 for i in ids), exp_id=str(len(out))))
    return out


def check_video(video: VideoScene, sample: VideoSample) -> None:
    """Verify a video sample: masks are the rendered visible masks (all False where not visible) and every
    expression, parsed back from text, selects exactly its objects. ``ValueError`` otherwise."""
    for i, tg in enumerate(sample.targets):
        if tg.obj_id != i + 1 or not np.array_equal(tg.masks, video.masks[i]):
            raise ValueError(f"{sample.source}: object {tg.obj_id} masks disagree with the video")
    for e in sample.expressions:
        q = parse_expression(e.text)
        got = evaluate_video_query(q, video)
        if got is None:
            raise ValueError(f"{sample.source}: expression {e.text!r} is ambiguous")
        if tuple(i + 1 for i in got) != tuple(e.obj_ids):
            raise ValueError(f"{sample.source}: expression {e.text!r} selects {got}, recorded {e.obj_ids}")


class SyntheticVideos(Dataset):
    """Videos of moving shapes (``VideoSample`` items) with per-frame instance masks and referring expressions.

    Objects move linearly or bounce, enter and leave the frame, stand still, and occlude each other. Items are
    deterministic per (seed, split, index); ``obj_id`` of object ``i`` is ``i + 1``. ``image_size``: int or (H, W).
    """

    def __init__(
        self,
        split: str = "train",
        length: int = 100,
        num_frames: int = 8,
        image_size: int | tuple[int, int] = 256,
        seed: int = 0,
        textures: bool = True,
        min_objects: int = 2,
        max_objects: int = 4,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {num_frames}")
        self.split = split
        self.length = int(length)
        self.num_frames = int(num_frames)
        self.image_size = _as_size(image_size)
        self.seed = int(seed)
        self.textures = textures
        self.min_objects = int(min_objects)
        self.max_objects = int(max_objects)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> VideoSample:
        return self.generate(index)[1]

    def generate(self, index: int) -> tuple[VideoScene, VideoSample]:
        """The rendered video (objects, trajectories, masks) and the sample of item ``index``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        rng = _rng(self.seed, 1, self.split, index)
        for _ in range(30):
            video = render_video(
                rng, self.num_frames, self.image_size, self.min_objects, self.max_objects, self.textures
            )
            exprs = video_expressions(video, rng)
            if exprs:
                break
        else:
            raise RuntimeError(f"synthetic-video/{self.split}/{index}: no unambiguous expression")
        sample = VideoSample(
            frames=video.frames,
            targets=video.targets(),
            expressions=exprs,
            source=f"synthetic-video/{self.split}/{index}",
        )
        return video, sample


__all__ = [
    "ALL_TASKS",
    "COLOURS",
    "SHAPES",
    "SIZES",
    "All",
    "And",
    "Category",
    "Closest",
    "Compare",
    "Entering",
    "Extreme",
    "Leaving",
    "Moving",
    "ObjectFacts",
    "Relation",
    "Scene",
    "ShapeObject",
    "Still",
    "SyntheticGrounding",
    "SyntheticVideos",
    "The",
    "VideoScene",
    "check_sample",
    "check_turn",
    "check_video",
    "evaluate_video_query",
    "mask_to_box",
    "object_phrase",
    "parse_expression",
    "region_answer",
    "render_scene",
    "render_video",
    "unique_descriptions",
    "video_expressions",
]
