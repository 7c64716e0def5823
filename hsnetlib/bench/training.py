"""Speed of one HSNet training step against the reference computation (``hsnet bench training``).

A step is what :func:`hsnetlib.engine.train_one_epoch` does per batch: forward on a 1-shot
batch, cross-entropy against the query mask, backward, Adam. Paths, each with its own copy of
the same initial weights and its own optimizer (:func:`hsnetlib.engine.make_optimizer`, the
training recipe's):

- ``reference``: :class:`~hsnetlib.model.HSNet`, the official training computation (backbone
  without gradients, dense Eq. 2, channel-major learner), fp32;
- ``fast``: :class:`~hsnetlib.fast.FastHSNet` with autograd, fp32 and, when asked, under AMP
  (bf16, or fp16 with a GradScaler).

Memory on CPU: the rise of the peak resident set during one step, in a fresh process per path,
after a small warm-up step (64 px, batch 1) that builds what every step reuses (optimizer state,
gradients). The fast backbone's weights in oneDNN's layout depend on the batch shape, so the set
for the measured shape is built, and counted, in the measured step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F

from ..backbone import BACKBONES
from ..cli_config import opt
from ..data.episodes import check_img_size
from ..engine import autocast, make_optimizer, optimizer_step
from ..evaluation import resolve_device
from ..fast import FastHSNet, FastOptions
from ..model import HSNet
from ..train_config import AMP_MODES, TrainConfig
from .masks import MASK_KINDS, training_batch
from .timing import check_bench_args, cpu_peak_rise_mb, cuda_peak_mb, in_fresh_process, time_paths


def parse_setting(text: str) -> tuple[int, int]:
    """``400x2`` -> (img_size 400, batch 2)."""
    size, _, batch = str(text).partition("x")
    if not (size.isdigit() and batch.isdigit()):
        raise ValueError(f"expected SIZExBATCH such as 400x2, got {text!r}")
    return int(size), int(batch)


@dataclass(frozen=True)
class TrainingBench:
    backbone: str = opt("resnet50", "backbone", choices=tuple(BACKBONES))
    settings: tuple[str, ...] = opt(("400x2", "128x8"), "SIZExBATCH: the paper's size and a small one", type=str)
    masks: tuple[str, ...] = opt(MASK_KINDS, "support-mask kinds", choices=MASK_KINDS, type=str)
    repeats: int = opt(3, "timed rounds (median), after one warm-up round")
    amp: str = opt("off", "also time the fast path under this autocast (bf16 | fp16)", choices=AMP_MODES)
    memory: bool = opt(True, "also measure each step's peak memory (a fresh process per path on CPU)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")


def training_step(model: HSNet, optimizer, query, support, mask, gt, amp="off", scaler=None) -> float:
    """One step on a batch: (B,3,H,W), (B,3,H,W), (B,H,W), (B,H,W) long -> the loss."""
    with autocast(query.device, amp):
        loss = F.cross_entropy(model(query, support, mask).float(), gt)
    optimizer_step(loss, optimizer, scaler)
    return loss.item()


def trainer(base: HSNet, path: str, amp: str, device, options: FastOptions | None = None):
    """A model of ``path`` ("reference" | "fast") with ``base``'s weights, in training mode, its optimizer
    and (fp16) GradScaler as the training recipe builds them."""
    model = HSNet(base.config) if path == "reference" else FastHSNet(base.config, options=options)
    model.load_state_dict(base.state_dict())
    model = model.to(device).train()
    optimizer, scaler = make_optimizer(model, TrainConfig(amp=amp), device)
    return model, optimizer, scaler


def peak_memory_mb(path: str, backbone: str, img_size: int, batch: int, mask: str, device: str, amp="off") -> float:
    """Peak memory of one training step of ``path`` (MB); on CPU call it in a fresh process."""
    device = resolve_device(device)
    torch.manual_seed(0)
    model, optimizer, scaler = trainer(HSNet(backbone), path, amp, device)
    step = partial(training_step, model, optimizer, amp=amp, scaler=scaler)
    step(*training_batch(64, 1, mask, device))  # warm-up: optimizer state, gradients
    inputs = training_batch(img_size, batch, mask, device)
    return cuda_peak_mb(step, *inputs) if device.type == "cuda" else cpu_peak_rise_mb(step, *inputs)


def training_table(bench: TrainingBench = TrainingBench()) -> pd.DataFrame:
    """ms per step, episodes/s, peak memory and speed-up over the reference for every setting and mask kind."""
    settings = [parse_setting(s) for s in bench.settings]
    for img_size, batch in settings:
        check_bench_args(bench.repeats, batch=batch)
        check_img_size(img_size)
    dev = resolve_device(bench.device)
    torch.manual_seed(0)
    base = HSNet(bench.backbone)
    variants = [("reference", "off"), ("fast", "off")] + ([("fast", bench.amp)] if bench.amp != "off" else [])
    rows = []
    for (img_size, batch), mask in [(s, m) for s in settings for m in bench.masks]:
        inputs = training_batch(img_size, batch, mask, dev)
        steps = {}
        for path, amp in variants:
            model, optimizer, scaler = trainer(base, path, amp, dev)
            steps[(path, amp)] = partial(training_step, model, optimizer, *inputs, amp=amp, scaler=scaler)
        seconds = time_paths(steps, bench.repeats, dev)
        for (path, amp), sec in seconds.items():
            memory = float("nan")
            if bench.memory:
                args = (path, bench.backbone, img_size, batch, mask, str(dev), amp)
                memory = peak_memory_mb(*args) if dev.type == "cuda" else in_fresh_process(peak_memory_mb, *args)
            row = dict(img_size=img_size, batch=batch, mask=mask, path=path, amp=amp, ms_per_step=1000 * sec)
            row.update(episodes_per_s=batch / sec, speedup=seconds[("reference", "off")] / sec, peak_MB=memory)
            rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(
        backbone=bench.backbone, device=str(dev), torch=torch.__version__, threads=torch.get_num_threads()
    )
    return table.round(2)
