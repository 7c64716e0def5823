"""``hsnet demo``: HSNet trained and evaluated on the toy benchmark, on a laptop CPU, no downloads.

Train on fold 0's 15 training classes (1-shot episodes, as the paper), then evaluate 1-shot
and 5-shot on fold 0's 5 *unseen* classes, beside two training-free baselines on the same
episodes: "all foreground" and a correlation threshold (what Eq. 1-2 give without the 4D
learner). Writes ``results.csv``, ``predictions.png`` and the training run folder.

Departures from the paper, for a CPU budget: 128x128 inputs instead of 400x400, batch 8,
a fixed number of steps, the first ``episodes`` test episodes per setting (the full
1000-episode protocol: ``hsnet test --benchmark toy``). The ResNet-50 backbone is random
(unless ImageNet weights are already on disk); its BatchNorm statistics are then re-estimated
on 128 toy training images (``recalibrate_batchnorm``): random features become centred per
channel and their correlations discriminative (``benchmarks/bn_recalibration.py`` measures
the effect on the training-free correlation baseline; results in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .backbone import imagenet_weights_available  # noqa: E402
from .baselines import AllForeground, CorrelationBaseline  # noqa: E402
from .config import smoke  # noqa: E402
from .data import make_benchmark  # noqa: E402
from .engine import TrainConfig, train  # noqa: E402
from .evaluation import evaluate  # noqa: E402
from .metrics import intersection_union  # noqa: E402
from .viz import episode_grid  # noqa: E402

DEMO_STEPS, DEMO_IMG_SIZE, DEMO_EPISODES, DEMO_BATCH = 500, 128, 300, 8
BN_BATCHES = 16  # random backbone: BatchNorm statistics re-estimated on 16 x 8 training queries
SMOKE_STEPS, SMOKE_IMG_SIZE, SMOKE_EPISODES = 4, 64, 8


def prediction_rows(model, dataset, n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        item = dataset[i]
        pred = model.predict(item["query_img"][None], item["support_imgs"][None], item["support_masks"][None])[0]
        inter, union = intersection_union(pred[None], item["query_mask"][None])
        rows.append({**item, "pred": pred, "iou": 100 * float(inter[0, 1]) / max(float(union[0, 1]), 1)})
    return rows


def run_demo(out="demo_out", steps=None, img_size=None, episodes=None, seed=0, progress=True) -> pd.DataFrame:
    """Train + evaluate on the toy benchmark; returns the results table (also in ``out/results.csv``)."""
    t0 = time.time()
    quick = smoke()
    steps = steps or (SMOKE_STEPS if quick else DEMO_STEPS)
    img_size = img_size or (SMOKE_IMG_SIZE if quick else DEMO_IMG_SIZE)
    episodes = episodes or (SMOKE_EPISODES if quick else DEMO_EPISODES)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = "imagenet" if imagenet_weights_available("resnet50") else None
    backbone_note = (
        "ImageNet weights (found on disk)"
        if weights
        else "RANDOM weights (no ImageNet weights on disk; BatchNorm statistics re-estimated on toy images)"
    )
    print(
        f"hsnet demo: toy benchmark, fold 0, ResNet-50 backbone with {backbone_note}; {img_size}x{img_size}, "
        f"{steps} training steps of {DEMO_BATCH} episodes; {episodes} test episodes/shot"
    )
    torch.manual_seed(seed)
    config = TrainConfig(
        benchmark="toy",
        fold=0,
        backbone="resnet50",
        weights=weights,
        img_size=img_size,
        batch_size=DEMO_BATCH,
        epochs=2,
        recalibrate_bn=0 if weights else BN_BATCHES,
        max_steps_per_epoch=max(1, steps // 2),
        val_episodes=max(episodes // 3, 4),
        num_workers=0 if quick else 1,
        seed=seed,
        logdir=str(out / "run"),
        progress=progress,
    )
    result = train(config)
    model = result.model
    model.load_state_dict(torch.load(out / "run" / "best.pt", map_location="cpu", weights_only=True)["model"])
    print(f"trained in {time.time() - t0:.0f} s; best val mIoU {result.best_miou:.1f} (epoch {result.best_epoch})")

    baseline = CorrelationBaseline("resnet50", net=model.backbone)
    rows = []
    for shot in (1, 5):
        test = make_benchmark("toy", fold=0, split="test", shot=shot, img_size=img_size, num_episodes=episodes)
        for name, predictor in (
            ("HSNet", model),
            ("correlation threshold", baseline),
            ("all foreground", AllForeground()),
        ):
            r = evaluate(predictor, test, batch_size=DEMO_BATCH, progress=progress)
            rows.append(r.row(method=name, episodes=r.episodes))
        if shot == 1:
            fig = episode_grid(prediction_rows(model, test), "HSNet on unseen toy classes (1-shot)")
            fig.savefig(out / "predictions.png", dpi=80)
    table = pd.concat(rows, ignore_index=True)[["method", "benchmark", "fold", "shot", "miou", "fb_iou", "episodes"]]
    table.to_csv(out / "results.csv", index=False)
    print(table.to_string(index=False))
    print(
        f"backbone weights: {'ImageNet' if weights else 'random'}; total {time.time() - t0:.0f} s; "
        f"wrote {out / 'results.csv'} and {out / 'predictions.png'}"
    )
    return table
