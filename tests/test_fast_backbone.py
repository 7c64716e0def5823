"""The fast path's backbone (hsnetlib.fast.backbone): BatchNorm folded, fused oneDNN convolutions on CPU,
against the reference features; its cache's lifetime; the FLOP count of the fused convolutions."""

import copy
import pickle

import pytest
import torch
import torch.nn as nn

from hsnetlib import FastHSNet, HSNet
from hsnetlib.backbone import build_backbone, extract_features
from hsnetlib.fast import ops
from hsnetlib.fast.backbone import FoldedBackbone

from tolerance import assert_network_close

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
DEPTH = {"resnet50": 53, "resnet101": 104}  # convolutions on the longest path to the deepest feature


def randomize_batchnorm(net: nn.Module) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so that folding them matters."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize(
    "name, shape, onednn",
    [
        ("resnet50", (2, 3, 64, 72), True),
        ("resnet50", (1, 3, 97, 75), True),
        ("resnet101", (1, 3, 64, 64), True),
        ("resnet50", (2, 3, 64, 72), False),  # the plain folded convolutions (CUDA's path, on CPU)
    ],
)
def test_folded_features_equal_the_reference(name, shape, onednn):
    torch.manual_seed(0)
    backbone = build_backbone(name)
    randomize_batchnorm(backbone)
    img = torch.randn(shape)
    with torch.no_grad():
        ref = extract_features(name, backbone, img)
        fast = FoldedBackbone(name, onednn=onednn).features(backbone, img)
    assert len(fast) == len(ref)
    for r, f in zip(ref, fast):
        assert f.shape == r.shape and f.is_contiguous(memory_format=torch.channels_last)
        assert_network_close(f, r, depth=DEPTH[name])  # each feature map at its own scale


def test_folded_features_in_float64_equal_the_reference_to_float64_rounding():
    torch.manual_seed(0)
    backbone = build_backbone("resnet50").double()
    randomize_batchnorm(backbone)
    img = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    ref = extract_features("resnet50", backbone, img)
    for r, f in zip(ref, FoldedBackbone("resnet50").features(backbone, img)):
        assert f.dtype == torch.float64
        assert_network_close(f, r, depth=53)  # float64: a bound 2^29 times tighter than float32's


def test_vgg_features_are_the_reference_features():
    torch.manual_seed(0)
    backbone = build_backbone("vgg16")
    img = torch.randn(1, 3, 64, 64)
    for r, f in zip(extract_features("vgg16", backbone, img), FoldedBackbone("vgg16").features(backbone, img)):
        assert torch.equal(r, f)  # no BatchNorm to fold: the same computation


@needs_onednn
def test_packed_weights_keep_two_shapes_least_recently_used_dropped():
    torch.manual_seed(0)
    backbone, folded = build_backbone("resnet50"), FoldedBackbone("resnet50")
    for shape in [(1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 64, 64), (1, 3, 96, 96)]:
        folded.features(backbone, torch.randn(shape))
    assert list(folded.packed) == [(1, 3, 64, 64), (1, 3, 96, 96)]  # (2, 3, 64, 64) was the least recently used
    assert all(len(w) == 53 for w in folded.packed.values())  # every convolution of ResNet-50, packed once
    assert not folded.weights  # the packed path keeps no folded copy beside the packed one


def test_fused_forward_applies_only_to_float32_cpu_batches_without_autocast():
    img = torch.randn(1, 3, 32, 32)
    assert ops.onednn_usable(img) == torch.backends.mkldnn.is_available()
    assert not ops.onednn_usable(img.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not ops.onednn_usable(img)


@needs_onednn
def test_autocast_batches_take_the_plain_folded_convolutions():
    torch.manual_seed(0)
    model = FastHSNet("resnet50").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.features(torch.randn(1, 3, 64, 64))
    assert model.folded_backbone.weights and not model.folded_backbone.packed


def test_the_fast_backbone_follows_backbone_changes():
    torch.manual_seed(0)
    model = FastHSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    before = model.features(img)[-1]
    model.backbone.layer4[-1].bn3.running_mean.add_(1.0)  # in place, as recalibrate_batchnorm does
    after = model.features(img)[-1]
    assert_network_close(after, HSNet.features(model, img)[-1], depth=53)
    assert not torch.allclose(before, after)
    other = HSNet("resnet50").eval()
    model.load_state_dict(other.state_dict())
    assert_network_close(model.features(img)[-1], other.features(img)[-1], depth=53)


def test_model_copies_and_pickles_build_their_own_fast_backbone():
    torch.manual_seed(0)
    model = FastHSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    feats = model.features(img)
    assert model.folded_backbone.built
    assert not any(k.startswith("folded") for k in model.state_dict())  # a cache, not part of the model
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not other.folded_backbone.built  # a cache of the original's tensors is never carried over
        assert torch.equal(other.features(img)[-1], feats[-1])  # same weights, same kernels: the same bits
    model.folded_backbone.clear()
    assert not model.folded_backbone.built


def test_flop_counter_counts_the_fused_convolutions():
    from hsnetlib.bench.timing import count_flops

    model = FastHSNet("resnet50").eval()
    img = torch.randn(1, 3, 64, 64)
    reference, fast = count_flops(HSNet.features, model, img), count_flops(model.features, img)
    assert reference > 0 and fast == reference
