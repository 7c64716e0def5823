"""Fast inference path of HSNet: the same maths as the reference modules, fewer copies and FLOPs.

The reference modules (conv4d.py, correlation.py, model.py) keep 6D tensors in the official
code's *channel-major* layout ``(B, C, Ha, Wa, Hb, Wb)``. Every center-pivot layer then copies
its whole input into ``(B*Ha*Wa, C, Hb, Wb)`` for the support-dim convolution and copies both
branch outputs back, and the correlation stacks and scatters the largest tensor of the network.
Here the same parameters are applied to tensors kept *query-major*, ``(B, Ha, Wa, C, Hb, Wb)``:

- Eq. (2) writes each layer's correlation straight into its channel slot of that layout (one
  matrix product per layer into a strided view), only for the support positions inside the
  resized mask (the others correlate to exactly 0: Eq. 1 zeroes their features), and stores
  only the mask's bounding window of the support grid (:class:`SupportWindow`).
- The first layer of each squeeze block convolves only that window: outside it both branches
  see zeros and give their biases (:func:`center_pivot_window`).
- conv2 of a center-pivot layer (support dims) reads ``(B*Ha*Wa, C, Hb, Wb)`` as a free view and
  writes its output in the same layout; when the support grid is smaller than the kernel
  (2x2 support, 3x3 kernel) it is one matrix product with the convolution's dense matrix, which
  skips the padding taps (fewer FLOPs, same result).
- conv1 (query dims) copies only the kept support positions (1/s^2 of the input) and its output
  is added in place into conv2's.
- GroupNorm (4 groups) is computed from the same statistics as ``nn.GroupNorm``, in this layout.
- The query-dim bilinear resize reads the tensor as a channels-last image (a free view).

The backbone side (BatchNorm folded into a cached channels-last copy) is
:meth:`hsnetlib.model.HSNet.fast_features`.

Inference only (``torch.inference_mode``; matrix products with ``out=`` carry no autograd).
``HSNet.kshot_logits(fused=False)`` is the correctness oracle; tests compare the two.
Precision: ``dtype`` is the compute dtype of the correlation and, via autocast, of the
convolutions; normalization statistics stay in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv4d import CenterPivotConv4d
from .correlation import EPS, pyramid_groups, resized_mask, unit_norm


def unit_query_features(query_feats: Sequence[torch.Tensor], dtype=torch.float32, eps: float = EPS):
    """The query side of Eq. (2), once per query: each (B, C, H, W) feature divided by (its L2 norm
    over C + eps), in ``dtype``."""
    return [unit_norm(q, 1, eps).to(dtype) for q in query_feats]


@dataclass
class SupportWindow:
    """A hypercorrelation restricted to the support rows/columns that can be nonzero.

    ``corr`` (B, Ha, Wa, L, h, w) holds the correlations at support rows top..top+h-1 and columns
    left..left+w-1 of the full (Hb, Wb) grid; every other support position is masked out by
    Eq. (1), so its correlation is exactly 0 and never stored.
    """

    corr: torch.Tensor
    top: int
    left: int
    full: tuple[int, int]

    def dense(self) -> torch.Tensor:
        """The full hypercorrelation (B, Ha, Wa, L, Hb, Wb), zeros outside the window."""
        h, w = self.corr.shape[-2:]
        Hb, Wb = self.full
        pad = (self.left, Wb - self.left - w, self.top, Hb - self.top - h)
        return F.pad(self.corr, pad)

    @property
    def is_full(self) -> bool:
        return tuple(self.corr.shape[-2:]) == tuple(self.full)


def _mask_window(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, Hb, Wb) resized mask -> (top, bottom, left, right), exclusive ends, of its nonzero part (all items)."""
    rows = (mask > 0).any(dim=2).any(dim=0).nonzero().squeeze(1)
    cols = (mask > 0).any(dim=1).any(dim=0).nonzero().squeeze(1)
    if rows.numel() == 0:  # an empty mask: keep one position so that shapes stay valid; it correlates to 0
        return 0, 1, 0, 1
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def hypercorrelation_qm(
    query_units: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    support_mask: torch.Tensor | None,
    pyramid_sizes: Sequence[int],
    dtype: torch.dtype = torch.float32,
    eps: float = EPS,
    windowed: bool = True,
) -> list[SupportWindow]:
    """Eq. (1)-(2) in the query-major layout: -> [C_3, C_2, C_1] (paper numbering, deepest first) as
    :class:`SupportWindow` s, each ``corr`` (B, Ha, Wa, |L_p|, h, w) over the support window that
    holds the (resized) mask.

    query_units: :func:`unit_query_features` of the query features, shallow to deep, each (B, C_l, Ha, Wa).
    support_feats: the support features (unmasked), shallow to deep, each (B, C_l, Hb, Wb).
    support_mask: (B, H, W) in [0, 1], or None for HSNet† (no masking, no window).
    windowed: False computes every support position with one batched product per layer (no
        per-item loop, no host synchronization: the CUDA choice); the result is the same.
    """
    pyramid = []
    for qs, ss in pyramid_groups(query_units, support_feats, pyramid_sizes):
        size = len(qs)
        B, _, Ha, Wa = qs[0].shape
        N = Ha * Wa
        Hb, Wb = ss[0].shape[-2:]
        if not windowed:
            pyramid.append(SupportWindow(_dense_level(qs, ss, support_mask, dtype, eps), 0, 0, (Hb, Wb)))
            continue
        top, bottom, left, right = 0, Hb, 0, Wb
        mask = None
        if support_mask is not None:
            mask = resized_mask(support_mask, (Hb, Wb))[:, 0]  # (B, Hb, Wb)
            top, bottom, left, right = _mask_window(mask)
            mask = mask[:, top:bottom, left:right].flatten(1)  # (B, h*w)
        h, w = bottom - top, right - left
        out = torch.empty(B, N, size, h * w, dtype=dtype, device=qs[0].device)  # (B, Ha*Wa, L, h*w)
        for b in range(B):
            keep = None if mask is None else (mask[b] > 0).nonzero().squeeze(1)  # window positions inside the mask
            if keep is not None and keep.numel() == h * w:
                keep = None
            if keep is not None:
                out[b].zero_()  # masked-out support features correlate to exactly 0 (a memset beats a scatter)
            for l, (q, s) in enumerate(zip(qs, ss)):
                s = s[b, :, top:bottom, left:right].reshape(s.shape[1], h * w)  # (C, h*w)
                if mask is not None:
                    s = s * mask[b].to(s.dtype) if keep is None else s[:, keep] * mask[b, keep].to(s.dtype)
                sn = unit_norm(s, 0, eps).to(dtype)  # (C, n_kept)
                if keep is None:
                    dst = out[b, :, l]  # (Ha*Wa, h*w), a strided view
                    torch.mm(q[b].reshape(-1, N).t(), sn, out=dst)  # (Ha*Wa, C) @ (C, h*w)
                    dst.clamp_(min=0)
                elif keep.numel():
                    corr = torch.mm(q[b].reshape(-1, N).t(), sn).clamp_(min=0)  # (Ha*Wa, n_kept)
                    out[b, :, l].index_copy_(1, keep, corr)
        corr = out.view(B, Ha, Wa, size, h, w)  # (B, Ha, Wa, L, h, w)
        pyramid.append(SupportWindow(corr, top, left, (Hb, Wb)))
    return pyramid


