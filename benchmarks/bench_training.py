"""One training step (forward, loss, backward, Adam) against the official computation:
``hsnet bench training`` (hsnetlib.training_speed.training_table).

    python benchmarks/bench_training.py [any flag of `hsnet bench training`, see --help]

Results: benchmarks/RESULTS.md.
"""

import sys

from hsnetlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "training", *sys.argv[1:]]))
