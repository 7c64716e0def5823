"""Table 4 on this machine: the three 4D kernels in the same HSNet: ``hsnet bench kernels``
(hsnetlib.bench.kernels).

    python benchmarks/bench_kernels.py [any flag of `hsnet bench kernels`, see --help]

Results and the machine they came from: benchmarks/RESULTS.md.
"""

import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "kernels", *sys.argv[1:]]))
