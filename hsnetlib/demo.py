"""``hsnet demo``: HSNet trained and evaluated on the toy benchmark, on a laptop CPU, no downloads.

Train on fold 0's 15 training classes (1-shot episodes, as the paper), then evaluate 1-shot
and 5-shot on fold 0's 5 *unseen* classes, beside training-free baselines on the same episodes:
"all foreground" and a correlation threshold (what Eq. 1-2 give without the 4D learner), the
latter with the pre-trained and with a random backbone, so the table shows what the learner adds
and what pre-training adds. Writes ``results.csv``, ``predictions.png``, the training run folder
and ``examples/`` (a query, a support and its mask as files, for the ``hsnet segment`` command the
demo prints last).

Backbone: ResNet-50 with ImageNet weights when torchvision's file is on disk, else the toy world's
pre-trained ``resnet50-w16`` (``weights="toy"``, shipped with the package; pre-trained on first use,
about 4-5 minutes, if its file is missing). Departures from the paper, for a CPU budget: 98x98
inputs instead of 400x400, batch 8, 800 steps with a cosine learning-rate decay, the first
``episodes`` test episodes per setting (the full 1000-episode protocol: ``hsnet test --benchmark toy``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .baselines import AllForeground, CorrelationBaseline  # noqa: E402
from .data import make_benchmark  # noqa: E402
from .engine import train  # noqa: E402
from .errors import HSNetError  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .metrics import episode_iou  # noqa: E402
from .run_folder import load_best  # noqa: E402
from .settings import smoke  # noqa: E402
from .toy_runs import DEMO, ToyBackbone, ToyRecipe, default_backbone, toy_backbone_model, toy_config  # noqa: E402
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


def train_demo_model(out: Path, recipe: ToyRecipe, backbone: ToyBackbone, progress: bool, overwrite: bool = False):
    """Train on the toy benchmark's fold 0 into ``out/run``; -> the model with its best weights, the result."""
    config = toy_config(out / "run", recipe, backbone, num_workers=0, progress=progress, overwrite=overwrite)
    result = train(config)
    model = result.model
    load_best(model, out / "run")
    return model, result


def random_counterpart(backbone: ToyBackbone) -> ToyBackbone:
    """The same network with random weights (BatchNorm statistics re-estimated on toy images)."""
    return ToyBackbone(backbone.name, None, f"backbone: {backbone.name}, RANDOM weights")


def evaluate_demo(model, recipe: ToyRecipe, backbone: ToyBackbone, episodes: int, progress: bool, out: Path):
    """HSNet and the training-free baselines, 1- and 5-shot, on the same test episodes;
    draws the first four 1-shot episodes into ``out/predictions.png``."""
    random_net = toy_backbone_model(random_counterpart(backbone), recipe)
    methods = (
        ("HSNet", model),
        (f"correlation threshold, {backbone.weights} backbone", CorrelationBaseline.of_model(model)),
        ("correlation threshold, random backbone", CorrelationBaseline.of_model(random_net)),
        ("all foreground", AllForeground()),
    )
    rows = []
    for shot in (1, 5):
        test = make_benchmark("toy", fold=0, split="test", shot=shot, img_size=recipe.img_size, num_episodes=episodes)
        for name, predictor in methods:
            desc = f"test {name.split(',')[0]} {shot}-shot"
            r = evaluate(predictor, test, batch_size=recipe.batch_size, progress=progress, desc=desc)
            rows.append(r.row(method=name, episodes=r.episodes))
        if shot == 1:
            title = f"HSNet on the first 4 test episodes of unseen toy classes (fold 0, 1-shot, {recipe.img_size} px)"
            episode_grid(prediction_rows(model, test), title).savefig(out / "predictions.png", dpi=80)
            write_examples(test, out / "examples")
    table = pd.concat(rows, ignore_index=True)[["method", "benchmark", "fold", "shot", "miou", "fb_iou", "episodes"]]
    return table.assign(
        img_size=recipe.img_size, backbone=backbone.name, weights=backbone.weights, steps=recipe.steps, seed=recipe.seed
    )


def write_examples(dataset, folder: Path) -> dict[str, Path]:
    """The first test episode's query, support and support mask as files, at their original size."""
    folder.mkdir(parents=True, exist_ok=True)
    ep = dataset.episode(0)
    paths = {"query": folder / "query.png", "support": folder / "support.png", "mask": folder / "support_mask.png"}
    dataset.read_image(ep.query_name).save(paths["query"])
    dataset.read_image(ep.support_names[0]).save(paths["support"])
    mask, _ = dataset.read_mask(ep.support_names[0], ep.class_id)  # (H, W) bool
    Image.fromarray(mask.astype(np.uint8) * 255).save(paths["mask"])
    return paths


LEGEND = (
    "mIoU: mean over the 5 unseen classes of the foreground IoU (the paper's metric); FB-IoU: mean of foreground\n"
    "and background IoU. correlation threshold: Eq. (1)-(2) without the 4D learner (best support match per query\n"
    "pixel, thresholded); all foreground: every pixel predicted as object (a floor)."
)


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
    backbone = default_backbone()
    print(
        f"hsnet demo: toy benchmark, fold 0; {backbone.note}; {recipe.img_size}x{recipe.img_size}, "
        f"{recipe.steps} training steps of {recipe.batch_size} episodes; {episodes} test episodes/shot"
    )
    torch.manual_seed(seed)
    model, result = train_demo_model(out, recipe, backbone, progress, overwrite)
    print(f"trained in {time.time() - t0:.0f} s; best val mIoU {result.best_miou:.1f} (epoch {result.best_epoch})")
    table = evaluate_demo(model, recipe, backbone, episodes, progress, out)
    table.to_csv(out / "results.csv", index=False)
    print(table[["method", "shot", "miou", "fb_iou", "episodes"]].to_string(index=False))
    print(LEGEND)
    ex, ckpt = out / "examples", out / "run" / "best.pt"
    print(
        f"total {time.time() - t0:.0f} s; wrote {out / 'results.csv'}, {out / 'predictions.png'}, {ex}/\n"
        f"checkpoint: {ckpt}\nnext, segment the example query (or your own images) with it:\n"
        f"  hsnet segment --load {ckpt} --query {ex / 'query.png'} --support {ex / 'support.png'} "
        f"--mask {ex / 'support_mask.png'} --out {out / 'segmented.png'}"
    )
    return table
