"""How long the command line takes to answer before any work: ``hsnet --help`` and ``hsnet demo --help``.

    python benchmarks/cli_startup.py [--repeats 5]

Each command runs in a fresh process (what a user waits for); the median and range of the wall times
are printed. The CLI imports torch and the library lazily, only in the subcommand that needs them.
"""

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--help"], ["demo", "--help"], ["segment", "--help"])


def wall_times(args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hsnetlib.cli", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for command in COMMANDS:
        times = wall_times(command, args.repeats)
        print(
            f"hsnet {' '.join(command)}: median {statistics.median(times):.2f} s "
            f"(range {min(times):.2f}-{max(times):.2f} s, {args.repeats} fresh processes)"
        )


if __name__ == "__main__":
    main()
