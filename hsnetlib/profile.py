"""Measuring HSNet: Table 4 (the three 4D kernels) and per-episode inference latency.

Conventions, stated once:
- FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts one multiply-add
  as **2** FLOPs. We also report GMACs (= GFLOPs / 2): at 400x400 with ResNet-101 the
  center-pivot learner counts 18.1 GMACs (36.3 GFLOPs), closest to the paper's 20.56 G, so
  the paper most likely counts multiply-adds (benchmarks/RESULTS.md).
- FLOPs, time and memory are for a 1-shot episode of batch 1. FLOPs and the "learner" column
  cover the 4D learner + decoder only (the backbone is the same for every kernel).
- Time: median of ``repeats`` calls after one warm-up, CUDA-synchronized on GPU; the inference
  table interleaves its paths round by round (:func:`time_paths`) so they share the machine's load.
- Memory: CUDA: ``torch.cuda.max_memory_allocated`` during the episode. CPU: the increase of
  the process's peak resident set size (``ru_maxrss``) during the episode, measured in a fresh
  process per kernel so that one kernel's peak cannot hide another's.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from .errors import HSNetError
from .evaluation import resolve_device
from .model import HSNet
from .official_style import official_style_predict

KERNEL_NAMES = ("full", "separable", "center-pivot")

# Table 4 of the paper (ResNet-101, PASCAL-5i, 400x400, Intel i7-7820X + Titan Xp). Also in data/paper/table4.csv.
PAPER_TABLE4 = {
    "full": {"params_M": 11.3, "time_ms": 512.17, "memory_GB": 4.12, "GFLOPs": 702.35, "miou_1shot": 64.9},
    "separable": {"params_M": 4.4, "time_ms": 28.48, "memory_GB": 1.50, "GFLOPs": 28.40, "miou_1shot": 65.9},
    "center-pivot": {"params_M": 2.6, "time_ms": 25.51, "memory_GB": 1.39, "GFLOPs": 20.56, "miou_1shot": 66.2},
}


def default_img_size(device: torch.device) -> int:
    """400, the paper's size, on every device: the whole Table 4 takes about 2 minutes on a 2-core CPU
    (``hsnet bench kernels --backbone resnet101 --repeats 3``, see benchmarks/RESULTS.md)."""
    return 400


MASK_KINDS = ("box", "object", "scattered")


def bench_masks(kind: str, img_size: int, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` support masks (count, s, s) of one kind, for timing (the fast path's gain depends on it):

    - ``box``: a centred square covering 25 % of the image (a small bounding window);
    - ``object``: one ellipse whose bounding box covers about half of the image, off centre (a
      large window and many masked-in positions: the least favourable kind measured);
    - ``scattered``: nine small squares, one at a random spot in each cell of a 3x3 grid over the
      image (the window spans about the whole support grid, few positions are masked in).
    """
    s = img_size
    masks = torch.zeros(count, s, s)
    if kind == "box":
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
    """A random episode: (query (B,3,s,s), supports (B,K,3,s,s), masks (B,K,s,s)), masks of kind ``mask``
    (:func:`bench_masks`; default a centred box)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, 3, img_size, img_size, generator=g)
    s = torch.randn(batch, shot, 3, img_size, img_size, generator=g)
    m = bench_masks(mask, img_size, batch * shot, seed).view(batch, shot, img_size, img_size)
    return q.to(device), s.to(device), m.to(device)


def learner_flops(model: HSNet, img_size: int) -> int:
    """FLOPs (2 per multiply-add) of the 4D learner + decoder on a 1-shot, batch-1 episode."""
    q, s, m = episode(img_size, device=next(model.parameters()).device)
    with torch.no_grad():
        pyramid = model.hypercorrelation(model.features(q), model.features(s[:, 0]), m[:, 0])
        return count_flops(model.hpn_learner, [pyramid])


def time_predict(model: HSNet, inputs, repeats: int = 5, **kwargs) -> float:
    """Median seconds of ``model.predict(*inputs, **kwargs)`` after one warm-up call."""
    return time_paths({"predict": lambda: model.predict(*inputs, **kwargs)}, repeats, inputs[0].device)["predict"]


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def measure_kernel(kernel: str, backbone: str, img_size: int, repeats: int, device: str) -> dict:
    """One row of Table 4 for ``kernel`` (run in a fresh process on CPU for a clean memory peak).

    Every kernel runs through the reference modules (``predict(fused=False)``): the fast path
    exists for the center-pivot kernel only, and the table compares kernels, not code paths.
    """
    device = resolve_device(device)
    torch.manual_seed(0)
    model = HSNet(backbone, kernel=kernel).to(device).eval()
    inputs = episode(img_size, device=device)
    if device.type == "cuda":
        memory_mb = cuda_peak_mb(lambda *x: model.predict(*x, fused=False), inputs)
    else:
        base = _rss_now_kb()
        with torch.inference_mode():
            model.predict(*inputs, fused=False)
        memory_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, 0) / 1024
    flops = learner_flops(model, img_size)
    return {
        "kernel": kernel,
        "params_M": model.num_learnable_parameters() / 1e6,
        "GFLOPs": flops / 1e9,
        "GMACs": flops / 2e9,
        "time_ms": 1000 * time_predict(model, inputs, repeats, fused=False),
        "memory_MB": memory_mb,
    }


def kernel_table(
    backbone="resnet101", img_size=None, repeats=3, device="auto", kernels=KERNEL_NAMES, isolate=True
) -> pd.DataFrame:
    """Table 4 on this machine: params, learner FLOPs, per-episode time and memory per kernel,
    the paper's numbers beside ours, and the ratios to center-pivot (what transfers across machines).

    isolate: measure each kernel in a fresh process (CPU memory peaks need it).
    """
    check_bench_args(repeats, img_size)
    dev = resolve_device(device)
    img_size = img_size or default_img_size(dev)
    args = [(k, backbone, img_size, repeats, str(dev)) for k in kernels]
    if isolate and dev.type == "cpu":
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
            rows = list(pool.map(measure_kernel, *zip(*args)))
    else:
        rows = [measure_kernel(*a) for a in args]
    table = pd.DataFrame(rows).set_index("kernel")
    cp = table.loc["center-pivot"] if "center-pivot" in table.index else None
    for col, paper_col in (
        ("time_ms", "time_ms"),
        ("GMACs", "GFLOPs"),
        ("memory_MB", "memory_GB"),
        ("params_M", "params_M"),
    ):
        table[f"paper_{paper_col}"] = [PAPER_TABLE4[k][paper_col] for k in table.index]
        if cp is not None:
            table[f"{col}_vs_CP"] = table[col] / cp[col]
            table[f"paper_{paper_col}_vs_CP"] = table[f"paper_{paper_col}"] / PAPER_TABLE4["center-pivot"][paper_col]
    table.attrs.update(
        backbone=backbone,
        img_size=img_size,
        device=str(dev),
        repeats=repeats,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    return table.round(3)


def gemm_peak_gflops(dtype=torch.float32, n: int = 2048, repeats: int = 5, device="cpu") -> float:
    """Measured matmul throughput (GFLOP/s, 2 per multiply-add) of an n x n x n product: this machine's ceiling."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    times = []
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        a @ b
        sync()
        if i:
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def _row(backbone, shot, path, precision, seconds, flops, baseline_seconds, peak, memory_mb):
    return {
        "backbone": backbone,
        "shot": shot,
        "path": path,
        "precision": precision,
        "ms": 1000 * seconds,
        "GFLOP": flops / 1e9,
        "GFLOP/s": flops / seconds / 1e9,
        "speedup_vs_official_style": baseline_seconds / seconds,
        "gemm_peak_GFLOP/s": peak,
        "cuda_peak_MB": memory_mb,
    }


