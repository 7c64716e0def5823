"""Shape families of the toy world: the 20 benchmark classes and the families the toy backbone pre-trains on.

A family is an inside-test on object coordinates (u, v): the object's frame, centred, rotated and
divided by its radius, so that |u|, |v| <= 1 holds the shape. Instances of a family differ by
position, size, rotation, a mild stretch, colour and texture; what stays is the outline.

- :data:`BENCHMARK_SHAPES`: 20 named geometric shapes, the toy benchmark's classes.
- :func:`pretraining_families`: outlines drawn from a seed (star-shaped blobs of random harmonics,
  irregular polygons of 5 to 8 vertices, some with a round hole), the classes of the toy backbone's
  pre-training: no bar, letter or arrow outline. A drawn outline that resembles a benchmark shape (a
  soft mask IoU above :data:`MAX_IOU_WITH_BENCHMARK` at its best rotation or mirror image,
  :func:`similarities`) is drawn again, so pre-training never sees a benchmark class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _polygon(n: int, radius: float = 1.0, phase: float = 0.0) -> Inside:
    """A regular n-gon inscribed in ``radius``: inside all n half-planes."""
    angles = phase + 2 * np.pi * np.arange(n) / n + np.pi / n
    apothem = radius * np.cos(np.pi / n)
    return lambda u, v: np.all([u * np.cos(a) + v * np.sin(a) <= apothem for a in angles], axis=0)


def _box(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _heart(u, v):
    x, y = 1.15 * u, 1.15 * (v + 0.1)
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


BENCHMARK_SHAPES: dict[str, Inside] = {
    "disk": lambda u, v: np.hypot(u, v) <= 0.95,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.72,
    "triangle": _polygon(3, 1.0, np.pi / 2),
    "five-point star": lambda u, v: np.hypot(u, v) <= 0.45 + 0.55 * np.abs(np.cos(2.5 * np.arctan2(v, u))),
    "ring": lambda u, v: (np.hypot(u, v) <= 0.95) & (np.hypot(u, v) >= 0.55),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)),
    "heart": _heart,
    "crescent": lambda u, v: (np.hypot(u, v) <= 0.95) & (np.hypot(u - 0.5, v) >= 0.75),
    "arrow": lambda u, v: ((np.abs(v) <= 0.22) & (u >= -0.95) & (u <= 0.2)) | ((u >= 0.1) & (np.abs(v) <= 0.9 - u)),
    "L-shape": lambda u, v: _box(u, v, -0.8, -0.25, -0.85, 0.85) | _box(u, v, -0.8, 0.8, 0.3, 0.85),
    "T-shape": lambda u, v: _box(u, v, -0.9, 0.9, -0.85, -0.3) | _box(u, v, -0.27, 0.27, -0.85, 0.9),
    "diamond": lambda u, v: np.abs(u) / 0.55 + np.abs(v) / 0.98 <= 1,
    "half-disk": lambda u, v: (np.hypot(u, v + 0.35) <= 0.95) & (v >= -0.35),
    "bow-tie": lambda u, v: (np.abs(v) <= 0.9 * np.abs(u) + 0.05) & (np.abs(u) <= 0.9),
    "square frame": lambda u, v: (
        (0.42 <= np.maximum(np.abs(u), np.abs(v))) & (np.maximum(np.abs(u), np.abs(v)) <= 0.75)
    ),
    "ellipse": lambda u, v: (u / 0.97) ** 2 + (v / 0.45) ** 2 <= 1,
    "trefoil": lambda u, v: np.hypot(u, v) <= 0.3 + 0.65 * np.abs(np.cos(1.5 * np.arctan2(v, u))),
    "chevron": lambda u, v: (np.abs(np.abs(u) * 0.9 - (v + 0.55) * 0.6) <= 0.22) & (v >= -0.95) & (v <= 0.75),
    "horseshoe": lambda u, v: (
        ((np.hypot(u, v) <= 0.92) & (np.hypot(u, v) >= 0.5) & (v <= 0))
        | _box(u, v, -0.92, -0.5, 0, 0.92)
        | _box(u, v, 0.5, 0.92, 0, 0.92)
    ),
    "four-point star": lambda u, v: np.sqrt(np.abs(u)) + np.sqrt(np.abs(v)) <= 0.98,
}
NUM_BENCHMARK_CLASSES = len(BENCHMARK_SHAPES)  # 20: 4 folds of 5

# A pre-training outline more similar than this to a benchmark shape is drawn again: most benchmark shapes
# are at least that close to their own nearest benchmark neighbour (square and heart: 0.81; tested).
MAX_IOU_WITH_BENCHMARK = 0.7
GRID = 48  # raster of the similarity test


@dataclass(frozen=True)
class Family:
    """A pre-training outline: a star-shaped radius r(theta) (random harmonics, or a polygon through
    random vertices), optionally with a round hole of radius ``hole`` times the smallest radius."""

    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase): r = 1 + sum a cos(k theta + phase)
    vertices: int  # 0: smooth blob; n >= 3: the polygon through n points of r(theta)
    hole: float  # 0: none

    def radius(self, theta: np.ndarray) -> np.ndarray:
        r = 1 + sum(a * np.cos(k * theta + p) for k, a, p in self.harmonics)
        return np.clip(r, 0.3, None)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        if self.vertices:
            angles = np.sort(self.angles)
            inside = _star_polygon(rho, theta, angles, self.radius(angles))
        else:
            inside = rho <= self.radius(theta)
        if self.hole:
            inside &= rho >= self.hole * self.radius(np.linspace(0, 2 * np.pi, 72)).min()
        return inside

    @property
    def angles(self) -> np.ndarray:
        """The polygon's vertex angles (from the first harmonic's phase, evenly jittered)."""
        rs = np.random.RandomState(int(1e6 * abs(self.harmonics[0][2])) % (2**31))
        base = 2 * np.pi * np.arange(self.vertices) / self.vertices
        return base + rs.uniform(-0.35, 0.35, self.vertices) * 2 * np.pi / self.vertices


def _star_polygon(rho, theta, angles, radii) -> np.ndarray:
    """Inside the polygon through the points (angles[i], radii[i]) (sorted angles, star-shaped about 0)."""
    a = np.concatenate([angles, angles[:1] + 2 * np.pi])
    r = np.concatenate([radii, radii[:1]])
    t = np.mod(theta - a[0], 2 * np.pi) + a[0]
    i = np.clip(np.searchsorted(a, t) - 1, 0, len(angles) - 1)
    x0, y0 = r[i] * np.cos(a[i]), r[i] * np.sin(a[i])
    x1, y1 = r[i + 1] * np.cos(a[i + 1]), r[i + 1] * np.sin(a[i + 1])
    # the edge's distance from the origin along the ray at t: where the ray meets the segment
    dx, dy, c, s = x1 - x0, y1 - y0, np.cos(t), np.sin(t)
    edge = (x0 * dy - y0 * dx) / np.maximum(c * dy - s * dx, 1e-9)
    return rho <= edge


def normalized(inside: Inside) -> Inside:
    """``inside`` moved to its centre of mass and scaled so that its farthest point lies at radius 0.95."""
    y, x = np.mgrid[-3:3:121j, -3:3:121j]
    m = inside(x, y)
    cx, cy = (x[m].mean(), y[m].mean()) if m.any() else (0.0, 0.0)
    extent = np.hypot(x[m] - cx, y[m] - cy).max() if m.any() else 1.0
    factor = extent / 0.95
    return lambda u, v: inside(u * factor + cx, v * factor + cy)


def _raster(inside: Inside, rotations: int = 24) -> np.ndarray:
    """The outline, centred and scaled, on a GRID x GRID raster over [-1, 1]^2, at ``rotations``
    rotations and their mirror images: (2 * rotations, GRID, GRID)."""
    inside = normalized(inside)
    y, x = np.mgrid[-1 : 1 : GRID * 1j, -1 : 1 : GRID * 1j]
    out = []
    for angle in np.linspace(0, 2 * np.pi, rotations, endpoint=False):
        c, s = np.cos(angle), np.sin(angle)
        for mirror in (1, -1):
            u, v = c * x + s * y, mirror * (-s * x + c * y)
            out.append(inside(u, v))
    return np.stack(out)


def _blurred(masks: np.ndarray) -> np.ndarray:
    """Masks (N, GRID, GRID) blurred by a 5-tap binomial filter twice along each axis (sigma ~1.4 cells),
    so that outlines a few cells apart still overlap: thin bars that nearly coincide count as alike."""
    out = masks.astype(float)
    for axis in (1, 2):
        for _ in range(2):
            p = np.pad(out, [(2, 2) if a == axis else (0, 0) for a in range(3)])
            taps = [np.take(p, range(i, i + out.shape[axis]), axis=axis) for i in range(5)]
            out = (taps[0] + 4 * taps[1] + 6 * taps[2] + 4 * taps[3] + taps[4]) / 16
    return out


@cache
def _benchmark_raster(name: str) -> np.ndarray:
    return _blurred(_raster(BENCHMARK_SHAPES[name]))


def similarities(inside: Inside) -> dict[str, float]:
    """How much an outline (upright) looks like each benchmark shape at the shape's best rotation or
    mirror image, both centred and scaled to the same extent: the soft IoU (sum of minima over sum of
    maxima) of the blurred masks, 1 for the same outline."""
    mine = _blurred(_raster(inside, 1)[:1])[0]
    out = {}
    for name in BENCHMARK_SHAPES:
        theirs = _benchmark_raster(name)
        out[name] = float((np.minimum(theirs, mine).sum((1, 2)) / np.maximum(theirs, mine).sum((1, 2))).max())
    return out


def _draw_family(rs: np.random.RandomState) -> Family:
    count = rs.randint(2, 5)
    ks = sorted(rs.choice(np.arange(2, 8), size=count, replace=False).tolist())
    amplitudes = [float(rs.uniform(0.08, 0.42) / np.sqrt(k - 1)) for k in ks]
    harmonics = tuple((int(k), a, float(rs.uniform(0, 2 * np.pi))) for k, a in zip(ks, amplitudes))
    vertices = int(rs.choice([0, 0, 0, 5, 6, 7, 8]))
    hole = float(rs.uniform(0.35, 0.6)) if rs.uniform() < 0.2 else 0.0
    return Family(harmonics, vertices, hole)


@lru_cache(maxsize=8)
def pretraining_families(count: int = 64, seed: int = 0) -> tuple[Inside, ...]:
    """``count`` pre-training outlines drawn from ``seed``, none resembling a benchmark shape (module docstring)."""
    rs = np.random.RandomState([seed, 7])
    families: list[Inside] = []
    while len(families) < count:
        family = _draw_family(rs)
        while max(similarities(family).values()) > MAX_IOU_WITH_BENCHMARK:
            family = _draw_family(rs)
        families.append(normalized(family))
    return tuple(families)
