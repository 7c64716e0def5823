"""Plotting helpers: de-normalized images, mask overlays, episode grids, correlation maps, curves.

Every function draws on matplotlib axes it creates or receives and returns the figure, with
titles, axis labels and legends, so notebooks stay one line per figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .data.episodes import IMAGENET_MEAN, IMAGENET_STD

COLORS = {"support": (0.1, 0.45, 1.0), "gt": (0.0, 0.9, 0.3), "pred": (1.0, 0.1, 0.6)}  # blue, green, magenta


def to_image(img: torch.Tensor) -> np.ndarray:
    """ImageNet-normalized (3, H, W) tensor -> (H, W, 3) float array in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (img.detach().cpu().float() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


def _binary(mask) -> np.ndarray:
    return np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask) > 0


def overlay(image: np.ndarray, mask, color=(1.0, 0.25, 0.2), alpha: float = 0.3) -> np.ndarray:
    """Lighten ``image`` (H, W, 3) where ``mask`` (H, W) is nonzero, blending in ``color``.

    The light tint alone can vanish on an object of a similar colour; :func:`draw_mask` adds
    the contour that keeps the mask readable on any image."""
    mask = _binary(mask)
    out = image.copy()
    light = 0.5 * out[mask] + 0.5  # towards white first, so the tint shows on dark and coloured objects
    out[mask] = (1 - alpha) * light + alpha * np.asarray(color)
    return out


def draw_mask(ax, mask, color, linewidth: float = 2.0) -> None:
    """The outline of ``mask`` (H, W) in ``color``, with a thin dark edge so it reads on any image."""
    mask = _binary(mask).astype(float)
    if mask.any() and not mask.all():
        ax.contour(mask, levels=[0.5], colors=["black"], linewidths=linewidth + 1.2)
        ax.contour(mask, levels=[0.5], colors=[color], linewidths=linewidth)


def show(ax, image, title: str, mask=None, color=None) -> None:
    """``image`` on ``ax``; with ``mask``, a light tint and the outline of the mask in ``color``."""
    ax.imshow(image if mask is None else overlay(image, mask, color))
    if mask is not None:
        draw_mask(ax, mask, color)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def mask_legend(fig, names=("support mask", "ground truth", "prediction")) -> None:
    """The legend of the mask colours, below the figure."""
    keys = {"support mask": "support", "ground truth": "gt", "prediction": "pred"}
    handles = [Patch(facecolor=COLORS[keys[n]], edgecolor="black", label=n) for n in names]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles))


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
    mask_legend(fig)
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
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def val_curves(runs: dict, title: str = "Validation mIoU during training", xlabel: str = "epoch"):
    """Validation mIoU per epoch of several runs (name -> ``TrainResult``) on one axis."""
    fig, ax = plt.subplots(figsize=(8.5, 3.2))
    for name, run in runs.items():
        ax.plot(run.history["epoch"], run.history["val_miou"], marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel="val mIoU (%)", title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the axes: it hides no line
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


def correlation_comparison(
    rows: dict[str, Sequence[np.ndarray]],
    titles: Sequence[str],
    query_image: np.ndarray,
    query_xy: tuple[float, float],
    support_image: np.ndarray,
    support_mask=None,
    suptitle="",
):
    """One query pixel's correlation maps C_l(x_q, .) over the support, a row per backbone (``rows``:
    label -> one map per column of ``titles``). The first column shows the query with the pixel
    (x, y fractions) marked; the support mask is outlined on every map."""
    cols = len(titles) + 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.3 * cols, 2.5 * len(rows)), squeeze=False)
    for r, (label, maps) in enumerate(rows.items()):
        q = axes[r, 0]
        q.imshow(query_image, extent=(0, 1, 1, 0))
        q.scatter([query_xy[0]], [query_xy[1]], c="yellow", marker="x", s=90, linewidths=2.5)
        q.set_title("query pixel x_q", fontsize=9)
        q.set_ylabel(label, fontsize=10)
        for ax, m, t in zip(axes[r, 1:], maps, titles):
            ax.imshow(support_image, extent=(0, 1, 1, 0))
            im = ax.imshow(m, cmap="magma", alpha=0.7, vmin=0, vmax=1, extent=(0, 1, 1, 0))
            if support_mask is not None:
                h, w = np.asarray(support_mask).shape
                ax.contour(
                    np.linspace(0, 1, w), np.linspace(0, 1, h), _binary(support_mask), [0.5], colors=[COLORS["support"]]
                )
            ax.set_title(t, fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=list(axes[:, 1:].flat), fraction=0.015, label="correlation with x_q")
    fig.suptitle(suptitle)
    return fig


