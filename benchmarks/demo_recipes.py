"""How long the demo must train: toy 1-shot mIoU and training time for several recipes.

Each recipe trains as ``hsnet demo`` does (toy fold 0, the demo's backbone: ImageNet ResNet-50 if its
file is on disk, else the toy world's pre-trained ``resnet50-w16``; batch 8, four epochs with a cosine
learning-rate decay, the best by val mIoU), then evaluates HSNet 1-shot on the demo's 300 test
episodes. ``SIZExSTEPS`` with the paper's lr is what ``hsnet demo --img-size SIZE --steps STEPS``
reports in its first HSNet row.

    python benchmarks/demo_recipes.py 98x400 98x800 130x400 [--lr 1e-3] [--out /tmp/demo_recipes]
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from hsnetlib.data import make_benchmark
from hsnetlib.demo import DEMO_EPISODES
from hsnetlib.engine import train
from hsnetlib.evaluation import evaluate
from hsnetlib.run_folder import load_best
from hsnetlib.toy_runs import DEMO, toy_config


def run(img_size: int, steps: int, lr: float, out: Path) -> str:
    recipe = replace(DEMO, img_size=img_size, steps_per_epoch=steps // DEMO.epochs)
    torch.manual_seed(0)
    t0 = time.time()
    result = train(replace(toy_config(out, recipe, overwrite=True), lr=lr))
    seconds = time.time() - t0
    model = result.model
    load_best(model, out)
    test = make_benchmark("toy", fold=0, split="test", shot=1, img_size=img_size, num_episodes=DEMO_EPISODES)
    miou = evaluate(model, test, batch_size=recipe.batch_size, progress=False).miou
    return (
        f"{img_size}px, {recipe.steps} steps, lr {lr:g}: training {seconds:.0f} s, "
        f"best val mIoU {result.best_miou:.1f}, test 1-shot mIoU {miou:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", help="SIZExSTEPS, e.g. 98x800")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default="/tmp/demo_recipes", help="run folders go here (overwritten)")
    args = parser.parse_args()
    for spec in args.recipes:
        size, steps = (int(v) for v in spec.split("x"))
        print(run(size, steps, args.lr, Path(args.out) / spec), flush=True)


if __name__ == "__main__":
    main()
