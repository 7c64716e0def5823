"""The toy benchmark: an embedded few-shot segmentation benchmark that needs no download.

20 classes in 4 folds of 5, evaluated with the PASCAL-5i protocol (``episodes.py``).

**What identifies a class: its shape.** Every class is a shape family (disk, square, triangle,
star, ring, cross, heart, crescent, arrow, L, T, diamond, half-disk, bow-tie, square frame,
ellipse, trefoil, chevron, horseshoe, four-point star: :data:`~hsnetlib.data.toy_shapes.BENCHMARK_SHAPES`),
drawn at any position, size, rotation and with a mild stretch.

**What deliberately does not: colour and texture.** Each object's colour comes from a palette of six
hues and its texture from four (solid, stripes, dots, checker), drawn per object, not per class; and
a second object of another class in the same image takes the first one's colour with probability
1/2 and its texture with probability 1/2. So the support object's colour is on a query distractor as
often as on the query's target: matching colour or texture (what shallow features do) is as likely
to find a distractor as the target, and only the outline tells them apart.

Each image holds 1-3 non-overlapping objects (drawn with probabilities 0.1 / 0.6 / 0.3; a later
object that finds no free place is left out: about 19 % of the images hold one object, 67 % two,
14 % three) of different classes, each 0.24-0.32 of the image side in radius (up to a third of an
outline may be cut off by the border), on a soft, low-saturation textured background. The objects
are that large so that the deepest pyramid level (a 4x4 grid at the recipes' 98x98 input) keeps
most support masks: Eq. (1) reads the mask at its 16 sample points only (notebook 1 counts it).
Images are rendered deterministically from (seed, fold, split, index) at ``NATIVE`` x ``NATIVE``
pixels, their original size, and then go through the same resize/normalize path as real images.
Splits hold separate image pools: ``trn`` (main object from the 15 training classes), ``val`` and
``test`` (main object from the fold's 5 unseen classes; val for model selection, test for
reporting). Image names look like ``test/f0/00042``.

The same renderer draws the pre-training images of the toy backbone (:mod:`hsnetlib.toy_backbone`)
with the pre-training families instead (:func:`render_scene`).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .episodes import EpisodicDataset, PascalProtocol
from .toy_shapes import BENCHMARK_SHAPES, NUM_BENCHMARK_CLASSES, Inside, normalized

NATIVE = 128  # the images' original size in pixels (resized to img_size like any benchmark's)
HUES = (0.0, 0.08, 0.15, 0.33, 0.58, 0.78)  # red, orange, yellow, green, blue, purple
TEXTURES = ("solid", "stripes", "dots", "checker")
OBJECT_COUNTS, OBJECT_COUNT_P = (1, 2, 3), (0.1, 0.6, 0.3)
RADIUS = (0.24, 0.32)  # object radius, in units of the image side
INSET = 0.6  # centres lie at least INSET * radius from the border: up to a third of an outline may be cut off
SHARE = 0.5  # probability that a later object takes the first one's colour (and, independently, texture)
POOL_SIZE = {"trn": 2000, "val": 200, "test": 500}  # images per (fold, split)
SPLIT_CODE = {"trn": 0, "val": 1, "test": 2}
NUM_CLASSES = NUM_BENCHMARK_CLASSES
SHAPES = tuple(BENCHMARK_SHAPES)  # class c is SHAPES[c]
DRAWN = tuple(normalized(f) for f in BENCHMARK_SHAPES.values())  # centred, farthest point at 0.95 radius


@dataclass(frozen=True)
class ToyObject:
    class_id: int
    cx: float  # centre, in units of the image side
    cy: float
    radius: float  # in units of the image side
    angle: float  # radians
    stretch: float  # u scaled by 1/stretch, v by stretch
    hue: int  # index into HUES
    texture: int  # index into TEXTURES
    phase: float  # texture phase, 0..1


def fold_classes(fold: int) -> list[int]:
    return [fold * 5 + i for i in range(5)]


def place_objects(rs: np.random.RandomState, classes: Sequence[int]) -> tuple[ToyObject, ...]:
    """Objects of ``classes`` (the first is the main one) at random non-overlapping places; a later object
    that finds no place is left out. Colour and texture per object, later ones sharing the first's (SHARE)."""
    objects: list[ToyObject] = []
    hue, texture = int(rs.randint(len(HUES))), int(rs.randint(len(TEXTURES)))
    for i, c in enumerate(classes):
        h = hue if i == 0 or rs.uniform() < SHARE else int(rs.randint(len(HUES)))
        t = texture if i == 0 or rs.uniform() < SHARE else int(rs.randint(len(TEXTURES)))
        for _ in range(200):  # rejection sampling: objects do not overlap
            r = rs.uniform(*RADIUS)
            cx, cy = rs.uniform(INSET * r, 1 - INSET * r), rs.uniform(INSET * r, 1 - INSET * r)
            if all(np.hypot(cx - o.cx, cy - o.cy) > r + o.radius for o in objects):
                angle, stretch, phase = rs.uniform(0, 2 * np.pi), rs.uniform(0.87, 1.15), rs.uniform()
                objects.append(ToyObject(int(c), cx, cy, r, angle, stretch, h, t, phase))
                break
    return tuple(objects)


