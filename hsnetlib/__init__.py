"""hsnetlib: HSNet (Hypercorrelation Squeeze for Few-Shot Segmentation, ICCV 2021) to learn, run and reproduce.

``from hsnetlib import HSNet, FastHSNet, ModelConfig, CenterPivotConv4d``. The names are imported on first
use, so that ``import hsnetlib`` (and ``hsnet --help``) does not load PyTorch.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "CenterPivotConv4d": ".conv4d",
    "HSNet": ".model",
    "ModelConfig": ".model_config",
    "FastHSNet": ".fast",
    "build_model": ".build",
    "load_model": ".build",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'hsnetlib' has no attribute {name!r}")
