"""Training HSNet the paper's way (Sec. 4, "Implementation details"), on CPU, one GPU or many.

Recipe: frozen ImageNet backbone, 1-shot episodes of the training classes, cross-entropy on
the 2-class logits, Adam with lr 1e-3, batch 20 (PASCAL / FSS) or 40 (COCO), 400x400 inputs,
validation on the held-out fold's fixed episodes, keep the checkpoint with the best val mIoU.

Plain functions: :func:`train` = build everything + loop over :func:`train_one_epoch` and
:func:`hsnetlib.evaluation.evaluate`, writing ``config.json``, ``metrics.csv``, TensorBoard
scalars (when installed), ``last.pt`` after every epoch and ``best.pt`` on improvement, all
atomically. ``resume=True`` continues from ``last.pt`` exactly (episodes and shuffling are
functions of (seed, epoch), and the checkpoint carries optimizer, scheduler and RNG states).

Distributed: launched with ``torchrun``, each process trains on its DistributedSampler shard
under DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0 validates and writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from . import __version__
from .backbone import recalibrate_batchnorm
from .build import build_model
from .checkpoint import check_compatible, save_atomic, write_text_atomic
from .data import make_benchmark
from .errors import HSNetError
from .evaluation import evaluate, resolve_device
from .metrics import IoUMeter, intersection_union
from .model import HSNet
from .run_folder import RunLock, best_checkpoint, log_epoch, prepare_run_folder, tensorboard_writer, write_metrics
from .threads import cpu_threads
from .train_config import TrainConfig

# Progress events of a run (one INFO record each: every optimizer step, validation, checkpoint); silent
# unless the caller configures logging (``logging.basicConfig(level=logging.INFO)``).
log = logging.getLogger("hsnetlib.engine")


class TrainingDiverged(HSNetError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    logdir: Path
    best_miou: float  # best validation mIoU (x100)
    best_epoch: int
    last_epoch: int
    history: pd.DataFrame = field(repr=False)  # one row per epoch, as in metrics.csv
    model: HSNet | None = field(default=None, repr=False)


# -- building blocks --------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Global RNG states in types that ``torch.load(weights_only=True)`` accepts."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(device: torch.device, amp: str):
    """The autocast context for ``amp`` ("off" | "bf16" | "fp16") on ``device``."""
    if amp == "off":
        return nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def make_scheduler(optimizer, schedule: str, total_steps: int):
    """Per-step multiplier of the base lr: constant, cosine to 0, or poly (1 - t)^0.9."""
    if schedule == "cosine":
        fn = lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    elif schedule == "poly":
        fn = lambda step: (1 - min(step, total_steps - 1) / total_steps) ** 0.9
    else:
        fn = lambda step: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def train_loader(dataset, batch_size: int, epoch: int, seed: int, num_workers: int, world: tuple[int, int]):
    """This epoch's loader: fresh episodes (``set_epoch``) in an order that depends only on (seed, epoch)."""
    dataset.set_epoch(epoch)
    rank, size = world
    if size > 1:
        sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return DataLoader(dataset, batch_size=batch_size // size, sampler=sampler, num_workers=num_workers)


def optimizer_step(loss: torch.Tensor, optimizer, scaler=None) -> None:
    """Backward and one optimizer update; with an fp16 GradScaler, scaled loss and unscaled step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    device,
    amp="off",
    scaler=None,
    class_ids=(),
    max_steps=None,
    progress=True,
    desc="train",
    epoch: int = 0,
) -> dict:
    """One pass over ``loader``: cross-entropy on (B, 2, H, W) logits vs the query mask (1st support).

    Returns {"loss": mean loss, "miou": training mIoU x100, "fb_iou": ..., "steps": n}. A loss that
    is not finite stops training (:class:`TrainingDiverged`) before the step is applied.
    """
    model.train()
    meter, total_loss, steps = IoUMeter(class_ids), 0.0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, total=min(len(loader), max_steps or len(loader)))
    for batch in bar:
        if max_steps is not None and steps >= max_steps:
            break
        query, gt = batch["query_img"].to(device), batch["query_mask"].to(device).long()
        with autocast(device, amp):
            logits = model(query, batch["support_imgs"][:, 0].to(device), batch["support_masks"][:, 0].to(device))
            loss = F.cross_entropy(logits.float(), gt)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}, step {steps + 1}: the loss is {loss.item()}; the checkpoints "
                f"of the finished epochs are kept; start a new run with a lower --lr (or --amp off)"
            )
        optimizer_step(loss, optimizer, scaler)
        scheduler.step()
        total_loss += loss.item()
        steps += 1
        log.info("%s: step %d done, loss %.4f", desc, steps, loss.item())
        meter.update(*intersection_union(logits.argmax(1), gt), batch["class_id"])
        bar.set_postfix(loss=f"{total_loss / steps:.3f}", miou=f"{meter.miou():.1f}")
    return {"loss": total_loss / max(steps, 1), "miou": meter.miou(), "fb_iou": meter.fb_iou(), "steps": steps}


# -- the whole run ----------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); True if we created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def make_optimizer(model: HSNet, config: TrainConfig, device: torch.device):
    """Adam over the learner's parameters (the paper's recipe: lr ``config.lr``) and, for fp16 AMP, a GradScaler."""
    optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type) if config.amp == "fp16" else None
    return optimizer, scaler


def _build(config: TrainConfig, device):
    """The datasets, model, Adam, lr schedule and (fp16) GradScaler a run needs."""
    common = dict(
        root=config.datapath,
        fold=config.fold,
        img_size=config.img_size,
        splits_dir=config.splits_dir,
        verify_splits=config.verify_splits,
    )
    train_set = make_benchmark(config.benchmark, split="trn", shot=config.shot, seed=config.seed, **common)
    val_set = make_benchmark(config.benchmark, split="val", shot=1, **common)
    model = build_model(config.model, config.weights, config.fast_path).to(device)
    optimizer, scaler = make_optimizer(model, config, device)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    scheduler = make_scheduler(optimizer, config.schedule, steps_per_epoch * config.epochs)
    return train_set, val_set, model, optimizer, scheduler, scaler


def _restore(ckpt: dict, path: Path, model, optimizer, scheduler, scaler) -> tuple[int, float, int, list[dict]]:
    """Load a run's last.pt into the training objects; -> (next epoch, best mIoU, best epoch, metric rows)."""
    check_compatible(model, ckpt["model"], path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt["epoch"] + 1, ckpt["best_miou"], ckpt["best_epoch"], list(ckpt.get("history", []))


def _checkpoint(config, model, optimizer, scheduler, scaler, epoch, best_miou, best_epoch, history) -> dict:
    """Everything :func:`train` needs to continue exactly after ``epoch``, and the model that wrote it."""
    return {
        "model": model.state_dict(),
        "model_config": config.model.__dict__.copy(),  # every loader rebuilds this model
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler else None,
        "epoch": epoch,
        "best_miou": best_miou,
        "best_epoch": best_epoch,
        "config": config.as_dict(),
        "rng": rng_state(),
        "history": history,  # metrics.csv is rewritten from this: the two always agree
        "version": __version__,
    }


@dataclass
class _Run:
    """The state of a run between epochs."""

    config: TrainConfig
    device: torch.device
    rank: int
    world: int
    train_set: object
    val_set: object
    model: HSNet
    optimizer: object
    scheduler: object
    scaler: object
    start_epoch: int = 0
    best_miou: float = -1.0
    best_epoch: int = -1
    rows: list = field(default_factory=list)


def _start(config: TrainConfig, device) -> _Run:
    """Build everything, then resume from last.pt or (random backbone) re-estimate BatchNorm statistics."""
    rank, world = _world()
    seed_everything(config.seed)
    run = _Run(config, device, rank, world, *_build(config, device))
    ckpt = prepare_run_folder(config, write=rank == 0)
    logdir = Path(config.logdir)
    if ckpt is not None:  # resume: the saved BatchNorm statistics replace any recalibration
        restored = _restore(ckpt, logdir / "last.pt", run.model, run.optimizer, run.scheduler, run.scaler)
        run.start_epoch, run.best_miou, run.best_epoch, run.rows = restored
        if rank == 0 and run.rows:  # a crash after last.pt but before metrics.csv: the rows come from last.pt
            write_metrics(logdir / "metrics.csv", run.rows)
    elif config.recalibrate_bn:  # identical on every rank: same seeded batches
        recalibrate_random_backbone(run.model, run.train_set, config, device)
    return run


def recalibrate_random_backbone(model, train_set, config: TrainConfig, device="cpu") -> None:
    """Re-estimate a random backbone's BatchNorm statistics on ``config.recalibrate_bn`` seeded batches of
    training queries (``recalibrate_bn``; not in the paper)."""
    loader = train_loader(train_set, config.batch_size, 10**6, config.seed, config.num_workers, (0, 1))
    batches = (b["query_img"].to(device) for _, b in zip(range(config.recalibrate_bn), loader))
    recalibrate_batchnorm(model.backbone, batches)


def _epoch(run: _Run, net, epoch: int, writer) -> None:
    """Train one epoch, validate (rank 0), save last.pt (and best.pt), log its row."""
    config, logdir = run.config, Path(run.config.logdir)
    loader = train_loader(
        run.train_set, config.batch_size, epoch, config.seed, config.num_workers, (run.rank, run.world)
    )
    t0 = time.time()
    stats = train_one_epoch(
        net, loader, run.optimizer, run.scheduler, run.device, config.amp, run.scaler, run.train_set.class_ids,
        config.max_steps_per_epoch, config.progress and run.rank == 0, f"train epoch {epoch}", epoch,
    )  # fmt: skip
    row = {"epoch": epoch, "train_loss": stats["loss"], "train_miou": stats["miou"], "val_miou": float("nan")}
    row.update(val_fb_iou=float("nan"), lr=run.scheduler.get_last_lr()[0], seconds=time.time() - t0)
    if run.rank == 0 and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
        result = evaluate(
            run.model, run.val_set, device=run.device, batch_size=config.batch_size, num_workers=config.num_workers,
            progress=config.progress, max_episodes=config.val_episodes, desc=f"val epoch {epoch}",
        )  # fmt: skip
        row["val_miou"], row["val_fb_iou"] = result.miou, result.fb_iou
        log.info("epoch %d: validated, val mIoU %.2f", epoch, result.miou)
        if result.miou > run.best_miou:
            run.best_miou, run.best_epoch = result.miou, epoch
    if run.rank == 0:
        ckpt = _checkpoint(
            config, run.model, run.optimizer, run.scheduler, run.scaler, epoch, run.best_miou, run.best_epoch,
            run.rows + [row],
        )  # fmt: skip
        # best.pt first (its own file), then last.pt: a crash in between redoes this epoch
        if run.best_epoch == epoch:
            save_atomic(best_checkpoint(ckpt, config), logdir / "best.pt")
        save_atomic(ckpt, logdir / "last.pt")
        log.info("epoch %d: last.pt saved", epoch)
        run.rows.append(row)
        log_epoch(logdir, run.rows, writer)
        log.info("epoch %d: metrics.csv written", epoch)


def train(config: TrainConfig) -> TrainResult:
    """Train HSNet as ``config`` says; returns the best val mIoU and the per-epoch history."""
    config.validate()
    device = resolve_device(config.device)
    autocast(device, config.amp)  # fail early on an impossible amp/device pair
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    created_group = _init_distributed(device)
    logdir = Path(config.logdir)
    lock = RunLock(logdir) if _world()[0] == 0 else None
    try:
        run = _start(config, device)
        net = run.model
        if run.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
        writer = None
        if run.rank == 0:
            write_text_atomic(logdir / "config.json", json.dumps(config.as_dict(), indent=2))
            writer = tensorboard_writer(logdir)
        with cpu_threads(device):  # no more threads than idle cores (hsnetlib.threads)
            for epoch in range(run.start_epoch, config.epochs):
                _epoch(run, net, epoch, writer)
                if run.world > 1:
                    dist.barrier()
        if writer is not None:
            writer.close()
    finally:
        if lock is not None:
            lock.release()
    history = pd.read_csv(logdir / "metrics.csv") if (run.rank == 0 and (logdir / "metrics.csv").exists()) else None
    if created_group:
        dist.destroy_process_group()
    return TrainResult(logdir, run.best_miou, run.best_epoch, config.epochs - 1, history, run.model)
