"""``hsnet demo``: HSNet trained and evaluated on the toy benchmark, on a laptop CPU, no downloads.

Train on fold 0's 15 training classes (1-shot episodes, as the paper), then evaluate 1-shot
and 5-shot on fold 0's 5 *unseen* classes, beside two training-free baselines on the same
episodes: "all foreground" and a correlation threshold (what Eq. 1-2 give without the 4D
learner). Writes ``results.csv``, ``predictions.png`` and the training run folder.

Departures from the paper, for a CPU budget: 96x96 inputs instead of 400x400, batch 8,
900 steps (two epochs), the first ``episodes`` test episodes per setting (the full
1000-episode protocol: ``hsnet test --benchmark toy``). The budget is about 10 minutes on two
cores; 96 px rather than 128 px because, at the same budget, the smaller inputs train more steps
and the toy model is still improving steeply at a few hundred steps
(``benchmarks/demo_recipes.py``, results in benchmarks/RESULTS.md). The ResNet-50 backbone is
random (unless ImageNet weights are already on disk); its BatchNorm statistics are then
re-estimated on 128 toy training images (``recalibrate_batchnorm``): random features become
centred per channel and their correlations discriminative (``benchmarks/bn_recalibration.py``
measures the effect on the training-free correlation baseline).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .baselines import AllForeground, CorrelationBaseline  # noqa: E402
from .checkpoint import load_checkpoint_file  # noqa: E402
from .data import make_benchmark  # noqa: E402
from .engine import train  # noqa: E402
from .errors import HSNetError  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .metrics import episode_iou  # noqa: E402
from .settings import smoke  # noqa: E402
from .toy_runs import DEMO, ToyRecipe, backbone_weights, toy_config  # noqa: E402
from .viz import episode_grid  # noqa: E402

SMOKE = ToyRecipe(img_size=64, epochs=2, steps_per_epoch=2, val_episodes=4, bn_batches=2)  # HSNET_SMOKE=1
DEMO_EPISODES, SMOKE_EPISODES = 300, 8


def prediction_rows(model, dataset, n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        item = dataset[i]
        pred = model.predict(item["query_img"][None], item["support_imgs"][None], item["support_masks"][None])[0]
        rows.append({**item, "pred": pred, "iou": episode_iou(pred, item["query_mask"])})
    return rows


def demo_recipe(steps: int | None, img_size: int | None) -> ToyRecipe:
    """The demo's recipe (smoke-sized under HSNET_SMOKE=1), with the command line's overrides."""
    recipe = SMOKE if smoke() else DEMO
    if steps is not None:
        if steps < 2:
            raise ValueError(f"--steps must be at least 2 (two epochs of at least one step), got {steps}")
        recipe = replace(recipe, steps_per_epoch=steps // recipe.epochs)
    if img_size is not None:
        if img_size < 32:
            raise ValueError(f"--img-size must be at least 32, got {img_size}")
        recipe = replace(recipe, img_size=img_size)
    return recipe


def train_demo_model(out: Path, recipe: ToyRecipe, weights, progress: bool, overwrite: bool = False):
    """Train on the toy benchmark's fold 0 into ``out/run``; -> the model with its best weights, the result."""
    config = toy_config(out / "run", recipe, weights, num_workers=0, progress=progress, overwrite=overwrite)
    result = train(config)
    model = result.model
    model.load_state_dict(load_checkpoint_file(out / "run" / "best.pt")["model"])
    return model, result


def evaluate_demo(model, recipe: ToyRecipe, episodes: int, progress: bool, out: Path) -> pd.DataFrame:
    """HSNet and the two training-free baselines, 1- and 5-shot, on the same test episodes;
    draws the first four 1-shot episodes into ``out/predictions.png``."""
    baseline = CorrelationBaseline.of_model(model)  # HSNet's (fast) backbone
    rows = []
    for shot in (1, 5):
        test = make_benchmark("toy", fold=0, split="test", shot=shot, img_size=recipe.img_size, num_episodes=episodes)
        for name, predictor in (
            ("HSNet", model),
            ("correlation threshold", baseline),
            ("all foreground", AllForeground()),
        ):
            r = evaluate(predictor, test, batch_size=recipe.batch_size, progress=progress)
            rows.append(r.row(method=name, episodes=r.episodes))
        if shot == 1:
            fig = episode_grid(prediction_rows(model, test), "HSNet on unseen toy classes (1-shot)")
            fig.savefig(out / "predictions.png", dpi=80)
    return pd.concat(rows, ignore_index=True)[["method", "benchmark", "fold", "shot", "miou", "fb_iou", "episodes"]]


def run_demo(
    out="demo_out", steps=None, img_size=None, episodes=None, seed=0, progress=True, overwrite=False
) -> pd.DataFrame:
    """Train + evaluate on the toy benchmark; returns the results table (also in ``out/results.csv``).
    A folder that holds an earlier demo is refused unless ``overwrite``."""
    t0 = time.time()
    recipe = replace(demo_recipe(steps, img_size), seed=seed)
    if episodes is not None and episodes < 4:
        raise ValueError(f"--episodes must be at least 4 (the figure shows 4 test episodes), got {episodes}")
    episodes = episodes if episodes is not None else (SMOKE_EPISODES if smoke() else DEMO_EPISODES)
    out = Path(out).expanduser()
    if (out / "run" / "last.pt").exists() and not overwrite:
        raise HSNetError(
            f"{out} already holds a demo ({out / 'run'}); add --overwrite to replace it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    weights, note = backbone_weights("resnet50", download=False)
    print(
        f"hsnet demo: toy benchmark, fold 0, ResNet-50; {note}; {recipe.img_size}x{recipe.img_size}, "
        f"{recipe.steps} training steps of {recipe.batch_size} episodes; {episodes} test episodes/shot"
    )
    torch.manual_seed(seed)
    model, result = train_demo_model(out, recipe, weights, progress, overwrite)
    print(f"trained in {time.time() - t0:.0f} s; best val mIoU {result.best_miou:.1f} (epoch {result.best_epoch})")
    table = evaluate_demo(model, recipe, episodes, progress, out)
    table.to_csv(out / "results.csv", index=False)
    print(table.to_string(index=False))
    print(
        f"backbone weights: {'ImageNet' if weights else 'random'}; total {time.time() - t0:.0f} s; "
        f"wrote {out / 'results.csv'} and {out / 'predictions.png'}"
    )
    return table
