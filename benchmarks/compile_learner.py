"""Does ``torch.compile`` of the learner pay for fast training? Tries it and says what happened.

    python benchmarks/compile_learner.py [--img-size 128] [--batch 8] [--static]

One fast training step (ResNet-50, box mask, random weights) with the learner as it is and compiled
(``nn.Module.compile``, inductor). The mask window changes the learner's input shapes from batch to
batch, so a useful compile must be ``dynamic``; ``--static`` compiles for this one shape.
"""

import argparse
import time
import traceback

import torch

from hsnetlib import HSNet
from hsnetlib.bench.masks import training_batch
from hsnetlib.bench.timing import time_paths
from hsnetlib.bench.training import trainer, training_step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--static", action="store_true", help="dynamic=False (default: dynamic=True)")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, optimizer, _ = trainer(HSNet("resnet50"), "fast", "off", device)
    inputs = training_batch(args.img_size, args.batch, "box", device)
    step = {"step": lambda: training_step(model, optimizer, *inputs)}
    plain = 1000 * time_paths(step, 3)["step"]
    print(f"{device}, {args.img_size} px, batch {args.batch}: fast step {plain:.0f} ms", flush=True)
    model.hpn_learner.compile(dynamic=not args.static)
    try:
        t0 = time.perf_counter()
        step["step"]()
        print(f"compiled in {time.perf_counter() - t0:.1f} s; step {1000 * time_paths(step, 3)['step']:.0f} ms")
    except Exception as err:  # report the compiler's failure, do not hide it
        print(f"torch {torch.__version__}: torch.compile(dynamic={not args.static}) failed: {type(err).__name__}")
        print("".join(traceback.format_exception_only(err)).strip().splitlines()[0][:300])


if __name__ == "__main__":
    main()
