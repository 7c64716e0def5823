"""Per-episode inference latency of ``predict``: ``hsnet bench inference`` (hsnetlib.bench.inference).

Paths timed in one process on the same weights and inputs: ``reference`` (hsnetlib.model.HSNet, the
official computation) and ``fast`` (hsnetlib.fast.FastHSNet) in fp32 and bf16, for each support-mask
kind; with FLOPs and achieved GFLOP/s against this machine's measured GEMM peak.

    python benchmarks/bench_inference.py [any flag of `hsnet bench inference`, see --help]

Results: benchmarks/RESULTS.md.
"""

import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "inference", *sys.argv[1:]]))
