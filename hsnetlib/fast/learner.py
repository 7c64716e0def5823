"""The 4D learner's steps in the fast path's query-major, channels-last layout ``(B, Ha, Wa, Hb, Wb, C)``.

:class:`hsnetlib.model.HPNLearner` states the order of the steps (squeeze every level, mix coarse
to fine, average over the support dims, decode); :class:`QueryMajor` says how each step runs here,
on the same modules and parameters. Equal to :class:`hsnetlib.model.ChannelMajor` up to float
rounding (tests: ``tests/test_fast_layers.py``).

- A center-pivot layer reads ``(B*Ha*Wa, C, Hb, Wb)`` as a free channels-last view for its support-dim
  branch and copies only the kept support positions for its query-dim branch (:mod:`.center_pivot`):
  the reference's permuted copies of the whole tensor are gone.
- The first layer of each squeeze block gets a :class:`~.correlation.SupportWindow` and convolves
  only that window.
- GroupNorm + ReLU run in this layout with a closed-form backward (:mod:`.groupnorm`).
- The query-dim bilinear resize reads the tensor as a channels-last image (a free view).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conv4d import CenterPivotConv4d
from .center_pivot import center_pivot_qm, center_pivot_window
from .correlation import SupportWindow
from .groupnorm import group_norm_relu_qm


def block_qm(block: nn.Sequential, x: torch.Tensor | SupportWindow, own_backward: bool = True) -> torch.Tensor:
    """A [CenterPivotConv4d, GroupNorm, ReLU] x n block on a query-major tensor (or a windowed
    hypercorrelation, which the first layer expands to the full support grid). ``own_backward=False``:
    autograd through the forward instead of the layers' own backward passes."""
    layers = list(block)
    for conv, norm, relu in zip(layers[0::3], layers[1::3], layers[2::3]):
        if not (isinstance(conv, CenterPivotConv4d) and isinstance(norm, nn.GroupNorm) and isinstance(relu, nn.ReLU)):
            raise TypeError(f"block_qm expects [CenterPivotConv4d, GroupNorm, ReLU] x n, got {block}")
        if isinstance(x, SupportWindow):
            y = center_pivot_window(conv, x, own_backward)
        else:
            y = center_pivot_qm(conv, x, own_backward)
        x = group_norm_relu_qm(norm, y, own_backward)
    return x


def upsample_query_qm(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=True) of the query dims of (B, Ha, Wa, Hb, Wb, C)."""
    B, Ha, Wa, Hb, Wb, C = x.shape
    image = x.reshape(B, Ha, Wa, Hb * Wb * C).permute(0, 3, 1, 2)  # channels-last view (B, Hb*Wb*C, Ha, Wa)
    y = F.interpolate(image, size, mode="bilinear", align_corners=True)  # (B, Hb*Wb*C, Ha', Wa')
    return y.permute(0, 2, 3, 1).reshape(B, *size, Hb, Wb, C)  # (B, Ha', Wa', Hb, Wb, C)


class QueryMajor:
    """The learner's steps on query-major tensors (see the module docstring)."""

    def __init__(self, own_backward: bool = True):
        self.own_backward = own_backward

    def block(self, block: nn.Sequential, x) -> torch.Tensor:
        return block_qm(block, x, self.own_backward)

    @staticmethod
    def mix_input(deeper: torch.Tensor, finer: torch.Tensor) -> torch.Tensor:
        """The deeper level upsampled to the finer one's query size, plus the finer one (in place)."""
        return upsample_query_qm(deeper, finer.shape[1:3]).add_(finer)

    @staticmethod
    def support_mean(x: torch.Tensor) -> torch.Tensor:
        B, Ha, Wa, C = *x.shape[:3], x.shape[-1]
        return x.reshape(B, Ha, Wa, -1, C).mean(dim=3).permute(0, 3, 1, 2)  # (B, C, Ha, Wa), channels-last
