import pytest
import torch

from hsnetlib import CenterPivotConv4d

from naive import center_pivot_conv4d

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def _naive(layer, x):
    return center_pivot_conv4d(
        x,
        layer.conv1.weight,
        layer.conv1.bias,
        layer.conv2.weight,
        layer.conv2.bias,
        layer.stride[2:],
        layer.padding,
    )


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kernel", [3, 5])
def test_center_pivot_matches_naive_formula(stride, batch, kernel):
    layer = CenterPivotConv4d(2, 3, kernel, stride, kernel // 2).double()
    x = torch.randn(batch, 2, 5, 4, 9, 7, dtype=torch.float64)
    y = layer(x)
    assert y.shape == (batch, 3, 5, 4, -(-9 // stride), -(-7 // stride))
    # float64: default tolerance 1e-7 vs rounding ~1e-15 (sums of C k^2 = 50 terms of size ~1): only a wrong sum fails
    torch.testing.assert_close(y, _naive(layer, x))


def test_same_module_on_two_input_sizes():
    """No cached pruning indices: one module, two sizes, both right."""
    layer = CenterPivotConv4d(2, 2, 3, 2, 1).double()
    for shape in [(1, 2, 4, 4, 8, 8), (2, 2, 3, 5, 5, 6), (1, 2, 4, 4, 8, 8)]:
        x = torch.randn(*shape, dtype=torch.float64)
        torch.testing.assert_close(layer(x), _naive(layer, x))  # float64: as above


def test_kept_support_positions_are_0_s_2s():
    """With stride s the output at support index u is centred on input position u*s."""
    layer = CenterPivotConv4d(1, 1, 1, 4, 0)
    with torch.no_grad():
        layer.conv1.weight.fill_(1.0)
        layer.conv2.weight.fill_(0.0)
        layer.conv1.bias.zero_()
        layer.conv2.bias.zero_()
    x = torch.arange(10.0).view(1, 1, 1, 1, 1, 10).expand(1, 1, 1, 1, 10, 10).contiguous()
    assert layer(x)[0, 0, 0, 0, 0].tolist() == [0.0, 4.0, 8.0]


def test_parameter_count_and_two_biases():
    layer = CenterPivotConv4d(4, 16, 5, 4, 2)
    assert sum(p.numel() for p in layer.parameters()) == 2 * (4 * 16 * 25 + 16)


def test_gradients_reach_both_kernels():
    layer = CenterPivotConv4d(2, 3, 3, 2, 1)
    layer(torch.randn(1, 2, 4, 4, 6, 6)).square().sum().backward()
    for p in layer.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "shape, message",
    [((1, 2, 4, 4, 6), "(B, 2, Ha, Wa, Hb, Wb)"), ((1, 3, 4, 4, 6, 6), "(B, 2, Ha, Wa, Hb, Wb)")],
)
def test_bad_input_shape(shape, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CenterPivotConv4d(2, 3, 3)(torch.randn(*shape))


def test_query_stride_rejected():
    with pytest.raises(ValueError, match="support dims only"):
        CenterPivotConv4d(2, 3, 3, (2, 2, 2, 2))
