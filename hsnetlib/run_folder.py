"""The run folder of a training run: what it holds, who may write it, and the policy that keeps a run safe.

A run folder holds ``config.json``, ``metrics.csv``, ``last.pt``, ``best.pt`` and ``tensorboard/``.
Nothing in it is lost or mixed by accident:

- one process at a time: a run holds an exclusive lock on ``.lock`` in the folder while it trains
  (released by the operating system when the process ends, also when it is killed); a second start
  into the same folder is refused;
- a fresh run needs a folder without a run, or ``overwrite`` (which deletes the run files and the
  TensorBoard events); ``resume`` needs ``last.pt`` and the same configuration (see
  :func:`resume_differences`);
- temporary files of an interrupted write (``last.pt.<random>.tmp`` ...) are removed only once the
  start is accepted, and only hsnetlib's own: any other file in the folder is left alone.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path

from .backbone import backbone_reference
from .checkpoint import load_checkpoint_file, with_backbone, write_text_atomic
from .errors import HSNetError
from .train_config import RESUMABLE, TrainConfig

RUN_FILES = ("config.json", "metrics.csv", "last.pt", "best.pt")
LOCK_FILE = ".lock"
OWN_TEMP = re.compile(
    r"^(config\.json|metrics\.csv|last\.pt|best\.pt)\.[A-Za-z0-9_]+\.tmp$"
)  # checkpoint._write_atomic's


class RunFolderError(HSNetError):
    """A run folder that cannot be used as asked (it would lose or mix results)."""


def check_run_path(logdir: Path) -> None:
    """A run folder path must be a folder or not exist yet (a link to nothing, or a file, is named)."""
    if logdir.is_symlink() and not logdir.exists():
        raise RunFolderError(
            f"run folder {logdir} is a link to {os.readlink(logdir)}, which does not exist; create that folder "
            f"or choose another --logpath"
        )
    if logdir.exists() and not logdir.is_dir():
        raise RunFolderError(f"run folder {logdir} is a file, not a folder; choose another --logpath")


class RunLock:
    """An exclusive lock on ``logdir/.lock`` for the life of this object (or of the process that holds it)."""

    def __init__(self, logdir: Path):
        check_run_path(Path(logdir))  # before anything is created there
        self.path, self.file = Path(logdir) / LOCK_FILE, None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 (held open while the run trains)
        try:
            import fcntl  # POSIX; elsewhere the folder is not locked
        except ImportError:
            self.file = file
            return
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "another process"
            file.close()
            raise RunFolderError(
                f"run folder {logdir} is in use by {owner}: one run writes a folder at a time; wait for it to "
                f"finish, or choose another --logpath"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()}\n")
        file.flush()
        self.file = file

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the lock
            self.file = None


def _flat(values: dict) -> dict:
    """The model's settings at the top level (``use_support_mask`` rather than ``model``), as the flags name them."""
    return {**{k: v for k, v in values.items() if k != "model"}, **values["model"]}


def resume_differences(saved: dict, config: TrainConfig) -> list[str]:
    """What a resumed run may not change, as ``["fold: 0 -> 1", ...]``: every field but those in
    ``RESUMABLE``; ``epochs`` may grow only with the constant schedule (a cosine or poly schedule's
    horizon is its number of epochs: the epochs already trained followed it) and never shrink."""
    before, now = _flat(TrainConfig.from_dict(saved).as_dict()), _flat(config.as_dict())
    differ = [f"{k}: {before[k]!r} -> {now[k]!r}" for k in now if k not in RESUMABLE and before[k] != now[k]]
    if now["epochs"] < before["epochs"]:
        differ.append(f"epochs: {before['epochs']} -> {now['epochs']} (fewer epochs than the run was started with)")
    elif now["epochs"] > before["epochs"] and now["schedule"] != "constant":
        differ.append(
            f"epochs: {before['epochs']} -> {now['epochs']} (the {now['schedule']} schedule was planned over "
            f"{before['epochs']} epochs; only a constant schedule can be extended)"
        )
    return differ


