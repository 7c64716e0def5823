"""Timing, FLOP and memory primitives shared by the benchmarks (conventions: :mod:`hsnetlib.bench`)."""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import HSNetError
from ..fast import ops


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


def count_flops(fn, *inputs) -> int:
    """FLOPs (2 per multiply-add) of one ``fn(*inputs)``, the fast backbone's fused convolutions included."""
    ops.count_fused_convolutions()
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*inputs)
    return counter.get_total_flops()


def cuda_peak_mb(fn, *inputs) -> float | None:
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


def rss_now_kb() -> int:
    """This process's resident set size now (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024


def cpu_peak_rise_mb(fn, *inputs) -> float:
    """How far one ``fn(*inputs)`` raises this process's peak resident set (MB); call it in a fresh process."""
    base = rss_now_kb()
    fn(*inputs)
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, 0) / 1024


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new spawned process (CPU memory peaks need one per measurement)."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def gemm_peak_gflops(dtype=torch.float32, n: int = 2048, repeats: int = 5, device="cpu") -> float:
    """Measured matmul throughput (GFLOP/s, 2 per multiply-add) of an n x n x n product: this machine's ceiling."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    seconds = time_paths({"gemm": lambda: a @ b}, repeats, device)["gemm"]
    return 2 * n**3 / seconds / 1e9


def check_bench_args(repeats: int, img_size: int | None = None, batch: int = 1, shots=(1,)) -> None:
    """Benchmark sizes must be positive: raise HSNetError naming the one that is not."""
    for name, value in (("repeats", repeats), ("batch", batch), ("shots", min(shots, default=0))):
        if value < 1:
            raise HSNetError(f"{name} must be >= 1, got {value}")
    if img_size is not None and img_size < 32:
        raise HSNetError(f"img_size must be >= 32 (the backbone divides it by 32), got {img_size}")
