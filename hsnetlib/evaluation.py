"""Evaluate any few-shot predictor on a benchmark's fixed episodes (the official test protocol)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .metrics import IoUMeter, intersection_union


@dataclass
class EvalResult:
    benchmark: str
    fold: int
    shot: int
    miou: float  # x100
    fb_iou: float  # x100
    episodes: int
    class_iou: dict[int, float] = field(default_factory=dict)  # class id -> fg IoU x100

    def row(self, **extra) -> pd.DataFrame:
        """A one-row DataFrame: benchmark, fold, shot, miou, fb_iou (+ extra columns)."""
        data = {
            "benchmark": self.benchmark,
            "fold": self.fold,
            "shot": self.shot,
            "miou": round(self.miou, 2),
            "fb_iou": round(self.fb_iou, 2),
            **extra,
        }
        return pd.DataFrame([data])


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(
    model,
    dataset,
    shot: int | None = None,
    device="auto",
    batch_size: int = 1,
    num_workers: int = 0,
    progress: bool = True,
    max_episodes: int | None = None,
    predict_kwargs: dict | None = None,
) -> EvalResult:
    """Run ``model.predict`` on every episode of ``dataset`` and accumulate the paper's metrics.

    model: anything with ``predict(query_img, support_imgs, support_masks, size=None) -> (B, H, W)``
        (an HSNet or a baseline). ``shot`` defaults to the dataset's and must match it.
    With ``dataset.use_original_imgsize`` predictions are upsampled to each query's original
    size; that needs ``batch_size=1``. ``max_episodes`` evaluates only the first episodes (a quick look).
    ``predict_kwargs`` go to every ``predict`` call, e.g. ``{"precision": "bf16"}`` or ``{"fused": False}`` for HSNet.
    """
    shot = dataset.shot if shot is None else shot
    if shot != dataset.shot:
        raise ValueError(f"shot={shot} but the dataset draws {dataset.shot} supports; build it with shot={shot}")
    if batch_size < 1 or num_workers < 0 or (max_episodes is not None and max_episodes < 1):
        raise ValueError(
            f"batch_size and max_episodes must be >= 1 (max_episodes None: all) and num_workers >= 0, "
            f"got {batch_size}, {max_episodes}, {num_workers}"
        )
    if len(dataset) == 0:
        raise ValueError(f"{dataset.benchmark} {dataset.split} has no episodes; check its split files")
    if dataset.use_original_imgsize and batch_size != 1:
        raise ValueError("use_original_imgsize evaluates each query at its own size: use batch_size=1")
    device = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(device)
    subset = (
        dataset if max_episodes is None else torch.utils.data.Subset(dataset, range(min(max_episodes, len(dataset))))
    )
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    meter = IoUMeter(dataset.class_ids)
    bar = tqdm(loader, desc=f"{dataset.benchmark} fold {dataset.fold} {shot}-shot", disable=not progress)
    for batch in bar:
        gt = batch["query_mask"].to(device)
        size = tuple(gt.shape[-2:])
        pred = model.predict(
            batch["query_img"].to(device),
            batch["support_imgs"].to(device),
            batch["support_masks"].to(device),
            size=size,
            **(predict_kwargs or {}),
        )
        inter, union = intersection_union(pred, gt, batch["query_ignore_idx"].to(device))
        meter.update(inter, union, batch["class_id"])
        bar.set_postfix(miou=f"{meter.miou():.1f}")
    return EvalResult(
        dataset.benchmark, dataset.fold, shot, meter.miou(), meter.fb_iou(), meter.episodes, meter.class_iou()
    )
