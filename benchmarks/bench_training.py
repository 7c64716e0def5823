"""CPU/GPU training throughput (episodes per second) of one HSNet training step, toy data.

    python benchmarks/bench_training.py [--img-size 400] [--batch 8] [--steps 5] [--backbone resnet50]

Times ``train_one_epoch`` over ``--steps`` steps after one warm-up step; data loading is
excluded (a fixed batch is repeated) so the figure is the model's. Results: benchmarks/RESULTS.md.
"""

import argparse
import time

import torch

from hsnetlib import HSNet
from hsnetlib.data import make_benchmark
from hsnetlib.engine import make_scheduler, train_one_epoch
from hsnetlib.evaluation import resolve_device


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--amp", default="off")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    data = make_benchmark("toy", split="trn", img_size=args.img_size)
    batch = torch.utils.data.default_collate([data[i] for i in range(args.batch)])
    model = HSNet(args.backbone).to(device)
    opt = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    sched = make_scheduler(opt, "constant", args.steps + 1)
    train_one_epoch(model, [batch], opt, sched, device, args.amp, class_ids=data.class_ids, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_one_epoch(model, [batch] * args.steps, opt, sched, device, args.amp, class_ids=data.class_ids, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    print(
        f"{args.backbone} {args.img_size}px batch {args.batch} amp={args.amp} on {device} "
        f"({torch.get_num_threads()} threads, torch {torch.__version__}): "
        f"{args.steps * args.batch / seconds:.2f} episodes/s, {seconds / args.steps:.2f} s/step"
    )


if __name__ == "__main__":
    main()
