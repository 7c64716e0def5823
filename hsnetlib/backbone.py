"""Frozen torchvision backbones and the intermediate features HSNet correlates (Sec. 3.1).

HSNet keeps the *whole* torchvision classifier as ``model.backbone`` (the released
checkpoints store its ``fc`` / ``classifier`` too) and reads features from inside it:

- ResNet-50/101: the output of every bottleneck of layer2..layer4, taken *after* the
  residual addition and *before* the block's final ReLU.
  ResNet-50: 4 + 6 + 3 = 13 maps; ResNet-101: 4 + 23 + 3 = 30 maps.
- VGG-16: ``features[17, 19, 21]`` (conv4_1..3) and ``features[24, 26, 28]`` (conv5_1..3)
  before their ReLU, plus ``features[30]`` (pool5): 7 maps.

``PYRAMID_SIZES`` groups those maps into the three hypercorrelation levels, deepest first.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class BackboneSpec:
    builder: str  # torchvision.models function name
    weights_enum: str  # torchvision weights enum holding the ImageNet weights
    pyramid_sizes: tuple[int, int, int]  # layers per hypercorrelation level, deepest first


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec("resnet50", "ResNet50_Weights", (3, 6, 4)),
    "resnet101": BackboneSpec("resnet101", "ResNet101_Weights", (3, 23, 4)),
    "vgg16": BackboneSpec("vgg16", "VGG16_Weights", (1, 3, 3)),
}

VGG16_FEATURE_IDS = (17, 19, 21, 24, 26, 28, 30)  # conv4_1..3, conv5_1..3 (pre-ReLU), pool5


def check_backbone_name(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def imagenet_weights(name: str):
    """The torchvision weights enum entry the official HSNet used (IMAGENET1K_V1)."""
    spec = check_backbone_name(name)
    return getattr(tvm, spec.weights_enum).IMAGENET1K_V1


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights file of ``name`` (``$TORCH_HOME/hub/checkpoints``)."""
    url = imagenet_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_weights_available(name: str) -> bool:
    """True when the ImageNet weights of ``name`` are already on disk (no download needed)."""
    return imagenet_weights_path(name).is_file()


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build a frozen torchvision classifier.

    weights: ``None`` -> random init (no download); ``"imagenet"`` -> torchvision's
    IMAGENET1K_V1 weights (downloaded once into the torch hub cache); a path -> a local
    torchvision state-dict file for this architecture.
    """
    spec = check_backbone_name(name)
    net = getattr(tvm, spec.builder)(weights=None)
    if weights is None:
        pass
    elif weights == "imagenet":
        enum = imagenet_weights(name)
        try:
            state = enum.get_state_dict(progress=True)
        except OSError as err:  # urllib's URLError is an OSError
            raise RuntimeError(
                f"could not download ImageNet weights for {name} ({err}). On a machine with internet run "
                f"`python -c \"import torchvision; torchvision.models.{spec.builder}(weights='IMAGENET1K_V1')\"` "
                f"or copy {os.path.basename(enum.url)} from {enum.url} to {imagenet_weights_path(name)}; "
                f"or pass weights=PATH to a local file; weights=None uses a random backbone."
            ) from None
        net.load_state_dict(state)
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights file {path} not found; expected a torchvision state dict for {name}, "
                f"or weights='imagenet' / weights=None"
            )
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def _bottleneck_before_relu(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision Bottleneck without its final ReLU: bn3(conv3(...)) + identity."""
    identity = x if block.downsample is None else block.downsample(x)
    out = F.relu(block.bn1(block.conv1(x)))
    out = F.relu(block.bn2(block.conv2(out)))
    return block.bn3(block.conv3(out)) + identity


def resnet_features(net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> every layer2..4 bottleneck output (pre-ReLU), shallow to deep."""
    x = net.maxpool(F.relu(net.bn1(net.conv1(img))))  # (B, 64, H/4, W/4)
    feats = []
    for layer_idx in (1, 2, 3, 4):
        for block in getattr(net, f"layer{layer_idx}"):
            pre = _bottleneck_before_relu(block, x)
            if layer_idx > 1:
                feats.append(pre)
            x = F.relu(pre)
    return feats


def vgg_features(net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> conv4_1..3, conv5_1..3 (pre-ReLU) and pool5, shallow to deep."""
    x, feats = img, []
    for idx, layer in enumerate(net.features[: VGG16_FEATURE_IDS[-1] + 1]):
        x = F.relu(x) if isinstance(layer, nn.ReLU) else layer(x)  # out-of-place: keep pre-ReLU maps intact
        if idx in VGG16_FEATURE_IDS:
            feats.append(x)
    return feats


def extract_features(name: str, net: nn.Module, img: torch.Tensor) -> list[torch.Tensor]:
    """The intermediate features HSNet correlates for backbone ``name``, shallow to deep."""
    check_backbone_name(name)
    return vgg_features(net, img) if name == "vgg16" else resnet_features(net, img)


@torch.no_grad()
def inference_copy(name: str, net: nn.Module) -> nn.Module:
    """A copy of a frozen backbone for fast inference: BatchNorm folded into the convolution before
    it (eval-mode statistics: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps)),
    weights in channels-last memory format. Same features up to float rounding; feed it
    channels-last images. VGG-16 has no BatchNorm: only ``features`` is copied, in channels-last.
    """
    check_backbone_name(name)
    if name == "vgg16":  # only `features` is read: leave the 120M-parameter classifier out of the copy
        shell = nn.Module()
        shell.features = copy.deepcopy(net.features).eval()
        return shell.to(memory_format=torch.channels_last)
    net = copy.deepcopy(net).eval()
    net.conv1, net.bn1 = fuse_conv_bn_eval(net.conv1, net.bn1), nn.Identity()
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        for block in layer:
            for i in (1, 2, 3):
                conv, bn = getattr(block, f"conv{i}"), getattr(block, f"bn{i}")
                setattr(block, f"conv{i}", fuse_conv_bn_eval(conv, bn))
                setattr(block, f"bn{i}", nn.Identity())
            if block.downsample is not None:
                block.downsample = nn.Sequential(fuse_conv_bn_eval(block.downsample[0], block.downsample[1]))
    return net.to(memory_format=torch.channels_last)


@torch.no_grad()
def recalibrate_batchnorm(net: nn.Module, images) -> int:
    """Re-estimate every BatchNorm's running mean / variance on ``images`` (an iterable of
    (B, 3, H, W) batches), as a plain average, then put ``net`` back in eval mode.

    Not in the paper: a data-dependent initialization for a *random* backbone only. At random
    init the running statistics are (0, 1), so deep features carry a large shared component and
    cosine correlations (Eq. 2) are nearly flat; with statistics of real inputs the features are
    centred per channel and correlations become discriminative. Weights are not changed.
    Returns the number of batches used.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
    net.train()
    n = 0
    for batch in images:
        net(batch)
        n += 1
    for m in norms:
        m.momentum = 0.1
    net.eval()
    return n