def _resume_checkpoint(config: TrainConfig, logdir: Path) -> dict:
    last = logdir / "last.pt"
    if not last.is_file():
        raise RunFolderError(
            f"cannot resume: {last} not found; check the run folder (--logpath), or start a new run without --resume"
        )
    ckpt = load_checkpoint_file(last)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("config"), dict) or "model" not in ckpt:
        raise RunFolderError(f"cannot resume: {last} is not a checkpoint written by hsnetlib's training")
    differ = resume_differences(ckpt["config"], config)
    if differ:
        raise RunFolderError(
            f"cannot resume {logdir}: the configuration differs from the saved run ({'; '.join(differ)}). "
            f"Only {', '.join(RESUMABLE[:6])} may change; start a new run in another folder"
        )
    return ckpt


def prepare_run_folder(config: TrainConfig, write: bool = True) -> dict | None:
    """Apply the run-folder policy (module docstring); returns the checkpoint to resume from, or None
    for a fresh run. ``write``: this process may change the folder (in distributed runs only rank 0)."""
    logdir = Path(config.logdir)
    check_run_path(logdir)
    if config.resume and config.overwrite:
        raise RunFolderError("--resume continues a run and --overwrite deletes it: give one of them")
    if config.resume:
        ckpt = _resume_checkpoint(config, logdir)
    else:
        ckpt = None
        existing = [n for n in RUN_FILES[1:] if (logdir / n).exists()]  # config.json alone: nothing computed yet
        if existing and not config.overwrite:
            raise RunFolderError(
                f"run folder {logdir} already holds a run ({', '.join(existing)}); continue it with --resume, "
                f"start afresh with --overwrite, or choose another folder"
            )
    if write:
        for tmp in logdir.glob("*.tmp") if logdir.is_dir() else ():
            if OWN_TEMP.match(tmp.name):
                tmp.unlink()
        if ckpt is None:
            for name in RUN_FILES:
                (logdir / name).unlink(missing_ok=True)
            shutil.rmtree(logdir / "tensorboard", ignore_errors=True)
    return ckpt


def best_checkpoint(ckpt: dict, config: TrainConfig) -> dict:
    """best.pt: the model and where it came from, without the optimizer, scheduler and RNG states that only
    resuming needs (the run resumes from last.pt). A frozen backbone with reproducible weights ("toy",
    "imagenet") is stored as a reference, its name, weights and the SHA-256 of its file, instead of its
    tensors: every loader rebuilds it from that file (:meth:`hsnetlib.model.HSNet.from_checkpoint`)."""
    best = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "scaler", "rng")}
    ref = backbone_reference(config.model.backbone, config.weights)
    if ref is not None:
        best["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("backbone.")}
        best["backbone_ref"] = ref
    return best


def load_best(model, logdir) -> None:
    """Load ``logdir/best.pt`` into ``model`` (the run's own model, its backbone already built)."""
    saved = load_checkpoint_file(Path(logdir) / "best.pt")
    model.load_state_dict(with_backbone(saved, saved["model"], model))


def write_metrics(path: Path, rows: list[dict]) -> None:
    """metrics.csv rewritten whole (atomically) from the rows that the checkpoint also holds."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def tensorboard_writer(logdir: Path):
    """A TensorBoard writer into ``logdir/tensorboard``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(logdir / "tensorboard"))


def log_epoch(logdir: Path, rows: list[dict], writer) -> None:
    """metrics.csv (atomically, from all rows) and the last row's TensorBoard scalars."""
    write_metrics(logdir / "metrics.csv", rows)
    if writer is not None and rows:
        for key, value in rows[-1].items():
            if key != "epoch" and value == value:  # skip NaN
                writer.add_scalar(key, value, rows[-1]["epoch"])
