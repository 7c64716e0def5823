"""The fast inference path (hsnetlib.fastpath) against the reference modules it re-lays out."""

import pytest
import torch
import torch.nn as nn

from hsnetlib import HSNet, fastpath
from hsnetlib.conv4d import CenterPivotConv4d
from hsnetlib.correlation import hypercorrelation, mask_features
from hsnetlib.model import HPNLearner, upsample_query_dims

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def qm(x):
    """(B, C, Ha, Wa, Hb, Wb) -> query-major (B, Ha, Wa, C, Hb, Wb)."""
    return x.permute(0, 2, 3, 1, 4, 5).contiguous()


def cm(x):
    """query-major -> channel-major."""
    return x.permute(0, 3, 1, 2, 4, 5)


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
    fast = fastpath.center_pivot_qm(layer, qm(x))
    assert fast.shape == (batch, *query, cout, *ref.shape[-2:])
    torch.testing.assert_close(cm(fast), ref, rtol=1e-5, atol=1e-5)


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
    win = fastpath.SupportWindow(qm(x)[..., top:bottom, left:right], top, left, (13, 11))
    torch.testing.assert_close(cm(win.dense()), x)
    torch.testing.assert_close(cm(fastpath.center_pivot_window(layer, win)), layer(x), rtol=1e-5, atol=1e-5)


def test_center_pivot_qm_without_bias_and_bad_channels():
    layer = CenterPivotConv4d(3, 4, 3, 1, 1, bias=False)
    x = torch.randn(1, 3, 4, 4, 2, 2)
    torch.testing.assert_close(cm(fastpath.center_pivot_qm(layer, qm(x))), layer(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"expects \(B, Ha, Wa, 3, Hb, Wb\)"):
        fastpath.center_pivot_qm(layer, torch.randn(1, 4, 4, 5, 2, 2))


@pytest.mark.parametrize("offset", [0.0, 100.0])  # a large mean tests the variance arithmetic
@pytest.mark.parametrize("batch", [1, 2])
def test_group_norm_relu_qm_equals_reference(offset, batch):
    norm = nn.GroupNorm(4, 8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(batch, 8, 5, 3, 4, 2) * 3 + offset
    ref = torch.relu(norm(x))
    torch.testing.assert_close(cm(fastpath.group_norm_relu_qm(norm, qm(x))), ref, rtol=1e-4, atol=1e-4)


def test_group_norm_relu_qm_constant_input_is_finite():
    norm = nn.GroupNorm(4, 8)
    x = torch.full((1, 8, 3, 3, 2, 2), 7.0)
    out = fastpath.group_norm_relu_qm(norm, qm(x))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(cm(out), torch.relu(norm(x)), rtol=1e-4, atol=1e-4)


def _features(batch, sizes_channels, hw, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, *hw[i], generator=g) for i, c in enumerate(sizes_channels)]


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
    fast = fastpath.hypercorrelation_qm(fastpath.unit_query_features(fq), fs, mask, pyramid, windowed=windowed)
    for r, win in zip(ref, fast):
        f = win.dense()
        assert f.shape == (r.shape[0], *r.shape[2:4], r.shape[1], *r.shape[4:])
        torch.testing.assert_close(cm(f), r, rtol=1e-5, atol=1e-6)
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
    fast = fastpath.hypercorrelation_qm(fastpath.unit_query_features(fq), fs, None, (1, 2))
    for r, win in zip(ref, fast):
        assert win.is_full
        torch.testing.assert_close(cm(win.corr), r, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="expected 3 query and support feature maps"):
        fastpath.hypercorrelation_qm(fq[:2], fs[:2], None, (1, 2))


def test_upsample_query_qm_equals_reference():
    x = torch.randn(2, 3, 4, 5, 2, 3)
    ref = upsample_query_dims(x, (7, 9))
    torch.testing.assert_close(cm(fastpath.upsample_query_qm(qm(x), (7, 9))), ref)


@pytest.mark.parametrize("batch", [1, 2])
def test_learner_qm_equals_reference(batch):
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
        fast = fastpath.learner_qm(learner, [qm(p) for p in pyramid])
    assert fast.shape == ref.shape == (batch, 2, 18, 18)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_block_qm_rejects_other_kernels():
    full = HSNet("resnet50", kernel="full").hpn_learner
    assert not fastpath.supports_fast_path(full)
    assert fastpath.supports_fast_path(HPNLearner((3, 6, 4)))
    with pytest.raises(TypeError, match="CenterPivotConv4d, GroupNorm, ReLU"):
        fastpath.block_qm(full.encoder_layer4, torch.rand(1, 3, 3, 3, 3, 3))


def test_predict_with_other_kernel_falls_back_to_reference_modules():
    model = HSNet("resnet50", kernel="separable").eval()
    q, s = torch.randn(1, 3, 64, 64), torch.randn(1, 2, 3, 64, 64)
    m = torch.zeros(1, 2, 64, 64)
    m[..., 10:40, 10:40] = 1
    torch.testing.assert_close(model.kshot_logits(q, s, m), model.kshot_logits(q, s, m, fused=False))


@pytest.mark.parametrize("use_support_mask", [True, False])
def test_fused_equals_reference_with_an_empty_support_mask(use_support_mask):
    model = HSNet("resnet50", use_support_mask=use_support_mask).eval()
    q, s = torch.randn(2, 3, 64, 64), torch.randn(2, 2, 3, 64, 64)
    m = torch.zeros(2, 2, 64, 64)
    m[0, 0, 5:30, 5:60] = 1  # the other three supports have empty masks
    fast, ref = model.kshot_logits(q, s, m), model.kshot_logits(q, s, m, fused=False)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_bf16_fast_path_is_close_to_fp32():
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    q, s = torch.randn(1, 3, 96, 96), torch.randn(1, 1, 3, 96, 96)
    m = torch.zeros(1, 1, 96, 96)
    m[..., 20:80, 20:70] = 1
    fp32 = model.kshot_logits(q, s, m)
    bf16 = model.kshot_logits(q, s, m, precision="bf16")
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    scale = fp32.abs().max()
    assert (bf16 - fp32).abs().max() < 0.1 * scale  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_fast_features_equal_features(backbone):
    torch.manual_seed(0)
    model = HSNet(backbone).eval()
    for m in model.backbone.modules():  # non-trivial BatchNorm statistics, so that folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    img = torch.randn(2, 3, 64, 72)
    ref, fast = model.features(img), model.fast_features(img)
    assert len(fast) == len(ref)
    for r, f in zip(ref, fast):
        assert f.shape == r.shape and f.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())
    assert not any(k.startswith(("_fast", "folded")) for k in model.state_dict())
    assert model.folded_backbone.built
    model.folded_backbone.clear()
    assert not model.folded_backbone.built


