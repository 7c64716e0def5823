"""How many CPU threads training and evaluation run on: no more than the cores other processes leave idle.

PyTorch runs ``torch.get_num_threads()`` threads (one per core by default) and every operator waits
for all of them. When another process keeps a core busy, the thread on that core runs only in the
time slices the scheduler leaves it, and each of the thousands of small operators of a step waits
for it: on a 2-core machine beside one CPU-bound process, a toy training step took 430-633 ms on
two threads and 221-268 ms on one (158-196 ms on two threads when the machine is idle;
``benchmarks/busy_neighbour.py``, benchmarks/RESULTS.md).

So :func:`hsnetlib.engine.train` and :func:`hsnetlib.evaluation.evaluate` on CPU look, when they
start, at how much CPU the other processes use (:func:`busy_cores`, 0.1 s of ``/proc/stat``) and run
on :func:`usable_threads`: the idle cores, at least one, never more than ``torch.get_num_threads()``.
``HSNET_THREADS=N`` runs on N threads instead, ``HSNET_THREADS=all`` on ``torch.get_num_threads()``.
Results depend on the thread count only by float rounding.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import HSNetError

log = logging.getLogger(__name__)

PROC_STAT = Path("/proc/stat")
SAMPLE_S = 0.1  # long enough for 10 scheduler ticks per core (USER_HZ = 100)


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _cpu_ticks(cores: list[int], text: str) -> tuple[int, int]:
    """(busy, total) ticks of ``cores`` from the text of /proc/stat (``cpuN user nice system idle iowait ...``)."""
    busy = total = 0
    wanted = {f"cpu{c}" for c in cores}
    for line in text.splitlines():
        name, *fields = line.split()
        if name in wanted:
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]  # everything but idle and iowait
    return busy, total


def _own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def busy_cores(sample_s: float = SAMPLE_S) -> float | None:
    """Cores of this process's CPU set that *other* processes keep busy, averaged over ``sample_s``
    seconds; None where ``/proc/stat`` cannot be read (not Linux)."""
    cores = _cores()
    try:
        busy0, total0 = _cpu_ticks(cores, PROC_STAT.read_text())
        own0, t0 = _own_seconds(), time.monotonic()
        time.sleep(sample_s)
        busy1, total1 = _cpu_ticks(cores, PROC_STAT.read_text())
        own1, t1 = _own_seconds(), time.monotonic()
    except (OSError, ValueError):
        return None
    if total1 <= total0:
        return None
    busy = len(cores) * (busy1 - busy0) / (total1 - total0)  # cores in use, this process included
    return max(0.0, busy - (own1 - own0) / (t1 - t0))


def usable_threads(busy: float | None, cores: int, current: int) -> int:
    """The thread count for ``cores`` cores of which ``busy`` are used by other processes: the idle
    cores rounded to the nearest, at least 1, at most ``current`` (``busy`` None: ``current``)."""
    if busy is None:
        return current
    return max(1, min(current, int(cores - busy + 0.5)))


def chosen_threads() -> int:
    """What :func:`cpu_threads` runs on now: ``HSNET_THREADS`` if set, else :func:`usable_threads`."""
    current = torch.get_num_threads()
    setting = os.environ.get("HSNET_THREADS", "").strip().lower()
    if setting == "all":
        return current
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise HSNetError(
                f"HSNET_THREADS must be a positive integer or 'all', got {setting!r}; unset it to run on the idle cores"
            )
        return int(setting)
    return usable_threads(busy_cores(), len(_cores()), current)


@contextmanager
def cpu_threads(device: torch.device):
    """Run the block on :func:`chosen_threads` threads when ``device`` is the CPU; restore the count after."""
    if device.type != "cpu":
        yield torch.get_num_threads()
        return
    before, threads = torch.get_num_threads(), chosen_threads()
    if threads != before:
        log.info("CPU: %d threads instead of %d (other processes keep cores busy)", threads, before)
        torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
