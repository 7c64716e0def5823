"""Center-pivot 4D convolution (Sec. 3.2, Eq. 5) on the fast path's query-major, channels-last layout,
with its own backward.

Same function as :class:`hsnetlib.conv4d.CenterPivotConv4d` on the channel-major tensor, for
tensors kept ``(B, Ha, Wa, Hb, Wb, C)`` (tests: ``tests/test_fast_layers.py``, ``tests/test_fast_backward.py``):

- conv2 (support dims) reads ``(B*Ha*Wa, C, Hb, Wb)`` as a free channels-last view and writes its
  output in the same layout; on a support grid smaller than the kernel (2x2 grid, 3x3 kernel) it
  is one matrix product with the convolution's dense matrix, which skips the padding taps.
- conv1 (query dims) copies only the kept support positions (1/s^2 of the input), channels-last
  too; its output is added in place into conv2's.
- Channels innermost is what oneDNN's convolutions want on these shapes (a few channels over many
  small grids): at 400 px the first squeeze layer's weight gradient ran 172-197 -> 16-18 ms, the
  second layer's forward 63-72 -> 16-25 ms against channel-major ``(N, C, Hb, Wb)``
  (``benchmarks/channels_last_convs.py``, benchmarks/RESULTS.md).
- The first layer of a squeeze block may get a :class:`~hsnetlib.fast.correlation.SupportWindow`: the
  hypercorrelation is zero outside the mask's window, so both branches there give their biases
  and only the outputs that see the window are convolved (:func:`center_pivot_window`).

Training: autograd through those views and in-place adds of 6D tensors would copy each gradient
several times. :class:`CenterPivotQM` and :class:`CenterPivotWindow` compute the gradients
directly: each branch's input and weight gradients by ``aten.convolution_backward`` (or two
matrix products for the dense form), conv1's input gradient added into conv2's at the kept
positions, and both biases' gradients as the sum of the output gradient (each bias is added
at every output position). Under autocast the backward runs in the forward's compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conv4d import CenterPivotConv4d
from .groupnorm import channel_sums, needs_grad
from .ops import conv_backward as _weight_and_input_grads


def _bias_grad(grad_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bias added at every output position of (B, Ha, Wa, Hk, Wk, O): the sum of the gradient per channel."""
    return channel_sums(grad_out, torch.promote_types(grad_out.dtype, torch.float32)).sum(dim=0).to(dtype)


