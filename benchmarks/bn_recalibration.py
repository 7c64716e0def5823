"""Why a random backbone gets its BatchNorm statistics re-estimated (``recalibrate_batchnorm``).

The random-backbone rows of the demo, notebook 1 and RESULTS.md use it.

Training-free correlation baseline (threshold of the best support match, Eq. 1-2) on the toy
benchmark's unseen fold-0 classes, random ResNet-50, with and without the re-estimation.

    python benchmarks/bn_recalibration.py [--episodes 200] [--img-size 128]
"""

import argparse

import torch
from torch.utils.data import DataLoader

from hsnetlib.backbone import build_backbone, recalibrate_batchnorm
from hsnetlib.baselines import CorrelationBaseline
from hsnetlib.data import make_benchmark
from hsnetlib.evaluation import evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=16, help="batches of 8 training queries")
    args = parser.parse_args()
    torch.manual_seed(0)
    test = make_benchmark("toy", fold=0, split="test", img_size=args.img_size, num_episodes=args.episodes)
    net = build_backbone("resnet50")
    before = evaluate(CorrelationBaseline(net=net), test, batch_size=8, progress=False).miou
    train = make_benchmark("toy", fold=0, split="trn", img_size=args.img_size)
    loader = DataLoader(train, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    recalibrate_batchnorm(net, (b["query_img"] for _, b in zip(range(args.batches), loader)))
    after = evaluate(CorrelationBaseline(net=net), test, batch_size=8, progress=False).miou
    print(
        f"correlation baseline, toy fold 0, 1-shot, {args.episodes} episodes, random ResNet-50, "
        f"{args.img_size}px: mIoU {before:.1f} with init BatchNorm stats, {after:.1f} after re-estimation"
    )


if __name__ == "__main__":
    main()