def layout(seed: int, fold: int, split: str, index: int) -> tuple[ToyObject, ...]:
    """The objects of one benchmark image (first = the main object, of a class of this split), no rendering."""
    rs = np.random.RandomState([seed, fold, SPLIT_CODE[split], index])
    main_pool = fold_classes(fold) if split != "trn" else [c for c in range(NUM_CLASSES) if c not in fold_classes(fold)]
    classes = [int(rs.choice(main_pool))]
    n_objects = int(rs.choice(OBJECT_COUNTS, p=OBJECT_COUNT_P))
    others = [c for c in range(NUM_CLASSES) if c != classes[0]]
    classes += [int(c) for c in rs.choice(others, n_objects - 1, replace=False)]
    return place_objects(rs, classes)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Pattern in [0, 1] on object coordinates."""
    f = 2 * np.pi * 2.5
    if texture == "solid":
        return np.ones_like(u)
    if texture == "stripes":
        return (np.sin(f * u + 2 * np.pi * phase) > 0).astype(float)
    if texture == "dots":
        return ((np.sin(f * u) * np.sin(f * v)) < 0.35).astype(float)
    if texture == "checker":
        return ((np.floor(2.5 * u + phase) + np.floor(2.5 * v)) % 2).astype(float)
    raise ValueError(texture)


def _background(rs: np.random.RandomState, n: int) -> np.ndarray:
    """Soft, low-saturation texture: a few random plane waves plus fine noise, (n, n, 3) in [0, 1]."""
    y, x = np.mgrid[0:n, 0:n] / n
    field = np.zeros((n, n))
    for _ in range(4):
        k = rs.uniform(1, 6, size=2) * rs.choice([-1, 1], size=2)
        field += np.sin(2 * np.pi * (k[0] * x + k[1] * y) + rs.uniform(0, 2 * np.pi))
    field = 0.5 + 0.08 * field + 0.04 * rs.randn(n, n)
    tint = np.array(colorsys.hsv_to_rgb(rs.uniform(), 0.15, 1.0))
    return np.clip(field[..., None] * tint, 0, 1)


def render_scene(rs: np.random.RandomState, objects: Sequence[ToyObject], shapes: Sequence[Inside], n: int = NATIVE):
    """Draw ``objects`` (class c drawn as ``shapes[c]``, an outline within radius 1) on a background:
    -> (RGB uint8 (n, n, 3), label map uint8 (n, n) with class + 1, 0 background). Each object is
    computed on its bounding box only."""
    img = _background(rs, n)
    label = np.zeros((n, n), dtype=np.uint8)
    for obj in objects:
        half = obj.radius * max(obj.stretch, 1 / obj.stretch)  # the box that holds the (stretched) outline
        lo = int(max(0, np.floor((obj.cy - half) * n))), int(max(0, np.floor((obj.cx - half) * n)))
        hi = int(min(n, np.ceil((obj.cy + half) * n))), int(min(n, np.ceil((obj.cx + half) * n)))
        y, x = (np.mgrid[lo[0] : hi[0], lo[1] : hi[1]] + 0.5) / n
        dx, dy = (x - obj.cx) / obj.radius, (y - obj.cy) / obj.radius
        ca, sa = np.cos(obj.angle), np.sin(obj.angle)
        u, v = (ca * dx + sa * dy) / obj.stretch, (-sa * dx + ca * dy) * obj.stretch  # object frame
        inside = shapes[obj.class_id](u, v)
        hue = (HUES[obj.hue] + rs.uniform(-0.02, 0.02)) % 1.0
        bright = np.array(colorsys.hsv_to_rgb(hue, 0.8, rs.uniform(0.85, 1.0)))
        dark = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.4))
        pattern = _texture(TEXTURES[obj.texture], u, v, obj.phase)[..., None]
        color = pattern * bright + (1 - pattern) * dark  # (h, w, 3)
        region = img[lo[0] : hi[0], lo[1] : hi[1]]
        region[inside] = color[inside]
        label[lo[0] : hi[0], lo[1] : hi[1]][inside] = obj.class_id + 1
    img = np.clip(img + 0.02 * rs.randn(n, n, 3), 0, 1)
    return (img * 255).astype(np.uint8), label


@lru_cache(maxsize=sum(POOL_SIZE.values()))  # one fold's pools: ~60 KB each, at most ~160 MB
def render(seed: int, fold: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (RGB uint8 (NATIVE, NATIVE, 3), label map uint8 with class + 1, 0 background) of one benchmark image.

    Cached: a training run draws every image of its pool several times, and rendering would otherwise
    cost a share of a small-image training step on two cores. The cache lives in the process that reads
    the data: load in the main process (``num_workers=0``) for it to last across epochs.
    """
    rs = np.random.RandomState([seed, fold, SPLIT_CODE[split], index, 1])
    return render_scene(rs, layout(seed, fold, split, index), DRAWN)


