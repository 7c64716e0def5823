"""The fast path's own backward passes (GroupNorm + ReLU, center-pivot layers) against autograd
through the reference modules, in float64 so that any difference is the formula, not rounding."""

import pytest
import torch
import torch.nn as nn

from hsnetlib.conv4d import CenterPivotConv4d
from hsnetlib.fast.center_pivot import center_pivot_qm, center_pivot_window
from hsnetlib.fast.correlation import SupportWindow
from hsnetlib.fast.groupnorm import GroupNormReLU, group_norm_relu_qm

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def qm(x):
    """(B, C, Ha, Wa, Hb, Wb) -> query-major, channels-last (B, Ha, Wa, Hb, Wb, C)."""
    return x.permute(0, 2, 3, 4, 5, 1).contiguous()


def grads(out, inputs, grad_out):
    return torch.autograd.grad(out, inputs, grad_out, allow_unused=True)


def assert_close(fast, ref):
    # float64 (u = 1.1e-16): these layers sum at most ~2e3 terms (gamma ~ 2e-13); the worst condition
    # here is GroupNorm at an offset of 100 with a spread of 3, (1 + mu^2 / sigma^2) ~ 1.1e3: ~2e-10.
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("offset", [0.0, 100.0])  # a large mean tests the cancellation in Σ ĝ x̂
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(1, 8, 5, 3, 4, 2), (2, 8, 3, 3, 1, 1), (2, 12, 4, 5, 3, 3)])
def test_group_norm_relu_gradients_equal_autograd(offset, affine, shape):
    norm = nn.GroupNorm(4, shape[1], affine=affine).double()
    if affine:
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + offset).requires_grad_()
    g = torch.randn(shape, dtype=torch.float64)
    params = list(norm.parameters())
    ref = grads(torch.relu(norm(x)), [x, *params], g)
    xq = qm(x.detach()).requires_grad_()
    out = group_norm_relu_qm(norm, xq)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "GroupNormReLUBackward"
    fast = grads(out, [xq, *params], qm(g))
    assert_close(fast[0], qm(ref[0]))
    for f, r in zip(fast[1:], ref[1:]):
        assert_close(f, r)


def test_group_norm_relu_passes_gradcheck_and_survives_a_dead_relu():
    x = torch.randn(2, 3, 2, 2, 3, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: GroupNormReLU.apply(*t, 4, 1e-5), (x, w, b))
    # every output clamped: the gradients are exactly zero, never NaN
    out = GroupNormReLU.apply(x, w, torch.full_like(b, -1e3), 4, 1e-5)
    gx, gw = grads(out, [x, w], torch.ones_like(out))
    assert not out.any() and torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gw, torch.zeros_like(gw))


def _layer(cin, cout, k, s, bias=True):
    layer = CenterPivotConv4d(cin, cout, k, s, k // 2, bias=bias).double()
    if bias:
        nn.init.normal_(layer.conv1.bias)
        nn.init.normal_(layer.conv2.bias)
    return layer


@pytest.mark.parametrize(
    "cin, cout, k, s, query, support",
    [
        (3, 5, 3, 1, (6, 5), (7, 6)),  # odd sizes, no stride
        (4, 6, 5, 4, (9, 8), (13, 11)),  # stride 4 (layer-2 block), ragged
        (5, 4, 3, 1, (6, 7), (2, 2)),  # 2x2 support < 3x3 kernel: dense matrix form
        (5, 4, 3, 2, (3, 3), (2, 3)),  # dense form with stride
        (5, 4, 5, 4, (3, 2), (1, 1)),  # 1x1 support
    ],
)
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_center_pivot_qm_gradients_equal_the_reference_layer(cin, cout, k, s, query, support, batch, bias):
    layer = _layer(cin, cout, k, s, bias)
    x = torch.randn(batch, cin, *query, *support, dtype=torch.float64, requires_grad=True)
    params = list(layer.parameters())
    ref_out = layer(x)
    g = torch.randn_like(ref_out)
    ref = grads(ref_out, [x, *params], g)
    xq = qm(x.detach()).requires_grad_()
    out = center_pivot_qm(layer, xq)
    fast = grads(out, [xq, *params], qm(g))
    assert_close(fast[0], qm(ref[0]))
    for f, r in zip(fast[1:], ref[1:]):
        assert_close(f, r)


def test_center_pivot_qm_passes_gradcheck():
    layer = _layer(2, 3, 3, 2)
    x = torch.randn(1, 3, 2, 5, 4, 2, dtype=torch.float64, requires_grad=True)  # query-major, channels-last
    assert torch.autograd.gradcheck(lambda t, *_: center_pivot_qm(layer, t), (x, *layer.parameters()))


@pytest.mark.parametrize("k, s", [(3, 2), (5, 4), (3, 1)])
@pytest.mark.parametrize(
    "window",
    [(0, 3, 0, 2), (2, 7, 3, 9), (12, 13, 0, 11), (1, 2, 1, 2), (0, 13, 0, 11)],  # (1, 2, 1, 2): no kept position
)
@pytest.mark.parametrize("bias", [True, False])
def test_center_pivot_window_gradients_equal_the_dense_reference(k, s, window, bias):
    top, bottom, left, right = window  # rows / cols of a 13 x 11 support grid that may be nonzero
    layer = _layer(3, 4, k, s, bias)
    x = torch.zeros(2, 3, 5, 4, 13, 11, dtype=torch.float64)
    x[..., top:bottom, left:right] = torch.randn(2, 3, 5, 4, bottom - top, right - left, dtype=torch.float64)
    params = list(layer.parameters())
    ref_out = layer(x)
    g = torch.randn_like(ref_out)
    ref = grads(ref_out, params, g)
    win = SupportWindow(qm(x)[:, :, :, top:bottom, left:right], top, left, (13, 11))
    fast = grads(center_pivot_window(layer, win), params, qm(g))
    for f, r in zip(fast, ref):
        assert f is not None  # a branch that sees only zeros gets a zero gradient, not None
        assert_close(f, r)
