"""GroupNorm + ReLU of the 4D learner (Sec. 3.2: each block is a 4D convolution, group normalization
and ReLU; 4 groups, as in the official code) in the fast path's query-major, channels-last layout
``(B, Ha, Wa, Hb, Wb, C)``, with its own backward pass.

Same function as ``relu(nn.GroupNorm(G, C)(x))`` on the channel-major tensor (tests:
``tests/test_fast_layers.py``, ``tests/test_fast_backward.py``); statistics per
(item, group) over the group's channels and all query and support positions.

Autograd through the forward's few ops would keep and revisit many full-size tensors (the two
statistic sums, the affine map, the clamp). :class:`GroupNormReLU` instead saves its input and
output and computes the input gradient in closed form, as ATen's GroupNorm backward does, with
per-(item, channel) sums: with x̂ = (x - μ)·σ⁻¹, y = relu(γ x̂ + β) and ĝ = ∂L/∂y · [y > 0],

    ∂L/∂x = σ⁻¹ (γ ĝ - mean_g(γ ĝ) - x̂ · mean_g(γ ĝ x̂)),   ∂L/∂γ = Σ ĝ x̂,   ∂L/∂β = Σ ĝ,

where mean_g averages over the item's group. Per element that is ∂L/∂x = a ĝ + b x + c with a,
b, c constant per (item, channel): four passes over full-size tensors instead of about ten.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def group_stats(x: torch.Tensor, groups: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and 1/sqrt(var + eps) per (item, group) of a query-major (B, Ha, Wa, Hb, Wb, C): -> (B, G), (B, G),
    in float32 (float64 for a float64 x)."""
    B, Ha, Wa, Hb, Wb, C = x.shape
    acc = torch.promote_types(x.dtype, torch.float32)
    K = (C // groups) * Hb * Wb
    parts = x.view(B, Ha * Wa, Hb * Wb, groups, C // groups)  # per query position and group: K elements
    # Sums per part in `acc` (each part: the group's K = C/G*Hb*Wb elements at one query position),
    # combined over the parts in float64 (Chan et al.'s parallel variance): two cheap reductions, no
    # large temporary. The first sums over the support positions with the channels innermost (an
    # outer reduction, vectorized over them) before the groups.
    s1 = parts.sum(dim=2, dtype=acc).sum(dim=3)  # (B, Ha*Wa, G)
    s2 = torch.linalg.vector_norm(parts, dim=(2, 4), dtype=acc).square()  # (B, Ha*Wa, G)
    mean_k = s1.double() / K
    m2_k = (s2.double() - s1.double() * mean_k).clamp(min=0)  # sum of squared deviations per part
    mean = mean_k.mean(dim=1)  # (B, G)
    var = (m2_k.sum(dim=1) + K * (mean_k - mean.unsqueeze(1)).square().sum(dim=1)) / (K * Ha * Wa)
    return mean.to(acc), torch.rsqrt(var + eps).to(acc)


def channel_sums(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Σ over every axis but (item, channel) of a query-major (B, Ha, Wa, Hb, Wb, C): -> (B, C) in ``dtype``.

    One outer reduction over all positions, vectorized over the contiguous channels.
    """
    return t.reshape(t.shape[0], -1, t.shape[-1]).sum(dim=1, dtype=dtype)


def _affine(mean, rstd, weight, bias, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-(item, channel) scale and shift of the normalization + affine map: (B, G) -> (B, C), (B, C)."""
    per_group = channels // mean.shape[1]
    scale = rstd.repeat_interleave(per_group, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(per_group, dim=1) * scale
    if weight is not None:
        scale, shift = scale * weight, shift * weight + bias
    return scale, shift


def _normalize_relu(x, scale, shift) -> torch.Tensor:
    """relu(x * scale + shift), scale and shift per (item, channel) of a query-major x."""
    shape = (x.shape[0], 1, 1, 1, 1, x.shape[-1])
    y = torch.addcmul(shift.view(shape).to(x.dtype), x, scale.view(shape).to(x.dtype))
    return y.clamp_(min=0)


class GroupNormReLU(torch.autograd.Function):
    """``relu(GroupNorm(x))`` on a query-major tensor, differentiable in x, weight and bias."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        x = x.contiguous()
        mean, rstd = group_stats(x, groups, eps)
        y = _normalize_relu(x, *_affine(mean, rstd, weight, bias, x.shape[-1]))
        ctx.groups = groups
        ctx.save_for_backward(x, y, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, y, weight, mean, rstd = ctx.saved_tensors
        B, Ha, Wa, Hb, Wb, C = x.shape
        G = ctx.groups
        shape = (B, 1, 1, 1, 1, C)
        g = torch.where(y > 0, grad_y, 0)  # ĝ: the gradient before the ReLU
        out = g * x  # reused below as the input gradient's buffer
        acc = mean.dtype  # float32, or float64 for a float64 x
        s_g = channel_sums(g, acc).double()  # (B, C): Σ ĝ
        s_gx = channel_sums(out, acc).double()  # (B, C): Σ ĝ x
        m, r = mean.double().repeat_interleave(C // G, dim=1), rstd.double().repeat_interleave(C // G, dim=1)
        s_gxhat = r * (s_gx - m * s_g)  # (B, C): Σ ĝ x̂
        gamma = weight.double().expand(B, C) if weight is not None else torch.ones_like(s_g)
        count = (C // G) * Ha * Wa * Hb * Wb  # elements per group
        u = (gamma * s_g).view(B, G, -1).sum(dim=2).repeat_interleave(C // G, dim=1) / count  # mean_g(γ ĝ)
        v = (gamma * s_gxhat).view(B, G, -1).sum(dim=2).repeat_interleave(C // G, dim=1) / count  # mean_g(γ ĝ x̂)
        a, b = r * gamma, -r * r * v
        c = -r * u - b * m  # so that a ĝ + b x + c = σ⁻¹(γ ĝ - u - x̂ v)
        torch.addcmul(c.view(shape).to(x.dtype), g, a.view(shape).to(x.dtype), out=out)
        grad_x = out.addcmul_(x, b.view(shape).to(x.dtype))
        grad_w = s_gxhat.sum(dim=0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_b = s_g.sum(dim=0).to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


def needs_grad(tensors) -> bool:
    """True when autograd must track a call on ``tensors`` (then the Functions here run)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def group_norm_relu_qm(norm: nn.GroupNorm, x: torch.Tensor, own_backward: bool = True) -> torch.Tensor:
    """nn.GroupNorm followed by ReLU on a query-major tensor (B, Ha, Wa, Hb, Wb, C).

    With gradients: :class:`GroupNormReLU` (``own_backward=False``: autograd through the forward).
    Without: the same forward, no tensor kept.
    """
    weight, bias = (norm.weight, norm.bias) if norm.affine else (None, None)
    if own_backward and needs_grad((x, weight)):
        return GroupNormReLU.apply(x, weight, bias, norm.num_groups, norm.eps)
    mean, rstd = group_stats(x.contiguous(), norm.num_groups, norm.eps)
    return _normalize_relu(x, *_affine(mean, rstd, weight, bias, x.shape[-1]))
