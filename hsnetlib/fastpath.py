"""Fast path of HSNet (inference and training): the same maths as the reference modules, fewer copies and FLOPs.

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
- GroupNorm (4 groups) + ReLU is computed in this layout, with a closed-form backward
  (:mod:`hsnetlib.groupnorm_qm`).
- The query-dim bilinear resize reads the tensor as a channels-last image (a free view).

The backbone side (BatchNorm folded into a cached channels-last copy) is
:meth:`hsnetlib.model.HSNet.fast_features`.

The correlation carries no autograd (matrix products with ``out=``; the backbone is frozen); the
learner is differentiable, so training (``HSNet.forward``) runs through it too.
``fused=False`` (the reference modules) is the correctness oracle; tests compare the two.
Precision: ``dtype`` is the compute dtype of the correlation and, via autocast, of the
convolutions; normalization statistics stay in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .center_pivot_qm import center_pivot_qm, center_pivot_window
from .conv4d import CenterPivotConv4d
from .correlation import EPS, pyramid_groups, resized_mask, unit_norm
from .groupnorm_qm import group_norm_relu_qm


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
