"""Follow one episode through the 4D learner (Sec. 3.3): every stage's name, shape and output.

The learner is run as it is (the reference modules, :meth:`HSNet.forward <hsnetlib.model.HSNet.forward>`,
also for a fast model, whose modules are the same); forward hooks record what each stage produces,
so the trace cannot drift from the model. Stage names use the paper's
notation: f^sqz_p squeezes level p (p = 1 the finest, 3 the deepest), f^mix_p mixes, Z is the
output of f^mix_1 averaged over the support dims, then the 2D decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .conv4d import KERNELS
from .model import HSNet


@dataclass
class Stage:
    name: str  # e.g. "f^sqz_1 · 4D conv 2/3"
    shape: tuple[int, ...]  # (B, C, Ha, Wa, Hb, Wb) for 4D stages, (B, C, H, W) for 2D ones
    output: torch.Tensor  # the stage's output (or, for inputs of a block, what enters it)


def trace_episode(model, query_img, support_img, support_mask) -> list[Stage]:
    """Run ``model`` (an :class:`~hsnetlib.model.HSNet`) on one 1-shot batch and return its stages in order:
    the hypercorrelation C_p entering each f^sqz_p, every 4D convolution, the sums entering f^mix,
    Z, the decoder and the full-size logits."""
    learner = model.hpn_learner
    stages: list[Stage] = []
    hooks = []

    def record(name, use_input=False):
        def hook(module, inputs, output=None):
            x = inputs[0] if use_input else output
            stages.append(Stage(name, tuple(x.shape), x.detach()))

        return hook

    for attr, paper in learner.blocks():  # a one-level ablation has no mixing blocks
        block = getattr(learner, attr)
        level = paper[-1]
        entering = f"{paper} input: C_{level}" if "sqz" in paper else f"{paper} input: upsampled + f^sqz_{level}"
        hooks.append(block.register_forward_pre_hook(record(entering, use_input=True)))
        convs = [m for m in block if isinstance(m, tuple(KERNELS.values()))]
        for i, conv in enumerate(convs, 1):
            hooks.append(conv.register_forward_hook(record(f"{paper} · 4D conv {i}/{len(convs)}")))
    hooks.append(learner.decoder1.register_forward_pre_hook(record("Z: mean over the support dims", True)))
    hooks.append(learner.decoder1.register_forward_hook(record("decoder, first two 2D convs")))
    hooks.append(learner.decoder2.register_forward_hook(record("decoder after 2x upsampling: logits")))
    try:
        with torch.no_grad():
            logits = HSNet.forward(model, query_img, support_img, support_mask)  # the reference computation
    finally:
        for h in hooks:
            h.remove()
    stages.append(Stage("logits upsampled to the image", tuple(logits.shape), logits))
    return stages  # hooks fire in execution order, the order of the paper's Fig. 2


def shape_table(stages: list[Stage]) -> list[dict]:
    """One row per stage: name, and the query / support dims spelled out for 4D stages."""
    rows = []
    for s in stages:
        if len(s.shape) == 6:
            B, C, Ha, Wa, Hb, Wb = s.shape
            rows.append(
                {"stage": s.name, "channels": C, "query (Ha, Wa)": f"{Ha}x{Wa}", "support (Hb, Wb)": f"{Hb}x{Wb}"}
            )
        else:
            B, C, H, W = s.shape
            rows.append({"stage": s.name, "channels": C, "query (Ha, Wa)": f"{H}x{W}", "support (Hb, Wb)": "-"})
    return rows


def center_pivot_kernels(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 2D kernels of a center-pivot 4D convolution, averaged over input channels:
    (query-plane kernel, support-plane kernel), each (C_out, k, k)."""
    return conv.conv1.weight.detach().mean(1), conv.conv2.weight.detach().mean(1)
