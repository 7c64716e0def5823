"""The model's configuration: one dataclass shared by :class:`~hsnetlib.model.HSNet`, the training
configuration, checkpoints and the command line.

Every choice that changes *which function* HSNet computes lives here, once, with its default. A
checkpoint written by hsnetlib stores it (``"model_config"``), so every loader rebuilds the model
that wrote it; released checkpoints of the official code hold none (they are the default model
with the backbone their keys show).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .backbone import BACKBONES
from .cli_config import check_choices, opt
from .conv4d import KERNELS
from .errors import HSNetError


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = opt("resnet50", "frozen backbone (Sec. 3.1)", choices=tuple(BACKBONES))
    kernel: str = opt("center-pivot", "4D convolution of the learner (Sec. 3.2; Table 4)", choices=tuple(KERNELS))
    use_support_mask: bool = opt(True, "support feature masking (Eq. 1); without it: HSNet† of Table 1")
    feature_layers: str = opt(
        "all", "ablation: 'last' correlates only the last layer of each pyramid level", choices=("all", "last")
    )
    pyramid_levels: int = opt(3, "ablation: 1 keeps only the deepest pyramid level", choices=(1, 3))

    def __post_init__(self):
        check_choices(self, ("backbone", "kernel", "feature_layers", "pyramid_levels"))
        if not isinstance(self.use_support_mask, bool):
            raise HSNetError(f"use_support_mask must be True or False, got {self.use_support_mask!r}")

    @classmethod
    def from_dict(cls, values: dict, where: str = "the configuration") -> ModelConfig:
        """A ModelConfig from a dict such as a checkpoint's ``"model_config"``; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise HSNetError(f"{where} has unknown model settings {unknown}; expected some of {sorted(known)}")
        return cls(**values)

    def differences(self, other: ModelConfig) -> list[str]:
        """``["kernel: 'center-pivot' vs 'full'", ...]`` for every field that differs."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
