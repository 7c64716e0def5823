"""The 4D kernel family of Table 4 against naive definitions, and the paper's center-pivot claim."""

import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.conv4d import CenterPivotConv4d, FullConv4d, SeparableConv4d

from naive import full_conv4d

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (3, 0), (5, 2)])
def test_full_conv4d_matches_naive_sum(stride, batch, kernel, padding):
    layer = FullConv4d(2, 3, kernel, stride, padding).double()
    x = torch.randn(batch, 2, 5, 6, 7, 6, dtype=torch.float64)
    expected = full_conv4d(x, layer.weight, layer.bias, (stride, stride), (padding,) * 4)
    # float64: default tolerance 1e-7 vs rounding ~1e-14 (sums of C k^4 <= 1250 terms of size ~1)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("kernel", [3, 5])
def test_center_pivot_equals_full_kernel_on_the_two_pivot_planes(stride, kernel):
    """Sec. 3.2: CP == a full 4D kernel that is zero except on p = x and p' = x'."""
    cp = CenterPivotConv4d(3, 4, kernel, stride).double()
    full = FullConv4d(3, 4, kernel, stride).double()
    c = kernel // 2
    with torch.no_grad():
        full.weight.zero_()
        full.weight[:, :, :, :, c, c] += cp.conv1.weight  # query-dim kernel on the plane p' = x'
        full.weight[:, :, c, c, :, :] += cp.conv2.weight  # support-dim kernel on the plane p = x
        # the centre tap (p, p') = (x, x') lies on both planes and now holds both weights, as CP sums both
        full.bias.copy_(cp.conv1.bias + cp.conv2.bias)
    x = torch.randn(2, 3, 6, 5, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(cp(x), full(x))  # float64: as above (<= 1875 terms, one order of summation each)


def naive_separable(layer, x):
    """Support-dim 2D conv at every query position, then query-dim 2D conv at every support position."""
    B, C, Ha, Wa, Hb, Wb = x.shape
    mid = torch.stack([torch.stack([layer.conv_support(x[:, :, i, j]) for j in range(Wa)], -1) for i in range(Ha)], -2)
    # mid: (B, O, Hb', Wb', Ha, Wa)
    Hb2, Wb2 = mid.shape[2:4]
    out = torch.stack(
        [torch.stack([layer.conv_query(mid[:, :, u, v]) for v in range(Wb2)], -1) for u in range(Hb2)], -2
    )
    return out  # (B, O, Ha, Wa, Hb', Wb')


@pytest.mark.parametrize("stride", [1, 2])
def test_separable_conv4d_matches_its_definition(stride):
    layer = SeparableConv4d(2, 3, 3, stride).double()
    x = torch.randn(1, 2, 4, 5, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(layer(x), naive_separable(layer, x))  # float64: two 2D convs of <= 27 terms each


@pytest.mark.parametrize("cls", [FullConv4d, SeparableConv4d])
def test_every_kernel_gets_gradients_and_rejects_bad_shapes(cls):
    layer = cls(2, 3, 3, 2)
    layer(torch.randn(1, 2, 4, 4, 6, 6)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    with pytest.raises(ValueError, match=r"\(B, 2, Ha, Wa, Hb, Wb\)"):
        layer(torch.randn(1, 2, 4, 4, 6))


@pytest.mark.parametrize("kernel, count", [("center-pivot", 2_587_394), ("full", 11_296_690), ("separable", 2_944_546)])
def test_resnet101_learnable_parameters_per_kernel(kernel, count):
    assert HSNet("resnet101", kernel=kernel).num_learnable_parameters() == count


@pytest.mark.parametrize("kernel", ["full", "separable"])
def test_hsnet_runs_with_each_kernel(kernel):
    model = HSNet("resnet50", kernel=kernel)
    logits = model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64))
    assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits).all()
