"""Per-episode inference latency of the fast path against the reference computation (``hsnet bench inference``).

Paths, timed in the same process on the same weights: ``reference`` (:class:`~hsnetlib.model.HSNet`,
the official computation: the network once per shot, fp32) and ``fast`` (:class:`~hsnetlib.fast.FastHSNet`,
fp32 and, when asked, bf16 autocast). Speed-ups and ``mask_agreement_%`` (pixels with the same predicted
label) are relative to the reference. On CUDA the table also gives the peak memory of one call.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

import pandas as pd
import torch

from ..backbone import BACKBONES
from ..cli_config import opt
from ..data.episodes import PAPER_IMG_SIZE, check_img_size
from ..evaluation import resolve_device
from ..fast import FastHSNet
from ..model import HSNet
from .masks import MASK_KINDS, episode
from .timing import check_bench_args, count_flops, cuda_peak_mb, gemm_peak_gflops, time_paths

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class InferenceBench:
    backbones: tuple[str, ...] = opt(("resnet50",), "backbones to time", choices=tuple(BACKBONES), type=str)
    img_size: int = opt(PAPER_IMG_SIZE, "square input size")
    repeats: int = opt(3, "timed rounds (median), after one warm-up round")
    batch: int = opt(1, "episodes per call")
    shots: tuple[int, ...] = opt((1, 5), "K values", type=int)
    precisions: tuple[str, ...] = opt(PRECISIONS, "fast-path precisions (bf16: autocast)", choices=PRECISIONS, type=str)
    masks: tuple[str, ...] = opt(MASK_KINDS, "support-mask kinds", choices=MASK_KINDS, type=str)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")


def paths_of(backbone: str, device) -> dict:
    """(path, precision) -> predict function, for a reference model and a fast one with the same weights."""
    torch.manual_seed(0)
    reference = HSNet(backbone).to(device).eval()
    fast = FastHSNet(backbone).to(device).eval()
    fast.load_state_dict(reference.state_dict())
    paths = {("reference", "fp32"): reference.predict}
    for precision in PRECISIONS:

        def predict(*inputs, bf16=precision == "bf16"):
            amp = torch.autocast(device.type, torch.bfloat16) if bf16 else nullcontext()
            with amp:
                return fast.predict(*inputs)

        paths[("fast", precision)] = predict
    return paths


def _rows(backbone, shot, mask, inputs, paths, seconds, peak) -> list[dict]:
    base, base_mask = seconds[("reference", "fp32")], paths[("reference", "fp32")](*inputs)
    rows = []
    for (path, precision), fn in paths.items():
        flops = count_flops(fn, *inputs)
        rows.append(
            {
                "backbone": backbone,
                "mask": mask,
                "shot": shot,
                "path": path,
                "precision": precision,
                "ms": 1000 * seconds[(path, precision)],
                "GFLOP": flops / 1e9,
                "GFLOP/s": flops / seconds[(path, precision)] / 1e9,
                "speedup": base / seconds[(path, precision)],
                "mask_agreement_%": 100 * (fn(*inputs) == base_mask).float().mean().item(),
                "gemm_peak_GFLOP/s": peak[precision],
                "cuda_peak_MB": cuda_peak_mb(fn, *inputs),
            }
        )
    return rows


def inference_table(bench: InferenceBench = InferenceBench()) -> pd.DataFrame:
    """One row per (backbone, mask, shot, path, precision): ms per episode, FLOPs, speed-up (module docstring)."""
    check_bench_args(bench.repeats, batch=bench.batch, shots=bench.shots)
    check_img_size(bench.img_size)
    dev = resolve_device(bench.device)
    kinds = {"fp32", *bench.precisions}
    peak = {p: gemm_peak_gflops(torch.float32 if p == "fp32" else torch.bfloat16, device=dev) for p in kinds}
    rows = []
    for backbone in bench.backbones:
        paths = paths_of(backbone, dev)
        paths = {key: fn for key, fn in paths.items() if key[0] == "reference" or key[1] in bench.precisions}
        for mask in bench.masks:
            for shot in bench.shots:
                inputs = episode(bench.img_size, shot, bench.batch, dev, mask=mask)
                seconds = time_paths({key: partial(fn, *inputs) for key, fn in paths.items()}, bench.repeats, dev)
                rows += _rows(backbone, shot, mask, inputs, paths, seconds, peak)
    table = pd.DataFrame(rows)
    table.attrs.update(
        img_size=bench.img_size,
        batch=bench.batch,
        device=str(dev),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        repeats=bench.repeats,
    )
    return table.round(2)
