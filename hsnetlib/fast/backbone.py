"""The fast path's frozen backbone: BatchNorm folded into the convolutions; on CPU, fused oneDNN convolutions.

Equals :meth:`hsnetlib.model.HSNet.features` up to float rounding: the same walk over the
bottlenecks (:func:`hsnetlib.backbone.resnet_features`) with another convolution op
(tests: ``tests/test_fast_backbone.py``).

- Folding: an eval-mode BatchNorm after a convolution is an affine map per channel, so
  bn(conv(x)) = conv'(x) with w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps).
- CPU, float32, no autocast: every convolution carries its ReLU or the residual addition as a
  post-op of one oneDNN primitive, and its folded weight is re-laid out into oneDNN's blocked
  format once per input shape and kept (a training run, whose batches share a shape, pays it once;
  at most ``max_shapes`` shapes, the least recently used dropped: the K-shot path alternates a
  query and a support shape). ResNet-50: 94 MB a shape.
- Anywhere else (CUDA, autocast, float64): the folded weights in channels-last, ``F.conv2d``.
- VGG-16 has no BatchNorm: its features are the reference's.

Everything here is derived from the backbone's tensors and rebuilt when any of them changes
(loading a state dict, re-estimating BatchNorm statistics, ``.to(device)``): the cache key is each
tensor's storage, in-place version, device and dtype.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..backbone import BACKBONES, extract_features, resnet_features
from . import ops


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s weight and bias with ``bn`` (eval mode) folded in (see the module docstring)."""
    w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return w.detach(), b.detach()


class FoldedBackbone:
    """The fast form of one frozen backbone, built on first use (see the module docstring).

    A plain attribute of :class:`~hsnetlib.fast.FastHSNet`, not a submodule (no state-dict
    entries); a copied or pickled model builds its own. ``onednn=False`` keeps the plain folded
    convolutions on CPU too (a lever of :class:`~hsnetlib.fast.FastOptions`).
    """

    def __init__(self, name: str, onednn: bool = True, max_shapes: int = 2):
        self.name, self.onednn, self.max_shapes = name, onednn, max_shapes
        self.clear()

    def clear(self) -> None:
        """Free everything built from the backbone."""
        self.weights: dict[nn.Conv2d, torch.Tensor] = {}  # folded, channels-last (plain path)
        self.bias: dict[nn.Conv2d, torch.Tensor] = {}  # folded biases (both paths)
        self.packed: dict[tuple, dict[nn.Conv2d, torch.Tensor]] = {}  # input shape -> packed weights
        self._key: tuple | None = None

    def _follow(self, backbone: nn.Module) -> None:
        """Drop what was built from an older state of ``backbone``."""
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in backbone.state_dict(keep_vars=True).values())
        if key != self._key:
            self.clear()
            self._key = key

    def _shape_set(self, shape) -> dict:
        """The packed weights of image batches of ``shape``, most recently used last."""
        weights = self.packed.pop(tuple(shape), None)
        if weights is None:
            while len(self.packed) >= self.max_shapes:
                self.packed.pop(next(iter(self.packed)))  # the least recently used
            weights = {}
        self.packed[tuple(shape)] = weights
        return weights

    def _plain_conv(self, conv: nn.Conv2d, bn, x, relu=False, add=None) -> torch.Tensor:
        if conv not in self.weights:
            w, self.bias[conv] = fold(conv, bn)
            self.weights[conv] = w.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, self.weights[conv], self.bias[conv], conv.stride, conv.padding, conv.dilation, conv.groups)
        if add is not None:
            y = y.add_(add)
        return F.relu(y) if relu else y

    def _fused_conv(self, packed: dict, conv: nn.Conv2d, bn, x, relu=False, add=None) -> torch.Tensor:
        if conv not in packed:
            w, self.bias[conv] = fold(conv, bn)
            packed[conv] = ops.pack_conv_weight(w, conv, x.shape)  # no folded copy kept beside it
        return ops.fused_conv(x, packed[conv], self.bias[conv], conv, relu, add)

    @torch.no_grad()
    def features(self, backbone: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
        """:func:`~hsnetlib.backbone.extract_features` of ``backbone`` as folded; channels-last outputs."""
        if BACKBONES[self.name].family == "vgg":
            return extract_features(self.name, backbone, img)
        self._follow(backbone)
        img = img.contiguous(memory_format=torch.channels_last)
        if self.onednn and ops.onednn_usable(img):
            packed = self._shape_set(img.shape)
            return resnet_features(backbone, img, lambda *a, **k: self._fused_conv(packed, *a, **k))
        return resnet_features(backbone, img, self._plain_conv)

    @property
    def built(self) -> bool:
        return bool(self.weights or self.packed)

    def __deepcopy__(self, memo) -> FoldedBackbone:
        return FoldedBackbone(self.name, self.onednn, self.max_shapes)  # a cache: a copied model builds its own

    def __getstate__(self) -> dict:
        return {"name": self.name, "onednn": self.onednn, "max_shapes": self.max_shapes}  # pickles carry no cache

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __repr__(self) -> str:
        return f"FoldedBackbone({self.name!r}, {'built' if self.built else 'not built'})"
