"""Float comparison bounds derived from the arithmetic, not fitted to one machine's kernels.

Two implementations of the same function (the fast path and the reference modules, a fused oneDNN
convolution and a plain one, AVX-512 and SSE kernels of one op) round differently. Where they
differ is not a defect; a bound that one host's kernels happen to meet is. The bounds here:

- u = 2^-24 is float32's unit roundoff (float64: 2^-53).
- A floating-point sum of n terms x_i, in any order and with any blocking a kernel chooses, is
  within gamma_n * sum_i |x_i| of the exact sum, gamma_n = n u / (1 - n u) (Higham, *Accuracy and
  Stability of Numerical Algorithms*, 2nd ed., Eq. 4.4). Two implementations that both meet it
  differ by at most 2 gamma_n sum_i |x_i|.
- The scale is sum_i |x_i|, the magnitude of the terms, not |sum_i x_i|: a quantity that cancels to
  near zero (the bias gradient of a layer followed by GroupNorm) keeps a scale that does not vanish.
- Through a network, every layer adds its own rounding to the error it receives. Layers here do not
  amplify errors much (convolutions are followed by Batch/GroupNorm, ReLU is 1-Lipschitz, Eq. (2) is a
  cosine), so the error of an output relative to its magnitude is bounded by the sum of the layers'
  gamma_n: ``depth`` layers of at most ``n`` terms give ``depth * gamma_n``. This is a model, not a
  proof: it ignores amplification by ill-conditioned layers, which would show as a failure here.

Exactness, where it matters, is tested in float64, where the same bounds are 2^29 times smaller and
any real difference between two implementations stands out; float32 comparisons guard the float32
kernels against gross errors with bounds no kernel choice can reach.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

U32 = 2.0**-24  # float32 unit roundoff
U64 = 2.0**-53  # float64 unit roundoff

# Longest reductions of one layer: a ResNet 3x3 convolution over 512 channels (4608 terms); a 4D
# center-pivot layer over 128 channels, two 3x3 kernels (2304); Eq. (2) over 2048 channels.
LAYER_TERMS = 4608
# Layers between an image and HSNet's logits: ResNet-101 has 104 convolutions on its longest path,
# the 4D learner 15 center-pivot layers, the decoder 4 convolutions.
NETWORK_DEPTH = 123


def unit_roundoff(dtype: torch.dtype) -> float:
    return U64 if dtype == torch.float64 else U32


def gamma(n: int, u: float = U32) -> float:
    """gamma_n = n u / (1 - n u): the relative error bound of an n-term floating-point sum."""
    if n * u >= 1:
        raise ValueError(f"gamma_{n} is undefined for u={u}: the bound is vacuous")
    return n * u / (1 - n * u)


def network_rtol(dtype: torch.dtype, depth: int = NETWORK_DEPTH, terms: int = LAYER_TERMS) -> float:
    """Relative difference allowed between two implementations of a whole network: each of ``depth``
    layers adds at most gamma_terms (the model above), both implementations round: 2 * depth * gamma."""
    return 2 * depth * gamma(terms, unit_roundoff(dtype))


def assert_network_close(actual: torch.Tensor, expected: torch.Tensor, depth=NETWORK_DEPTH, terms=LAYER_TERMS):
    """``actual`` equals ``expected`` up to :func:`network_rtol` times the largest magnitude of ``expected``
    (errors are relative to the layer's terms, whose scale is that of the output, not of each entry)."""
    scale = expected.abs().max().item()
    bound = network_rtol(expected.dtype, depth, terms) * scale
    err = (actual - expected).abs().max().item()
    assert err <= bound, f"max difference {err:.3e} exceeds the rounding bound {bound:.3e} (scale {scale:.3e})"


def assert_terms_close(actual: torch.Tensor, expected: torch.Tensor, magnitude: torch.Tensor, n: int, what=""):
    """Elementwise: |actual - expected| <= 2 gamma_n * magnitude, ``magnitude`` = sum of |terms| of each entry."""
    bound = 2 * gamma(n, unit_roundoff(expected.dtype)) * magnitude
    excess = ((actual - expected).abs() - bound).max().item()
    if excess > 0:
        i = int(((actual - expected).abs() - bound).flatten().argmax())
        raise AssertionError(
            f"{what}: entry {i} differs by {(actual - expected).flatten()[i].abs().item():.3e}, above its rounding "
            f"bound {bound.flatten()[i].item():.3e} (2 gamma_{n} x terms {magnitude.flatten()[i].item():.3e})"
        )


def gradient_magnitudes(model, loss_fn) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """For every learnable parameter of ``model.hpn_learner``: the sum of |terms| that its gradient adds
    up, and how many terms, from one backward pass of the reference modules.

    A gradient is a sum over positions (and items) of products: conv weight: sum g * x, conv bias:
    sum g, GroupNorm weight: sum g * x_hat, GroupNorm bias: sum g, with g the gradient of the layer's
    output. Its magnitude replaces every factor by its absolute value: for a convolution weight that
    is the weight gradient of |x| and |g| (``torch.nn.grad.conv2d_weight``).
    ``loss_fn(model) -> scalar loss`` runs the reference forward.
    """
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # backward hooks need outputs that no later op rewrites
    saved, handles = {}, []
    for name, m in ref.hpn_learner.named_modules():
        if isinstance(m, (nn.Conv2d, nn.GroupNorm)):
            handles.append(m.register_forward_hook(lambda mod, i, o, n=name: saved.setdefault(n, {}).update(x=i[0])))
            handles.append(m.register_full_backward_hook(lambda mod, gi, go, n=name: saved[n].update(g=go[0].detach())))
    ref.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # the first learner layer's input (a hypercorrelation) needs no gradient
        warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
        loss_fn(ref).backward()
    for h in handles:
        h.remove()
    magnitudes, counts = {}, {}
    for name, m in ref.hpn_learner.named_modules():
        if name not in saved:
            continue
        x, g = saved[name]["x"].detach(), saved[name]["g"]
        positions = g.numel() // g.shape[1]  # terms per output channel: items x positions
        dims = [0, *range(2, g.dim())]
        if isinstance(m, nn.Conv2d):
            w = torch.nn.grad.conv2d_weight(x.abs(), m.weight.shape, g.abs(), m.stride, m.padding, m.dilation)
            magnitudes[f"{name}.weight"], counts[f"{name}.weight"] = w, positions
        else:
            x_hat = F.group_norm(x, m.num_groups, eps=m.eps)
            magnitudes[f"{name}.weight"] = (g.abs() * x_hat.abs()).sum(dims)
            counts[f"{name}.weight"] = positions
        if m.bias is not None:
            magnitudes[f"{name}.bias"], counts[f"{name}.bias"] = g.abs().sum(dims), positions
    return magnitudes, counts


def assert_gradients_close(fast: dict, ref: dict, magnitudes: dict, counts: dict, depth: int = NETWORK_DEPTH):
    """Every gradient tensor of ``fast`` within the rounding bound of ``ref``'s, in L2 norm.

    An entry sums N terms (``counts``), each a product of an activation and an incoming gradient that
    already carry the rounding of the ``depth`` layers before and after it (the model of the module
    docstring, at most LAYER_TERMS terms a layer): each implementation is within
    gamma_(N + depth * LAYER_TERMS) of the exact value, relative to the magnitude of the terms.
    The comparison is norm-wise over the tensor: the incoming gradient's rounding is relative to the
    gradient's scale over the whole layer, not to each entry (an entry whose own terms are tiny still
    receives the absolute error of its neighbours' cancellations).
    """
    assert ref.keys() == fast.keys() == magnitudes.keys(), set(ref) ^ set(magnitudes)
    for name in ref:
        assert fast[name] is not None, f"{name}: no gradient on the fast path"
        assert torch.isfinite(fast[name]).all(), f"{name}: non-finite gradient on the fast path"
        n = counts[name] + depth * LAYER_TERMS
        bound = 2 * gamma(n, unit_roundoff(ref[name].dtype)) * magnitudes[name].norm().item()
        err = (fast[name] - ref[name]).norm().item()
        assert err <= bound, f"{name}: gradient differs by {err:.3e} (L2), above its rounding bound {bound:.3e}"
