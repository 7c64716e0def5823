"""Plotting helpers: de-normalized images, mask overlays, episode grids, correlation maps, curves.

Every function draws on matplotlib axes it creates or receives and returns the figure, with
titles, axis labels and legends, so notebooks stay one line per figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from .data.episodes import IMAGENET_MEAN, IMAGENET_STD

COLORS = {"support": (0.2, 0.4, 1.0), "gt": (0.1, 0.8, 0.2), "pred": (1.0, 0.25, 0.2)}


def to_image(img: torch.Tensor) -> np.ndarray:
    """ImageNet-normalized (3, H, W) tensor -> (H, W, 3) float array in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def overlay(image: np.ndarray, mask, color=(1.0, 0.25, 0.2), alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` into ``image`` (H, W, 3) where ``mask`` (H, W) is nonzero."""
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask) > 0
    out = image.copy()
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color)
    return out


def show(ax, image, title: str, mask=None, color=None) -> None:
    ax.imshow(image if mask is None else overlay(image, mask, color))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def show_supports(axes, support_imgs, support_masks) -> None:
    """Draw K supports with their masks (blue) on the first K of ``axes``."""
    for j, (img, mask) in enumerate(zip(support_imgs, support_masks)):
        show(axes[j], to_image(img), f"support {j + 1}", mask, COLORS["support"])


def episode_grid(rows: Sequence[dict], title: str = "Few-shot segmentation episodes"):
    """One row per episode: supports (blue mask) | query | ground truth (green) | prediction (red).

    rows: dicts with ``support_imgs`` (K, 3, H, W), ``support_masks`` (K, H, W), ``query_img``,
    ``query_mask`` and ``pred`` (H, W); optional ``iou`` and ``class_id``.
    """
    k = max(r["support_imgs"].shape[0] for r in rows)
    fig, axes = plt.subplots(len(rows), k + 3, figsize=(2.2 * (k + 3), 2.3 * len(rows)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        show_supports(ax_row, r["support_imgs"], r["support_masks"])
        for j in range(r["support_imgs"].shape[0], k):
            ax_row[j].axis("off")
        query = to_image(r["query_img"])
        cls = f" (class {int(r['class_id'])})" if "class_id" in r else ""
        show(ax_row[k], query, "query" + cls)
        show(ax_row[k + 1], query, "ground truth", r["query_mask"], COLORS["gt"])
        iou = f" IoU {r['iou']:.0f}" if "iou" in r else ""
        show(ax_row[k + 2], query, "prediction" + iou, r["pred"], COLORS["pred"])
    handles = [
        Patch(color=c, label=n)
        for n, c in (
            ("support mask", COLORS["support"]),
            ("ground truth", COLORS["gt"]),
            ("prediction", COLORS["pred"]),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def training_curves(history, title: str = "Training"):
    """Loss and mIoU per epoch from ``metrics.csv`` / ``TrainResult.history``."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax1.plot(history["epoch"], history["train_loss"], marker="o")
    ax1.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    ax2.plot(history["epoch"], history["train_miou"], marker="o", label="train (seen classes)")
    ax2.plot(history["epoch"], history["val_miou"], marker="s", label="val (unseen classes)")
    ax2.set(title="mIoU", xlabel="epoch", ylabel="mIoU (%)")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def correlation_maps(maps: Sequence[np.ndarray], titles: Sequence[str], support_image=None, suptitle=""):
    """Show 2D correlation maps C_l(x_q, .) over the support, optionally blended on the support image."""
    fig, axes = plt.subplots(1, len(maps), figsize=(2.4 * len(maps), 2.6), squeeze=False)
    for ax, m, t in zip(axes[0], maps, titles):
        if support_image is not None:
            ax.imshow(support_image, extent=(0, 1, 1, 0))
            im = ax.imshow(m, cmap="magma", alpha=0.65, vmin=0, vmax=1, extent=(0, 1, 1, 0))
        else:
            im = ax.imshow(m, cmap="magma", vmin=0, vmax=1)
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("support x")
        ax.set_ylabel("support y")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[0]), fraction=0.02, label="correlation")
    fig.suptitle(suptitle)
    return fig


def show_episode(item: dict, title: str = "An episode"):
    """Supports with their masks (blue), the query and its ground truth (green), from a dataset item."""
    k = item["support_imgs"].shape[0]
    fig, axes = plt.subplots(1, k + 2, figsize=(2.3 * (k + 2), 2.6), squeeze=False)
    show_supports(axes[0], item["support_imgs"], item["support_masks"])
    query = to_image(item["query_img"])
    show(axes[0, k], query, "query")
    show(axes[0, k + 1], query, "query ground truth", item["query_mask"], COLORS["gt"])
    fig.suptitle(f"{title} (class {int(item['class_id'])})")
    fig.tight_layout()
    return fig
