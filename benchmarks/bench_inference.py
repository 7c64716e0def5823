"""Per-episode inference latency of HSNet.predict: ``hsnet bench inference`` (hsnetlib.profile.inference_table).

Three paths timed in one process on the same weights and inputs: ``official-style`` (the official
code's computation, hsnetlib/official_style.py), ``reference`` (``predict(fused=False)``, the test
oracle) and ``fused`` (the default ``predict``, hsnetlib/fastpath.py) in fp32 and bf16, for each
support-mask kind (box, object, scattered); with FLOPs and achieved GFLOP/s against this machine's
measured GEMM peak.

    python benchmarks/bench_inference.py [any flag of `hsnet bench inference`, see --help]

Results: benchmarks/RESULTS.md.
"""

import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "inference", *sys.argv[1:]]))
