"""The toy world: benchmark shapes, the pre-training families that must not resemble them, and a
benchmark in which colour and texture do not give a class away."""

import collections

import numpy as np
import pytest

from hsnetlib.data import make_benchmark
from hsnetlib.data.toy import HUES, NATIVE, NUM_CLASSES, TEXTURES, layout, render
from hsnetlib.data.toy_shapes import (
    BENCHMARK_SHAPES,
    MAX_IOU_WITH_BENCHMARK,
    normalized,
    pretraining_families,
    similarities,
)


def test_twenty_benchmark_shapes_distinct_and_inside_their_radius():
    assert len(BENCHMARK_SHAPES) == NUM_CLASSES == 20
    y, x = np.mgrid[-1.5:1.5:151j, -1.5:1.5:151j]
    for name, inside in BENCHMARK_SHAPES.items():
        drawn = normalized(inside)(x, y)
        # at least 17 % of its unit circle (0.06 of the 3x3 grid): no shape is a thin stroke; none leaves the circle
        assert 0.06 < drawn.mean() and np.hypot(x[drawn], y[drawn]).max() <= 1.0, name
        nearest = max(v for other, v in similarities(inside).items() if other != name)
        assert nearest < 0.9, (name, nearest)  # no two benchmark shapes are the same outline
        assert similarities(inside)[name] > 0.99  # and each is itself


def test_pretraining_families_resemble_no_benchmark_shape_and_come_from_their_seed():
    families = pretraining_families(16, seed=3)
    assert len(families) == 16
    for family in families:
        assert max(similarities(family).values()) <= MAX_IOU_WITH_BENCHMARK
    y, x = np.mgrid[-1:1:33j, -1:1:33j]
    again = pretraining_families.__wrapped__(16, seed=3)  # recomputed, not the cache
    assert all(np.array_equal(a(x, y), b(x, y)) for a, b in zip(families, again))


def test_the_similarity_threshold_is_stricter_than_most_benchmark_neighbours():
    nearest = [max(v for o, v in similarities(f).items() if o != n) for n, f in BENCHMARK_SHAPES.items()]
    assert sum(v >= MAX_IOU_WITH_BENCHMARK for v in nearest) >= 11  # "most", as the module says


def test_renders_are_deterministic_and_labelled():
    img, label = render(0, 0, "test", 5)
    again = render.__wrapped__(0, 0, "test", 5)
    assert img.shape == (NATIVE, NATIVE, 3) and np.array_equal(img, again[0]) and np.array_equal(label, again[1])
    objects = layout(0, 0, "test", 5)
    assert set(np.unique(label)) <= {0} | {o.class_id + 1 for o in objects}
    assert objects[0].class_id in range(5)  # test images hold a class of the fold's unseen five


def test_colour_and_texture_do_not_identify_a_class():
    hues, textures, shared_hue, shared_texture, pairs = (
        collections.defaultdict(set),
        collections.defaultdict(set),
        0,
        0,
        0,
    )
    for i in range(400):
        objects = layout(0, 0, "trn", i)
        for o in objects:
            hues[o.class_id].add(o.hue)
            textures[o.class_id].add(o.texture)
        for o in objects[1:]:
            pairs += 1
            shared_hue += o.hue == objects[0].hue
            shared_texture += o.texture == objects[0].texture
    assert all(len(h) >= len(HUES) - 1 for h in hues.values())  # every class in (nearly) every colour
    assert all(len(t) == len(TEXTURES) for t in textures.values())
    # a second object takes the first one's colour with probability 1/2, else a random one (1/6 of those)
    assert 0.5 < shared_hue / pairs < 0.67 and 0.55 < shared_texture / pairs < 0.72


@pytest.mark.parametrize("split", ["trn", "test"])
def test_the_toy_benchmark_keeps_the_pascal_protocol(split):
    data = make_benchmark("toy", fold=1, split=split, img_size=98)
    classes = {c for _, c in data.metadata}
    assert classes == (set(range(5, 10)) if split == "test" else set(range(20)) - set(range(5, 10)))
    item = data[0]
    assert item["query_img"].shape == (3, 98, 98) and item["query_mask"].any()
