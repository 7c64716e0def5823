"""The toy world's backbone: its architecture, a deterministic pre-training, and the weights file's checks."""

import hashlib
import os
import pickle

import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.backbone import BACKBONES, build_backbone
from hsnetlib.errors import WeightsError
from hsnetlib.toy_backbone import NarrowResNet, find_toy_weights, load_toy_state
from hsnetlib.toy_pretrain import PretrainConfig, pretrain

TINY = dict(families=4, images=12, img_size=66, batch_size=4, steps=3, progress=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HSNET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "weights"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("width", [8, 16])
def test_narrow_resnet_has_resnet50s_layout_and_hsnets_learner_is_the_same_size(width):
    net = NarrowResNet(width)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert net.layer4[-1].conv3.out_channels == 32 * width  # ResNet-50: 2048 at width 64
    assert HSNet(f"resnet50-w{width}").num_learnable_parameters() == 2_573_794  # = HSNet with ResNet-50
    feats = HSNet(f"resnet50-w{width}").features(torch.randn(1, 3, 130, 130))
    assert [f.shape[-1] for f in feats] == [17] * 4 + [9] * 6 + [5] * 3  # 130 px: 17x17, 9x9, 5x5


def test_pretraining_is_deterministic_and_its_file_loads_as_weights_toy(cache, tmp_path):
    first = pretrain(PretrainConfig(backbone="resnet50-w8", **TINY, out=str(tmp_path / "a")))
    second = pretrain(PretrainConfig(backbone="resnet50-w8", **TINY, out=str(tmp_path / "b")))
    assert sha(first) == sha(second) and first.name == second.name  # same seed: the same bytes
    assert first.name.startswith("resnet50-w8-toy-") and sha(first).startswith(first.stem.rsplit("-", 1)[1])
    other = pretrain(PretrainConfig(backbone="resnet50-w8", **TINY, seed=1, out=str(tmp_path / "c")))
    assert sha(other) != sha(first)
    cache.mkdir(parents=True)
    os.replace(first, cache / first.name)
    assert find_toy_weights("resnet50-w8") == cache / first.name
    net = build_backbone("resnet50-w8", "toy")
    saved = torch.load(cache / first.name, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in net.state_dict().items())
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


def test_a_corrupt_or_planted_cache_file_is_refused_with_the_fix(cache):
    cache.mkdir(parents=True)
    bad = cache / "resnet50-w8-toy-00000000.pth"
    bad.write_bytes(b"not the file its name says")
    with pytest.raises(WeightsError, match="resnet50-w8-toy-00000000.pth has SHA-256 .* delete it"):
        load_toy_state("resnet50-w8")
    bad.unlink()

    class Planted:
        def __reduce__(self):
            return (os.system, ("echo planted",))

    payload = pickle.dumps(Planted())
    planted = cache / f"resnet50-w8-toy-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    planted.write_bytes(payload)  # the right hash in its name, but code inside
    with pytest.raises(WeightsError, match="not a toy weights file"):
        load_toy_state("resnet50-w8")


def test_no_file_and_no_pretraining_names_the_command(cache):
    with pytest.raises(WeightsError, match="hsnet pretrain --backbone resnet50-w8"):
        load_toy_state("resnet50-w8", pretrain_if_missing=False)


def test_weights_that_do_not_exist_for_an_architecture_are_refused():
    with pytest.raises(WeightsError, match="has no toy weights"):
        build_backbone("resnet50", "toy")
    with pytest.raises(WeightsError, match="has no ImageNet weights"):
        build_backbone("resnet50-w8", "imagenet")
    assert BACKBONES["resnet50-w16"].toy and not BACKBONES["resnet50"].toy


def test_the_shipped_weights_pass_their_check_and_load(cache):
    from hsnetlib.toy_backbone import SHIPPED_DIR, SHIPPED_SHA256

    path = find_toy_weights("resnet50-w16")  # the cache is empty: only the shipped file can answer
    assert path is not None and path.parent == SHIPPED_DIR
    assert sha(path) == SHIPPED_SHA256["resnet50-w16"]
    net = build_backbone("resnet50-w16", "toy")
    assert net.conv1.weight.shape == (16, 3, 7, 7)


def test_a_damaged_shipped_file_is_refused_with_the_fix(cache, tmp_path, monkeypatch):
    import hsnetlib.toy_backbone as toy_backbone

    digest = toy_backbone.SHIPPED_SHA256["resnet50-w16"]
    (tmp_path / f"resnet50-w16-toy-{digest[:8]}.pth").write_bytes(b"truncated")
    monkeypatch.setattr(toy_backbone, "SHIPPED_DIR", tmp_path)
    with pytest.raises(WeightsError, match="installation is damaged; reinstall hsnetlib"):
        load_toy_state("resnet50-w16")
