"""The measurements behind notebooks 1 and 6 (hsnetlib.analysis) against their definitions."""

import itertools

import pytest
import torch

from hsnetlib.analysis import auroc, best_matches, kept_support_fraction, separation
from hsnetlib.correlation import kept_support_positions
from hsnetlib.data import make_benchmark

from naive import cosine_correlation


def naive_auroc(scores, labels) -> float:
    """The probability that a positive scores above a negative, ties one half: every pair, counted."""
    pos = [s for s, l in zip(scores.tolist(), labels.tolist()) if l]
    neg = [s for s, l in zip(scores.tolist(), labels.tolist()) if not l]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pairwise_probability_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (40,), generator=g).float()  # many ties
    labels = torch.rand(40, generator=g) > 0.6
    # both are a count of ordered pairs divided by the pair count, in float64: they differ by a few ulp of 1
    assert auroc(scores, labels) == pytest.approx(naive_auroc(scores, labels), abs=1e-12)


def test_auroc_extremes():
    labels = torch.tensor([0, 0, 1, 1]).bool()
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auroc(torch.zeros(4), labels) == 0.5  # all tied: a vanished support mask
    assert auroc(torch.zeros(4), torch.zeros(4).bool()) != auroc(torch.zeros(4), torch.zeros(4).bool())  # NaN


@pytest.mark.numerics
def test_best_matches_are_the_max_masked_cosine():
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(1, 5, 3, 4, generator=g), torch.randn(1, 5, 4, 3, generator=g)
    mask = torch.zeros(1, 16, 12)
    mask[:, :8, :6] = 1
    got = best_matches([q], [s], mask)[0]
    masked = s * torch.nn.functional.interpolate(mask[:, None], (4, 3), mode="bilinear", align_corners=True)
    want = cosine_correlation(q, masked).flatten(-2).max(-1).values
    # float32 cosines in [0, 1] of 5 channels, computed in two orders (a matmul vs per pixel): each is within
    # a few gamma_5 ~ 3e-7 of exact, relative to terms of size <= 1: 1e-6 absolute bounds both with a margin
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def episode_of(mask: torch.Tensor) -> dict:
    """A 1-shot episode whose images carry their masks in channel 0 (target 1, elsewhere 0)."""
    img = torch.zeros(3, *mask.shape)
    img[0] = mask
    return {"query_img": img, "query_mask": mask, "support_imgs": img[None], "support_masks": mask[None]}


def test_separation_is_one_for_features_that_mark_the_target_and_one_half_for_constant_ones():
    masks = [torch.zeros(16, 16) for _ in range(3)]
    for i, m in enumerate(masks):
        m[2 + i : 9 + i, 3:11] = 1
    data = [episode_of(m) for m in masks]
    marked = separation(lambda img: [img[:, :1]], data, ["marks"], episodes=3)
    constant = separation(lambda img: [torch.ones_like(img[:, :1])], data, ["constant"], episodes=3)
    assert list(marked.columns) == ["layer", "auroc", "std", "episodes"] and marked.episodes.item() == 3
    assert marked.auroc.item() == 1.0 and constant.auroc.item() == 0.5  # constant: every pixel ties


def test_kept_support_fraction_counts_vanished_masks():
    data = make_benchmark("toy", fold=0, split="trn", img_size=96)
    table = kept_support_fraction(data, {1: (12, 12), 3: (3, 3)}, episodes=20)
    expected = sum(kept_support_positions(data[i]["support_masks"][:1], (3, 3)).any().item() for i in range(20))
    assert table.set_index("level").loc[3, "kept"] == expected / 20
    assert table.set_index("level").loc[1, "kept"] >= table.set_index("level").loc[3, "kept"]
