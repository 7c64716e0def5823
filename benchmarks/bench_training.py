"""One training step (forward, loss, backward, Adam), fast path against the reference computation:
``hsnet bench training`` (hsnetlib.bench.training).

    python benchmarks/bench_training.py [any flag of `hsnet bench training`, see --help]

Results: benchmarks/RESULTS.md.
"""

import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "training", *sys.argv[1:]]))
