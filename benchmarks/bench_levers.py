"""What each lever of the fast inference path pays, stage by stage.

    python benchmarks/bench_levers.py [--backbone resnet50] [--img-size 400] [--repeats 7] [--mask box]

One 1-shot episode (random weights). Each stage is timed in its reference form and in its fast
form(s), interleaved, median of ``repeats`` after a warm-up, so that all see the same machine load.
The fast correlation includes the query normalization. Results: benchmarks/RESULTS.md.
"""

import argparse

import torch

from hsnetlib import FastHSNet, HSNet
from hsnetlib.bench.masks import MASK_KINDS, episode
from hsnetlib.bench.timing import time_paths
from hsnetlib.fast.backbone import FoldedBackbone
from hsnetlib.fast.correlation import hypercorrelation_qm, unit_query_features
from hsnetlib.fast.learner import QueryMajor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mask", default="box", choices=MASK_KINDS)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HSNet(args.backbone).eval()
    fast = FastHSNet(model.config).eval()
    fast.load_state_dict(model.state_dict())
    q, s, m = episode(args.img_size, 1, mask=args.mask)
    s, m = s[:, 0], m[:, 0]
    sizes, dtype = model.pyramid_sizes, torch.float32
    plain = FoldedBackbone(args.backbone, onednn=False)
    with torch.inference_mode():
        fq, fs = model.features(q), model.features(s)
        ref_pyramid = model.hypercorrelation(fq, fs, m)
        fq_fast, fs_fast = fast.features(q), fast.features(s)

        def correlate(windowed):
            return hypercorrelation_qm(unit_query_features(fq_fast, dtype), fs_fast, m, sizes, dtype, windowed=windowed)

        windows = correlate(True)
        dense = [w.dense() for w in windows]
        stages = [
            (
                "backbone, one image",
                {
                    "reference": lambda: model.features(q),
                    "BN folded, plain convolutions": lambda: plain.features(model.backbone, q),
                    "BN folded, fused oneDNN (CPU)": lambda: fast.features(q),
                },
            ),
            (
                "Eq. 1-2 hypercorrelation",
                {
                    "dense, stacked (reference)": lambda: model.hypercorrelation(fq, fs, m),
                    "query-major, every position": lambda: correlate(False),
                    "query-major, mask window": lambda: correlate(True),
                },
            ),
            (
                "4D learner + decoder",
                {
                    "channel-major (reference)": lambda: model.hpn_learner(ref_pyramid),
                    "query-major, full grid": lambda: model.hpn_learner(dense, QueryMajor()),
                    "query-major, mask window": lambda: model.hpn_learner(windows, QueryMajor()),
                },
            ),
        ]
        print(f"{args.backbone} {args.img_size}px 1-shot, {args.mask} mask, {torch.get_num_threads()} threads")
        for stage, fns in stages:
            for name, seconds in time_paths(fns, args.repeats).items():
                print(f"{stage:28s} {name:32s} {1000 * seconds:8.1f} ms")


if __name__ == "__main__":
    main()
