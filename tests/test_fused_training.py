"""Training through the fast path: the same gradients and the same Adam trajectory as the reference modules."""

import pytest
import torch
import torch.nn.functional as F

from hsnetlib import HSNet
from hsnetlib.data import make_benchmark
from hsnetlib.official_style import official_style_logits
from hsnetlib.profile import bench_masks
from hsnetlib.training_speed import training_step

from tolerance import assert_gradients_close, gradient_magnitudes, network_rtol

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def masks(kind: str, batch: int, size: int) -> torch.Tensor:
    return torch.zeros(batch, size, size) if kind == "empty" else bench_masks(kind, size, batch)


def learner_grads(model, q, s, m, gt, fused: bool) -> dict:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(q, s, m, fused=fused), gt).backward()
    return {n: p.grad.clone() for n, p in model.hpn_learner.named_parameters()}


def check_fused_gradients(model, q, s, m, gt) -> None:
    """The fused path's gradients equal the reference's within the rounding bound of each entry
    (:func:`tolerance.assert_gradients_close`: scaled by the magnitude of the terms each gradient sums)."""
    ref = learner_grads(model, q, s, m, gt, False)
    magnitudes, counts = gradient_magnitudes(model, lambda net: F.cross_entropy(net(q, s, m, fused=False), gt))
    assert_gradients_close(learner_grads(model, q, s, m, gt, True), ref, magnitudes, counts)


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return HSNet("resnet50").train()


@pytest.mark.parametrize("batch", [1, 2, 8])
@pytest.mark.parametrize("kind", ["box", "scattered", "empty"])
def test_fused_gradients_equal_the_reference(resnet50, batch, kind):
    size = 96  # at 64 px few decoder positions remain and one ReLU kink flipped by rounding moves every gradient
    g = torch.Generator().manual_seed(batch)
    q, s = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)
    gt = (torch.rand(batch, size, size, generator=g) > 0.5).long()
    m = masks(kind, batch, size)
    check_fused_gradients(resnet50, q, s, m, gt)


@pytest.mark.parametrize(
    "backbone, kwargs",
    [
        ("resnet101", {}),
        ("vgg16", {}),
        ("resnet50", {"use_support_mask": False}),  # HSNet†: no window, every support position
        ("resnet50", {"kernel": "separable"}),  # no fast learner: reference modules behind the fast backbone
        ("resnet50", {"feature_layers": "last", "pyramid_levels": 1}),
    ],
)
def test_fused_gradients_for_every_backbone_and_variant(backbone, kwargs):
    torch.manual_seed(0)
    model = HSNet(backbone, **kwargs).train()
    g = torch.Generator().manual_seed(1)
    q, s = torch.randn(2, 3, 80, 80, generator=g), torch.randn(2, 3, 80, 80, generator=g)
    gt = (torch.rand(2, 80, 80, generator=g) > 0.5).long()
    m = masks("object", 2, 80)
    check_fused_gradients(model, q, s, m, gt)


def test_official_style_training_logits_equal_the_reference(resnet50):
    g = torch.Generator().manual_seed(2)
    q, s = torch.randn(2, 3, 96, 96, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    m = masks("box", 2, 96)
    torch.testing.assert_close(official_style_logits(resnet50, q, s, m), resnet50(q, s, m, fused=False))


def test_a_kept_position_free_window_still_gives_zero_gradients_not_none(resnet50):
    # at 96 px the deepest support grid is 3x3 and a small central mask misses the kept positions 0 and 2
    m = torch.zeros(1, 96, 96)
    m[:, 40:56, 40:56] = 1
    q, s, gt = torch.randn(1, 3, 96, 96), torch.randn(1, 3, 96, 96), torch.zeros(1, 96, 96).long()
    fast = learner_grads(resnet50, q, s, m, gt, True)
    assert (fast["encoder_layer4.0.conv1.weight"] == 0).all()
    check_fused_gradients(resnet50, q, s, m, gt)


@pytest.mark.slow
def test_thirty_adam_steps_of_fused_training_match_the_reference_at_every_step():
    """Train 30 Adam steps through the fused path; at every step the reference modules, at the same
    weights, give the same loss (and at three steps the same gradients) within the rounding bounds.

    Lockstep rather than two independent runs: Adam's update m / sqrt(v) has the same size for a
    gradient of 1e-7 as for one of 1, so the sign of a gradient that cancels to rounding level (the bias
    of a layer before GroupNorm) moves a weight by a whole step either way, and two float32 runs drift
    apart at a rate set by the kernels, not by the code. Comparing at the same weights keeps what the
    test is for: the fused path's function and gradients after every in-place optimizer update."""
    data = make_benchmark("toy", split="trn", img_size=96)
    batches = [torch.utils.data.default_collate([data[4 * i + j] for j in range(4)]) for i in range(30)]
    torch.manual_seed(0)
    model = HSNet("resnet50").train()
    optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    losses = []
    for t, b in enumerate(batches):
        q, s, m, gt = b["query_img"], b["support_imgs"][:, 0], b["support_masks"][:, 0], b["query_mask"].long()
        with torch.no_grad():
            ref_logits = model(q, s, m, fused=False)
        if t in (0, 10, 29):
            check_fused_gradients(model, q, s, m, gt)
        loss = training_step(model, optimizer, "fused", q, s, m, gt)
        ref_loss = F.cross_entropy(ref_logits, gt).item()
        # cross-entropy moves by at most 2 max|logit error|; logits: the network bound at their scale
        bound = 2 * network_rtol(torch.float32) * ref_logits.abs().max().item()
        assert abs(loss - ref_loss) <= bound, (t, loss, ref_loss, bound)
        losses.append(loss)
    assert sum(losses[-5:]) < sum(losses[:5])  # it trains


def test_bf16_autocast_training_step_runs_on_cpu(resnet50):
    optimizer = torch.optim.Adam(resnet50.hpn_learner.parameters(), lr=0.0)
    q, s, m = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), masks("box", 2, 64)
    loss = training_step(resnet50, optimizer, "fused", q, s, m, torch.zeros(2, 64, 64).long(), amp="bf16")
    assert loss == loss and all(p.grad is not None for p in resnet50.hpn_learner.parameters())


def test_an_unknown_training_path_is_refused(resnet50):
    with pytest.raises(ValueError, match="unknown path"):
        training_step(resnet50, None, "fast", *[None] * 4)


def test_unwindowed_correlation_gives_the_same_gradients(resnet50):
    # the CUDA choice (every support position, batched products) on CPU
    from hsnetlib import fastpath

    g = torch.Generator().manual_seed(3)
    q, s = torch.randn(2, 3, 96, 96, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    m, gt = masks("object", 2, 96), (torch.rand(2, 96, 96, generator=g) > 0.5).long()
    ref = learner_grads(resnet50, q, s, m, gt, False)
    magnitudes, counts = gradient_magnitudes(resnet50, lambda net: F.cross_entropy(net(q, s, m, fused=False), gt))
    resnet50.zero_grad(set_to_none=True)
    with torch.no_grad():
        units = fastpath.unit_query_features(resnet50.fast_features(q))
        pyramid = fastpath.hypercorrelation_qm(units, resnet50.fast_features(s), m, (3, 6, 4), windowed=False)
    logits = F.interpolate(
        fastpath.learner_qm(resnet50.hpn_learner, pyramid), (96, 96), mode="bilinear", align_corners=True
    )
    F.cross_entropy(logits, gt).backward()
    fast = {n: p.grad for n, p in resnet50.hpn_learner.named_parameters()}
    assert_gradients_close(fast, ref, magnitudes, counts)
