"""Pre-training the toy world's backbone, the way ImageNet pre-training precedes HSNet (``hsnet pretrain``).

What the backbone sees: images rendered like the toy benchmark's (1-3 objects with the same palette,
textures, sharing of colour and texture, backgrounds and sizes, :func:`hsnetlib.data.toy.render_scene`)
whose objects belong to ``families`` outlines drawn from a seed
(:func:`hsnetlib.data.toy_shapes.pretraining_families`: blobs and irregular polygons, none resembling a
benchmark shape). The task: label every pixel with its object's family (or background), from the
features of layer2, layer3 and layer4 (a 1x1 convolution on each, summed at layer2's resolution, FCN
style; the head is discarded). So the backbone learns outlines, while colour and texture, drawn per
object, are of no use. It never sees a benchmark class, nor a benchmark image.

Deterministic: the images come from ``seed``, the batches and augmentations from a seeded generator,
and the training runs with PyTorch's deterministic algorithms; the same machine and thread count
give the same file, byte for byte (``tests/test_toy_backbone.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from .backbone import BACKBONES
from .cli_config import opt
from .data.episodes import IMAGENET_MEAN, IMAGENET_STD, check_img_size
from .data.toy import NATIVE, OBJECT_COUNT_P, OBJECT_COUNTS, place_objects, render_scene
from .data.toy_shapes import pretraining_families
from .toy_backbone import save_toy_weights

TOY_BACKBONES = tuple(name for name, spec in BACKBONES.items() if spec.toy)


@dataclass(frozen=True)
class PretrainConfig:
    backbone: str = opt("resnet50-w16", "the narrow ResNet-50 to pre-train", choices=TOY_BACKBONES)
    families: int = opt(64, "pre-training shape families (classes)")
    images: int = opt(3000, "images rendered once and augmented (flips, quarter turns, colour channel order)")
    img_size: int = opt(98, "input size (the toy recipes')")
    batch_size: int = opt(32, "images per step")
    steps: int = opt(1000, "optimizer steps (AdamW, one-cycle cosine)")
    lr: float = opt(3e-3, "peak learning rate")
    seed: int = opt(0, "seeds the families, the images, the initialization and the batches")
    out: str | None = opt(None, "folder for the weights file (default: the cache, ~/.cache/hsnetlib/weights)", type=str)
    progress: bool = opt(True, "print the loss every 100 steps")


class SegmentationHead(nn.Module):
    """Per-pixel family logits from layer2, layer3 and layer4 features, summed at layer2's resolution."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(c, classes, 1) for c in (8 * width, 16 * width, 32 * width))

    def forward(self, net: nn.Module, img: torch.Tensor) -> torch.Tensor:
        x = net.maxpool(net.relu(net.bn1(net.conv1(img))))
        l2 = net.layer2(net.layer1(x))
        l3 = net.layer3(l2)
        l4 = net.layer4(l3)
        size = l2.shape[-2:]
        up = lambda t: F.interpolate(t, size, mode="bilinear", align_corners=False)  # noqa: E731
        return self.heads[0](l2) + up(self.heads[1](l3)) + up(self.heads[2](l4))  # (B, classes, H/8, W/8)


def render_pool(config: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-training images, resized to img_size as the benchmark's are: (N, 3, s, s) uint8, (N, s, s) uint8."""
    families = pretraining_families(config.families, config.seed)
    rs = np.random.RandomState([config.seed, 11])
    images, labels = [], []
    for _ in range(config.images):
        n = int(rs.choice(OBJECT_COUNTS, p=OBJECT_COUNT_P))
        classes = rs.choice(config.families, n, replace=False)
        img, label = render_scene(rs, place_objects(rs, classes), families, NATIVE)
        size = (config.img_size, config.img_size)
        images.append(np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR)))
        labels.append(np.asarray(Image.fromarray(label).resize(size, Image.NEAREST)))
    imgs = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, s, s)
    return imgs, torch.from_numpy(np.stack(labels))  # labels: family + 1, 0 background


def augmented_batch(imgs, labels, g: torch.Generator, batch_size: int):
    """A random batch, flipped, turned by a quarter turn and with its colour channels permuted (the labels
    follow the geometry); normalized as ImageNet, as every input of HSNet."""
    idx = torch.randint(len(imgs), (batch_size,), generator=g)
    x, y = imgs[idx].float() / 255, labels[idx].long()
    k = int(torch.randint(4, (1,), generator=g))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
    if torch.rand(1, generator=g) < 0.5:
        x, y = x.flip(3), y.flip(2)
    x = x[:, torch.randperm(3, generator=g)]
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std, y


def pretrain(config: PretrainConfig = PretrainConfig()) -> Path:
    """Pre-train ``config.backbone`` (module docstring) and save it; -> the weights file's path."""
    check_img_size(config.img_size)
    t0 = time.time()
    imgs, labels = render_pool(config)
    if config.progress:
        print(f"pre-training {config.backbone}: rendered {len(imgs)} images in {time.time() - t0:.0f} s", flush=True)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        state = _train(config, imgs, labels, t0)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    path = save_toy_weights(state, config.backbone, config.out)
    if config.progress:
        print(f"pre-trained {config.backbone} in {time.time() - t0:.0f} s: {path}", flush=True)
    return path


def _train(config: PretrainConfig, imgs, labels, t0: float) -> dict:
    torch.manual_seed(config.seed)
    net = BACKBONES[config.backbone].build().train()
    head = SegmentationHead(net.width, config.families + 1)
    params = [*net.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.15)
    g = torch.Generator().manual_seed(config.seed)
    running = 0.0
    for step in range(1, config.steps + 1):
        x, y = augmented_batch(imgs, labels, g, config.batch_size)
        logits = head(net, x)  # (B, classes, H/8, W/8)
        target = F.interpolate(y[:, None].float(), logits.shape[-2:], mode="nearest")[:, 0].long()
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
        if config.progress and step % 100 == 0:
            print(f"  step {step}/{config.steps}: loss {running:.3f} ({time.time() - t0:.0f} s)", flush=True)
    return {k: v.detach().clone() for k, v in net.eval().state_dict().items()}
