"""The fused oneDNN forward of the frozen ResNet (hsnetlib.onednn) against the plain folded copy."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn

from hsnetlib import HSNet, onednn
from hsnetlib.backbone import build_backbone, inference_copy, resnet_features

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def randomize_batchnorm(net: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so that folding them matters."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@needs_onednn
@pytest.mark.parametrize(
    "name, shape", [("resnet50", (2, 3, 64, 72)), ("resnet50", (1, 3, 97, 75)), ("resnet101", (1, 3, 64, 64))]
)
def test_packed_features_equal_the_folded_copy(name, shape):
    torch.manual_seed(0)
    backbone = build_backbone(name)
    randomize_batchnorm(backbone)
    img = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = resnet_features(inference_copy(name, backbone), img)
        fast = onednn.resnet_features(onednn.PackedResNet(backbone), img)
    assert len(fast) == len(ref)
    for r, f in zip(ref, fast):
        assert f.shape == r.shape and f.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(f, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())


@needs_onednn
def test_packed_weights_keep_two_shapes_least_recently_used_dropped():
    torch.manual_seed(0)
    packed = onednn.PackedResNet(build_backbone("resnet50"))
    shapes = [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64), (1, 3, 96, 96)]
    with torch.no_grad():
        for shape in shapes:
            onednn.resnet_features(packed, torch.randn(shape).contiguous(memory_format=torch.channels_last))
    assert list(packed.sets) == [(1, 3, 64, 64), (1, 3, 96, 96)]  # (2, 3, 64, 64) was the least recently used
    assert all(len(w) == 53 for w in packed.sets.values())  # every convolution of ResNet-50, packed once


def test_fused_forward_applies_only_to_float32_cpu_batches_without_autocast():
    img = torch.randn(1, 3, 32, 32)
    assert onednn.usable(img) == torch.backends.mkldnn.is_available()
    assert not onednn.usable(img.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.usable(img)


def test_model_copies_and_pickles_build_their_own_fast_backbone():
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    feats = model.fast_features(img)
    assert model.folded_backbone.built
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not other.folded_backbone.built  # a cache of the original's tensors is never carried over
        torch.testing.assert_close(other.fast_features(img)[-1], feats[-1])


@needs_onednn
def test_autocast_batches_take_the_folded_copy():
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.fast_features(torch.randn(1, 3, 64, 64))
    assert model.folded_backbone.net is not None and model.folded_backbone.packed is None


def test_flop_counter_counts_the_fused_convolutions():
    from torch.utils.flop_counter import FlopCounterMode

    model = HSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    counts = []
    for features in (model.features, model.fast_features):
        with FlopCounterMode(display=False) as counter:
            features(img)
        counts.append(counter.get_total_flops())
    assert counts[0] > 0 and counts[1] == counts[0]
