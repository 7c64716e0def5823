"""The training configuration: one dataclass, the single place of every training default.

Each field carries its one-line help, its choices (read from the registries) and, where the
official ``train.py`` spells it differently, its command-line name (``--bsz``, ``--niter``,
``--logpath``, ``--nworker``). The model's own settings are a nested
:class:`~hsnetlib.model_config.ModelConfig` (``config.model``), whose fields are flags too.
``hsnet train`` is derived from both (:func:`hsnetlib.cli_config.add_config_args`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from .cli_config import check_choices, opt
from .data import BENCHMARKS
from .data.episodes import PAPER_IMG_SIZE, check_img_size
from .errors import HSNetError
from .model_config import ModelConfig

AMP_MODES = ("off", "bf16", "fp16")
SCHEDULES = ("constant", "cosine", "poly")
MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))


@dataclass
class TrainConfig:
    benchmark: str = opt("pascal", "benchmark", choices=tuple(BENCHMARKS))
    datapath: str | None = opt(
        None, "folder holding VOC2012/, COCO2014/, FSS-1000/ (None: $HSNET_DATA)", type=str, path=True
    )
    fold: int = opt(0, "held-out fold (its classes are never seen in training); FSS: 0")
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the model (its own flags)"})
    weights: str | None = opt(
        "imagenet",
        "backbone init: imagenet | toy (the resnet50-w* backbones) | none (random) | PATH",
        type=str,
        path=True,
    )
    fast_path: bool = opt(True, "the fast path; off: the reference modules (same function, slower)")
    recalibrate_bn: int = opt(0, "random backbone only: re-estimate BatchNorm stats on N training batches (0: off)")
    shot: int = opt(1, "supports per training episode (the paper trains 1-shot)")
    img_size: int = opt(PAPER_IMG_SIZE, "square input size (paper: 400)")
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
        "runs/hsnet", "run folder: config.json, metrics.csv, last.pt, best.pt, tensorboard", ("--logpath",), path=True
    )
    resume: bool = opt(False, "continue the run in logdir from its last.pt (same config; more epochs allowed)")
    overwrite: bool = opt(False, "start afresh in a non-empty logdir, deleting its run files")
    progress: bool = opt(True, "tqdm progress bars")
    splits_dir: str | None = opt(None, "split files folder (None: the cache, $HSNET_SPLITS)", type=str, path=True)
    verify_splits: bool = opt(True, "check split files with official names against their SHA-256")

    def with_changes(self, **changes) -> TrainConfig:
        """A copy with ``changes``; fields of the model (``use_support_mask=False`` ...) go to ``model``."""
        model = {k: changes.pop(k) for k in list(changes) if k in MODEL_FIELDS}
        return replace(self, model=replace(self.model, **model), **changes)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A TrainConfig from ``asdict`` output (``config.json``, a checkpoint), nested or in the flat form of
        earlier versions (model fields at the top level)."""
        values = dict(values)
        model = values.pop("model", None) or {k: values.pop(k) for k in MODEL_FIELDS if k in values}
        known = {f.name for f in fields(cls)}
        return cls(model=ModelConfig.from_dict(model), **{k: v for k, v in values.items() if k in known})

    def as_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise :class:`~hsnetlib.errors.HSNetError` naming the first field out of range and the fix."""
        check_choices(self, ("benchmark", "amp", "schedule"))
        if self.recalibrate_bn and self.weights is not None:
            raise HSNetError("recalibrate_bn is for a random backbone (weights=None); ImageNet statistics are kept")
        check_img_size(self.img_size)
        for name in ("batch_size", "epochs", "eval_every"):
            if getattr(self, name) < 1:
                raise HSNetError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps_per_epoch", "val_episodes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise HSNetError(f"{name} must be >= 1 or None (no limit), got {getattr(self, name)}")
        if not (0 < self.lr < float("inf")) or not (0 <= self.weight_decay < float("inf")):
            raise HSNetError(
                f"lr must be a finite number > 0 and weight_decay finite >= 0; got {self.lr}, {self.weight_decay}"
            )
        if self.recalibrate_bn < 0 or self.num_workers < 0:
            raise HSNetError(
                f"recalibrate_bn and num_workers must be >= 0; got {self.recalibrate_bn}, {self.num_workers}"
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
    "fast_path",
    "progress",
    "logdir",
    "resume",
    "overwrite",
    "verify_splits",
)
