"""Quick HSNet training on the toy benchmark: the one recipe behind ``hsnet demo`` and the notebooks.

A *toy run* is an ordinary training run folder (``config.json``, ``metrics.csv``, ``last.pt``,
``best.pt``) made by :func:`hsnetlib.engine.train` from :func:`toy_config`. :func:`toy_model`
returns the best model of such a run, training it first only when the folder does not hold the
finished run already; so the training notebook trains once and the notebooks after it reuse its
folder, and a run stopped half-way continues where it stopped (``resume``).

**Which backbone** (:func:`default_backbone`): ResNet-50 with ImageNet weights when torchvision's
file is on disk, as in the paper; otherwise the toy world's own pre-trained backbone,
``resnet50-w16`` with ``weights="toy"`` (:mod:`hsnetlib.toy_backbone`: ResNet-50's layout at a
quarter of its width, pre-trained on other shape families than the benchmark's). :data:`RANDOM` is
the same network with random weights (BatchNorm statistics re-estimated on toy images, not in the
paper), for the comparison that shows what pre-training contributes.

Departures from the paper, for a CPU budget (said wherever a number is shown): 98x98 inputs
instead of 400x400 (the smallest size whose deepest level is a 4x4 grid, where 73 % of the toy's
support masks survive), batch 8 instead of 20, a few hundred steps with a cosine learning-rate
decay instead of a constant rate for many epochs, validation on the first 100 episodes of the
held-out fold's val pool (the toy keeps val and test images apart).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from .backbone import build_backbone, imagenet_weights_available
from .data import make_benchmark
from .engine import TrainResult, recalibrate_random_backbone, seed_everything, train
from .errors import WeightsError
from .model import HSNet
from .model_config import ModelConfig
from .run_folder import load_best
from .train_config import TrainConfig


@dataclass(frozen=True)
class ToyRecipe:
    """How long and at what size a toy run trains."""

    img_size: int = 98  # square input size (paper: 400)
    batch_size: int = 8  # episodes per step (paper: 20)
    epochs: int = 4  # validation after each epoch; best.pt = best val mIoU
    steps_per_epoch: int = 100  # training steps per epoch
    schedule: str = "cosine"  # learning rate 1e-3 decayed to 0 over the run (paper: constant)
    val_episodes: int = 100  # first N episodes of the held-out fold's val list
    bn_batches: int = 16  # random backbone only: BatchNorm statistics from 16 x batch_size training queries
    fold: int = 0
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


NOTEBOOK = ToyRecipe()  # the training notebook, the ablations and every notebook that needs a trained model
DEMO = ToyRecipe(epochs=4, steps_per_epoch=200)  # hsnet demo: 800 steps


@dataclass(frozen=True)
class ToyBackbone:
    """A backbone and its weights for toy runs, with the line that says so wherever a number is shown."""

    name: str  # a key of hsnetlib.backbone.BACKBONES
    weights: str | None  # "imagenet" | "toy" | None (random)
    note: str


IMAGENET = ToyBackbone("resnet50", "imagenet", "backbone: ResNet-50, ImageNet weights (torchvision IMAGENET1K_V1)")
PRETRAINED = ToyBackbone(
    "resnet50-w16",
    "toy",
    "backbone: ResNet-50 layout at width 16, pre-trained by hsnetlib on other shape families (weights='toy')",
)
RANDOM = ToyBackbone(
    "resnet50-w16",
    None,
    "backbone: ResNet-50 layout at width 16, RANDOM weights (BatchNorm statistics re-estimated on toy images)",
)


def default_backbone(download: bool = False) -> ToyBackbone:
    """:data:`IMAGENET` when torchvision's ResNet-50 file is on disk (or, with ``download``, can be
    fetched now), else :data:`PRETRAINED`."""
    if imagenet_weights_available("resnet50"):
        return IMAGENET
    if download:
        try:
            build_backbone("resnet50", "imagenet")
            return IMAGENET
        except WeightsError:  # offline
            pass
    return PRETRAINED


def toy_config(logdir, recipe: ToyRecipe = NOTEBOOK, backbone: ToyBackbone | None = None, **overrides) -> TrainConfig:
    """The :class:`~hsnetlib.engine.TrainConfig` of a toy run (``backbone``: :func:`default_backbone`
    when None); ``overrides`` set other fields (``use_support_mask=False`` for HSNet†,
    ``progress=False`` ...; model fields go to ``config.model``)."""
    backbone = backbone or default_backbone()
    config = TrainConfig(
        benchmark="toy",
        fold=recipe.fold,
        model=ModelConfig(backbone=backbone.name),
        weights=backbone.weights,
        recalibrate_bn=0 if backbone.weights else recipe.bn_batches,
        img_size=recipe.img_size,
        batch_size=recipe.batch_size,
        schedule=recipe.schedule,
        epochs=recipe.epochs,
        max_steps_per_epoch=recipe.steps_per_epoch,
        val_episodes=recipe.val_episodes,
        seed=recipe.seed,
        logdir=str(logdir),
        progress=False,  # no progress bars in notebooks; hsnet demo turns them on
    )
    return config.with_changes(**overrides)


def toy_model(
    logdir, recipe: ToyRecipe = NOTEBOOK, backbone: ToyBackbone | None = None, **overrides
) -> tuple[HSNet, TrainResult]:
    """The best model of the toy run in ``logdir``, training (or finishing) the run first if needed.

    Returns ``(model in eval mode, TrainResult)``; the run folder must hold the same configuration
    (else :func:`~hsnetlib.engine.train` refuses to resume and says which fields differ).
    """
    config = toy_config(logdir, recipe, backbone, **overrides)
    config = replace(config, resume=(Path(logdir) / "last.pt").is_file())
    result = train(config)
    load_best(result.model, logdir)
    return result.model.eval(), result


@dataclass(frozen=True)
class ToyRun:
    """One toy run to train: its folder, recipe, backbone (None: :func:`default_backbone`) and overrides."""

    logdir: str
    recipe: ToyRecipe = NOTEBOOK
    backbone: ToyBackbone | None = None
    overrides: tuple[tuple[str, object], ...] = ()  # (field, value) pairs, e.g. (("use_support_mask", False),)


def toy_models(runs: Sequence[ToyRun], workers: int | None = None) -> list[tuple[HSNet, TrainResult]]:
    """:func:`toy_model` of every run, training the unfinished ones ``workers`` at a time in child
    processes (default: one per CPU core, each on cores / workers threads). On a 2-core CPU two
    single-threaded runs side by side finish in about 0.6x the time of one after the other (small
    tensors use two threads poorly). A run's numbers depend on its thread count only by float
    rounding. Returns ``(model, result)`` per run, in order. The children are spawned, so a script
    calls this under ``if __name__ == "__main__":`` (a notebook needs nothing)."""
    todo = [r for r in runs if not _finished(r)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers or cores, len(todo)))
    if workers > 1:
        context = multiprocessing.get_context("spawn")  # no forked copy of a notebook kernel's threads
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for done in [pool.submit(_train_in_child, run, max(1, cores // workers)) for run in todo]:
                done.result()  # re-raises a child's error here
    return [toy_model(r.logdir, r.recipe, r.backbone, **dict(r.overrides)) for r in runs]


def _finished(run: ToyRun) -> bool:
    metrics = Path(run.logdir) / "metrics.csv"
    return metrics.is_file() and len(metrics.read_text().splitlines()) - 1 >= run.recipe.epochs


def _train_in_child(run: ToyRun, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    toy_model(run.logdir, run.recipe, run.backbone, **dict(run.overrides))


def toy_backbone_model(backbone: ToyBackbone, recipe: ToyRecipe = NOTEBOOK) -> HSNet:
    """An untrained HSNet on ``backbone`` (eval mode), its features ready as a toy run's are: a random
    backbone gets its BatchNorm statistics re-estimated on the same seeded training batches as a toy
    run of ``recipe`` (so the correlation baseline of :data:`RANDOM` reads the features HSNet trained on)."""
    config = toy_config("unused", recipe, backbone)
    seed_everything(config.seed)
    train_set = make_benchmark("toy", fold=recipe.fold, split="trn", img_size=recipe.img_size, seed=config.seed)
    model = HSNet(config.model, weights=backbone.weights)
    if config.recalibrate_bn:
        recalibrate_random_backbone(model, train_set, config)
    return model.eval()
