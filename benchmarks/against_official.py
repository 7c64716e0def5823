"""The official HSNet code, timed beside hsnetlib's reference and fast paths: is the baseline honest?

    git clone https://github.com/juhongm999/hsnet /somewhere/hsnet     # the official code, not part of hsnetlib
    python benchmarks/against_official.py --official /somewhere/hsnet --what training --setting 400x2
    python benchmarks/against_official.py --official /somewhere/hsnet --what inference

Every ratio that ``hsnet bench`` prints is against :class:`hsnetlib.model.HSNet`, the reference
computation. This script checks that the reference takes the official code's time: it imports the
official ``model`` package from the given checkout (ResNet-50, random weights: ``pretrained=True``
is answered with torchvision's untrained network, nothing is downloaded), loads its state dict into
the reference and the fast model (the released checkpoints' key layout), and times all three on the
same inputs, in interleaved rounds (:func:`hsnetlib.bench.timing.time_paths`).

- training: forward, cross-entropy, backward and Adam (lr 1e-3, the official recipe) on one batch;
  the official model in ``train_mode()`` (backbone in eval), ours in ``train()``;
- inference: the official ``predict_mask_nshot`` (K forward passes and its vote) against ``predict``.

The official 4D convolution caches its pruning indices at its first call, so one process measures
one input size: run one ``--setting`` per call.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.models as tvm

from hsnetlib import FastHSNet, HSNet
from hsnetlib.bench.masks import MASK_KINDS, episode, training_batch
from hsnetlib.bench.timing import time_paths
from hsnetlib.bench.training import parse_setting


def official_model(checkout: Path):
    """The official HypercorrSqueezeNetwork (ResNet-50, random weights) from a checkout of its repository."""
    if not (checkout / "model" / "hsnet.py").is_file():
        sys.exit(f"--official {checkout}: no model/hsnet.py there; give a clone of github.com/juhongm999/hsnet")
    sys.path.insert(0, str(checkout))
    from torchvision.models import resnet

    resnet.resnet50 = lambda pretrained=False: tvm.resnet50(weights=None)  # no download: random weights
    from model.hsnet import HypercorrSqueezeNetwork

    return HypercorrSqueezeNetwork("resnet50", False)


def three_paths(official) -> dict:
    """The official model and hsnetlib's reference and fast models with the official model's weights."""
    reference = HSNet.from_checkpoint(official.state_dict(), "the official model")
    fast = FastHSNet(reference.config)
    fast.load_state_dict(reference.state_dict())
    return {"official": official, "reference": reference, "fast": fast}


@torch.no_grad()
def check_same_function(models: dict, query, support, mask) -> None:
    """Print the largest logit difference of each path from the official one (eval mode, one support)."""
    logits = {}
    for name, model in models.items():
        logits[name] = model.eval()(query, support, mask)
    official = logits.pop("official")
    diffs = ", ".join(
        f"{n} {(v - official).abs().max().item() / official.abs().max().item():.1e}" for n, v in logits.items()
    )
    print(f"largest logit difference from the official model, relative to its largest logit: {diffs}")


def training_step(name: str, model):
    """A zero-argument-per-batch step function: forward, cross-entropy, backward, Adam."""
    if name == "official":
        model.train_mode()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # the backbone gets no gradient
    else:
        model.train()
        optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)

    def step(query, support, mask, gt):
        loss = F.cross_entropy(model(query, support, mask), gt)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def prediction(name: str, model, query, supports, masks):
    model.eval()
    if name == "official":
        batch = {"query_img": query, "support_imgs": supports, "support_masks": masks}
        return torch.no_grad()(lambda: model.predict_mask_nshot(batch, supports.shape[1]))
    return lambda: model.predict(query, supports, masks)


def report(label: str, seconds: dict) -> None:
    base = seconds["official"]
    print(label, "  ".join(f"{k} {1000 * v:.0f} ms ({base / v:.2f}x)" for k, v in seconds.items()), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="a clone of the official repository")
    parser.add_argument("--what", choices=("training", "inference"), default="training")
    parser.add_argument("--setting", default="400x2", help="SIZExBATCH (training); inference is 400 px, batch 1")
    parser.add_argument("--masks", nargs="+", default=list(MASK_KINDS), choices=MASK_KINDS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = three_paths(official_model(args.official))
    print(f"threads {torch.get_num_threads()}, torch {torch.__version__}, medians of {args.repeats} rounds")
    size = parse_setting(args.setting)[0] if args.what == "training" else 400
    check_same_function(models, *training_batch(size, 1, args.masks[0], "cpu")[:3])
    for mask in args.masks:
        if args.what == "training":
            size, batch = parse_setting(args.setting)
            inputs = training_batch(size, batch, mask, "cpu")
            steps = {name: training_step(name, model) for name, model in models.items()}
            report(
                f"training {args.setting} {mask}",
                time_paths({n: partial(f, *inputs) for n, f in steps.items()}, args.repeats),
            )
        else:
            for shot in args.shots:
                q, s, m = episode(400, shot, 1, "cpu", 0, mask)
                fns = {name: prediction(name, model, q, s, m) for name, model in models.items()}
                report(f"inference {shot}-shot {mask}", time_paths(fns, args.repeats))


if __name__ == "__main__":
    main()
