"""The training configuration: one dataclass, the single place of every default.

Each field carries its one-line help, its choices (read from the registries: ``BACKBONES``,
``KERNELS``, ``BENCHMARKS``) and, where the official ``train.py`` spells it differently, its
command-line name (``--bsz``, ``--niter``, ``--logpath``, ``--nworker``). ``hsnet train`` is
derived from it (:func:`hsnetlib.cli_config.add_config_args`): a new field is one edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .backbone import BACKBONES
from .conv4d import KERNELS
from .data import BENCHMARKS
from .errors import HSNetError

AMP_MODES = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "cosine", "poly")


def opt(default, help: str, flags: tuple[str, ...] = (), choices=None, type=None):
    """A config field with its command-line help, optional official flag names, choices and type."""
    return field(default=default, metadata={"help": help, "flags": flags, "choices": choices, "type": type})


@dataclass
class TrainConfig:
    benchmark: str = opt("pascal", "benchmark", choices=tuple(BENCHMARKS))
    datapath: str | None = opt(None, "folder holding VOC2012/, COCO2014/, FSS-1000/ (None: $HSNET_DATA)", type=str)
    fold: int = opt(0, "held-out fold (its classes are never seen in training); FSS: 0")
    backbone: str = opt("resnet101", "frozen backbone", choices=tuple(BACKBONES))
    kernel: str = opt("center-pivot", "4D convolution kernel (Table 4)", choices=tuple(KERNELS))
    weights: str | None = opt("imagenet", "backbone init: imagenet | none (random) | PATH to a local file", type=str)
    use_support_mask: bool = opt(True, "support feature masking (Eq. 1); without it: HSNet† of Table 1")
    feature_layers: str = opt(
        "all", "ablation: 'last' correlates only the last layer per level", choices=("all", "last")
    )
    pyramid_levels: int = opt(3, "ablation: 1 keeps only the deepest level", choices=(1, 3))
    recalibrate_bn: int = opt(0, "random backbone only: re-estimate BatchNorm stats on N training batches (0: off)")
    shot: int = opt(1, "supports per training episode (the paper trains 1-shot)")
    img_size: int = opt(400, "square input size (paper: 400)")
    batch_size: int = opt(20, "episodes per step over all processes (paper: 20 PASCAL/FSS, 40 COCO)", ("--bsz",))
    lr: float = opt(1e-3, "Adam learning rate (paper: 1e-3)")
    weight_decay: float = opt(0.0, "Adam weight decay (paper: none)")
    schedule: str = opt("constant", "lr schedule per step (poly: power 0.9)", choices=SCHEDULES)
    epochs: int = opt(100, "training epochs", ("--niter", "--epochs"))
    max_steps_per_epoch: int | None = opt(None, "cap the steps of an epoch (quick runs, demo)", type=int)
    eval_every: int = opt(1, "validate every N epochs (and after the last)")
    val_episodes: int | None = opt(None, "validate on the first N val episodes only (None: all)", type=int)
    num_workers: int = opt(0, "DataLoader workers", ("--nworker",))
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    amp: str = opt("off", "mixed precision: bf16 (CPU or CUDA) | fp16 (CUDA, with GradScaler)", choices=AMP_MODES)
    seed: int = opt(0, "seeds init, episodes and shuffling")
    logdir: str = opt(
        "runs/hsnet", "run folder: config.json, metrics.csv, last.pt, best.pt, tensorboard", ("--logpath",)
    )
    resume: bool = opt(False, "continue the run in logdir from its last.pt (same config; more epochs allowed)")
    overwrite: bool = opt(False, "start afresh in a non-empty logdir, deleting its run files")
    progress: bool = opt(True, "tqdm progress bars")
    splits_dir: str | None = opt(None, "split files folder (None: the cache, $HSNET_SPLITS)", type=str)
    verify_splits: bool = opt(True, "check split files with official names against their SHA-256")

    def validate(self) -> None:
        """Raise :class:`~hsnetlib.errors.HSNetError` naming the first field out of range and the fix."""
        for name in ("benchmark", "backbone", "kernel", "feature_layers", "pyramid_levels", "amp", "schedule"):
            choices = self.__dataclass_fields__[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise HSNetError(f"{name} must be one of {list(choices)}, got {getattr(self, name)!r}")
        if self.recalibrate_bn and self.weights is not None:
            raise HSNetError("recalibrate_bn is for a random backbone (weights=None); ImageNet statistics are kept")
        for name in ("batch_size", "epochs", "eval_every", "img_size"):
            if getattr(self, name) < 1:
                raise HSNetError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps_per_epoch", "val_episodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise HSNetError(f"{name} must be >= 1 or None (no limit), got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.recalibrate_bn < 0 or self.num_workers < 0:
            raise HSNetError(
                f"lr must be > 0 and weight_decay, recalibrate_bn, num_workers >= 0; got {self.lr}, "
                f"{self.weight_decay}, {self.recalibrate_bn}, {self.num_workers}"
            )
        if not str(self.logdir).strip():
            raise HSNetError("logdir is empty; give a run folder, e.g. runs/pascal-fold0")
        if self.shot != 1:
            raise HSNetError(
                f"shot={self.shot}: training uses 1-shot episodes, as the paper does; K shots are an evaluation "
                f"setting (hsnet test --nshot K, evaluate on a shot=K benchmark)"
            )


# Fields a resumed run may change: where things are and how they run, never what is trained.
RESUMABLE = (
    "epochs",
    "datapath",
    "splits_dir",
    "num_workers",
    "device",
    "progress",
    "logdir",
    "resume",
    "overwrite",
    "verify_splits",
)
