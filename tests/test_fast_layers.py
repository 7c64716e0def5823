"""The fast path's layers (hsnetlib.fast: correlation, center-pivot, GroupNorm, learner layout) against the
reference modules they re-lay out, each within the rounding bound of its arithmetic (tests/tolerance.py)."""

import copy

import pytest
import torch
import torch.nn as nn

from hsnetlib.conv4d import CenterPivotConv4d
from hsnetlib.correlation import hypercorrelation, mask_features
from hsnetlib.fast.center_pivot import center_pivot_qm, center_pivot_window
from hsnetlib.fast.correlation import SupportWindow, hypercorrelation_qm, unit_query_features
from hsnetlib.fast.groupnorm import group_norm_relu_qm
from hsnetlib.fast.learner import QueryMajor, block_qm, upsample_query_qm
from hsnetlib.model import HPNLearner, upsample_query_dims

from tolerance import U32, assert_network_close, assert_terms_close, gamma

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def qm(x):
    """(B, C, Ha, Wa, Hb, Wb) -> query-major, channels-last (B, Ha, Wa, Hb, Wb, C)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous()


def cm(x):
    """query-major, channels-last -> channel-major."""
    return x.permute(0, 5, 1, 2, 3, 4)


def magnitude(layer: CenterPivotConv4d, x: torch.Tensor) -> torch.Tensor:
    """The sum of |terms| of each output of a center-pivot layer: the same layer, weights and biases
    replaced by their absolute values, on |x| (both branches are sums of products)."""
    absolute = copy.deepcopy(layer)
    with torch.no_grad():
        for p in absolute.parameters():
            p.abs_()
        return absolute(x.abs())


def cp_terms(layer: CenterPivotConv4d) -> int:
    """Terms of one output of a center-pivot layer: C k_q^2 + C k_s^2 products and two biases."""
    ka, kb, kc, kd = layer.kernel_size
    return layer.in_channels * (ka * kb + kc * kd) + 2


@pytest.mark.parametrize(
    "cin, cout, k, s, query, support",
    [
        (3, 5, 3, 1, (6, 5), (7, 6)),  # odd sizes, no stride
        (4, 6, 5, 4, (9, 8), (13, 11)),  # stride 4 (layer-2 block), ragged
        (2, 3, 3, 2, (4, 4), (5, 5)),
        (5, 4, 3, 1, (6, 7), (2, 2)),  # 2x2 support < 3x3 kernel: dense matrix path
        (5, 4, 3, 2, (3, 3), (2, 3)),  # dense path with stride
        (5, 4, 5, 4, (3, 2), (1, 1)),  # 1x1 support
    ],
)
@pytest.mark.parametrize("batch", [1, 2])
def test_center_pivot_qm_equals_reference(cin, cout, k, s, query, support, batch):
    layer = CenterPivotConv4d(cin, cout, k, s, k // 2)
    x = torch.randn(batch, cin, *query, *support)
    ref = layer(x)
    fast = center_pivot_qm(layer, qm(x))
    assert fast.shape == (batch, *query, *ref.shape[-2:], cout)
    assert_terms_close(cm(fast), ref, magnitude(layer, x), cp_terms(layer), "center-pivot")


@pytest.mark.parametrize("k, s", [(3, 2), (5, 4), (3, 1), (5, 2)])
@pytest.mark.parametrize(
    "window", [(0, 3, 0, 2), (2, 7, 3, 9), (5, 13, 6, 11), (12, 13, 0, 11), (4, 5, 4, 5), (1, 12, 0, 11)]
)
@pytest.mark.parametrize("bias", [True, False])
def test_center_pivot_window_equals_dense(k, s, window, bias):
    top, bottom, left, right = window  # rows / cols of a 13 x 11 support grid that may be nonzero
    layer = CenterPivotConv4d(3, 4, k, s, k // 2, bias=bias)
    if bias:
        nn.init.normal_(layer.conv1.bias)
        nn.init.normal_(layer.conv2.bias)
    x = torch.zeros(2, 3, 5, 4, 13, 11)
    x[..., top:bottom, left:right] = torch.randn(2, 3, 5, 4, bottom - top, right - left)
    win = SupportWindow(qm(x)[:, :, :, top:bottom, left:right], top, left, (13, 11))
    assert torch.equal(cm(win.dense()), x)
    fast = cm(center_pivot_window(layer, win))
    assert_terms_close(fast, layer(x), magnitude(layer, x), cp_terms(layer), "windowed center-pivot")


def test_center_pivot_qm_without_bias_and_bad_channels():
    layer = CenterPivotConv4d(3, 4, 3, 1, 1, bias=False)
    x = torch.randn(1, 3, 4, 4, 2, 2)
    assert_terms_close(cm(center_pivot_qm(layer, qm(x))), layer(x), magnitude(layer, x), cp_terms(layer))
    with pytest.raises(ValueError, match=r"expects \(B, Ha, Wa, Hb, Wb, 3\)"):
        center_pivot_qm(layer, torch.randn(1, 4, 4, 2, 2, 5))


def group_norm_bound(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """Rounding bound of relu(GroupNorm(x)) per entry, for two implementations.

    With mu, sigma of an entry's group (n entries): the mean is off by at most gamma_n mean|x|; the
    variance, from sums of x and x^2, by gamma_n (sigma^2 + mu^2) (the condition (1 + mu^2 / sigma^2): a
    large mean with a small spread cancels); so y = gamma (x - mu) / sigma + beta is off by
    |gamma| / sigma (gamma_n (|x| + mean|x|) + |x - mu| gamma_n (1 + mu^2 / sigma^2)) + u |y|, each way.
    """
    B, C = x.shape[:2]
    G = norm.num_groups
    xd = x.double().reshape(B, G, -1)
    mu, sigma = xd.mean(-1, keepdim=True), xd.std(-1, unbiased=False, keepdim=True)
    mean_abs = xd.abs().mean(-1, keepdim=True)
    g = gamma(xd.shape[-1])
    err = (g * (xd.abs() + mean_abs) + (xd - mu).abs() * g * (1 + mu**2 / sigma**2)) / sigma
    w = norm.weight.double().abs().view(1, C, *[1] * (x.dim() - 2))
    y = torch.relu(norm(x)).double().abs()
    return (2 * err.view_as(x) * w + 2 * U32 * y).float()


@pytest.mark.parametrize("offset", [0.0, 100.0])  # a large mean tests the variance arithmetic
@pytest.mark.parametrize("batch", [1, 2])
def test_group_norm_relu_qm_equals_reference(offset, batch):
    norm = nn.GroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(batch, 8, 5, 3, 4, 2) * 3 + offset
    ref = torch.relu(norm(x))
    excess = (cm(group_norm_relu_qm(norm, qm(x))) - ref).abs() - group_norm_bound(norm, x)
    assert excess.max() <= 0, excess.max()


def test_group_norm_relu_qm_constant_input_is_finite():
    norm = nn.GroupNorm(4, 8)
    x = torch.full((1, 8, 3, 3, 2, 2), 7.0)
    out = group_norm_relu_qm(norm, qm(x))
    assert torch.isfinite(out).all()
    # zero variance: x - mu is exactly 0 in both, and the output is relu(beta) = 0 for the default beta
    assert torch.equal(cm(out), torch.relu(norm(x)))


def _features(batch, sizes_channels, hw, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *hw[i], generator=g) for i, c in enumerate(sizes_channels)]


def assert_correlations_close(fast: torch.Tensor, ref: torch.Tensor, channels: int):
    """Eq. (2) is a cosine: its terms |q_c s_c| / (|q| |s|) sum to at most 1 (Cauchy-Schwarz); the dot
    product and the two norms each add C-term sums: within 2 gamma_(3C) of each other."""
    assert_terms_close(fast, ref, torch.ones_like(ref), 3 * channels, "Eq. (2)")


@pytest.mark.parametrize("case", ["box", "per-item", "empty", "full", "soft"])
@pytest.mark.parametrize("windowed", [True, False])
def test_hypercorrelation_qm_equals_reference(case, windowed):
    B, pyramid = 2, (1, 2, 2)  # deepest first: 1 layer at 3x3, 2 at 5x5, 2 at 9x9 (shallow to deep below)
    channels, hw = [6, 6, 8, 8, 10], [(9, 9), (9, 9), (5, 5), (5, 5), (3, 3)]
    fq = _features(B, channels, hw, 0)
    fs = _features(B, channels, [(h + 2, w + 1) for h, w in hw], 1)  # support maps of another size
    mask = torch.zeros(B, 40, 36)
    if case == "box":
        mask[:, 8:20, 10:30] = 1
    elif case == "per-item":
        mask[0, :10, :10] = 1
        mask[1, 25:, 5:] = 1
    elif case == "full":
        mask[:] = 1
    elif case == "soft":
        mask[:, 10:30, 10:30] = 0.5
    ref = hypercorrelation(fq, mask_features(fs, mask), pyramid)
    units = unit_query_features(fq, torch.float32)
    fast = hypercorrelation_qm(units, fs, mask, pyramid, torch.float32, windowed=windowed)
    for r, win in zip(ref, fast):
        f = win.dense()
        assert f.shape == (r.shape[0], *r.shape[2:], r.shape[1])
        assert_correlations_close(cm(f), r, max(channels))
    if case == "full":
        assert all(w.is_full for w in fast)
    if case in ("box", "soft", "empty"):
        assert fast[-1].is_full != windowed  # a mask inside the grid: only its window is stored
    if case == "empty":
        assert all((w.corr == 0).all() for w in fast)


def test_hypercorrelation_qm_without_mask_and_bad_lists():
    channels, hw = [4, 4, 4], [(6, 6), (6, 6), (3, 3)]
    fq, fs = _features(1, channels, hw, 2), _features(1, channels, hw, 3)
    ref = hypercorrelation(fq, fs, (1, 2))
    fast = hypercorrelation_qm(unit_query_features(fq, torch.float32), fs, None, (1, 2), torch.float32)
    for r, win in zip(ref, fast):
        assert win.is_full
        assert_correlations_close(cm(win.corr), r, 4)
    with pytest.raises(ValueError, match="expected 3 query and support feature maps"):
        hypercorrelation_qm(fq[:2], fs[:2], None, (1, 2), torch.float32)


def test_upsample_query_qm_equals_reference():
    x = torch.randn(2, 3, 4, 5, 2, 3)
    # bilinear interpolation: the same 4-term weighted sums in both layouts, each weight <= 1
    assert_terms_close(cm(upsample_query_qm(qm(x), (7, 9))), upsample_query_dims(x, (7, 9)), x.abs().max(), 4)


@pytest.mark.parametrize("batch", [1, 2])
def test_query_major_learner_equals_reference(batch):
    learner = HPNLearner((3, 6, 4)).eval()
    g = torch.Generator().manual_seed(4)
    # support grids shrink 9 -> 5/3/2 ... ; the query sizes are those of a 72x72 image
    pyramid = [
        torch.rand(batch, 3, 3, 3, 3, 3, generator=g),
        torch.rand(batch, 6, 5, 5, 5, 5, generator=g),
        torch.rand(batch, 4, 9, 9, 9, 9, generator=g),
    ]
    with torch.inference_mode():
        ref = learner(pyramid)
        fast = learner([qm(p) for p in pyramid], QueryMajor())
    assert fast.shape == ref.shape == (batch, 2, 18, 18)
    assert_network_close(fast, ref, depth=19, terms=2304)  # 15 center-pivot layers, 4 decoder convolutions


def test_block_qm_rejects_other_kernels():
    full = HPNLearner((3, 6, 4), kernel="full")
    with pytest.raises(TypeError, match="CenterPivotConv4d, GroupNorm, ReLU"):
        block_qm(full.encoder_layer4, torch.rand(1, 3, 3, 3, 3, 3))
