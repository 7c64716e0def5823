"""Speed of one HSNet training step against the official computation (``hsnet bench training``).

A step is what :func:`hsnetlib.engine.train_one_epoch` does per batch: forward on a 1-shot
batch, cross-entropy against the query mask, backward, Adam. Two paths, each with its own copy
of the same initial weights and its own Adam:

- ``official-style``: :func:`hsnetlib.official_style.official_style_logits`, the official
  training computation (backbone without gradients, dense Eq. 2, channel-major learner), fp32;
- ``fused``: ``model(query, support, mask)``, hsnetlib's training call (:mod:`hsnetlib.fastpath`
  with autograd), in fp32 and, when asked, under AMP (bf16 or fp16 with a GradScaler).

Time: median of ``repeats`` interleaved rounds after a warm-up round (:func:`hsnetlib.profile.time_paths`).
Memory: CUDA: peak allocated during one step. CPU: the rise of the process's peak resident set
during one step, in a fresh process per path, after a small warm-up step (64 px, batch 1) that
builds what every step reuses (Adam state, gradients). The fused path's backbone weights in
oneDNN's layout depend on the batch shape, so the set for the measured shape is built, and
counted, in the measured step.
Inputs are random (query, support, ground truth) with support masks of one kind of
:func:`hsnetlib.profile.bench_masks`: the fast path's gain depends on the mask's extent.
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import resource
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F

from .engine import autocast, optimizer_step
from .errors import HSNetError
from .evaluation import resolve_device
from .model import HSNet
from .official_style import official_style_logits
from .profile import check_bench_args, cuda_peak_mb, episode, time_paths
from .train_config import AMP_MODES

SETTINGS = ((400, 2), (128, 8))  # (img_size, batch): the paper's size, and the demo's
PATHS = ("official-style", "fused")


def training_step(model: HSNet, optimizer, path: str, query, support, mask, gt, amp="off", scaler=None) -> float:
    """One step of ``path`` on a batch: (B,3,H,W), (B,3,H,W), (B,H,W), (B,H,W) long -> the loss."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")
    with autocast(query.device, amp):
        if path == "official-style":
            logits = official_style_logits(model, query, support, mask)
        else:
            logits = model(query, support, mask)
        loss = F.cross_entropy(logits.float(), gt)
    optimizer_step(loss, optimizer, scaler)
    return loss.item()


def _batch(img_size: int, batch: int, mask: str, device, seed: int = 0):
    """(query, support, support mask, query ground truth) of a random 1-shot batch."""
    q, s, m = episode(img_size, 1, batch, device, seed, mask)
    gt = (torch.rand(batch, img_size, img_size, generator=torch.Generator().manual_seed(seed + 1)) > 0.5).long()
    return q, s[:, 0], m[:, 0], gt.to(device)


def _trainer(base: HSNet, amp: str, device):
    """A copy of ``base`` in training mode, its Adam (the paper's lr) and a GradScaler for fp16."""
    model = copy.deepcopy(base).train()
    optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return model, optimizer, scaler


def peak_memory_mb(path: str, backbone: str, img_size: int, batch: int, mask: str, device: str, amp="off") -> float:
    """Peak memory of one training step of ``path`` (MB); on CPU call it in a fresh process."""
    device = resolve_device(device)
    torch.manual_seed(0)
    model, optimizer, scaler = _trainer(HSNet(backbone).to(device), amp, device)
    step = partial(training_step, model, optimizer, path, amp=amp, scaler=scaler)
    step(*_batch(64, 1, mask, device))  # warm-up: Adam state, gradients, cached backbone copy
    inputs = _batch(img_size, batch, mask, device)
    if device.type == "cuda":
        return cuda_peak_mb(step, inputs)
    with open("/proc/self/statm") as f:
        base_kb = int(f.read().split()[1]) * resource.getpagesize() // 1024
    step(*inputs)
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb, 0) / 1024


def training_table(
    backbone="resnet50", settings=SETTINGS, masks=("box", "scattered"), repeats=3, device="auto", amp="off", memory=True
) -> pd.DataFrame:
    """ms per step, episodes/s, peak memory and speed-up over official-style for every
    (img_size, batch) in ``settings`` and support-mask kind in ``masks``; ``amp`` adds a row of
    the fused path under that autocast (bf16 | fp16), the baselines staying fp32."""
    for img_size, batch in settings:
        check_bench_args(repeats, img_size, batch)
    if amp not in AMP_MODES:
        raise HSNetError(f"amp must be one of {list(AMP_MODES)}, got {amp!r}")
    dev = resolve_device(device)
    torch.manual_seed(0)
    base = HSNet(backbone).to(dev)
    variants = [(p, "off") for p in PATHS] + ([("fused", amp)] if amp != "off" else [])
    rows = []
    for img_size, batch in settings:
        for mask in masks:
            inputs = _batch(img_size, batch, mask, dev)
            steps = {}
            for path, a in variants:
                model, optimizer, scaler = _trainer(base, a, dev)
                steps[(path, a)] = partial(training_step, model, optimizer, path, *inputs, amp=a, scaler=scaler)
            seconds = time_paths(steps, repeats, dev)
            for (path, a), sec in seconds.items():
                rows.append(
                    {
                        "img_size": img_size,
                        "batch": batch,
                        "mask": mask,
                        "path": path,
                        "amp": a,
                        "ms_per_step": 1000 * sec,
                        "episodes_per_s": batch / sec,
                        "speedup": seconds[("official-style", "off")] / sec,
                        "peak_MB": _memory(path, backbone, img_size, batch, mask, dev, a) if memory else float("nan"),
                    }
                )
    table = pd.DataFrame(rows)
    table.attrs.update(
        backbone=backbone, device=str(dev), torch=torch.__version__, threads=torch.get_num_threads(), repeats=repeats
    )
    return table.round(2)


def _memory(path, backbone, img_size, batch, mask, dev, amp) -> float:
    if dev.type == "cuda":
        return peak_memory_mb(path, backbone, img_size, batch, mask, str(dev), amp)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(peak_memory_mb, path, backbone, img_size, batch, mask, str(dev), amp).result()
