"""Center-pivot 4D convolution (Sec. 3.2 of the HSNet paper).

A 4D correlation tensor ``c`` is indexed by a query position ``x = (ha, wa)`` and a
support position ``x' = (hb, wb)``. A full 4D convolution with a k^4 kernel sums over the
whole 4D neighbourhood ``P(x, x')``. The center-pivot kernel keeps only the two 2D slices
of that neighbourhood that pass through the centre:

    (c * k_CP)(x, x') = sum_{p' in P(x')} c(x, p') k_c(p' - x')      # 2D conv over support dims
                      + sum_{p  in P(x)}  c(p, x') k_c'(p - x)       # 2D conv over query dims

In code the two sums are two ordinary ``nn.Conv2d``: ``conv1`` slides over the query dims
(the support dims folded into the batch), ``conv2`` slides over the support dims (the
query dims folded into the batch). Each has its own bias, so the layer carries two biases.

Striding happens on the support dims only (the query keeps its resolution, which the
decoder needs). With support stride ``s`` the output keeps the support positions
0, s, 2s, ...: ``conv2`` strides by ``s`` and ``conv1`` is evaluated only at those kept
positions. The full and separable kernels compared in Table 4 sit beside it in this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _as_4tuple(value, name: str) -> tuple[int, int, int, int]:
    if isinstance(value, int):
        return (value,) * 4
    value = tuple(int(v) for v in value)
    if len(value) != 4:
        raise ValueError(f"{name} must be an int or a 4-tuple (ha, wa, hb, wb), got {value}")
    return value  # type: ignore[return-value]


def normalize_conv4d_args(kernel_size, stride, padding):
    """Return 4-tuples ``(kernel, stride, padding)``; an int ``stride`` strides the support dims."""
    kernel = _as_4tuple(kernel_size, "kernel_size")
    if isinstance(stride, int):
        stride = (1, 1, stride, stride)
    stride = _as_4tuple(stride, "stride")
    if stride[:2] != (1, 1):
        raise ValueError(
            f"4D convolutions here stride the support dims only; got query stride {stride[:2]}, expected (1, 1)"
        )
    if padding is None:
        padding = tuple(k // 2 for k in kernel)
    padding = _as_4tuple(padding, "padding")
    return kernel, stride, padding


def check_6d(x: torch.Tensor, in_channels: int, layer: str) -> None:
    if x.dim() != 6 or x.shape[1] != in_channels:
        raise ValueError(
            f"{layer} expects a 4D correlation tensor of shape (B, {in_channels}, Ha, Wa, Hb, Wb), got {tuple(x.shape)}"
        )


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution on ``(B, C, Ha, Wa, Hb, Wb)`` tensors (Sec. 3.2, Eq. 5).

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: int or ``(ka, ka', kb, kb')``; ``conv1`` uses the query pair, ``conv2`` the support pair.
        stride: int (support dims) or a 4-tuple whose query part is ``(1, 1)``.
        padding: int, 4-tuple, or ``None`` for ``k // 2`` (what HSNet uses).

    Parameters: ``2 * (C_in * C_out * k^2 + C_out)`` for a cubic kernel k.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, bias=True):
        super().__init__()
        kernel, stride, padding = normalize_conv4d_args(kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel, stride, padding
        # conv1: over the query dims (Ha, Wa); conv2: over the support dims (Hb, Wb), strided.
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel[:2], 1, padding[:2], bias=bias)
        self.conv2 = nn.Conv2d(in_channels, out_channels, kernel[2:], stride[2:], padding[2:], bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_6d(x, self.in_channels, type(self).__name__)
        B, C, Ha, Wa, Hb, Wb = x.shape
        sh, sw = self.stride[2:]

        # Branch 1: 2D conv over the query dims at the kept support positions 0, s, 2s, ...
        kept = x[..., ::sh, ::sw]  # (B, C, Ha, Wa, Hb', Wb')
        Hk, Wk = kept.shape[-2:]
        y1 = kept.permute(0, 4, 5, 1, 2, 3).reshape(B * Hk * Wk, C, Ha, Wa)  # (B*Hb'*Wb', C, Ha, Wa)
        y1 = self.conv1(y1)  # (B*Hb'*Wb', O, Ha, Wa)
        O, Ha1, Wa1 = y1.shape[1:]
        y1 = y1.view(B, Hk, Wk, O, Ha1, Wa1).permute(0, 3, 4, 5, 1, 2)  # (B, O, Ha, Wa, Hb', Wb')

        # Branch 2: 2D conv over the support dims at every query position, strided by s.
        y2 = x.permute(0, 2, 3, 1, 4, 5).reshape(B * Ha * Wa, C, Hb, Wb)  # (B*Ha*Wa, C, Hb, Wb)
        y2 = self.conv2(y2)  # (B*Ha*Wa, O, Hb', Wb')
        Hb2, Wb2 = y2.shape[-2:]
        y2 = y2.view(B, Ha, Wa, O, Hb2, Wb2).permute(0, 3, 1, 2, 4, 5)  # (B, O, Ha, Wa, Hb', Wb')

        if y1.shape != y2.shape:
            raise ValueError(
                f"{type(self).__name__}: the query-dim branch gives {tuple(y1.shape)} but the support-dim "
                f"branch gives {tuple(y2.shape)}; use odd kernels with padding k // 2 so both keep "
                f"support positions 0, s, 2s, ..."
            )
        return (y1 + y2).contiguous()  # (B, O, Ha, Wa, Hb', Wb')


def _init_like_conv(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: int) -> None:
    """PyTorch's default Conv init (kaiming-uniform with a=sqrt(5)), for a weight of any rank."""
    bound = 1 / math.sqrt(fan_in)
    nn.init.uniform_(weight, -bound, bound)  # = kaiming_uniform_(a=sqrt(5)) for conv weights
    if bias is not None:
        nn.init.uniform_(bias, -bound, bound)


