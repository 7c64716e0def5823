"""The toy recipe's training step on an idle CPU and beside a CPU-bound process, on PyTorch's thread
count and on the count hsnetlib.threads chooses.

    python benchmarks/busy_neighbour.py [--repeats 9]

A fast-path step of the toy recipe (resnet50-w16, 98 px, batch 8, blobs masks); median ms of
``--repeats`` steps after warm-up steps. The busy process is ``python -c "while True: pass"``.
Results: benchmarks/RESULTS.md.
"""

import argparse
import subprocess
import sys
import time
from functools import partial

import torch

from hsnetlib.bench.masks import training_batch
from hsnetlib.bench.timing import time_paths
from hsnetlib.bench.training import trainer, training_step
from hsnetlib.model import HSNet
from hsnetlib.threads import busy_cores, cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    model, optimizer, _ = trainer(HSNet("resnet50-w16"), "fast", "off", cpu)
    step = partial(training_step, model, optimizer, *training_batch(98, 8, "blobs", cpu))
    step(), step()
    threads = torch.get_num_threads()

    def step_ms() -> float:  # median of --repeats steps after a warm-up step
        return 1000 * time_paths({"step": step}, args.repeats)["step"]

    idle = step_ms()
    print(f"idle: other processes busy {busy_cores():.2f} cores; {threads} threads: {idle:.0f} ms")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        print(f"beside a busy process: other processes busy {busy_cores():.2f} cores")
        print(f"  {threads} threads (PyTorch's count): {step_ms():.0f} ms")
        with cpu_threads(cpu) as chosen:
            print(f"  {chosen} threads (hsnetlib.threads): {step_ms():.0f} ms")
    finally:
        hog.kill()
        hog.wait()


if __name__ == "__main__":
    main()
