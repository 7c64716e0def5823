"""Evaluate any few-shot predictor on a benchmark's fixed episodes (the official test protocol)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .errors import HSNetError
from .metrics import IoUMeter, intersection_union
from .threads import cpu_threads

PRECISIONS = ("fp32", "bf16")  # bf16: bfloat16 autocast


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
    """ "auto" (or None): CUDA when PyTorch sees a GPU, else the CPU; "cpu", "cuda", "cuda:N" as given.
    Anything else, or a CUDA device that is not there, raises HSNetError naming it and the choices."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise HSNetError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise HSNetError(f"device {device!r} cannot run HSNet here; expected auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HSNetError(f"device {device!r}: PyTorch sees no CUDA device on this machine; use cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise HSNetError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def _check_eval_args(dataset, shot, batch_size, num_workers, max_episodes, precision) -> None:
    """Raise ValueError naming the first argument of :func:`evaluate` that cannot work."""
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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


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
    precision: str = "fp32",
    desc: str | None = None,
) -> EvalResult:
    """Run ``model.predict`` on every episode of ``dataset`` and accumulate the paper's metrics.

    model: anything with ``predict(query_img, support_imgs, support_masks, size=None) -> (B, H, W)``
        (an HSNet or a baseline). ``shot`` defaults to the dataset's and must match it.
    With ``dataset.use_original_imgsize`` predictions are upsampled to each query's original
    size; that needs ``batch_size=1``. ``max_episodes`` evaluates only the first episodes (a quick look).
    ``precision="bf16"`` runs ``predict`` under bfloat16 autocast. ``desc``: the progress bar's label
    (default: benchmark, fold and shot).
    """
    shot = dataset.shot if shot is None else shot
    _check_eval_args(dataset, shot, batch_size, num_workers, max_episodes, precision)
    device = resolve_device(device)
    if isinstance(model, torch.nn.Module):
        model.eval().to(device)
    subset = (
        dataset if max_episodes is None else torch.utils.data.Subset(dataset, range(min(max_episodes, len(dataset))))
    )
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    meter = IoUMeter(dataset.class_ids)
    bar = tqdm(loader, desc=desc or f"{dataset.benchmark} fold {dataset.fold} {shot}-shot", disable=not progress)
    amp = torch.autocast(device.type, torch.bfloat16) if precision == "bf16" else nullcontext()
    with cpu_threads(device):  # no more threads than idle cores (hsnetlib.threads)
        for batch in bar:
            gt = batch["query_mask"].to(device)
            with amp:
                pred = model.predict(
                    batch["query_img"].to(device),
                    batch["support_imgs"].to(device),
                    batch["support_masks"].to(device),
                    size=tuple(gt.shape[-2:]),
                )
            inter, union = intersection_union(pred, gt, batch["query_ignore_idx"].to(device))
            meter.update(inter, union, batch["class_id"])
            bar.set_postfix(miou=f"{meter.miou():.1f}")
    return EvalResult(
        dataset.benchmark, dataset.fold, shot, meter.miou(), meter.fb_iou(), meter.episodes, meter.class_iou()
    )
