"""The frozen ResNet's forward on CPU as fused oneDNN convolutions (the fast path's backbone).

:func:`hsnetlib.backbone.resnet_features` on the BatchNorm-folded copy runs each convolution,
then its ReLU or the residual addition, as separate passes, and oneDNN re-lays out every
convolution weight into its blocked format on every call. Here, on CPU in float32:

- each convolution carries its ReLU, or the residual addition, as a post-op of the same
  oneDNN primitive (``torch.ops.mkldnn._convolution_pointwise``, the ops that ``torch.compile``
  emits for CPU convolutions);
- the BatchNorm-folded weights are re-laid out once per input shape and kept
  (:class:`PackedResNet`), so a training run, whose batches share a shape, pays it once.

The same features as :func:`~hsnetlib.backbone.resnet_features` on the folded copy, up to
float rounding (tests compare them). Anywhere else (CUDA, autocast, other dtypes, a PyTorch
build without oneDNN) the plain forward runs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.utils.flop_counter import conv_flop_count, flop_registry, register_flop_formula


def usable(img: torch.Tensor) -> bool:
    """True where the fused oneDNN forward applies: a float32 CPU batch, no autocast, oneDNN present."""
    return (
        img.device.type == "cpu"
        and img.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


def _pointwise_conv_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``mkldnn._convolution_pointwise`` (X, W, ...) and of its ``.binary`` form (X, other, W, ...)
    for ``torch.utils.flop_counter``, as for any convolution: the post-ops are not counted."""
    w_shape = args[0] if isinstance(args[6], str) else args[1]
    return conv_flop_count(x_shape, w_shape, out_shape)


if hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.ops.mkldnn._convolution_pointwise not in flop_registry:
    register_flop_formula(torch.ops.mkldnn._convolution_pointwise)(_pointwise_conv_flops)


class PackedResNet:
    """A frozen ResNet's convolutions with BatchNorm folded in (as :func:`~hsnetlib.backbone.inference_copy`
    folds them) and their weights in oneDNN's blocked layout, which depends on the input shape.

    Holds the packed weights for at most ``max_shapes`` image-batch shapes (the K-shot path
    alternates a query and a support batch shape), the least recently used dropped first; a set
    is built from the backbone the first time a batch of its shape runs, one convolution at a
    time. ResNet-50: 94 MB a set, in place of the folded copy of the network that the plain path
    keeps; the backbone itself is read, never copied.
    """

    def __init__(self, backbone: nn.Module, max_shapes: int = 2):
        self.backbone, self.max_shapes = backbone, max_shapes
        self.sets: dict[tuple[int, ...], dict[nn.Conv2d, torch.Tensor]] = {}
        self.bias: dict[nn.Conv2d, torch.Tensor] = {}

    def weights(self, shape: torch.Size) -> dict[nn.Conv2d, torch.Tensor]:
        """The packed weights for image batches of ``shape`` (filled as the convolutions run)."""
        shape = tuple(shape)
        weights = self.sets.pop(shape, None)
        if weights is None:
            while len(self.sets) >= self.max_shapes:
                self.sets.pop(next(iter(self.sets)))  # the least recently used
            weights = {}
        self.sets[shape] = weights  # most recently used last
        return weights

    def pack(self, weights: dict, conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
        """conv's folded weight packed for input ``x``: w' = w * gamma / sqrt(var + eps), and its bias
        b' = beta - mean * gamma / sqrt(var + eps) into ``self.bias``."""
        if conv not in weights:
            stats = (bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, *stats)
            self.bias[conv] = b.detach()
            weights[conv] = torch._C._nn.mkldnn_reorder_conv2d_weight(
                w.detach().contiguous(memory_format=torch.channels_last).to_mkldnn(),
                list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(x.shape),
            )  # fmt: skip
        return weights[conv]


def resnet_features(packed: PackedResNet, img: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) channels-last -> every layer2..4 bottleneck output (pre-ReLU) of ``packed.backbone``,
    shallow to deep, as :func:`hsnetlib.backbone.resnet_features` on its folded copy."""
    weights, net = packed.weights(img.shape), packed.backbone

    def conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, x, relu: bool = False, add=None) -> torch.Tensor:
        """bn(conv(x)) [+ add] [then ReLU] as one oneDNN primitive; x and add channels-last (N, C, H, W)."""
        w = packed.pack(weights, conv, bn, x)
        geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        b, unary = packed.bias[conv], "relu" if relu else None
        if add is None:
            return torch.ops.mkldnn._convolution_pointwise(x, w, b, *geometry, unary or "none", [], None)
        return torch.ops.mkldnn._convolution_pointwise.binary(x, add, w, b, *geometry, "add", 1.0, unary, [], None)

    x = net.maxpool(conv(net.conv1, net.bn1, img, relu=True))  # (B, 64, H/4, W/4)
    feats = []
    for layer_idx in (1, 2, 3, 4):
        for block in getattr(net, f"layer{layer_idx}"):
            identity = x if block.downsample is None else conv(*block.downsample, x)
            out = conv(block.conv1, block.bn1, x, relu=True)
            out = conv(block.conv2, block.bn2, out, relu=True)
            if layer_idx == 1:  # not a feature HSNet reads: the block's final ReLU is fused too
                x = conv(block.conv3, block.bn3, out, relu=True, add=identity)
                continue
            pre = conv(block.conv3, block.bn3, out, add=identity)  # bn3(conv3(...)) + identity, before the ReLU
            feats.append(pre)
            x = F.relu(pre)
    return feats
