"""Table 4 on this machine: the three 4D kernels in the same network (``hsnet bench kernels``).

Params, learner FLOPs, per-episode time and memory per kernel, the paper's numbers beside ours
(``data/paper/table4_kernels.csv``) and the ratios to center-pivot, which are what transfer across
machines. Every kernel runs through the reference modules (:class:`~hsnetlib.model.HSNet`): the table
compares kernels, not code paths. FLOPs and memory cover one 1-shot episode of batch 1; FLOPs
count the 4D learner and decoder only (the backbone is the same in every row).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn as nn

from ..backbone import BACKBONES
from ..cli_config import opt
from ..conv4d import KERNELS, FullConv4d
from ..data.episodes import PAPER_IMG_SIZE, check_img_size
from ..evaluation import resolve_device
from ..model import HSNet
from ..reproduce import paper_table
from .masks import episode
from .timing import check_bench_args, count_flops, cpu_peak_rise_mb, cuda_peak_mb, in_fresh_process, time_paths

KERNEL_ORDER = ("full", "separable", "center-pivot")  # Table 4's rows


@dataclass(frozen=True)
class KernelBench:
    backbone: str = opt("resnet101", "backbone of Table 4", choices=tuple(BACKBONES))
    img_size: int = opt(PAPER_IMG_SIZE, "square input size")
    repeats: int = opt(3, "timed rounds (median), after one warm-up round")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")


def learner_flops(model: HSNet, img_size: int) -> int:
    """FLOPs (2 per multiply-add) of the 4D learner + decoder on a 1-shot, batch-1 episode."""
    q, s, m = episode(img_size, device=next(model.parameters()).device)
    with torch.no_grad():
        pyramid = model.hypercorrelation(model.features(q), model.features(s[:, 0]), m[:, 0])
        return count_flops(model.hpn_learner, pyramid)


def dense_then_strided_flops(model: HSNet, img_size: int) -> int:
    """FLOPs of the 4D learner + decoder if every support-strided :class:`~hsnetlib.conv4d.FullConv4d` were
    computed at every support position and only subsampled afterwards (one reading of how Table 4 counts
    the full kernel): each such layer is counted again at stride 1 on its recorded input, on meta tensors
    (shapes only, no arithmetic), and replaces its strided count."""
    inputs: dict[nn.Module, torch.Size] = {}
    strided = [m for m in model.hpn_learner.modules() if isinstance(m, FullConv4d) and math.prod(m.stride[2:]) > 1]

    def record(layer, args, _):
        inputs.setdefault(layer, args[0].shape)  # returns None: the output is left as it is

    hooks = [m.register_forward_hook(record) for m in strided]
    try:
        total = learner_flops(model, img_size)
    finally:
        for h in hooks:
            h.remove()
    for layer, shape in inputs.items():
        x = torch.empty(shape, device="meta")
        as_built = copy.deepcopy(layer).to("meta")
        dense = copy.deepcopy(layer).to("meta")
        dense.stride = (1, 1, 1, 1)
        total += count_flops(dense, x) - count_flops(as_built, x)
    return total


def measure_kernel(kernel: str, bench: KernelBench) -> dict:
    """One row of Table 4 for ``kernel`` (on CPU: run it in a fresh process, for a clean memory peak)."""
    device = resolve_device(bench.device)
    torch.manual_seed(0)
    model = HSNet(bench.backbone, kernel=kernel).to(device).eval()
    inputs = episode(bench.img_size, device=device)
    memory = cuda_peak_mb(model.predict, *inputs) if device.type == "cuda" else cpu_peak_rise_mb(model.predict, *inputs)
    flops = learner_flops(model, bench.img_size)
    seconds = time_paths({"predict": lambda: model.predict(*inputs)}, bench.repeats, device)["predict"]
    return {
        "kernel": kernel,
        "params_M": model.num_learnable_parameters() / 1e6,
        "GFLOPs": flops / 1e9,
        "GMACs": flops / 2e9,
        "time_ms": 1000 * seconds,
        "memory_MB": memory,
    }


def kernel_table(bench: KernelBench = KernelBench(), kernels=KERNEL_ORDER, isolate: bool = True) -> pd.DataFrame:
    """Table 4 on this machine (see the module docstring); ``isolate``: each kernel in a fresh process on CPU."""
    check_bench_args(bench.repeats)
    check_img_size(bench.img_size)
    unknown = [k for k in kernels if k not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernels {unknown}; expected some of {sorted(KERNELS)}")
    dev = resolve_device(bench.device)
    if isolate and dev.type == "cpu":
        rows = [in_fresh_process(measure_kernel, k, bench) for k in kernels]
    else:
        rows = [measure_kernel(k, bench) for k in kernels]
    table = pd.DataFrame(rows).set_index("kernel")
    paper = paper_table("kernels").set_index("kernel")
    for ours, theirs in (
        ("time_ms", "time_ms"),
        ("GMACs", "GFLOPs"),
        ("memory_MB", "memory_GB"),
        ("params_M", "params_M"),
    ):
        table[f"paper_{theirs}"] = paper.loc[table.index, theirs]
        if "center-pivot" in table.index:
            table[f"{ours}_vs_CP"] = table[ours] / table.loc["center-pivot", ours]
            table[f"paper_{theirs}_vs_CP"] = table[f"paper_{theirs}"] / paper.loc["center-pivot", theirs]
    table.attrs.update(
        backbone=bench.backbone,
        img_size=bench.img_size,
        device=str(dev),
        repeats=bench.repeats,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    return table.round(3)
