"""FastHSNet against HSNet (the reference computation) on the same weights: logits, K-shot predictions,
every backbone and variant; exact to float64 rounding, and within the float32 network bound."""

import pytest
import torch

from hsnetlib import FastHSNet, HSNet
from hsnetlib.fast import FastOptions
from hsnetlib.fast.model import batch_shots_by_default

from tolerance import assert_network_close, network_rtol

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)

BACKBONES = ["resnet50", "resnet101", "vgg16"]


def pair(config="resnet50", options=None, **changes):
    """(reference, fast) models with the same weights, in eval mode."""
    torch.manual_seed(0)
    ref = HSNet(config, **changes).eval()
    fast = FastHSNet(ref.config, options=options).eval()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@pytest.fixture(scope="module")
def pairs():
    return {name: pair(name) for name in BACKBONES}


def box_episode(batch, shot, size=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, s = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, shot, 3, size, size, generator=g)
    m = torch.zeros(batch, shot, size, size)
    m[..., size // 8 : 5 * size // 8, size // 4 : 7 * size // 8] = 1.0  # a box: most positions masked out
    return q, s, m


def assert_masks_agree_where_logits_do_not_tie(fast_pred, ref_logits):
    """A 1-shot mask may differ only where the reference's two logits are closer than the rounding bound."""
    gap = (ref_logits[:, 0, 1] - ref_logits[:, 0, 0]).abs()  # (B, H, W)
    bound = 2 * network_rtol(ref_logits.dtype) * ref_logits.abs().max()  # each of the two logits: the network bound
    ref_pred = (ref_logits[:, 0, 1] > ref_logits[:, 0, 0]).long()
    assert (gap[fast_pred != ref_pred] <= bound).all()


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("batch, shot", [(1, 1), (2, 1), (1, 3), (2, 3), (1, 5), (2, 5)])
@pytest.mark.parametrize("batch_shots", [False, True])  # False: one shot after the other; True: one batch
def test_fast_kshot_logits_equal_the_reference(pairs, backbone, batch, shot, batch_shots):
    ref_model, fast_model = pairs[backbone]
    fast_model.options = FastOptions(batch_shots=batch_shots)
    q, s, m = box_episode(batch, shot, seed=batch * 10 + shot)
    ref, fast = ref_model.kshot_logits(q, s, m), fast_model.kshot_logits(q, s, m)
    assert ref.shape == fast.shape == (batch, shot, 2, 80, 80)
    assert_network_close(fast, ref)
    pred = fast_model.predict(q, s, m)
    assert pred.shape == (batch, 80, 80) and pred.dtype == torch.long
    if shot == 1:
        assert_masks_agree_where_logits_do_not_tie(pred, ref)
    assert fast_model.predict(q, s, m, size=(50, 70)).shape == (batch, 50, 70)


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
@pytest.mark.parametrize("use_support_mask", [True, False])
def test_fast_model_in_float64_equals_the_reference_to_float64_rounding(backbone, use_support_mask):
    ref, fast = pair(backbone, use_support_mask=use_support_mask)
    ref, fast = ref.double(), fast.double()
    q, s, m = box_episode(2, 3)
    q, s = q.double(), s.double()
    assert_network_close(fast.kshot_logits(q, s, m), ref.kshot_logits(q, s, m))  # bound at u = 2^-53
    assert_network_close(fast(q, s[:, 0], m[:, 0]), ref(q, s[:, 0], m[:, 0]))


@pytest.mark.parametrize("changes", [{"kernel": "separable"}, {"kernel": "full"}, {"pyramid_levels": 1}])
def test_other_learners_run_the_reference_modules_behind_the_fast_backbone(changes):
    ref, fast = pair("resnet50", **changes)
    assert not fast.fast_learner
    q, s, m = box_episode(1, 2, size=64)
    assert_network_close(fast.kshot_logits(q, s, m), ref.kshot_logits(q, s, m))


@pytest.mark.parametrize("use_support_mask", [True, False])
def test_fast_equals_reference_with_empty_support_masks(use_support_mask):
    ref, fast = pair("resnet50", use_support_mask=use_support_mask)
    q, s = torch.randn(2, 3, 64, 64), torch.randn(2, 2, 3, 64, 64)
    m = torch.zeros(2, 2, 64, 64)
    m[0, 0, 5:30, 5:60] = 1  # the other three supports have empty masks
    out = fast.kshot_logits(q, s, m)
    assert torch.isfinite(out).all()
    assert_network_close(out, ref.kshot_logits(q, s, m))


def test_fast_equals_reference_odd_sizes_and_masks_per_item():
    ref, fast = pair("resnet50")
    torch.manual_seed(1)
    q, s = torch.randn(2, 3, 97, 75), torch.randn(2, 2, 3, 97, 75)
    m = torch.zeros(2, 2, 97, 75)
    m[0, 0, :20, :15] = 1  # a corner
    m[0, 1, 40:60, 30:50] = 0.7  # a soft box inside
    m[1, 0, :, 60:] = 1  # the right border, full height
    m[1, 1] = (torch.rand(97, 75) > 0.8).float()  # scattered pixels
    assert_network_close(fast.kshot_logits(q, s, m), ref.kshot_logits(q, s, m))


@pytest.mark.parametrize("window", [True, False])
def test_every_lever_switched_off_still_computes_the_same_function(window):
    ref, fast = pair("resnet50", FastOptions(onednn_backbone=False, own_backward=False, window=window))
    q, s, m = box_episode(2, 1, size=64)
    assert_network_close(fast(q, s[:, 0], m[:, 0]), ref(q, s[:, 0], m[:, 0]))


def test_bf16_autocast_is_close_to_fp32():
    _, fast = pair("resnet50")
    q, s, m = box_episode(1, 1, size=96)
    fp32 = fast.kshot_logits(q, s, m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = fast.kshot_logits(q, s, m)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    # bfloat16 keeps 8 bits (u = 2^-8 = 3.9e-3); 19 learner layers of products in bf16, float32 sums
    assert (bf16 - fp32).abs().max() <= 19 * 2**-8 * fp32.abs().max()


def test_shots_are_batched_by_default_on_cpu_only_when_their_correlations_are_small():
    assert batch_shots_by_default(torch.zeros(8, 3, 96, 96), 5)  # 8*5*12^4 = 0.8M entries
    assert not batch_shots_by_default(torch.zeros(8, 3, 128, 128), 5)  # 2.6M
    assert not batch_shots_by_default(torch.zeros(1, 3, 400, 400), 5)  # 31M


def test_ablated_fast_models_correlate_the_chosen_layers():
    ref, fast = pair("resnet50", feature_layers="last")
    assert fast.fast_learner and fast.feature_ids == [3, 9, 12]
    q, s, m = box_episode(1, 2, size=96)
    assert_network_close(fast.kshot_logits(q, s, m), ref.kshot_logits(q, s, m))
