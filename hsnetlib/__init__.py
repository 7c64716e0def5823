"""hsnetlib: HSNet (Hypercorrelation Squeeze for Few-Shot Segmentation, ICCV 2021) to learn, run and reproduce."""

from .conv4d import CenterPivotConv4d
from .model import HSNet

__version__ = "0.1.0"

__all__ = ["CenterPivotConv4d", "HSNet", "__version__"]
