"""Support masks and random episodes for timing: the fast path's gain depends on the mask's extent."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_KINDS = ("blobs", "box", "object", "scattered")  # the least favourable to the fast path first


def bench_masks(kind: str, img_size: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` support masks (count, s, s) of one kind:

    - ``blobs``: large irregular regions covering half of the image and spread over all of it, like a
      real segmentation mask of a big object or of stuff (seeded low-frequency noise on a 5x5 grid,
      upsampled bicubically and thresholded at its median): the masked Eq. (2) and the window save
      almost nothing;
    - ``box``: a centred square covering 25 % of the image (a small bounding window);
    - ``object``: one ellipse whose bounding box covers about half of the image, off centre (a
      large window and many masked-in positions);
    - ``scattered``: nine small squares, one at a random spot in each cell of a 3x3 grid over the
      image (the window spans about the whole support grid, few positions are masked in).
    """
    s = img_size
    masks = torch.zeros(count, s, s)
    if kind == "blobs":
        g = torch.Generator().manual_seed(seed)
        noise = F.interpolate(torch.randn(count, 1, 5, 5, generator=g), (s, s), mode="bicubic", align_corners=False)
        masks = (noise[:, 0] > noise.flatten(1).median(dim=1).values.view(-1, 1, 1)).float()
    elif kind == "box":
        masks[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 1
    elif kind == "object":
        y, x = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
        masks[:] = (((y - 0.45 * s) / (0.35 * s)) ** 2 + ((x - 0.55 * s) / (0.35 * s)) ** 2 <= 1).float()
    elif kind == "scattered":
        g = torch.Generator().manual_seed(seed)
        side, cell = max(s // 10, 1), s // 3
        for m in masks:
            for i in range(3):
                for j in range(3):
                    y, x = (torch.randint(0, cell - side + 1, (2,), generator=g) + torch.tensor([i, j]) * cell).tolist()
                    m[y : y + side, x : x + side] = 1
    else:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    return masks


def episode(img_size: int, shot: int = 1, batch: int = 1, device="cpu", seed: int = 0, mask: str = "box"):
    """A random episode: (query (B,3,s,s), supports (B,K,3,s,s), masks (B,K,s,s)), masks of kind ``mask``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 3, img_size, img_size, generator=g)
    s = torch.randn(batch, shot, 3, img_size, img_size, generator=g)
    m = bench_masks(mask, img_size, batch * shot, seed).view(batch, shot, img_size, img_size)
    return q.to(device), s.to(device), m.to(device)


def training_batch(img_size: int, batch: int, mask: str, device, seed: int = 0):
    """(query, support, support mask, query ground truth) of a random 1-shot batch."""
    q, s, m = episode(img_size, 1, batch, device, seed, mask)
    gt = (torch.rand(batch, img_size, img_size, generator=torch.Generator().manual_seed(seed + 1)) > 0.5).long()
    return q, s[:, 0], m[:, 0], gt.to(device)
