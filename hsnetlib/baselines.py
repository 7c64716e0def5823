"""Training-free baselines that show what the learned 4D squeeze adds (used by ``hsnet demo``).

Both follow HSNet's ``predict`` signature, so :func:`hsnetlib.evaluation.evaluate` runs them
on exactly the same episodes.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from .backbone import build_backbone, check_backbone_name, extract_features
from .correlation import correlation, mask_features


class ConstantMask:
    """Predict the same label (0 background, 1 foreground) for every pixel, ignoring the supports."""

    value = 1

    def predict(self, query_img, support_imgs, support_masks, size=None):
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        return torch.full((query_img.shape[0], *size), self.value, dtype=torch.long, device=query_img.device)


class AllForeground(ConstantMask):
    """Every pixel foreground: the floor any few-shot method must beat."""

    value = 1


class AllBackground(ConstantMask):
    """Every pixel background: mIoU 0, yet an FB-IoU near 45 on most benchmarks (the background's IoU)."""

    value = 0


class CorrelationBaseline(torch.nn.Module):
    """Threshold the best support match of every query pixel (Eq. 1-2, no learning).

    score(x) = mean over the backbone's layers of max_{x'} C_l(x, x'), upsampled to the
    image, averaged over the K shots; foreground where score >= (min + max) / 2 of that image.
    """

    def __init__(self, backbone="resnet50", weights=None, net: torch.nn.Module | None = None, features=None):
        """``features``: a function (B, 3, H, W) -> the backbone's features, shallow to deep, used
        instead of running ``net`` (:meth:`of_model` passes an HSNet's ``features``)."""
        super().__init__()
        check_backbone_name(backbone)
        self.backbone_name = backbone
        self.backbone = net if net is not None else build_backbone(backbone, weights)
        self.features = features or partial(extract_features, backbone, self.backbone)

    @classmethod
    def of_model(cls, model) -> CorrelationBaseline:
        """The baseline on an HSNet's backbone, through ``model.features`` (a fast model's folded backbone:
        the same features up to float rounding)."""
        return cls(model.backbone_name, net=model.backbone, features=model.features)

    @torch.no_grad()
    def predict(self, query_img, support_imgs, support_masks, size=None):
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        B, K = support_imgs.shape[:2]
        q_feats = self.features(query_img)
        all_shots = self.features(support_imgs.flatten(0, 1))  # the K shots in one batch: (B*K, C, h, w) each
        score = 0
        for k in range(K):
            s_feats = [f.unflatten(0, (B, K))[:, k] for f in all_shots]
            s_feats = mask_features(s_feats, support_masks[:, k].float())
            maps = []
            for q, s in zip(q_feats, s_feats):
                best = correlation(q, s).flatten(-2).max(-1).values  # (B, Ha, Wa)
                maps.append(F.interpolate(best[:, None], size, mode="bilinear", align_corners=True))
            score = score + torch.cat(maps, 1).mean(1) / K  # (B, H, W)
        lo = score.flatten(1).min(1).values.view(B, 1, 1)
        hi = score.flatten(1).max(1).values.view(B, 1, 1)
        return (score >= (lo + hi) / 2).long()
