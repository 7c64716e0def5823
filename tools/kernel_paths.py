"""Run the float-comparison tests (``pytest -m numerics``) again under other CPU kernel paths of this machine.

    python tools/kernel_paths.py [--levels SSE41,AVX2] [extra pytest arguments]

A tolerance fitted to one CPU's kernels fails on another CPU. PyTorch and oneDNN pick their kernels
by instruction set at run time, and both can be told to stay below the host's own:

- ``ATEN_CPU_CAPABILITY=default``: ATen's scalar (non-vectorized) kernels;
- ``ONEDNN_MAX_CPU_ISA=<level>``: oneDNN's convolutions and matrix products of a lower ISA. The levels
  that select different float32 kernels are SSE41, AVX, AVX2 and AVX512_CORE (those above add int8 /
  bf16 / fp16 instructions); every one below the host's own is run (``--levels`` picks some of them).

Each setting runs the marked tests in a fresh process (about 2.5 minutes on a 2-core CPU); the exit
status is the first failure's.
"""

from __future__ import annotations

import os
import subprocess
import sys

# oneDNN's float32 kernel levels, lowest first, with the ISA name its verbose mode reports.
FLOAT32_LEVELS = (
    ("SSE41", "Intel SSE4.1"),
    ("AVX", "Intel AVX"),
    ("AVX2", "Intel AVX2"),
    ("AVX512_CORE", "Intel AVX-512"),
)


def host_isa() -> str:
    """The ISA oneDNN chose on this machine, as its verbose mode names it (e.g. 'Intel AVX-512 with ...')."""
    probe = "import torch; torch.nn.functional.conv2d(torch.ones(2, 64, 32, 32), torch.ones(64, 64, 3, 3))"
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return ""


def lower_levels(isa: str) -> list[str]:
    """The float32 levels strictly below the host's: a level is below if the host's ISA name extends
    a *higher* level's name (e.g. 'Intel AVX-512 with ...' is above AVX2) or names something else."""
    rank = -1
    for i, (_, name) in enumerate(FLOAT32_LEVELS):
        if isa == name or isa.startswith(name + " "):
            rank = i
    if rank < 0:
        return []  # not an x86 ISA oneDNN names here (e.g. an Arm CPU): nothing to lower
    exact = isa == FLOAT32_LEVELS[rank][1]
    return [level for level, _ in FLOAT32_LEVELS[: rank if exact else rank + 1]]


def main(extra: list[str]) -> int:
    isa = host_isa()
    levels = lower_levels(isa)
    if "--levels" in extra:
        i = extra.index("--levels")
        chosen = extra[i + 1].split(",") if i + 1 < len(extra) else []
        unknown = [lv for lv in chosen if lv not in {name for name, _ in FLOAT32_LEVELS}]
        if not chosen or unknown:
            sys.exit(f"--levels takes a comma-separated list of {', '.join(n for n, _ in FLOAT32_LEVELS)}")
        levels, extra = [lv for lv in levels if lv in chosen], extra[:i] + extra[i + 2 :]
    settings = [("ATEN_CPU_CAPABILITY", "default")] + [("ONEDNN_MAX_CPU_ISA", lv) for lv in levels]
    print(f"host oneDNN ISA: {isa or 'unknown'}; settings: {', '.join(f'{k}={v}' for k, v in settings)}", flush=True)
    status = 0
    for key, value in settings:
        print(f"== {key}={value}", flush=True)
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "numerics", "tests", "-p", "no:cacheprovider", *extra]
        rc = subprocess.run(cmd, env={**os.environ, key: value}).returncode
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
