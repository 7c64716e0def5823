"""Quick HSNet training on the toy benchmark: the one recipe behind ``hsnet demo`` and the notebooks.

A *toy run* is an ordinary training run folder (``config.json``, ``metrics.csv``, ``last.pt``,
``best.pt``) made by :func:`hsnetlib.engine.train` from :func:`toy_config`. :func:`toy_model`
returns the best model of such a run, training it first only when the folder does not hold the
finished run already; so the training notebook trains once and the notebooks after it reuse its
folder, and a run stopped half-way continues where it stopped (``resume``).

Departures from the paper, for a CPU budget (said wherever a number is shown): 96x96 inputs
instead of 400x400, batch 8, a few hundred steps (160 in the notebooks, 900 in ``hsnet demo``), validation
on the first 100 episodes of the held-out fold. The ResNet-50 backbone has ImageNet weights
when torchvision's file is on disk (or can be downloaded); otherwise random weights whose
BatchNorm statistics are re-estimated on toy training images (``recalibrate_bn``, not in the
paper; see ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

from .backbone import build_backbone, imagenet_weights_available
from .checkpoint import load_checkpoint_file
from .engine import TrainResult, train
from .errors import WeightsError
from .model import HSNet
from .model_config import ModelConfig
from .train_config import TrainConfig


@dataclass(frozen=True)
class ToyRecipe:
    """How long and at what size a toy run trains."""

    img_size: int = 96  # square input size (paper: 400)
    batch_size: int = 8  # episodes per step (paper: 20)
    epochs: int = 4  # validation after each epoch; best.pt = best val mIoU
    steps_per_epoch: int = 40  # training steps per epoch
    val_episodes: int = 100  # first N episodes of the held-out fold's val list
    bn_batches: int = 16  # random backbone: BatchNorm statistics from 16 x batch_size training queries
    fold: int = 0
    seed: int = 0

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


NOTEBOOK = ToyRecipe()  # the training notebook, the ablations and every notebook that needs a trained model
DEMO = ToyRecipe(img_size=96, epochs=2, steps_per_epoch=450, val_episodes=100)  # hsnet demo (about 9-10 min)


def backbone_weights(backbone: str = "resnet50", download: bool = True) -> tuple[str | None, str]:
    """``("imagenet", note)`` when torchvision's ImageNet file of ``backbone`` is on disk or, with
    ``download``, can be fetched now; else ``(None, note)``: random weights. ``note`` is one line to print."""
    if imagenet_weights_available(backbone):
        return "imagenet", "backbone weights: ImageNet (torchvision IMAGENET1K_V1, found on disk)"
    if download:
        try:
            quiet = io.StringIO()
            with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):  # torch.hub's messages
                build_backbone(backbone, "imagenet")
            return "imagenet", "backbone weights: ImageNet (torchvision IMAGENET1K_V1, downloaded)"
        except WeightsError:  # offline: build_backbone says how to get the file
            pass
    return None, (
        "backbone weights: RANDOM (no ImageNet file on disk and no download possible); "
        "BatchNorm statistics re-estimated on toy images: numbers describe the mechanics, not ImageNet quality"
    )


def toy_config(logdir, recipe: ToyRecipe = NOTEBOOK, weights: str | None = None, **overrides) -> TrainConfig:
    """The :class:`~hsnetlib.engine.TrainConfig` of a toy run; ``overrides`` set other fields
    (``use_support_mask=False`` for HSNet†, ``progress=False`` ...; model fields go to ``config.model``)."""
    config = TrainConfig(
        benchmark="toy",
        fold=recipe.fold,
        model=ModelConfig(backbone="resnet50"),
        weights=weights,
        recalibrate_bn=0 if weights else recipe.bn_batches,
        img_size=recipe.img_size,
        batch_size=recipe.batch_size,
        epochs=recipe.epochs,
        max_steps_per_epoch=recipe.steps_per_epoch,
        val_episodes=recipe.val_episodes,
        seed=recipe.seed,
        logdir=str(logdir),
        progress=False,  # no progress bars in notebooks; hsnet demo turns them on
    )
    return config.with_changes(**overrides)


def toy_model(
    logdir, recipe: ToyRecipe = NOTEBOOK, weights: str | None = None, **overrides
) -> tuple[HSNet, TrainResult]:
    """The best model of the toy run in ``logdir``, training (or finishing) the run first if needed.

    Returns ``(model in eval mode, TrainResult)``; the run folder must hold the same configuration
    (else :func:`~hsnetlib.engine.train` refuses to resume and says which fields differ).
    """
    config = toy_config(logdir, recipe, weights, **overrides)
    config = replace(config, resume=(Path(logdir) / "last.pt").is_file())
    result = train(config)
    result.model.load_state_dict(load_checkpoint_file(Path(logdir) / "best.pt")["model"])
    return result.model.eval(), result
