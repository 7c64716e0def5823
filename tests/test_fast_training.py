"""Training through the fast path: the same gradients as the reference modules, within the rounding bound of
the terms each gradient sums (float32) and to float64 rounding; 30 Adam steps in lockstep with the reference."""

import pytest
import torch
import torch.nn.functional as F

from hsnetlib import FastHSNet, HSNet
from hsnetlib.bench.masks import bench_masks
from hsnetlib.bench.training import training_step
from hsnetlib.data import make_benchmark
from hsnetlib.engine import make_optimizer
from hsnetlib.fast import FastOptions
from hsnetlib.train_config import TrainConfig

from tolerance import assert_gradients_close, gradient_magnitudes, network_rtol

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def masks(kind: str, batch: int, size: int) -> torch.Tensor:
    return torch.zeros(batch, size, size) if kind == "empty" else bench_masks(kind, size, batch)


def learner_grads(model, q, s, m, gt) -> dict:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(q, s, m), gt).backward()
    return {n: p.grad.clone() for n, p in model.hpn_learner.named_parameters()}


def pair(backbone="resnet50", options=None, **changes):
    """(reference, fast) models with the same weights, in training mode."""
    torch.manual_seed(0)
    ref = HSNet(backbone, **changes).train()
    fast = FastHSNet(ref.config, options=options).train()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def check_fast_gradients(ref, fast, q, s, m, gt) -> None:
    """The fast model's gradients equal the reference's within the rounding bound of each gradient
    (:func:`tolerance.assert_gradients_close`: scaled by the magnitude of the terms it sums)."""
    magnitudes, counts = gradient_magnitudes(ref, lambda net: F.cross_entropy(net(q, s, m), gt))
    expected = learner_grads(ref, q, s, m, gt)
    assert_gradients_close(learner_grads(fast, q, s, m, gt), expected, magnitudes, counts)


@pytest.fixture(scope="module")
def resnet50():
    return pair()


def batch_of(batch, size=96, seed=None):
    g = torch.Generator().manual_seed(batch if seed is None else seed)
    q, s = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)
    return q, s, (torch.rand(batch, size, size, generator=g) > 0.5).long()


@pytest.mark.parametrize("batch", [1, 2, 8])
@pytest.mark.parametrize("kind", ["box", "scattered", "empty"])
def test_fast_gradients_equal_the_reference(resnet50, batch, kind):
    q, s, gt = batch_of(batch)  # 96 px: at 64 px few decoder positions remain and one flipped ReLU moves all
    check_fast_gradients(*resnet50, q, s, masks(kind, batch, 96), gt)


@pytest.mark.parametrize(
    "backbone, changes",
    [
        ("resnet101", {}),
        ("vgg16", {}),
        ("resnet50", {"use_support_mask": False}),  # HSNet†: no window, every support position
        ("resnet50", {"kernel": "separable"}),  # no fast learner: reference modules behind the fast backbone
        ("resnet50", {"feature_layers": "last", "pyramid_levels": 1}),
    ],
)
def test_fast_gradients_for_every_backbone_and_variant(backbone, changes):
    ref, fast = pair(backbone, **changes)
    q, s, gt = batch_of(2, 80, seed=1)
    check_fast_gradients(ref, fast, q, s, masks("object", 2, 80), gt)


@pytest.mark.parametrize("options", [FastOptions(), FastOptions(window=False), FastOptions(own_backward=False)])
def test_fast_gradients_in_float64_equal_the_reference_to_float64_rounding(options):
    ref, fast = pair(options=options)
    ref, fast = ref.double(), fast.double()
    q, s, gt = batch_of(2, 64, seed=3)
    check_fast_gradients(ref, fast, q.double(), s.double(), masks("object", 2, 64).double(), gt)


def test_a_kept_position_free_window_still_gives_zero_gradients_not_none(resnet50):
    # at 96 px the deepest support grid is 3x3 and a small central mask misses the kept positions 0 and 2
    m = torch.zeros(1, 96, 96)
    m[:, 40:56, 40:56] = 1
    q, s, gt = torch.randn(1, 3, 96, 96), torch.randn(1, 3, 96, 96), torch.zeros(1, 96, 96).long()
    grads = learner_grads(resnet50[1], q, s, m, gt)
    assert (grads["encoder_layer4.0.conv1.weight"] == 0).all()
    check_fast_gradients(*resnet50, q, s, m, gt)


@pytest.mark.slow
def test_thirty_adam_steps_of_fast_training_match_the_reference_at_every_step():
    """Train 30 Adam steps through the fast path; at every step the reference modules, at the same
    weights, give the same loss (and at three steps the same gradients) within the rounding bounds.

    Lockstep rather than two independent runs: Adam's update m / sqrt(v) has the same size for a
    gradient of 1e-7 as for one of 1, so the sign of a gradient that cancels to rounding level (the bias
    of a layer before GroupNorm) moves a weight by a whole step either way, and two float32 runs drift
    apart at a rate set by the kernels, not by the code. Comparing at the same weights keeps what the
    test is for: the fast path's function and gradients after every in-place optimizer update."""
    data = make_benchmark("toy", split="trn", img_size=96)
    batches = [torch.utils.data.default_collate([data[4 * i + j] for j in range(4)]) for i in range(30)]
    ref, fast = pair()
    optimizer, _ = make_optimizer(fast, TrainConfig(), torch.device("cpu"))
    losses = []
    for t, b in enumerate(batches):
        q, s, m, gt = b["query_img"], b["support_imgs"][:, 0], b["support_masks"][:, 0], b["query_mask"].long()
        ref.load_state_dict(fast.state_dict())  # the reference at the fast run's weights
        with torch.no_grad():
            ref_logits = ref(q, s, m)
        if t in (0, 10, 29):
            check_fast_gradients(ref, fast, q, s, m, gt)
        loss = training_step(fast, optimizer, q, s, m, gt)
        ref_loss = F.cross_entropy(ref_logits, gt).item()
        # cross-entropy moves by at most 2 max|logit error|; logits: the network bound at their scale
        bound = 2 * network_rtol(torch.float32) * ref_logits.abs().max().item()
        assert abs(loss - ref_loss) <= bound, (t, loss, ref_loss, bound)
        losses.append(loss)
    assert sum(losses[-5:]) < sum(losses[:5])  # it trains


def test_bf16_autocast_training_step_runs_on_cpu(resnet50):
    fast = resnet50[1]
    optimizer = torch.optim.Adam(fast.hpn_learner.parameters(), lr=0.0)
    q, s, m = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), masks("box", 2, 64)
    loss = training_step(fast, optimizer, q, s, m, torch.zeros(2, 64, 64).long(), amp="bf16")
    assert loss == loss and all(p.grad is not None for p in fast.hpn_learner.parameters())