def time_paths(fns: dict, repeats: int, device="cpu") -> dict:
    """Median seconds of each zero-argument callable, the paths interleaved (one round = every
    path once, ``repeats`` rounds after a warm-up round) so that all see the same machine load;
    CUDA-synchronized when ``device`` is a CUDA device."""
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = {name: [] for name in fns}
    for i in range(repeats + 1):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def cuda_peak_mb(fn, inputs) -> float | None:
    """Peak CUDA memory allocated during one ``fn(*inputs)``, above what was allocated before (None on CPU)."""
    device = inputs[0].device
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn(*inputs)
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def count_flops(fn, inputs) -> int:
    """FLOPs (2 per multiply-add) of one ``fn(*inputs)``."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*inputs)
    return counter.get_total_flops()


def check_bench_args(repeats: int, img_size: int | None = None, batch: int = 1, shots=(1,)) -> None:
    """Benchmark sizes must be positive: raise HSNetError naming the one that is not."""
    for name, value in (("repeats", repeats), ("batch", batch), ("shots", min(shots, default=0))):
        if value < 1:
            raise HSNetError(f"{name} must be >= 1, got {value}")
    if img_size is not None and img_size < 32:
        raise HSNetError(f"img_size must be >= 32 (the backbone divides it by 32), got {img_size}")


def inference_table(
    backbones=("resnet50",),
    img_size=None,
    repeats=3,
    device="auto",
    shots=(1, 5),
    precisions=("fp32", "bf16"),
    batch=1,
    masks=MASK_KINDS,
) -> pd.DataFrame:
    """Per-episode latency of ``HSNet.predict`` (the fast path, fp32 and bf16) against two baselines
    timed in the same process, in fp32: ``official-style`` (the official code's computation,
    :mod:`hsnetlib.official_style`) and ``reference`` (``predict(fused=False)``, the test oracle).
    Times are medians of ``repeats`` interleaved rounds (:func:`time_paths`). Speed-ups and
    ``mask_agreement_%`` (pixels with the same predicted label) are relative to official-style.
    ``img_size`` defaults to 400. On CUDA the table also
    gives the peak memory of one call (``cuda_peak_MB``, above what was allocated before it).
    ``masks``: support-mask kinds (:func:`bench_masks`); the fast path's gain depends on them.
    """
    check_bench_args(repeats, img_size, batch, shots)
    dev = resolve_device(device)
    img_size = img_size or 400
    peak = {p: gemm_peak_gflops(torch.float32 if p == "fp32" else torch.bfloat16, device=dev) for p in precisions}
    peak.setdefault("fp32", gemm_peak_gflops(torch.float32, device=dev))
    rows = []
    for backbone in backbones:
        torch.manual_seed(0)
        model = HSNet(backbone).to(dev).eval()
        paths = {
            ("official-style", "fp32"): lambda *x, m=model: official_style_predict(m, *x),
            ("reference", "fp32"): lambda *x, m=model: m.predict(*x, fused=False),
        }
        for precision in precisions:
            paths[("fused", precision)] = lambda *x, m=model, p=precision: m.predict(*x, precision=p)
        for shot, mask in [(k, m) for m in masks for k in shots]:
            inputs = episode(img_size, shot, batch, dev, mask=mask)
            seconds = time_paths({key: partial(fn, *inputs) for key, fn in paths.items()}, repeats, dev)
            base = seconds[("official-style", "fp32")]
            base_mask = paths[("official-style", "fp32")](*inputs)
            for (path, precision), fn in paths.items():
                flops, memory = count_flops(fn, inputs), cuda_peak_mb(fn, inputs)
                row = _row(
                    backbone, shot, path, precision, seconds[(path, precision)], flops, base, peak[precision], memory
                )
                row["mask"] = mask
                row["mask_agreement_%"] = 100 * (fn(*inputs) == base_mask).float().mean().item()  # vs official-style
                rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(
        img_size=img_size,
        batch=batch,
        device=str(dev),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        repeats=repeats,
    )
    return table.round(2)