def _affected_outputs(lo: int, hi: int, n_out: int, k: int, s: int, p: int) -> tuple[int, int]:
    """Along one dim of a (k, stride s, padding p) convolution: the outputs [a, b) whose receptive
    field meets the inputs lo..hi-1."""
    return max(0, -(-(lo + p - k + 1) // s)), min(n_out, (hi - 1 + p) // s + 1)


def _as_images(x: torch.Tensor) -> torch.Tensor:
    """A contiguous (P, Q, R, H, W, C) tensor as (P*Q*R, C, H, W) images, a free channels-last view."""
    P, Q, R, H, W, C = x.shape
    return x.view(P * Q * R, H, W, C).permute(0, 3, 1, 2)


def _as_6d(images: torch.Tensor, lead: tuple[int, int, int]) -> torch.Tensor:
    """(N, C, H, W) images -> (*lead, H, W, C); free for channels-last images (what oneDNN returns for
    channels-last inputs), a copy otherwise."""
    N, C, H, W = images.shape
    return images.permute(0, 2, 3, 1).contiguous().view(*lead, H, W, C)


def _support_major(x: torch.Tensor) -> torch.Tensor:
    """(B, Ha, Wa, Hk, Wk, C) -> (B, Hk, Wk, Ha, Wa, C) contiguous: conv1's images, one per kept support position."""
    return x.permute(0, 3, 4, 1, 2, 5).contiguous()


def _query_major(x: torch.Tensor) -> torch.Tensor:
    """(B, Hk, Wk, Ha, Wa, C) -> (B, Ha, Wa, Hk, Wk, C), a view."""
    return x.permute(0, 3, 4, 1, 2, 5)


def _pad_channels_last(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad)`` (negative = crop) written into a channels-last buffer: (N, C, h, w) -> (N, C, h', w').

    Padding straight into a new buffer costs no extra copy; only the padding strips are zeroed.
    """
    left, right, top, bottom = pad
    N, C, h, w = x.shape
    x = x[:, :, max(0, -top) : h - max(0, -bottom), max(0, -left) : w - max(0, -right)]  # the crops
    top, bottom, left, right = (max(0, p) for p in (top, bottom, left, right))
    h, w = x.shape[-2:]
    out = x.new_empty(N, top + h + bottom, left + w + right, C).permute(0, 3, 1, 2)  # (N, C, h', w') view
    out[:, :, top : top + h, left : left + w] = x
    for strip in (out[:, :, :top], out[:, :, top + h :], out[:, :, :, :left], out[:, :, :, left + w :]):
        strip.zero_()  # only the padding: writing the whole buffer twice costs a pass over it
    return out


def _dense_support_matrix(conv: nn.Conv2d, Hb: int, Wb: int, Hk: int, Wk: int) -> torch.Tensor:
    """The support-dim convolution as a matrix (Hb*Wb*C, Hk*Wk*O), gathered from its weight (no FLOPs).

    Entry ((i, j, c), (i', j', o)) is weight[o, c, i - s*i' + p, j - s*j' + p] when that tap lies
    inside the kernel, else 0 (the tap would read padding).
    """
    (sh, sw), (ph, pw) = conv.stride, conv.padding
    kh, kw = conv.kernel_size
    dev = conv.weight.device
    ky = torch.arange(Hb, device=dev).view(1, Hb) - sh * torch.arange(Hk, device=dev).view(Hk, 1) + ph  # (Hk, Hb)
    kx = torch.arange(Wb, device=dev).view(1, Wb) - sw * torch.arange(Wk, device=dev).view(Wk, 1) + pw  # (Wk, Wb)
    ky = torch.where((ky >= 0) & (ky < kh), ky, kh)  # index kh / kw = the zero tap added below
    kx = torch.where((kx >= 0) & (kx < kw), kx, kw)
    padded = F.pad(conv.weight, (0, 1, 0, 1))  # (O, C, kh+1, kw+1), last row / column zero
    dense = padded[:, :, ky.view(Hk, 1, Hb, 1), kx.view(1, Wk, 1, Wb)]  # (O, C, Hk, Wk, Hb, Wb)
    return dense.permute(4, 5, 1, 2, 3, 0).reshape(Hb * Wb * conv.in_channels, -1)  # (Hb*Wb*C, Hk*Wk*O)


# ---- every support position: (B, Ha, Wa, Hb, Wb, C) -> (B, Ha, Wa, Hk, Wk, O) ----


def _qm_forward(x, w1, b1, w2, b2, stride, padding, padding1, out_hw):
    """Both branches of Eq. (5); ``w2`` is conv2's weight (O, C, kh, kw) or its dense matrix
    (Hb*Wb*C, Hk*Wk*O), ``b2`` its bias (O) or (Hk*Wk*O). -> y (B, Ha, Wa, Hk, Wk, O) and conv1's
    input (B*Hk*Wk, C, Ha, Wa), channels-last."""
    B, Ha, Wa, Hb, Wb, C = x.shape
    (Hk, Wk), (sh, sw), O = out_hw, stride, w1.shape[0]
    if w2.dim() == 2:  # dense form on a tiny support grid
        flat = x.view(B * Ha * Wa, Hb * Wb * C)  # (B*Ha*Wa, Hb*Wb*C)
        y = flat @ w2 if b2 is None else torch.addmm(b2, flat, w2)  # (B*Ha*Wa, Hk*Wk*O); autocast applies
        y = y.view(B, Ha, Wa, Hk, Wk, O)
    else:
        y = _as_6d(F.conv2d(_as_images(x), w2, b2, stride, padding), (B, Ha, Wa))  # (B, Ha, Wa, Hk, Wk, O)
    z_in = _as_images(_support_major(x[:, :, :, ::sh, ::sw]))  # (B*Hk*Wk, C, Ha, Wa)
    z = _as_6d(F.conv2d(z_in, w1, b1, 1, padding1), (B, Hk, Wk))  # (B, Hk, Wk, Ha, Wa, O)
    y.add_(_query_major(z).to(y.dtype))  # (B, Ha, Wa, Hk, Wk, O)
    return y, z_in


class CenterPivotQM(torch.autograd.Function):
    """Eq. (5) on a query-major tensor, differentiable in the input and both convolutions' parameters."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, stride, padding, padding1, out_hw):
        y, z_in = _qm_forward(x, w1, b1, w2, b2, stride, padding, padding1, out_hw)
        ctx.save_for_backward(x, z_in, w1, w2)
        ctx.geometry = stride, padding, padding1
        ctx.has_bias = b1 is not None, b2 is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, z_in, w1, w2 = ctx.saved_tensors
        (sh, sw), padding, padding1 = ctx.geometry
        B, Ha, Wa, Hb, Wb, C = x.shape
        _, _, _, Hk, Wk, O = g.shape
        need_x = ctx.needs_input_grad[0]
        g = g.contiguous()  # (B, Ha, Wa, Hk, Wk, O)
        grad_x = grad_b2 = None
        if w2.dim() == 2:  # dense form: y = flat @ w2 (+ b2)
            g2 = g.view(B * Ha * Wa, Hk * Wk * O)  # (B*Ha*Wa, Hk*Wk*O)
            if need_x:
                grad_x = (g2 @ w2.to(g.dtype).t()).view(B, Ha, Wa, Hb, Wb, C)
            grad_w2 = (x.to(g.dtype).view(B * Ha * Wa, -1).t() @ g2).to(w2.dtype)  # (Hb*Wb*C, Hk*Wk*O)
        else:
            gx, grad_w2 = _weight_and_input_grads(_as_images(g), _as_images(x), w2, (sh, sw), padding, need_x)
            grad_x = _as_6d(gx, (B, Ha, Wa)) if need_x else None  # (B, Ha, Wa, Hb, Wb, C)
        gz = _as_images(_support_major(g))  # (B*Hk*Wk, O, Ha, Wa)
        gk, grad_w1 = _weight_and_input_grads(gz, z_in, w1, (1, 1), padding1, need_x)
        if need_x:
            grad_x[:, :, :, ::sh, ::sw] += _query_major(_as_6d(gk, (B, Hk, Wk)))
            grad_x = grad_x.to(x.dtype)
        # each bias is added at every output position: Σ of the gradient over items and query positions
        sums = g.view(B * Ha * Wa, Hk * Wk, O).sum(dim=0, dtype=torch.promote_types(g.dtype, torch.float32))
        grad_b1 = sums.sum(dim=0).to(w1.dtype) if ctx.has_bias[0] else None  # (O)
        if ctx.has_bias[1]:  # (Hk*Wk*O) for the dense form's bias, (O) for conv2's
            grad_b2 = (sums.flatten() if w2.dim() == 2 else sums.sum(dim=0)).to(w2.dtype)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, None, None, None


def center_pivot_qm(layer: CenterPivotConv4d, x: torch.Tensor, own_backward: bool = True) -> torch.Tensor:
    """Eq. (5) on a query-major tensor: (B, Ha, Wa, Hb, Wb, C) -> (B, Ha, Wa, Hb', Wb', O).

    ``own_backward=False``: autograd through the same forward instead of :class:`CenterPivotQM`."""
    B, Ha, Wa, Hb, Wb, C = x.shape
    if C != layer.in_channels:
        raise ValueError(f"center_pivot_qm expects (B, Ha, Wa, Hb, Wb, {layer.in_channels}), got {tuple(x.shape)}")
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size[2:], layer.stride[2:], layer.padding[2:]
    Hk, Wk = (Hb + 2 * ph - kh) // sh + 1, (Wb + 2 * pw - kw) // sw + 1
    if (Hk, Wk) != (len(range(0, Hb, sh)), len(range(0, Wb, sw))):
        raise ValueError(
            f"center_pivot_qm: the support-dim branch keeps {(Hk, Wk)} positions but striding keeps "
            f"{(len(range(0, Hb, sh)), len(range(0, Wb, sw)))}; use odd kernels with padding k // 2"
        )
    w1, b1, w2, b2 = layer.conv1.weight, layer.conv1.bias, layer.conv2.weight, layer.conv2.bias
    if Hb * Wb < kh * kw:  # tiny support grid: the dense matrix, no padding taps
        w2 = _dense_support_matrix(layer.conv2, Hb, Wb, Hk, Wk)  # (Hb*Wb*C, Hk*Wk*O)
        b2 = b2.repeat(Hk * Wk) if b2 is not None else None  # (Hk*Wk*O), O innermost
    args = (x.contiguous(), w1, b1, w2, b2, (sh, sw), (ph, pw), layer.conv1.padding, (Hk, Wk))
    if own_backward and needs_grad(args[:5]):
        return CenterPivotQM.apply(*args)
    return _qm_forward(*args)[0]


# ---- a windowed hypercorrelation (first layer of a squeeze block, no input gradient) ----


def _window_forward(x, full, top, left, w1, b1, w2, b2, stride, padding, padding1):
    """Eq. (5) on a hypercorrelation that is zero outside rows top..top+h-1, columns left..left+w-1
    of the (Hb, Wb) support grid, given as its window x (B, Ha, Wa, h, w, C).

    -> out (B, Ha, Wa, Hk, Wk, O) and, for the backward, conv2's input and output region (or None)
    and conv1's input and kept-position region (or None)."""
    B, Ha, Wa, h, w, C = x.shape
    (Hb, Wb), (sh, sw), (ph, pw) = full, stride, padding
    kh, kw = w2.shape[-2:]
    Hk, Wk = (Hb + 2 * ph - kh) // sh + 1, (Wb + 2 * pw - kw) // sw + 1
    O = w1.shape[0]
    bias = (b1 if b1 is not None else 0) + (b2 if b2 is not None else 0)
    bias = bias if torch.is_tensor(bias) else x.new_zeros(O)  # (O): both branches' biases, at every output

    # conv2 over the support dims, on the outputs [r0, r1) x [c0, c1) that see the window
    r0, r1 = _affected_outputs(top, top + h, Hk, kh, sh, ph)
    c0, c1 = _affected_outputs(left, left + w, Wk, kw, sw, pw)
    x2 = region2 = None
    if r0 < r1 and c0 < c1:
        # the inputs they read, as pads (negative = crop) of the window: zeros are masked-out or border
        need_top, need_bottom = r0 * sh - ph, (r1 - 1) * sh - ph + kh
        need_left, need_right = c0 * sw - pw, (c1 - 1) * sw - pw + kw
        pad = (left - need_left, need_right - left - w, top - need_top, need_bottom - top - h)
        x2 = _pad_channels_last(_as_images(x), pad)  # (B*Ha*Wa, C, rows, cols), channels-last
        y2 = _as_6d(F.conv2d(x2, w2, bias, (sh, sw)), (B, Ha, Wa))  # (B, Ha, Wa, rows, cols, O), both biases
        region2 = (r0, r1, c0, c1)
    if region2 == (0, Hk, 0, Wk):
        out = y2  # the window reaches every output
    else:
        dtype = y2.dtype if region2 is not None else x.dtype  # the convolution's, under autocast
        out = bias.to(dtype).view(1, 1, 1, 1, 1, O).expand(B, Ha, Wa, Hk, Wk, O).clone()  # (B, Ha, Wa, Hk, Wk, O)
        if region2 is not None:
            out[:, :, :, r0:r1, c0:c1] = y2

    # conv1 over the query dims, at the kept support positions (multiples of the stride) inside the window
    k0, k1 = -(-top // sh), (top + h - 1) // sh + 1
    j0, j1 = -(-left // sw), (left + w - 1) // sw + 1
    z_in = region1 = None
    if k0 < k1 and j0 < j1:
        kept = x[:, :, :, k0 * sh - top :: sh, j0 * sw - left :: sw][:, :, :, : k1 - k0, : j1 - j0]
        nk, nj = kept.shape[3:5]  # kept: (B, Ha, Wa, nk, nj, C)
        z_in = _as_images(_support_major(kept))  # (B*nk*nj, C, Ha, Wa), channels-last
        z = _as_6d(F.conv2d(z_in, w1, None, 1, padding1), (B, nk, nj))  # bias already in `out`
        out[:, :, :, k0:k1, j0:j1] += _query_major(z).to(out.dtype)  # (B, Ha, Wa, nk, nj, O)
        region1 = (k0, k1, j0, j1)
    return out, x2, region2, z_in, region1


class CenterPivotWindow(torch.autograd.Function):
    """:func:`center_pivot_window`, differentiable in the convolutions' parameters (the
    hypercorrelation is a constant: the backbone is frozen)."""

    @staticmethod
    def forward(ctx, x, full, top, left, w1, b1, w2, b2, stride, padding, padding1):
        out, x2, region2, z_in, region1 = _window_forward(x, full, top, left, w1, b1, w2, b2, stride, padding, padding1)
        ctx.save_for_backward(x2, z_in, w1, w2)
        ctx.regions, ctx.geometry = (region2, region1), (stride, padding1)
        ctx.has_bias = b1 is not None, b2 is not None
        return out

    @staticmethod
    def backward(ctx, g):
        x2, z_in, w1, w2 = ctx.saved_tensors
        (region2, region1), (stride, padding1) = ctx.regions, ctx.geometry
        grad_w1, grad_w2 = torch.zeros_like(w1), torch.zeros_like(w2)  # a branch that sees only zeros: 0, not None
        if region2 is not None:
            r0, r1, c0, c1 = region2
            g2 = _as_images(g[:, :, :, r0:r1, c0:c1].contiguous())  # (B*Ha*Wa, O, rows, cols), channels-last
            grad_w2 = _weight_and_input_grads(g2, x2, w2, stride, (0, 0), False)[1]
        if region1 is not None:
            k0, k1, j0, j1 = region1
            gz = _as_images(_support_major(g[:, :, :, k0:k1, j0:j1]))  # (B*nk*nj, O, Ha, Wa), channels-last
            grad_w1 = _weight_and_input_grads(gz, z_in, w1, (1, 1), padding1, False)[1]
        grad_b = _bias_grad(g, w1.dtype)
        grad_b1 = grad_b if ctx.has_bias[0] else None
        grad_b2 = (grad_b.clone() if ctx.has_bias[0] else grad_b) if ctx.has_bias[1] else None
        return None, None, None, None, grad_w1, grad_b1, grad_w2, grad_b2, None, None, None


def center_pivot_window(layer: CenterPivotConv4d, win, own_backward: bool = True) -> torch.Tensor:
    """Eq. (5) on a windowed hypercorrelation (:class:`~hsnetlib.fast.correlation.SupportWindow`, zeros
    outside the window): -> (B, Ha, Wa, Hk, Wk, O).

    Outside the window both branches convolve zeros, so the output there is the sum of the two
    biases; conv2 runs only on the outputs whose receptive field meets the window, conv1 only at
    the kept support positions inside it.
    """
    if win.is_full:
        return center_pivot_qm(layer, win.corr, own_backward)
    params = (layer.conv1.weight, layer.conv1.bias, layer.conv2.weight, layer.conv2.bias)
    if win.corr.requires_grad or (not own_backward and needs_grad(params)):
        # an input gradient (not the model's case: the backbone is frozen), or autograd instead of the own
        # backward: the dense layer, where every weight takes part (a branch outside the window gets 0, not None)
        return center_pivot_qm(layer, win.dense(), own_backward)
    args = (win.corr.contiguous(), win.full, win.top, win.left, *params)
    args += (layer.stride[2:], layer.padding[2:], layer.conv1.padding)
    if needs_grad(params):
        return CenterPivotWindow.apply(*args)
    return _window_forward(*args)[0]
