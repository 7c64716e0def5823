"""K shots on CPU: one batch, or one after the other? ``FastOptions(batch_shots=True/False)``.

    python benchmarks/kshot_batching.py [--shots 5] [--repeats 3]

ResNet-50, random weights, box and scattered masks, medians of ``repeats`` interleaved rounds, for
episode sizes from the demo's evaluation batch (96 px, 8 episodes) to one 400-px episode. The
finest correlation of all shots, B*K*(H/8*W/8)^2 entries, is printed beside the ratio: it is what
``hsnetlib.fast.model.batch_shots_by_default`` compares with ``SMALL_KSHOT_BATCH``.
"""

import argparse
from functools import partial

import torch

from hsnetlib.bench.masks import episode
from hsnetlib.bench.timing import time_paths
from hsnetlib.fast import FastHSNet, FastOptions

CASES = ((96, 8), (128, 8), (200, 1), (200, 4), (400, 1))  # (img_size, episodes per batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {flag: FastHSNet("resnet50", options=FastOptions(batch_shots=flag)).eval() for flag in (False, True)}
    models[True].load_state_dict(models[False].state_dict())
    print("img_size episodes mask entries one_after_other_ms batched_ms batched_speedup")
    for size, batch in CASES:
        for mask in ("box", "scattered"):
            q, s, m = episode(size, args.shots, batch, torch.device("cpu"), 0, mask)
            seconds = time_paths(
                {flag: partial(model.predict, q, s, m) for flag, model in models.items()}, args.repeats
            )
            seq, bat = 1000 * seconds[False], 1000 * seconds[True]
            entries = batch * args.shots * ((size // 8) ** 2) ** 2
            print(f"{size} {batch} {mask} {entries / 1e6:.2f}M {seq:.0f} {bat:.0f} {seq / bat:.2f}", flush=True)


if __name__ == "__main__":
    main()
