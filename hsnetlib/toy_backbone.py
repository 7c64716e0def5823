"""The toy world's pre-trained backbone: a ResNet-50 layout at reduced width, and its weights file.

HSNet reads the features of a backbone pre-trained on ImageNet (Sec. 3.1). No ImageNet weights
exist for the toy world, so the project pre-trains its own (:mod:`hsnetlib.toy_pretrain`), on
images of the same kind as the toy benchmark's but of other shape families: it never sees a
benchmark class.

- :class:`NarrowResNet`: torchvision's ResNet-50 layout (bottlenecks [3, 4, 6, 3], the same module
  names) with every channel count scaled by ``width`` / 64. HSNet's learner sees only the number of
  layers per pyramid level (3 / 6 / 4), never a channel count, so its learnable part is the same
  2,573,794 parameters at any width. Registered as ``resnet50-w<width>`` (:data:`TOY_WIDTHS`).
- ``weights="toy"``: the pre-trained weights, looked up in this order: the file shipped with the
  package (``hsnetlib/weights/``, checked against :data:`SHIPPED_SHA256`), a file in the cache
  (``~/.cache/hsnetlib/weights/``, its name carrying the first 8 hex digits of its SHA-256, checked),
  else pre-trained on first use (minutes on a CPU) and cached. Every file is loaded with
  ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models.resnet import Bottleneck, conv1x1

from .checkpoint import safe_load
from .errors import CheckpointError, WeightsError
from .settings import cache_dir

TOY_WIDTHS = (8, 16, 32)  # base widths with a registered backbone (torchvision's ResNet-50: 64)
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
# backbone name -> SHA-256 of the weights file shipped with the package: `hsnet pretrain` with its defaults
# (PretrainConfig(): resnet50-w16, 64 families, 3000 images at 98 px, 1000 steps, seed 0), 6 MB
SHIPPED_SHA256: dict[str, str] = {"resnet50-w16": "b1b2b0c6410c48159488dd5ecd215bc0471ec34328dc4c1e54178db98fd8fa56"}


class NarrowResNet(nn.Module):
    """ResNet-50's layout and module names with every channel count scaled by ``width`` / 64 (no classifier)."""

    def __init__(self, width: int = 16, layers=(3, 4, 6, 3)):
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for i, (blocks, stride) in enumerate(zip(layers, (1, 2, 2, 2)), 1):
            planes = width * 2 ** (i - 1)  # the bottleneck's inner width; its output is 4x that
            downsample = nn.Sequential(conv1x1(inplanes, planes * 4, stride), nn.BatchNorm2d(planes * 4))
            stage = [Bottleneck(inplanes, planes, stride, downsample)]
            stage += [Bottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            inplanes = planes * 4
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(img))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def toy_backbone_name(width: int) -> str:
    return f"resnet50-w{width}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def cached_weights_dir() -> Path:
    return cache_dir() / "weights"


def weights_file_name(name: str, digest: str) -> str:
    return f"{name}-toy-{digest[:8]}.pth"


def find_toy_weights(name: str) -> Path | None:
    """The toy weights file of backbone ``name`` that passes its check (module docstring), or None."""
    shipped = SHIPPED_SHA256.get(name)
    if shipped:
        path = SHIPPED_DIR / weights_file_name(name, shipped)
        if path.is_file():
            if _sha256(path) != shipped:
                raise WeightsError(
                    f"the toy weights shipped with hsnetlib, {path}, do not match their SHA-256 {shipped[:8]}...: "
                    f"the installation is damaged; reinstall hsnetlib (or restore the file with git checkout)"
                )
            return path
    found = sorted(cached_weights_dir().glob(f"{name}-toy-*.pth"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in found:
        digest, named = _sha256(path), path.stem.rsplit("-", 1)[-1]
        if not digest.startswith(named):
            raise WeightsError(
                f"toy weights file {path} has SHA-256 {digest[:8]}..., its name says {named}...: it is corrupt or "
                f"was replaced; delete it (and pre-train again with `hsnet pretrain --backbone {name}`)"
            )
        return path
    return None


def save_toy_weights(state: dict, name: str, folder: Path | None = None) -> Path:
    """Write ``state`` as ``<folder>/<name>-toy-<sha8>.pth`` (default: the cache), atomically; -> its path."""
    from .checkpoint import save_atomic

    folder = Path(folder or cached_weights_dir())
    tmp = folder / f"{name}-toy-unhashed.pth"
    save_atomic(state, tmp)
    path = folder / weights_file_name(name, _sha256(tmp))
    tmp.replace(path)
    return path


def load_toy_state(name: str, pretrain_if_missing: bool = True) -> dict:
    """The pre-trained toy weights of backbone ``name`` (a state dict), pre-training them first if no file
    passes its check and ``pretrain_if_missing``."""
    path = find_toy_weights(name)
    if path is None:
        if not pretrain_if_missing:
            raise WeightsError(
                f"no toy weights for {name} on this machine; make them with `hsnet pretrain --backbone {name}` "
                f"(a few minutes on a CPU), or use weights=None for a random backbone"
            )
        from .toy_pretrain import PretrainConfig, pretrain

        path = pretrain(PretrainConfig(backbone=name))
    try:
        return safe_load(path, "toy weights file")
    except CheckpointError as err:
        raise WeightsError(f"{err}; delete {path} to pre-train it again (`hsnet pretrain --backbone {name}`)") from None