def test_fast_features_follow_backbone_changes():
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    before = model.fast_features(img)[-1]
    model.backbone.layer4[-1].bn3.running_mean.add_(1.0)  # in place, as recalibrate_batchnorm does
    after = model.fast_features(img)[-1]
    ref = model.features(img)[-1]
    torch.testing.assert_close(after, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert not torch.allclose(before, after)
    other = HSNet("resnet50").eval()
    model.load_state_dict(other.state_dict())
    ref = other.features(img)[-1]
    torch.testing.assert_close(model.fast_features(img)[-1], ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_fused_equals_reference_odd_sizes_and_masks_per_item():
    torch.manual_seed(1)
    model = HSNet("resnet50").eval()
    q, s = torch.randn(2, 3, 97, 75), torch.randn(2, 2, 3, 97, 75)
    m = torch.zeros(2, 2, 97, 75)
    m[0, 0, :20, :15] = 1  # a corner
    m[0, 1, 40:60, 30:50] = 0.7  # a soft box inside
    m[1, 0, :, 60:] = 1  # the right border, full height
    m[1, 1] = (torch.rand(97, 75) > 0.8).float()  # scattered pixels
    fast, ref = model.kshot_logits(q, s, m), model.kshot_logits(q, s, m, fused=False)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)
    assert (model.predict(q, s, m) == model.predict(q, s, m, fused=False)).float().mean() >= 0.999
