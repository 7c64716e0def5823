"""The toy benchmark: an embedded few-shot segmentation benchmark that needs no download.

20 classes in 4 folds of 5, evaluated with the PASCAL-5i protocol (``episodes.py``). Every
class is a *shape family* (disk, square, triangle, star, ring) painted with a class-specific
*appearance* (hue + texture: stripes, dots, checker, waves). Each image holds 1-3
non-overlapping objects of different classes on a soft, low-saturation textured background.
Because an image usually contains objects of several classes, a model that ignores the
support cannot know which one to segment: the task is solved only by support-query matching.

Images are rendered deterministically from (seed, fold, split, index) at ``NATIVE`` pixels
and then go through the same resize/normalize path as real images. Splits hold separate
image pools: ``trn`` (main object from the 15 training classes), ``val`` and ``test`` (main
object from the fold's 5 unseen classes; val for model selection, test for reporting).
Image names look like ``test/f0/00042``.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .episodes import EpisodicDataset, PascalProtocol

NATIVE = 160  # render size in pixels (images are then resized to img_size)
SHAPES = ("disk", "square", "triangle", "star", "ring")
TEXTURES = ("stripes", "dots", "checker", "waves")
POOL_SIZE = {"trn": 2000, "val": 200, "test": 500}  # images per (fold, split)
SPLIT_CODE = {"trn": 0, "val": 1, "test": 2}
NUM_CLASSES = 20


@dataclass(frozen=True)
class ToyClass:
    shape: str
    texture: str
    hue: float  # 0..1


def toy_class(c: int) -> ToyClass:
    """Class c: shape c % 5, texture (c + c // 5) % 4, hue spread so that any two classes differ."""
    return ToyClass(SHAPES[c % 5], TEXTURES[(c + c // 5) % 4], ((c * 9) % 20) / 20.0)


@dataclass(frozen=True)
class ToyObject:
    class_id: int
    cx: float  # centre, in units of the image side
    cy: float
    radius: float  # in units of the image side
    angle: float  # radians
    phase: float  # texture phase, 0..1


def fold_classes(fold: int) -> list[int]:
    return [fold * 5 + i for i in range(5)]


def layout(seed: int, fold: int, split: str, index: int) -> tuple[ToyObject, ...]:
    """The objects of one image (first = main object of a class of this split), no rendering."""
    rs = np.random.RandomState([seed, fold, SPLIT_CODE[split], index])
    main_pool = fold_classes(fold) if split != "trn" else [c for c in range(NUM_CLASSES) if c not in fold_classes(fold)]
    classes = [int(rs.choice(main_pool))]
    n_objects = 1 + int(rs.choice(3, p=[0.2, 0.45, 0.35]))
    while len(classes) < n_objects:
        c = int(rs.randint(NUM_CLASSES))
        if c not in classes:
            classes.append(c)
    objects: list[ToyObject] = []
    for c in classes:
        for _ in range(50):  # rejection sampling: objects do not overlap
            r = rs.uniform(0.13, 0.24)
            cx, cy = rs.uniform(r, 1 - r), rs.uniform(r, 1 - r)
            if all(np.hypot(cx - o.cx, cy - o.cy) > r + o.radius + 0.02 for o in objects):
                objects.append(ToyObject(c, cx, cy, r, rs.uniform(0, 2 * np.pi), rs.uniform()))
                break
    return tuple(objects)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test on coordinates (u, v) already centred, rotated and divided by the radius."""
    rho, theta = np.hypot(u, v), np.arctan2(v, u)
    if shape == "disk":
        return rho <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        return (v >= -0.5) & (np.sqrt(3) * u - v >= -1.0) & (-np.sqrt(3) * u - v >= -1.0)
    if shape == "star":
        return rho <= 0.55 + 0.45 * np.abs(np.cos(2.5 * theta))
    if shape == "ring":
        return (rho <= 1.0) & (rho >= 0.5)
    raise ValueError(shape)


def _texture(texture: str, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Pattern in [0, 1] on object coordinates."""
    f = 2 * np.pi * 2.5
    if texture == "stripes":
        return (np.sin(f * u + 2 * np.pi * phase) > 0).astype(float)
    if texture == "dots":
        return ((np.sin(f * u) * np.sin(f * v)) > 0.35).astype(float)
    if texture == "checker":
        return ((np.floor(2.5 * u + phase) + np.floor(2.5 * v)) % 2).astype(float)
    if texture == "waves":
        return 0.5 + 0.5 * np.sin(f * (u + 0.25 * np.sin(f * v / 2)) + 2 * np.pi * phase)
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


@lru_cache(maxsize=sum(POOL_SIZE.values()))  # one fold's pools: ~100 KB each, at most ~280 MB
def render(seed: int, fold: int, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (RGB uint8 (N, N, 3), label map uint8 (N, N) with class + 1, 0 background).

    Cached: a training run draws every image of its pool several times (``hsnet demo``'s 900
    steps of 8 one-shot episodes read 14400 images from a pool of 2000), and rendering (~19 ms an
    image, 16 per step) would otherwise cost a large share of a small-image training step on two
    cores. The cache lives in the process that reads the data: load in the main process
    (``num_workers=0``) for it to last across epochs.
    """
    rs = np.random.RandomState([seed, fold, SPLIT_CODE[split], index, 1])
    n = NATIVE
    img = _background(rs, n)
    label = np.zeros((n, n), dtype=np.uint8)
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n
    for obj in layout(seed, fold, split, index):
        cls = toy_class(obj.class_id)
        dx, dy = (x - obj.cx) / obj.radius, (y - obj.cy) / obj.radius
        ca, sa = np.cos(obj.angle), np.sin(obj.angle)
        u, v = ca * dx + sa * dy, -sa * dx + ca * dy  # object frame
        inside = _shape_mask(cls.shape, u, v)
        hue = (cls.hue + rs.uniform(-0.015, 0.015)) % 1.0
        bright = np.array(colorsys.hsv_to_rgb(hue, 0.85, rs.uniform(0.85, 1.0)))
        dark = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.35))
        pattern = _texture(cls.texture, u, v, obj.phase)[..., None]
        color = pattern * bright + (1 - pattern) * dark  # (n, n, 3)
        img = np.where(inside[..., None], color, img)
        label[inside] = obj.class_id + 1
    img = np.clip(img + 0.02 * rs.randn(n, n, 3), 0, 1)
    return (img * 255).astype(np.uint8), label


class ToyDataset(PascalProtocol, EpisodicDataset):
    """The toy benchmark with the PASCAL-5i protocol; ``seed`` fixes the images (default 0)."""

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
