"""Which levers of the fast training step pay: the step with each one taken out, against the official computation.

    python benchmarks/training_levers.py [--settings 400x2 128x8] [--masks scattered box] [--repeats 3]

ResNet-50, random weights, one process, the variants interleaved round by round
(:func:`hsnetlib.profile.time_paths`, medians), each with its own copy of the same weights and Adam:

- ``fused``: ``model(query, support, mask)`` in training mode, as shipped;
- ``autograd learner``: the same forward of the center-pivot layers and GroupNorm + ReLU, but
  differentiated by autograd through its ops instead of their own backward passes
  (:mod:`hsnetlib.center_pivot_qm`, :mod:`hsnetlib.groupnorm_qm`);
- ``folded-copy backbone``: the backbone through the BatchNorm-folded channels-last copy with
  plain convolutions instead of fused oneDNN convolutions from packed weights (:mod:`hsnetlib.onednn`);
- ``official-style``: the official training computation (:mod:`hsnetlib.official_style`).
"""

import argparse
from contextlib import contextmanager
from functools import partial

import torch

import hsnetlib.center_pivot_qm as center_pivot
import hsnetlib.groupnorm_qm as groupnorm
import hsnetlib.onednn as onednn
from hsnetlib import HSNet
from hsnetlib.profile import time_paths
from hsnetlib.training_speed import _batch, _trainer, training_step

VARIANTS = ("fused", "autograd learner", "folded-copy backbone", "official-style")


@contextmanager
def variant(name: str):
    """Take one lever out for the duration of a step."""
    saved = center_pivot._needs_grad, groupnorm._needs_grad, onednn.usable
    if name == "autograd learner":
        center_pivot._needs_grad = groupnorm._needs_grad = lambda tensors: False  # forward ops under autograd
    elif name == "folded-copy backbone":
        onednn.usable = lambda img: False
    try:
        yield
    finally:
        center_pivot._needs_grad, groupnorm._needs_grad, onednn.usable = saved


def step(name, model, optimizer, inputs):
    with variant(name):
        training_step(model, optimizer, "official-style" if name == "official-style" else "fused", *inputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["400x2", "128x8"], help="SIZExBATCH")
    parser.add_argument("--masks", nargs="+", default=["scattered", "box"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = HSNet("resnet50")
    device = torch.device("cpu")
    print("img_size batch mask " + " | ".join(f"{v} ms" for v in VARIANTS) + " | speed-up of fused over each")
    for setting in args.settings:
        size, batch = (int(v) for v in setting.split("x"))
        for mask in args.masks:
            inputs = _batch(size, batch, mask, device)
            steps = {}
            for name in VARIANTS:
                model, optimizer, _ = _trainer(base, "off", device)
                steps[name] = partial(step, name, model, optimizer, inputs)
            ms = {k: 1000 * v for k, v in time_paths(steps, args.repeats, device).items()}
            ratios = " ".join(f"{ms[v] / ms['fused']:.2f}" for v in VARIANTS)
            print(f"{size} {batch} {mask} " + " | ".join(f"{ms[v]:.0f}" for v in VARIANTS) + f" | {ratios}", flush=True)


if __name__ == "__main__":
    main()
