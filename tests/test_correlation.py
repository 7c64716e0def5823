import pytest
import torch

from hsnetlib.correlation import EPS, correlation, hypercorrelation, mask_features

from naive import cosine_correlation

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def test_correlation_matches_per_pixel_cosine():
    fq, fs = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 5, 4, 2, dtype=torch.float64)
    # float64: default tolerance 1e-7 vs rounding ~1e-15 (cosines of 5 channels): only a wrong formula fails
    torch.testing.assert_close(correlation(fq, fs), cosine_correlation(fq, fs))


def test_eps_is_added_to_each_norm():
    """A masked-out support feature correlates to exactly 0 (not NaN); eps shifts small norms."""
    fq = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    fs = torch.zeros(1, 4, 2, 2, dtype=torch.float64)
    fs[..., 0, 0] = 2e-5 * fq[..., 0, 0] / fq[..., 0, 0].norm()  # norm 2*eps, parallel to query (0, 0)
    c = correlation(fq, fs)
    assert torch.isfinite(c).all()
    assert (c[0, :, :, 1, 1] == 0).all()
    qn, sn = fq[0, :, 0, 0].norm(), fs[0, :, 0, 0].norm()
    expected = (qn * sn) / ((qn + EPS) * (sn + EPS))  # cosine 1, shrunk by eps on both norms
    torch.testing.assert_close(c[0, 0, 0, 0, 0], expected)  # float64, a 4-term cosine: rounding ~1e-16
    assert c[0, 0, 0, 0, 0] < 0.7  # ~ 2/3: cosine 1 times 2e-5 / (2e-5 + eps)


def test_mask_features_bilinear_align_corners():
    feat = torch.ones(1, 2, 3, 3)
    mask = torch.zeros(1, 5, 5)
    mask[:, :, :3] = 1.0  # left three columns of five
    (masked,) = mask_features([feat], mask)
    # align_corners=True samples columns 0, 2, 4 of the mask: 1, 1, 0
    assert masked[0, 0, 0].tolist() == [1.0, 1.0, 0.0]


def test_hypercorrelation_groups_deepest_first():
    B = 1
    sizes = [(3, 8, 8), (3, 8, 8), (4, 4, 4), (5, 2, 2)]
    feats_q = [torch.randn(B, *size, dtype=torch.float64) for size in sizes]
    feats_s = [torch.randn_like(f) for f in feats_q]
    pyramid = hypercorrelation(feats_q, feats_s, (1, 1, 2))
    assert [tuple(p.shape) for p in pyramid] == [(B, 1, 2, 2, 2, 2), (B, 1, 4, 4, 4, 4), (B, 2, 8, 8, 8, 8)]
    # float64: the same cosines stacked; default tolerance 1e-7 vs rounding ~1e-16
    torch.testing.assert_close(pyramid[2][:, 1], correlation(feats_q[1], feats_s[1]))
    torch.testing.assert_close(pyramid[0][:, 0], correlation(feats_q[3], feats_s[3]))


def test_masked_out_support_columns_are_skipped_exactly():
    fq, fs = torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 5, 4, 3, dtype=torch.float64)
    fs[:, :, 1:, :] = 0  # only the first support row survives the mask, in both batch items
    fs[1, :, 0, 0] = 0  # and one position of item 1 only
    torch.testing.assert_close(correlation(fq, fs), cosine_correlation(fq, fs))  # float64: as in the first test
    assert (correlation(fq, torch.zeros_like(fs)) == 0).all()  # empty mask: all zeros, no NaN
