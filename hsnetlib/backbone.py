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

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from .checkpoint import check_compatible, safe_load
from .errors import CheckpointError, WeightsError
from .toy_backbone import TOY_WIDTHS, NarrowResNet, find_toy_weights, load_toy_state, toy_backbone_name


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[], nn.Module]  # the network with random weights
    family: str  # "resnet" | "vgg": which features HSNet reads
    pyramid_sizes: tuple[int, int, int]  # layers per hypercorrelation level, deepest first
    imagenet: str | None = None  # the torchvision weights enum holding its ImageNet weights
    toy: bool = False  # pre-trained by the project on the toy world (weights="toy", hsnetlib.toy_backbone)


BACKBONES: dict[str, BackboneSpec] = {
    "resnet50": BackboneSpec(partial(tvm.resnet50, weights=None), "resnet", (3, 6, 4), "ResNet50_Weights"),
    "resnet101": BackboneSpec(partial(tvm.resnet101, weights=None), "resnet", (3, 23, 4), "ResNet101_Weights"),
    "vgg16": BackboneSpec(partial(tvm.vgg16, weights=None), "vgg", (1, 3, 3), "VGG16_Weights"),
    **{toy_backbone_name(w): BackboneSpec(partial(NarrowResNet, w), "resnet", (3, 6, 4), toy=True) for w in TOY_WIDTHS},
}

VGG16_FEATURE_IDS = (17, 19, 21, 24, 26, 28, 30)  # conv4_1..3, conv5_1..3 (pre-ReLU), pool5


def check_backbone_name(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    return BACKBONES[name]


def imagenet_weights(name: str):
    """The torchvision weights enum entry the official HSNet used (IMAGENET1K_V1)."""
    spec = check_backbone_name(name)
    if spec.imagenet is None:
        raise WeightsError(f"{name} has no ImageNet weights (it is the toy world's backbone); use weights='toy'")
    return getattr(tvm, spec.imagenet).IMAGENET1K_V1


def imagenet_weights_path(name: str) -> Path:
    """Where torchvision caches the ImageNet weights file of ``name`` (``$TORCH_HOME/hub/checkpoints``)."""
    url = imagenet_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_weights_available(name: str) -> bool:
    """True when the ImageNet weights of ``name`` are already on disk (no download needed)."""
    return imagenet_weights_path(name).is_file()


def load_imagenet_state(name: str) -> dict:
    """torchvision's ImageNet state dict of ``name``: from the torch hub cache, downloaded there first
    if absent. The file must match the SHA-256 prefix in its published name (e.g. ``-0676ba61``) and
    is loaded with ``weights_only=True``: a planted or corrupt cache file is refused, never run."""
    enum, path = imagenet_weights(name), imagenet_weights_path(name)
    prefix = re.search(r"-([a-f0-9]+)\.", path.name).group(1)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(enum.url, str(path), hash_prefix=prefix, progress=True)
        except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError; a hash mismatch a RuntimeError
            raise WeightsError(
                f"could not download ImageNet weights for {name} ({' '.join(str(err).split())[:160]}). On a machine "
                f'with internet run `python -c "import torchvision; torchvision.models.'
                f"{name}(weights='IMAGENET1K_V1')\"` or copy {path.name} from {enum.url} to "
                f"{path}; or pass weights=PATH to a local file; weights=None uses a random backbone."
            ) from None
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    fix = f"delete it and download it again from {enum.url} (or copy a good {path.name} there)"
    if not digest.startswith(prefix):
        raise WeightsError(f"ImageNet weights file {path} has SHA-256 {digest[:12]}..., expected {prefix}...; {fix}")
    try:
        return safe_load(path, "torchvision weights file")
    except CheckpointError as err:
        raise WeightsError(f"{err}; {fix}") from None


def backbone_reference(name: str, weights) -> dict | None:
    """What identifies a frozen backbone whose weights can be rebuilt from a file on disk: ``{"name",
    "weights", "sha256"}`` for ``weights`` "toy" or "imagenet" (the SHA-256 of the file it was built
    from), None for random or user-given weights (a checkpoint must then carry the tensors)."""
    if weights == "toy":
        path = find_toy_weights(name)
    elif weights == "imagenet":
        path = imagenet_weights_path(name)
    else:
        return None
    if path is None or not path.is_file():
        return None
    with open(path, "rb") as f:
        return {"name": name, "weights": weights, "sha256": hashlib.file_digest(f, "sha256").hexdigest()}


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build a frozen backbone (the whole torchvision classifier for the ImageNet architectures).

    weights: ``None`` -> random init (no download); ``"imagenet"`` -> torchvision's
    IMAGENET1K_V1 weights (downloaded once into the torch hub cache); ``"toy"`` -> the project's
    toy-world weights (:mod:`hsnetlib.toy_backbone`); a path -> a local state-dict file for this
    architecture.
    """
    spec = check_backbone_name(name)
    net = spec.build()
    if weights is None:
        pass
    elif weights == "imagenet":
        net.load_state_dict(load_imagenet_state(name))
    elif weights == "toy":
        if not spec.toy:
            toy = [n for n, s in BACKBONES.items() if s.toy]
            raise WeightsError(f"{name} has no toy weights; the toy world's backbones are {toy}")
        net.load_state_dict(load_toy_state(name))
    else:
        path = Path(weights)
        if not path.is_file():
            kind = "a torchvision state dict" if spec.imagenet else "a state dict (hsnet pretrain writes one)"
            raise FileNotFoundError(
                f"backbone weights file {path} not found; expected {kind} for {name}, "
                f"or weights='imagenet' / 'toy' / None"
            )
        state = safe_load(path, f"{name} weights file")
        try:
            check_compatible(net, state if isinstance(state, dict) else {}, path)
        except CheckpointError as err:
            kind = f"torchvision {name} weights file" if spec.imagenet else f"{name} weights file (hsnet pretrain)"
            raise WeightsError(f"{err}; pass a {kind}") from None
        net.load_state_dict(state)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, relu: bool = False, add=None) -> torch.Tensor:
    """One convolution of a ResNet with its BatchNorm: bn(conv(x)) [+ add] [then ReLU]."""
    y = bn(conv(x))
    if add is not None:
        y = y + add
    return F.relu(y) if relu else y


def resnet_features(net: nn.Module, img: torch.Tensor, conv=conv_bn) -> list[torch.Tensor]:
    """(B, 3, H, W) -> every layer2..4 bottleneck output (pre-ReLU), shallow to deep.

    ``conv(conv, bn, x, relu, add)`` runs one convolution with its BatchNorm (and the residual
    addition or ReLU after it); the fast path passes a BatchNorm-folded, fused one
    (:mod:`hsnetlib.fast.backbone`), so this walk over the bottlenecks is stated once.
    """
    x = net.maxpool(conv(net.conv1, net.bn1, img, relu=True))  # (B, 64, H/4, W/4)
    feats = []
    for layer_idx in (1, 2, 3, 4):
        for block in getattr(net, f"layer{layer_idx}"):
            identity = x if block.downsample is None else conv(block.downsample[0], block.downsample[1], x)
            out = conv(block.conv1, block.bn1, x, relu=True)
            out = conv(block.conv2, block.bn2, out, relu=True)
            if layer_idx == 1:  # layer1 is not correlated: its block's final ReLU can join the convolution
                x = conv(block.conv3, block.bn3, out, relu=True, add=identity)
                continue
            pre = conv(block.conv3, block.bn3, out, add=identity)  # bn3(conv3(...)) + identity, before the ReLU
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
    return vgg_features(net, img) if check_backbone_name(name).family == "vgg" else resnet_features(net, img)


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
