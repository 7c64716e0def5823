"""The one place where a model is chosen: the fast path (:class:`~hsnetlib.fast.FastHSNet`) by default,
the reference modules (:class:`~hsnetlib.model.HSNet`) when asked (``fast_path=False``, the CLI's
``--reference``). Both compute the same function; everything that runs a model (training, evaluation,
the CLI, the demo, the explorers) builds it here.
"""

from __future__ import annotations

import os

from .fast import FastHSNet
from .model import HSNet
from .model_config import ModelConfig


def model_class(fast_path: bool = True) -> type[HSNet]:
    return FastHSNet if fast_path else HSNet


def build_model(config: ModelConfig | str | None = None, weights=None, fast_path: bool = True, **changes) -> HSNet:
    """A new model: ``config`` (or a backbone name) with backbone ``weights`` (None: random)."""
    return model_class(fast_path)(config, weights, **changes)


def load_model(path: str | os.PathLike, fast_path: bool = True, **expected) -> HSNet:
    """:meth:`HSNet.load <hsnetlib.model.HSNet.load>` into the chosen class (``expected``: see there)."""
    return model_class(fast_path).load(path, **expected)


def load_saved_model(saved, path, fast_path: bool = True, **expected) -> HSNet:
    """:meth:`HSNet.from_checkpoint <hsnetlib.model.HSNet.from_checkpoint>` into the chosen class."""
    return model_class(fast_path).from_checkpoint(saved, path, **expected)
