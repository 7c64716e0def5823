"""What the toy world's pre-trained backbone changes (benchmarks/RESULTS.md, "The toy backbone").

    python benchmarks/toy_backbone.py separation [--episodes 200] [--backbone resnet50-w16]
    python benchmarks/toy_backbone.py hsnet [--seeds 0 1 2] [--backbone resnet50-w16]
    python benchmarks/toy_backbone.py widths [--widths 8 16 32]

- ``separation``: per correlated layer, the AUROC of the best support-masked correlation (Eq. 1-2, no
  learning) for target vs all other query pixels and vs the pixels of the query's other objects,
  with random (BatchNorm re-estimated) and with pre-trained weights (hsnetlib.analysis.separation).
- ``hsnet``: HSNet trained with the notebooks' toy recipe on each backbone, one run per seed, test
  mIoU on the first 300 episodes of fold 0's unseen classes, beside the training-free correlation
  baseline of each backbone.
- ``widths``: per width, pre-training time (1000 steps, the ``hsnet pretrain`` default, always run
  afresh into the cache), the training step time of the toy recipe (epochs 2-4, validation
  included) and the test mIoU of one toy run (seed 0), one run at a time.
Run folders go to ``--runs`` (default: benchmarks/runs-toy-backbone); weights to the cache.
"""

import argparse
import time
from dataclasses import replace

import pandas as pd

from hsnetlib.analysis import separation as measure
from hsnetlib.baselines import CorrelationBaseline
from hsnetlib.data import make_benchmark
from hsnetlib.evaluation import evaluate
from hsnetlib.toy_backbone import SHIPPED_SHA256
from hsnetlib.toy_pretrain import PretrainConfig, pretrain
from hsnetlib.toy_runs import NOTEBOOK, ToyBackbone, ToyRun, toy_backbone_model, toy_model, toy_models

LAYERS = [f"level {p} · {i + 1}" for p, n in ((1, 4), (2, 6), (3, 3)) for i in range(n)]  # ResNet-50's 13


def backbones(name: str) -> dict[str, ToyBackbone]:
    return {
        "random": ToyBackbone(name, None, f"{name}, random weights"),
        "pre-trained": ToyBackbone(name, "toy", f"{name}, weights='toy'"),
    }


def test_set(episodes: int = 300):
    return make_benchmark("toy", fold=0, split="test", img_size=NOTEBOOK.img_size, num_episodes=episodes)


def separation(args) -> pd.DataFrame:
    test = test_set(args.episodes)
    tables = []
    for label, backbone in backbones(args.backbone).items():
        model = toy_backbone_model(backbone)
        t = time.time()
        table = measure(model.features, test, LAYERS, args.episodes, others=test.other_objects)
        print(f"{label}: {time.time() - t:.0f} s", flush=True)
        tables.append(table.set_index("layer")[["auroc", "auroc_vs_objects"]].add_prefix(f"{label} "))
    return pd.concat(tables, axis=1).round(3)


def hsnet_runs(args) -> pd.DataFrame:
    test = test_set()
    runs = {
        (label, seed): ToyRun(f"{args.runs}/{args.backbone}-{label}-seed{seed}", replace(NOTEBOOK, seed=seed), backbone)
        for label, backbone in backbones(args.backbone).items()
        for seed in args.seeds
    }
    t = time.time()
    trained = dict(zip(runs, toy_models(list(runs.values()))))
    print(f"{len(runs)} toy runs in {time.time() - t:.0f} s (two at a time)", flush=True)
    baselines = {
        label: evaluate(CorrelationBaseline.of_model(toy_backbone_model(b)), test, batch_size=8, progress=False).miou
        for label, b in backbones(args.backbone).items()
    }
    rows = [
        {
            "backbone": label,
            "seed": seed,
            "HSNet test mIoU": evaluate(model, test, batch_size=8, progress=False).miou,
            "best val mIoU": run.best_miou,
            "correlation baseline": baselines[label],
        }
        for (label, seed), (model, run) in trained.items()
    ]
    table = pd.DataFrame(rows)
    print(table.round(1).to_string(index=False))
    summary = table.groupby("backbone", sort=False).agg(
        mean=("HSNet test mIoU", "mean"), std=("HSNet test mIoU", "std"), baseline=("correlation baseline", "first")
    )
    return summary.round(1)


def widths(args) -> pd.DataFrame:
    test = test_set()
    rows = []
    for width in args.widths:
        name = f"resnet50-w{width}"
        t = time.time()
        path = pretrain(PretrainConfig(backbone=name, progress=False))  # timed afresh (into the cache), every width
        pretrain_s = time.time() - t
        shipped = SHIPPED_SHA256.get(name)
        print(f"{path.name}" + (f" (shipped: {shipped[:8]}...)" if shipped else ""), flush=True)
        t = time.time()
        model, run = toy_model(f"{args.runs}/{name}-width", NOTEBOOK, backbones(name)["pre-trained"])
        train_s = time.time() - t
        rows.append(
            {
                "backbone": name,
                "backbone params (M)": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                "pre-training (s)": round(pretrain_s),
                "toy run (s, 400 steps + validation)": round(train_s),
                "train step (ms)": round(1000 * run.history.seconds.iloc[1:].mean() / NOTEBOOK.steps_per_epoch),
                "test mIoU (seed 0)": evaluate(model, test, batch_size=8, progress=False).miou,
            }
        )
        print(rows[-1], flush=True)
    return pd.DataFrame(rows).round(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("separation", "hsnet", "widths"))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--backbone", default="resnet50-w16")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--runs", default="benchmarks/runs-toy-backbone")
    args = parser.parse_args()
    table = {"separation": separation, "hsnet": hsnet_runs, "widths": widths}[args.what](args)
    print(table.to_string())


if __name__ == "__main__":
    main()