def _dense_level(qs, ss, support_mask, dtype, eps) -> torch.Tensor:
    """One pyramid level, every support position, batched: -> (B, Ha, Wa, L, Hb, Wb)."""
    B, _, Ha, Wa = qs[0].shape
    Hb, Wb = ss[0].shape[-2:]
    out = torch.empty(B, Ha * Wa, len(qs), Hb * Wb, dtype=dtype, device=qs[0].device)
    mask = (
        None if support_mask is None else resized_mask(support_mask, (Hb, Wb)).flatten(1).unsqueeze(1)
    )  # (B, 1, Hb*Wb)
    for l, (q, s) in enumerate(zip(qs, ss)):
        s = s.flatten(2)  # (B, C, Hb*Wb)
        if mask is not None:
            s = s * mask.to(s.dtype)
        sn = unit_norm(s, 1, eps).to(dtype)
        out[:, :, l] = torch.bmm(q.flatten(2).transpose(1, 2), sn).clamp_(min=0)  # (B, Ha*Wa, Hb*Wb)
    return out.view(B, Ha, Wa, len(qs), Hb, Wb)  # (B, Ha, Wa, L, Hb, Wb)


def _affected_outputs(lo: int, hi: int, n_out: int, k: int, s: int, p: int) -> tuple[int, int]:
    """Along one dim of a (k, stride s, padding p) convolution: the outputs [a, b) whose receptive
    field meets the inputs lo..hi-1."""
    return max(0, -(-(lo + p - k + 1) // s)), min(n_out, (hi - 1 + p) // s + 1)


def _pad_channels_last(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad)`` (negative = crop) written into a channels-last buffer: (N, C, h, w) -> (N, C, h', w').

    The first squeeze layers convolve a few input channels over many small grids; in that shape
    the convolution (and the gradient of its weight) runs about twice as fast channels-last, and
    padding straight into such a buffer costs no extra copy.
    """
    left, right, top, bottom = pad
    N, C, h, w = x.shape
    x = x[:, :, max(0, -top) : h - max(0, -bottom), max(0, -left) : w - max(0, -right)]  # the crops
    top, bottom, left, right = (max(0, p) for p in (top, bottom, left, right))
    h, w = x.shape[-2:]
    out = x.new_zeros(N, top + h + bottom, left + w + right, C).permute(0, 3, 1, 2)  # (N, C, h', w') view
    out[:, :, top : top + h, left : left + w] = x
    return out


def center_pivot_window(layer: CenterPivotConv4d, win: SupportWindow) -> torch.Tensor:
    """Eq. (5) on a windowed hypercorrelation (zeros outside the window): -> (B, Ha, Wa, O, Hk, Wk).

    Outside the window both branches convolve zeros, so the output there is the sum of the two
    biases; conv2 runs only on the outputs whose receptive field meets the window, conv1 only at
    the kept support positions inside it.
    """
    if win.is_full:
        return center_pivot_qm(layer, win.corr)
    x = win.corr.contiguous()  # (B, Ha, Wa, C, h, w)
    B, Ha, Wa, C, h, w = x.shape
    (Hb, Wb), top, left = win.full, win.top, win.left
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size[2:], layer.stride[2:], layer.padding[2:]
    Hk, Wk = (Hb + 2 * ph - kh) // sh + 1, (Wb + 2 * pw - kw) // sw + 1
    O = layer.out_channels
    bias1 = layer.conv1.bias if layer.conv1.bias is not None else x.new_zeros(O)
    bias2 = layer.conv2.bias if layer.conv2.bias is not None else x.new_zeros(O)
    out = (
        (bias1 + bias2).to(x.dtype).view(1, 1, 1, O, 1, 1).expand(B, Ha, Wa, O, Hk, Wk).clone()
    )  # (B, Ha, Wa, O, Hk, Wk)

    # conv2 over the support dims, on the outputs [r0, r1) x [c0, c1) that see the window
    r0, r1 = _affected_outputs(top, top + h, Hk, kh, sh, ph)
    c0, c1 = _affected_outputs(left, left + w, Wk, kw, sw, pw)
    if r0 < r1 and c0 < c1:
        # the inputs they read, as pads (negative = crop) of the window: zeros are masked-out or border
        need_top, need_bottom = r0 * sh - ph, (r1 - 1) * sh - ph + kh
        need_left, need_right = c0 * sw - pw, (c1 - 1) * sw - pw + kw
        pad = (left - need_left, need_right - left - w, top - need_top, need_bottom - top - h)
        x2 = _pad_channels_last(x.view(B * Ha * Wa, C, h, w), pad)  # (B*Ha*Wa, C, rows, cols), channels-last
        y2 = F.conv2d(x2, layer.conv2.weight, layer.conv2.bias, (sh, sw)).contiguous()  # (B*Ha*Wa, O, r1-r0, c1-c0)
        y2 = y2.view(B, Ha, Wa, O, r1 - r0, c1 - c0) + bias1.to(y2.dtype).view(O, 1, 1)  # (B, Ha, Wa, O, rows, cols)
        out[..., r0:r1, c0:c1] = y2

    # conv1 over the query dims, at the kept support positions (multiples of the stride) inside the window
    k0, k1 = -(-top // sh), (top + h - 1) // sh + 1
    j0, j1 = -(-left // sw), (left + w - 1) // sw + 1
    if k0 < k1 and j0 < j1:
        kept = x[..., k0 * sh - top :: sh, j0 * sw - left :: sw][..., : k1 - k0, : j1 - j0]  # (B, Ha, Wa, C, nk, nj)
        nk, nj = kept.shape[-2:]
        z = kept.permute(0, 4, 5, 3, 1, 2).reshape(B * nk * nj, C, Ha, Wa)  # (B*nk*nj, C, Ha, Wa)
        z = F.conv2d(z, layer.conv1.weight, None, 1, layer.conv1.padding)  # bias already in `out`
        z = z.view(B, nk, nj, O, Ha, Wa).permute(0, 4, 5, 3, 1, 2)  # (B, Ha, Wa, O, nk, nj), a view
        out[..., k0:k1, j0:j1] += z.to(out.dtype)
    elif torch.is_grad_enabled() and layer.conv1.weight.requires_grad:
        # No kept position inside the window: conv1 sees only zeros, so its weight gradient is 0 (as in
        # the reference modules), not None; optimizers with momentum treat the two differently.
        out = out + 0 * layer.conv1.weight.sum().to(out.dtype)
    return out


def _dense_support_matrix(conv: nn.Conv2d, Hb: int, Wb: int, Hk: int, Wk: int) -> torch.Tensor:
    """The support-dim convolution as a matrix (C*Hb*Wb, O*Hk*Wk), gathered from its weight (no FLOPs).

    Entry ((c, i, j), (o, i', j')) is weight[o, c, i - s*i' + p, j - s*j' + p] when that tap lies
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
    return dense.permute(1, 4, 5, 0, 2, 3).reshape(conv.in_channels * Hb * Wb, -1)  # (C*Hb*Wb, O*Hk*Wk)


def center_pivot_qm(layer: CenterPivotConv4d, x: torch.Tensor) -> torch.Tensor:
    """Eq. (5) on a query-major tensor: (B, Ha, Wa, C, Hb, Wb) -> (B, Ha, Wa, O, Hb', Wb')."""
    B, Ha, Wa, C, Hb, Wb = x.shape
    if C != layer.in_channels:
        raise ValueError(f"center_pivot_qm expects (B, Ha, Wa, {layer.in_channels}, Hb, Wb), got {tuple(x.shape)}")
    sh, sw = layer.stride[2:]
    kh, kw = layer.kernel_size[2:]
    x = x.contiguous()
    O = layer.out_channels

    # conv2 over the support dims at every query position: (B*Ha*Wa, C, Hb, Wb) is a free view.
    if Hb * Wb < kh * kw:  # tiny support grid: one matrix product, no padding taps
        Hk, Wk = (Hb + 2 * layer.padding[2] - kh) // sh + 1, (Wb + 2 * layer.padding[3] - kw) // sw + 1
        dense = _dense_support_matrix(layer.conv2, Hb, Wb, Hk, Wk)  # (C*Hb*Wb, O*Hk*Wk)
        bias = layer.conv2.bias.repeat_interleave(Hk * Wk) if layer.conv2.bias is not None else None
        flat = x.view(B * Ha * Wa, C * Hb * Wb)  # (B*Ha*Wa, C*Hb*Wb)
        y = flat @ dense if bias is None else torch.addmm(bias, flat, dense)  # (B*Ha*Wa, O*Hk*Wk); autocast applies
        y = y.view(B, Ha, Wa, O, Hk, Wk)  # (B, Ha, Wa, O, Hk, Wk)
    else:
        y = layer.conv2(x.view(B * Ha * Wa, C, Hb, Wb))  # (B*Ha*Wa, O, Hb', Wb')
        Hk, Wk = y.shape[-2:]
        y = y.view(B, Ha, Wa, O, Hk, Wk)  # (B, Ha, Wa, O, Hk, Wk)

    # conv1 over the query dims at the kept support positions 0, s, 2s, ...: copy only those.
    kept = x[..., ::sh, ::sw]  # (B, Ha, Wa, C, Hk, Wk)
    if tuple(kept.shape[-2:]) != (Hk, Wk):
        raise ValueError(
            f"center_pivot_qm: the support-dim branch keeps {(Hk, Wk)} positions but striding keeps "
            f"{tuple(kept.shape[-2:])}; use odd kernels with padding k // 2"
        )
    z = kept.permute(0, 4, 5, 3, 1, 2).reshape(B * Hk * Wk, C, Ha, Wa)  # (B*Hk*Wk, C, Ha, Wa)
    z = layer.conv1(z)  # (B*Hk*Wk, O, Ha, Wa)
    z = z.view(B, Hk, Wk, O, Ha, Wa).permute(0, 4, 5, 3, 1, 2)  # (B, Ha, Wa, O, Hk, Wk), a view
    return y.add_(z.to(y.dtype))


def group_norm_relu_qm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """nn.GroupNorm followed by ReLU on a query-major tensor (B, Ha, Wa, C, Hb, Wb), in place when possible."""
    B, Ha, Wa, C, Hb, Wb = x.shape
    G = norm.num_groups
    K = (C // G) * Hb * Wb
    groups = x.view(B, Ha * Wa, G, K)  # (B, Ha*Wa, G, C/G*Hb*Wb)
    # Sums over the contiguous last dim per (query position, group) in float32, combined over the
    # positions in float64 (Chan et al.'s parallel variance): two cheap reductions, no large temporary.
    s1 = groups.sum(dim=3, dtype=torch.float32)  # (B, Ha*Wa, G)
    s2 = torch.linalg.vector_norm(groups, dim=3, dtype=torch.float32).square()
    mean_k = s1.double() / K
    m2_k = (s2.double() - s1.double() * mean_k).clamp(min=0)  # sum of squared deviations per part
    mean = mean_k.mean(dim=1)  # (B, G)
    var = (m2_k.sum(dim=1) + K * (mean_k - mean.unsqueeze(1)).square().sum(dim=1)) / (K * Ha * Wa)
    mean, var = mean.float(), var.float()
    rstd = torch.rsqrt(var + norm.eps)
    scale = rstd.repeat_interleave(C // G, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(C // G, dim=1) * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    shape = (B, 1, 1, C, 1, 1)
    y = torch.addcmul(shift.view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))  # x * scale + shift
    return y.clamp_(min=0)


def block_qm(block: nn.Sequential, x: torch.Tensor | SupportWindow) -> torch.Tensor:
    """A [CenterPivotConv4d, GroupNorm, ReLU] x n block of the learner on a query-major tensor
    (or a windowed hypercorrelation, which the first layer expands to the full support grid)."""
    layers = list(block)
    for conv, norm, relu in zip(layers[0::3], layers[1::3], layers[2::3]):
        if not (isinstance(conv, CenterPivotConv4d) and isinstance(norm, nn.GroupNorm) and isinstance(relu, nn.ReLU)):
            raise TypeError(f"block_qm expects [CenterPivotConv4d, GroupNorm, ReLU] x n, got {block}")
        y = center_pivot_window(conv, x) if isinstance(x, SupportWindow) else center_pivot_qm(conv, x)
        x = group_norm_relu_qm(norm, y)
    return x


def upsample_query_qm(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=True) of the query dims of (B, Ha, Wa, C, Hb, Wb)."""
    B, Ha, Wa, C, Hb, Wb = x.shape
    image = x.reshape(B, Ha, Wa, C * Hb * Wb).permute(0, 3, 1, 2)  # channels-last view (B, C*Hb*Wb, Ha, Wa)
    y = F.interpolate(image, size, mode="bilinear", align_corners=True)  # (B, C*Hb*Wb, Ha', Wa')
    return y.permute(0, 2, 3, 1).reshape(B, *size, C, Hb, Wb)  # (B, Ha', Wa', C, Hb, Wb)


def supports_fast_path(learner: nn.Module) -> bool:
    """True for the paper's learner: three pyramid levels, every 4D layer a center-pivot convolution."""
    convs = [m for m in learner.modules() if m.__class__.__name__.endswith("Conv4d")]
    three_levels = getattr(learner, "levels", 3) == 3
    return three_levels and bool(convs) and all(isinstance(m, CenterPivotConv4d) for m in convs)


def learner_qm(learner: nn.Module, pyramid: list[torch.Tensor | SupportWindow]) -> torch.Tensor:
    """HPNLearner.forward on a query-major pyramid (tensors or windows): -> logits (B, 2, 2*Ha_1, 2*Wa_1)."""
    sqz3 = block_qm(learner.encoder_layer4, pyramid[0])  # f^sqz_3: (B, Ha3, Wa3, 128, hb, wb)
    sqz2 = block_qm(learner.encoder_layer3, pyramid[1])  # f^sqz_2: (B, Ha2, Wa2, 128, hb, wb)
    sqz1 = block_qm(learner.encoder_layer2, pyramid[2])  # f^sqz_1: (B, Ha1, Wa1, 128, hb, wb)
    mix2 = block_qm(learner.encoder_layer4to3, upsample_query_qm(sqz3, sqz2.shape[1:3]).add_(sqz2))  # f^mix_2
    mix1 = block_qm(learner.encoder_layer3to2, upsample_query_qm(mix2, sqz1.shape[1:3]).add_(sqz1))  # f^mix_1
    B, Ha, Wa, C = mix1.shape[:4]
    z = mix1.reshape(B, Ha, Wa, C, -1).mean(dim=-1).permute(0, 3, 1, 2)  # (B, 128, Ha1, Wa1), channels-last
    x = learner.decoder1(z)  # (B, 64, Ha1, Wa1)
    x = F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)
    return learner.decoder2(x).contiguous()  # (B, 2, 2*Ha1, 2*Wa1)
