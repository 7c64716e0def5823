"""Which levers of the fast training step pay: the step with each one taken out, against the reference.

    python benchmarks/training_levers.py [--settings 400x2 128x8] [--masks scattered box] [--repeats 3]

ResNet-50, random weights, one process, the variants interleaved round by round
(:func:`hsnetlib.bench.timing.time_paths`, medians), each with its own copy of the same weights and
optimizer. Every variant is a :class:`hsnetlib.fast.FastOptions` (a constructor argument):

- ``fast``: FastHSNet as shipped;
- ``autograd learner``: ``own_backward=False``, the learner differentiated by autograd through its
  forward ops instead of the layers' own backward passes;
- ``folded-copy backbone``: ``onednn_backbone=False``, plain convolutions on the BatchNorm-folded
  weights instead of fused oneDNN convolutions from packed weights;
- ``no window``: ``window=False``, Eq. (2) and the first 4D layers on the whole support grid;
- ``reference``: hsnetlib.model.HSNet, the official computation.
"""

import argparse
from functools import partial

import torch

from hsnetlib import HSNet
from hsnetlib.bench.masks import training_batch
from hsnetlib.bench.timing import time_paths
from hsnetlib.bench.training import parse_setting, trainer, training_step
from hsnetlib.fast import FastOptions

VARIANTS = {
    "fast": FastOptions(),
    "autograd learner": FastOptions(own_backward=False),
    "folded-copy backbone": FastOptions(onednn_backbone=False),
    "no window": FastOptions(window=False),
    "reference": None,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["400x2", "128x8"], help="SIZExBATCH")
    parser.add_argument("--masks", nargs="+", default=["scattered", "box"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = HSNet("resnet50")
    device = torch.device("cpu")
    print("img_size batch mask " + " | ".join(f"{v} ms" for v in VARIANTS) + " | speed-up of fast over each")
    for setting in args.settings:
        size, batch = parse_setting(setting)
        for mask in args.masks:
            inputs = training_batch(size, batch, mask, device)
            steps = {}
            for name, options in VARIANTS.items():
                path = "reference" if options is None else "fast"
                model, optimizer, _ = trainer(base, path, "off", device, options)
                steps[name] = partial(training_step, model, optimizer, *inputs)
            ms = {k: 1000 * v for k, v in time_paths(steps, args.repeats, device).items()}
            ratios = " ".join(f"{ms[v] / ms['fast']:.2f}" for v in VARIANTS)
            print(f"{size} {batch} {mask} " + " | ".join(f"{ms[v]:.0f}" for v in VARIANTS) + f" | {ratios}", flush=True)


if __name__ == "__main__":
    main()
