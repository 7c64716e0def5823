"""Reading and writing checkpoints: the released ``best_model.pt`` files and our own.

The official training script saves ``model.state_dict()`` of an ``nn.DataParallel``
wrapper, so every key starts with ``module.``. Our training engine saves a dict with a
``"model"`` entry holding the same (unprefixed) keys plus optimizer state and metadata.
Both load through :func:`load_model_state`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from .errors import CheckpointError


def strip_module_prefix(state: dict) -> dict:
    """Drop the ``module.`` prefix that ``nn.DataParallel`` / DDP add to every key."""
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def model_state_from(obj, path: str | os.PathLike = "<checkpoint>") -> dict:
    """The model state dict inside an official (flat) or hsnetlib (``{"model": ...}``) checkpoint."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"not a checkpoint: {path} (expected a state dict (name -> tensor), as saved by the "
            f"official train.py or by `hsnet train`)"
        )
    return strip_module_prefix(obj)


def infer_backbone(state: dict, path: str | os.PathLike = "<checkpoint>") -> str:
    """Which backbone a checkpoint was trained with, from its key names (and, for the toy world's narrow
    ResNet-50, the width of its first convolution)."""
    if any(k.startswith("backbone.features.") for k in state):
        return "vgg16"
    layer3 = {k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}
    if not layer3:
        raise CheckpointError(
            f"not a checkpoint: {path} (no backbone.* keys, so the backbone cannot be told; an HSNet checkpoint "
            f"holds the whole model's state dict)"
        )
    if len(layer3) == 23:
        return "resnet101"
    width = state["backbone.conv1.weight"].shape[0] if "backbone.conv1.weight" in state else 64
    return "resnet50" if width == 64 else f"resnet50-w{width}"


def check_compatible(model: nn.Module, state: dict, path: str | os.PathLike = "<checkpoint>") -> None:
    """Raise a ValueError listing missing / unexpected keys and shape conflicts, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if not (missing or unexpected or shapes):
        return

    def show(title, items):
        if not items:
            return ""
        more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(items[:8]) + more

    hint = ""
    try:
        found = infer_backbone(state)
        if found != getattr(model, "backbone_name", found):
            hint = f"\n  the checkpoint looks like a {found} model; load it with backbone={found!r}"
    except ValueError:
        pass
    raise CheckpointError(
        f"checkpoint {path} does not match the model"
        + show("missing keys", missing)
        + show("unexpected keys", unexpected)
        + show("shape conflicts", shapes)
        + hint
    )


def safe_load(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load`` on CPU with ``weights_only=True`` (a file can never run code here); any file that
    is not a plain ``torch.save`` of tensors and containers raises :class:`CheckpointError` naming it.
    The advice to load unsafely that torch gives in that case is never passed on."""
    path = Path(path)
    if path.is_dir():
        inside = [n for n in ("best.pt", "last.pt", "best_model.pt") if (path / n).is_file()]
        hint = f"give the file inside it, e.g. {path / inside[0]}" if inside else "give the checkpoint file itself"
        raise CheckpointError(f"{what} {path} is a folder, not a file; {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    _check_expansion(path, what)
    with open(path, "rb") as f:
        start = f.read(4)
    if start and not start.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip file, or a legacy pickle
        kind = "a text file" if all(32 <= b < 127 or b in b"\t\r\n" for b in start) else "another kind of file"
        raise CheckpointError(
            f"not a {what}: {path} (it is {kind}, not a file written by torch.save); give the .pt file that "
            f"training wrote (best.pt) or a released best_model.pt"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = "it holds data other than tensors and containers; hsnetlib never runs code from a file"
    except EOFError:
        reason = "the file is empty or cut short"
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError) as err:
        reason = "not a torch.save file: " + _first_words(str(err), 120)
    fix = ""
    if path.name == "last.pt":
        fix = (
            f"; a run killed while writing never leaves a cut file (writes are atomic), so it was damaged later: "
            f"{path.parent / 'best.pt'} may still load, or start the run afresh with --overwrite"
        )
    raise CheckpointError(f"not a {what}: {path} ({reason}){fix}")


def _first_words(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``limit`` characters."""
    words, out = text.split(), ""
    for w in words:
        if len(out) + len(w) + 1 > limit:
            return out + " ..."
        out = f"{out} {w}" if out else w
    return out


MAX_EXPANSION = 4  # a torch.save zip stores its tensors uncompressed; a compressed one may expand this much


def _check_expansion(path: Path, what: str) -> None:
    """Refuse a zip-format file whose compressed entries would expand far beyond its size on disk (a zip
    bomb would otherwise allocate it all while loading)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError):
        return  # torch.load reports it as not a torch.save file
    packed = [e for e in entries if e.compress_type != zipfile.ZIP_STORED]
    expanded = sum(e.file_size for e in packed)
    if packed and expanded > MAX_EXPANSION * path.stat().st_size + 2**20:
        raise CheckpointError(
            f"not a {what}: {path} (its compressed entries would expand to {expanded / 2**30:.1f} GB from "
            f"{path.stat().st_size / 2**20:.1f} MB on disk; torch.save never writes that: re-save it with torch.save)"
        )


def with_backbone(saved, state: dict, model) -> dict:
    """``state`` (a checkpoint's model state) completed with ``model``'s own backbone tensors when the
    checkpoint refers to its backbone (``"backbone_ref"``, a run's best.pt) instead of carrying it."""
    if not (isinstance(saved, dict) and "backbone_ref" in saved):
        return state
    return {**{k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}, **state}


def load_checkpoint_file(path: str | os.PathLike):
    """A checkpoint file's content (:func:`safe_load`); the caller validates what is inside."""
    return safe_load(path, "checkpoint")


def trained_img_size(saved) -> int | None:
    """The input size an hsnetlib checkpoint was trained at (its training configuration's ``img_size``),
    or None for a checkpoint that does not say (released checkpoints: the paper's 400)."""
    config = saved.get("config") if isinstance(saved, dict) else None
    size = config.get("img_size") if isinstance(config, dict) else None
    return size if isinstance(size, int) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_atomic(path: str | os.PathLike, write) -> None:
    """``write(binary file)`` into a temp file in the same folder, then rename: a crash never leaves
    half a file, and an error names the file (a full disk included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as readable as any file the user creates (mkstemp makes it 0600)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(err, (OSError, RuntimeError)):  # torch reports a full disk as a RuntimeError
            raise OSError(f"could not write {path} ({' '.join(str(err).split())[:200]}); free disk space") from err
        raise


def save_atomic(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: a crash never leaves half a file."""
    _write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file (config.json, metrics.csv) the same atomic way."""
    _write_atomic(path, lambda f: f.write(text.encode()))