class ToyDataset(PascalProtocol, EpisodicDataset):
    """The toy benchmark with the PASCAL-5i protocol; ``image_seed`` fixes the images (default 0)."""

    benchmark = "toy"
    nclass = NUM_CLASSES

    def __init__(
        self,
        root=None,
        fold=0,
        split="trn",
        shot=1,
        img_size=400,
        use_original_imgsize=False,
        seed=0,
        image_seed=0,
        pool_size=None,
        num_episodes=1000,
        **_unused,
    ):
        super().__init__(fold, split, shot, img_size, use_original_imgsize, seed)
        self.image_seed, self.num_episodes = image_seed, num_episodes
        self.class_ids = (
            fold_classes(fold) if self.is_eval else [c for c in range(NUM_CLASSES) if c not in fold_classes(fold)]
        )
        wanted = set(self.class_ids)
        n_images = pool_size or POOL_SIZE[split]
        self.metadata: list[tuple[str, int]] = []  # (image name, class) for each split class present
        for i in range(n_images):
            for cls in sorted({o.class_id for o in layout(image_seed, fold, split, i)} & wanted):
                self.metadata.append((f"{split}/f{fold}/{i:05d}", cls))
        self.index_classes()
        self._finish_init()

    def _render(self, name):
        split, fold, index = name.split("/")
        return render(self.image_seed, int(fold[1:]), split, int(index))

    def read_image(self, name):
        return Image.fromarray(self._render(name)[0])

    def read_mask(self, name, class_id):
        label = self._render(name)[1]
        return label == class_id + 1, np.zeros_like(label, dtype=bool)

    def objects(self, name: str) -> tuple[ToyObject, ...]:
        """The objects drawn in image ``name`` (class, place, colour, texture), without rendering it."""
        split, fold, index = name.split("/")
        return layout(self.image_seed, int(fold[1:]), split, int(index))

    def other_objects(self, i: int) -> torch.Tensor:
        """Episode ``i``'s query pixels on objects of other classes (distractors), (s, s) bool at img_size."""
        ep = self.episode(i)
        label = torch.as_tensor(self._render(ep.query_name)[1])
        others = ((label > 0) & (label != ep.class_id + 1)).float()[None, None]
        return F.interpolate(others, (self.img_size, self.img_size), mode="nearest")[0, 0] > 0
