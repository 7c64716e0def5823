"""Few-shot segmentation metrics as the paper reports them (Sec. 4, "Evaluation metrics").

Per episode we count, for background (0) and foreground (1), the intersection and union of
prediction and ground truth, ignoring boundary pixels. Counts are accumulated *per class*:

    IoU_c  = sum_episodes(inter_fg) / max(sum_episodes(union_fg), 1)       for class c
    mIoU   = 100 * mean over the fold's classes of IoU_c
    FB-IoU = 100 * mean over {bg, fg} of  sum_c inter / sum_c union        (fold's classes)

A class with no episode counts as IoU 0 in the mean, as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def intersection_union(pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None):
    """(B, H, W) binary prediction and ground truth -> (inter, union), each (B, 2) for [bg, fg].

    Pixels where ``ignore`` is nonzero are excluded from both areas.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    valid = torch.ones_like(gt, dtype=torch.bool) if ignore is None else ignore == 0
    pred, gt = pred.long(), gt.long()
    inter, union = [], []
    for c in (0, 1):
        p, g = (pred == c) & valid, (gt == c) & valid
        i = (p & g).flatten(1).sum(1)
        inter.append(i)
        union.append(p.flatten(1).sum(1) + g.flatten(1).sum(1) - i)
    return torch.stack(inter, 1), torch.stack(union, 1)  # (B, 2) each


def episode_iou(pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None) -> float:
    """Foreground IoU x100 of one (H, W) prediction: what the explorers print beside an episode.

    Not the benchmark's mIoU, which accumulates intersections and unions per class (:class:`IoUMeter`).
    """
    inter, union = intersection_union(pred[None], gt[None], None if ignore is None else ignore[None])
    return 100 * float(inter[0, 1]) / max(float(union[0, 1]), 1)


class IoUMeter:
    """Accumulates per-class intersection / union over episodes; reports mIoU and FB-IoU (x100)."""

    def __init__(self, class_ids: Sequence[int]):
        self.class_ids = [int(c) for c in class_ids]
        self.index = {c: i for i, c in enumerate(self.class_ids)}
        self.inter = torch.zeros(len(self.class_ids), 2, dtype=torch.float64)  # (classes, [bg, fg])
        self.union = torch.zeros(len(self.class_ids), 2, dtype=torch.float64)
        self.episodes = 0

    def update(self, inter: torch.Tensor, union: torch.Tensor, class_id: torch.Tensor) -> None:
        for i, u, c in zip(inter.cpu(), union.cpu(), class_id.cpu().view(-1).tolist()):
            if c not in self.index:
                raise ValueError(f"class {c} is not among this meter's classes {self.class_ids}")
            self.inter[self.index[c]] += i
            self.union[self.index[c]] += u
            self.episodes += 1

    def class_iou(self) -> dict[int, float]:
        """Foreground IoU x100 of every class."""
        iou = self.inter[:, 1] / self.union[:, 1].clamp(min=1)
        return {c: 100 * float(v) for c, v in zip(self.class_ids, iou)}

    def miou(self) -> float:
        return 100 * float((self.inter[:, 1] / self.union[:, 1].clamp(min=1)).mean())

    def fb_iou(self) -> float:
        return 100 * float((self.inter.sum(0) / self.union.sum(0).clamp(min=1)).mean())