def interior_point(mask: torch.Tensor) -> tuple[float, float]:
    """A pixel well inside the object of ``mask`` (H, W), as (x, y) fractions of the width and height.

    The mask's centroid can fall outside the object (a ring, a crescent); this is the pixel that
    survives the most 3x3 erosions (the one farthest from the background), ties broken by the
    first in row-major order.
    """
    m = (mask > 0).float()[None, None]  # (1, 1, H, W)
    if m.sum() == 0:
        raise ValueError("the mask is empty: there is no pixel on the object")
    while True:
        eroded = -torch.nn.functional.max_pool2d(-m, 3, stride=1, padding=1)  # min over 3x3 = erosion
        if eroded.sum() == 0:
            break
        m = eroded
    y, x = divmod(int(m.flatten().nonzero()[0]), mask.shape[-1])
    return (x + 0.5) / mask.shape[-1], (y + 0.5) / mask.shape[-2]


def show_episode(item: dict, title: str = "An episode"):
    """Supports with their masks (blue), the query and its ground truth (green), from a dataset item."""
    k = item["support_imgs"].shape[0]
    fig, axes = plt.subplots(1, k + 2, figsize=(2.3 * (k + 2), 2.6), squeeze=False)
    show_supports(axes[0], item["support_imgs"], item["support_masks"])
    query = to_image(item["query_img"])
    show(axes[0, k], query, "query")
    show(axes[0, k + 1], query, "query ground truth", item["query_mask"], COLORS["gt"])
    fig.suptitle(f"{title} (class {int(item['class_id'])})")
    mask_legend(fig, ("support mask", "ground truth"))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def save_segmentation(episode, pred: torch.Tensor, out, mask_path) -> tuple[Path, Path]:
    """Write ``out`` (supports with their masks | query | prediction; format by its suffix) and
    ``mask_path`` (the predicted mask at the query's original size, PNG, white = object); both paths
    come from :func:`hsnetlib.user_images.segmentation_outputs`. Returns them."""
    from .user_images import display_query, shrink_mask

    out, mask_path = Path(out), Path(mask_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((pred > 0).to(torch.uint8).mul_(255).numpy()).save(mask_path)  # one byte per pixel
    k = episode.support_imgs.shape[0]
    fig, axes = plt.subplots(1, k + 2, figsize=(2.6 * (k + 2), 3.3), squeeze=False)
    for j, (img, mask, size) in enumerate(zip(episode.support_imgs, episode.support_masks, episode.support_sizes)):
        img, mask = _at_aspect(img, mask, size)  # the network saw it square; shown as the file is
        show(axes[0, j], to_image(img), f"support {j + 1}", mask, COLORS["support"])
    query = to_image(display_query(episode))  # at most DISPLAY_SIDE pixels long: a figure shows no more
    show(axes[0, k], query, "query")
    show(axes[0, k + 1], query, "prediction", shrink_mask(pred, query.shape[:2]), COLORS["pred"])
    mask_legend(fig, ("support mask", "prediction"))
    fig.suptitle(f"hsnet segment: {k} support image(s) with their masks, the query and HSNet's prediction", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out, mask_path


def _at_aspect(img: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]):
    """A square network input (3, s, s) and its mask (s, s), resized back to the aspect ratio of ``size``
    (H, W), longer side s."""
    s = img.shape[-1]
    H, W = size
    target = (max(1, round(s * H / max(H, W))), max(1, round(s * W / max(H, W))))
    img = torch.nn.functional.interpolate(img[None], target, mode="bilinear", align_corners=False)[0]
    mask = torch.nn.functional.interpolate(mask[None, None].float(), target, mode="nearest")[0, 0]
    return img, mask


def kept_positions_figure(mask: torch.Tensor, grids, kept, titles, suptitle=""):
    """The support mask with the sample points of each feature grid: Eq. (1)'s align-corners resize reads
    the mask at those points only. ``grids``: (h, w) per panel; ``kept``: (h, w) bool per panel."""
    H, W = mask.shape[-2:]
    fig, axes = plt.subplots(1, len(grids), figsize=(2.8 * len(grids), 3.1), squeeze=False)
    for ax, (h, w), keep, title in zip(axes[0], grids, kept, titles):
        ax.imshow(overlay(np.ones((H, W, 3)) * 0.85, mask, COLORS["support"], alpha=0.6))
        draw_mask(ax, mask, COLORS["support"], 1.0)
        ys = torch.linspace(0, H - 1, h).view(-1, 1).expand(h, w)  # align_corners=True sample positions
        xs = torch.linspace(0, W - 1, w).view(1, -1).expand(h, w)
        keep = keep.bool()
        ax.scatter(xs[~keep], ys[~keep], s=6, c="0.45", label="masked out")
        ax.scatter(xs[keep], ys[keep], s=14, c="orange", edgecolors="black", linewidths=0.4, label="kept")
        ax.set_title(f"{title}\n{h}x{w} grid: {int(keep.sum())} kept", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].legend(loc="lower left", fontsize=7)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def query_plane_maps(maps: Sequence[torch.Tensor], titles: Sequence[str], image=None, suptitle=""):
    """2D maps over the query (e.g. mean |activation| of a 4D stage), each normalized to [0, 1]."""
    fig, axes = plt.subplots(1, len(maps), figsize=(2.4 * len(maps), 2.7), squeeze=False)
    for ax, m, t in zip(axes[0], maps, titles):
        m = m.detach().float()
        m = (m - m.min()) / (m.max() - m.min()).clamp(min=1e-12)
        if image is not None:
            ax.imshow(image, extent=(0, 1, 1, 0))
        ax.imshow(m.numpy(), cmap="viridis", alpha=0.7 if image is not None else 1.0, extent=(0, 1, 1, 0))
        ax.set_title(t, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def kernel_pairs(query_kernels: torch.Tensor, support_kernels: torch.Tensor, n: int = 8, suptitle=""):
    """The two 2D kernels of a center-pivot layer for ``n`` output channels: query plane (top row),
    support plane (bottom row); each (C_out, k, k), one colour scale per channel."""
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False)
    for j in range(n):
        pair = torch.stack([query_kernels[j], support_kernels[j]])
        lim = float(pair.abs().max())
        for i, name in enumerate(("query plane", "support plane")):
            axes[i, j].imshow(pair[i].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if j == 0:
                axes[i, j].set_ylabel(name, fontsize=8)
        axes[0, j].set_title(f"out {j}", fontsize=8)
    fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def params_vs_miou(table, title="mIoU against learnable parameters"):
    """Scatter of mean mIoU (y) against learnable parameters (x, log scale), one point per method row
    with a parameter count; ``table``: a paper table with ``method``, ``backbone``, ``mean`` and
    ``learnable_params`` ("2.6M"). Rows without a count are named under the plot, not dropped silently;
    a label that would overlap an earlier one goes below its point."""
    rows = table.dropna(subset=["learnable_params"])
    missing = table[table["learnable_params"].isna()]
    markers = {"vgg16": "o", "resnet50": "s", "resnet101": "^"}
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    placed: list[tuple[float, float]] = []  # (log10 params, mIoU) of the labels above their points
    for backbone, group in rows.groupby("backbone", sort=False):
        params = group["learnable_params"].str.rstrip("M").astype(float)
        ax.scatter(params, group["mean"], marker=markers.get(backbone, "o"), s=40, label=backbone)
        for p, m, name in zip(params, group["mean"], group["method"]):
            name = name.replace("HSNet-no-support-mask", "HSNet†")  # the paper's name for it
            near = any(abs(np.log10(p) - x) < 0.15 and abs(m - y) < 1.5 for x, y in placed)
            offset = (4, -10) if near else (4, 3)
            if not near:
                placed.append((np.log10(p), m))
            ax.annotate(name, (p, m), textcoords="offset points", xytext=offset, fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="learnable parameters (millions, log scale)", ylabel="mean mIoU (%)", title=title)
    ax.legend(title="backbone")
    if len(missing):
        names = ", ".join(f"{m} ({b})" for m, b in zip(missing["method"], missing["backbone"]))
        fig.text(0.01, 0.01, f"not shown, no parameter count in the table: {names}", fontsize=7)
    fig.tight_layout(rect=(0, 0.04 if len(missing) else 0, 1, 1))
    return fig