class FullConv4d(nn.Module):
    """The original 4D convolution (Eq. 3) with a dense k^4 kernel and one bias.

        y(x, x') = b + sum_{(p, p') in P(x, x')} c(p, p') k(p - x, p' - x')

    Same interface and semantics as :class:`CenterPivotConv4d`: input (B, C, Ha, Wa, Hb, Wb),
    padding on all four dims, stride on the support dims only.

    Implementation: the k^2 query offsets are a loop; each is one strided Conv2d over the support
    dims on the query-shifted input (query dims folded into the batch). No k^2 copy of the input
    is ever held. Cost: C_in * C_out * k^4 multiply-adds per output position, i.e. k^2 / 2 times
    the center-pivot kernel's 2 * C_in * C_out * k^2; parameters C_in * C_out * k^4 + C_out.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, bias=True):
        super().__init__()
        kernel, stride, padding = normalize_conv4d_args(kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel, stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *kernel))  # (O, C, ka, kb, kc, kd)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_like_conv(self.weight, self.bias, in_channels * math.prod(kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_6d(x, self.in_channels, type(self).__name__)
        B, C, Ha, Wa, Hb, Wb = x.shape
        ka, kb = self.kernel_size[:2]
        pa, pb = self.padding[:2]
        xp = F.pad(x, (0, 0, 0, 0, pb, pb, pa, pa))  # pad the query dims: (B, C, Ha+2pa, Wa+2pb, Hb, Wb)
        Ho, Wo = Ha + 2 * pa - ka + 1, Wa + 2 * pb - kb + 1
        out = None
        for i in range(ka):
            for j in range(kb):
                shifted = xp[:, :, i : i + Ho, j : j + Wo]  # (B, C, Ho, Wo, Hb, Wb)
                shifted = shifted.permute(0, 2, 3, 1, 4, 5).reshape(B * Ho * Wo, C, Hb, Wb)
                y = F.conv2d(shifted, self.weight[:, :, i, j], None, self.stride[2:], self.padding[2:])
                out = y if out is None else out + y  # (B*Ho*Wo, O, Hb', Wb')
        O, Hb2, Wb2 = out.shape[1:]
        out = out.view(B, Ho, Wo, O, Hb2, Wb2).permute(0, 3, 1, 2, 4, 5)  # (B, O, Ho, Wo, Hb', Wb')
        if self.bias is not None:
            out = out + self.bias.view(1, O, 1, 1, 1, 1)
        return out.contiguous()


class SeparableConv4d(nn.Module):
    """Separable 4D convolution of VCN (Yang & Ramanan, NeurIPS 2019), the middle row of Table 4.

    The 4D kernel is factorized into two 2D convolutions applied one after the other:
    ``conv_support`` over the support dims (C_in -> C_out, carrying the support stride), then
    ``conv_query`` over the query dims (C_out -> C_out). Each has a bias; nothing sits between
    them, so the pair is one linear 4D operator whose kernel has rank C_out over the two planes.
    Parameters: C_out * C_in * k^2 + C_out * C_out * k^2 + 2 * C_out. (VCN's own block also
    projects channels; the paper's 4.4M count for this row includes details we do not know, see
    notebook 02 for the comparison.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=None, bias=True):
        super().__init__()
        kernel, stride, padding = normalize_conv4d_args(kernel_size, stride, padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel, stride, padding
        self.conv_support = nn.Conv2d(in_channels, out_channels, kernel[2:], stride[2:], padding[2:], bias=bias)
        self.conv_query = nn.Conv2d(out_channels, out_channels, kernel[:2], 1, padding[:2], bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_6d(x, self.in_channels, type(self).__name__)
        B, C, Ha, Wa, Hb, Wb = x.shape
        y = x.permute(0, 2, 3, 1, 4, 5).reshape(B * Ha * Wa, C, Hb, Wb)  # (B*Ha*Wa, C, Hb, Wb)
        y = self.conv_support(y)  # (B*Ha*Wa, O, Hb', Wb')
        O, Hb2, Wb2 = y.shape[1:]
        y = y.view(B, Ha, Wa, O, Hb2, Wb2).permute(0, 4, 5, 3, 1, 2).reshape(B * Hb2 * Wb2, O, Ha, Wa)
        y = self.conv_query(y)  # (B*Hb'*Wb', O, Ha', Wa')
        Ha2, Wa2 = y.shape[-2:]
        return y.view(B, Hb2, Wb2, O, Ha2, Wa2).permute(0, 3, 4, 5, 1, 2).contiguous()  # (B, O, Ha', Wa', Hb', Wb')


KERNELS: dict[str, type[nn.Module]] = {
    "center-pivot": CenterPivotConv4d,
    "full": FullConv4d,
    "separable": SeparableConv4d,
}
