"""The fast wing's only use of PyTorch's internal operators, each behind a check with a plain fallback.

- oneDNN's fused convolution (``torch.ops.mkldnn._convolution_pointwise``, what ``torch.compile``
  emits for CPU convolutions): a convolution with its ReLU or residual addition as a post-op of the
  same primitive, on a weight re-laid out once into oneDNN's blocked format
  (``torch._C._nn.mkldnn_reorder_conv2d_weight``). Fallback: :func:`onednn_usable` is False and
  the caller runs ``F.conv2d``.
- ``torch.ops.aten.convolution_backward``: one convolution's input and weight gradients in a single
  call, only those asked for. Fallback: ``torch.nn.grad.conv2d_input`` / ``conv2d_weight``.
- a FLOP formula for the fused convolution, so that ``torch.utils.flop_counter`` counts the fast
  backbone (:func:`count_fused_convolutions`, called by the measurement code before it counts).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import conv_flop_count, flop_registry, register_flop_formula

_MKLDNN = getattr(torch.ops, "mkldnn", None)
_POINTWISE = getattr(_MKLDNN, "_convolution_pointwise", None) if _MKLDNN is not None else None
_REORDER = getattr(torch._C._nn, "mkldnn_reorder_conv2d_weight", None)
_CONV_BACKWARD = getattr(torch.ops.aten, "convolution_backward", None)


def onednn_usable(img: torch.Tensor) -> bool:
    """True where the fused oneDNN forward applies: a float32 CPU batch, no autocast, oneDNN present."""
    return (
        _POINTWISE is not None
        and _REORDER is not None
        and img.device.type == "cpu"
        and img.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def _geometry(conv: nn.Conv2d) -> tuple:
    return list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups


def pack_conv_weight(weight: torch.Tensor, conv: nn.Conv2d, input_shape) -> torch.Tensor:
    """``weight`` (a folded copy of ``conv``'s) in oneDNN's blocked layout for inputs of ``input_shape``."""
    dense = weight.detach().contiguous(memory_format=torch.channels_last).to_mkldnn()
    return _REORDER(dense, *_geometry(conv), list(input_shape))


def fused_conv(x, packed: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d, relu: bool, add=None) -> torch.Tensor:
    """conv(x) + bias [+ add] [then ReLU] as one oneDNN primitive; x and add channels-last (N, C, H, W)."""
    unary = "relu" if relu else None
    if add is None:
        return _POINTWISE(x, packed, bias, *_geometry(conv), unary or "none", [], None)
    return _POINTWISE.binary(x, add, packed, bias, *_geometry(conv), "add", 1.0, unary, [], None)


def conv_backward(grad_out, inp, weight, stride, padding, need_input: bool):
    """Gradients of ``F.conv2d(inp, weight, None, stride, padding)``: -> (input grad or None, weight grad),
    computed in ``grad_out``'s dtype (the forward's compute dtype under autocast)."""
    dt = grad_out.dtype
    inp, w = inp.to(dt), weight.to(dt)
    if _CONV_BACKWARD is not None:
        mask = (need_input, True, False)
        gi, gw, _ = _CONV_BACKWARD(grad_out, inp, w, None, stride, padding, (1, 1), False, (0, 0), 1, mask)
    else:
        gw = torch.nn.grad.conv2d_weight(inp, w.shape, grad_out, stride, padding)
        gi = torch.nn.grad.conv2d_input(inp.shape, w, grad_out, stride, padding) if need_input else None
    return gi, gw.to(weight.dtype)


def _pointwise_conv_flops(x_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused convolution (X, W, ...) and of its ``.binary`` form (X, other, W, ...), as for
    any convolution: the post-ops are not counted."""
    w_shape = args[0] if isinstance(args[6], str) else args[1]
    return conv_flop_count(x_shape, w_shape, out_shape)


def count_fused_convolutions() -> None:
    """Teach ``torch.utils.flop_counter`` the fused convolution's FLOPs (once; a no-op without oneDNN)."""
    if _POINTWISE is not None and _POINTWISE not in flop_registry:
        register_flop_formula(_POINTWISE)(_pointwise_conv_flops)
