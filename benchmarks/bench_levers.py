"""What each lever of the fast inference path pays, stage by stage.

    python benchmarks/bench_levers.py [--backbone resnet50] [--img-size 400] [--repeats 7] [--compile]

One 1-shot episode (centred box mask covering 25 % of the support image, random weights). Each
stage is timed in its reference form and in its fast form(s), interleaved, median of ``repeats``
after a warm-up, so that all see the same machine load. The fast correlation includes the query
normalization (done once per episode in ``predict``). Results: benchmarks/RESULTS.md.
"""

import argparse
import time

import torch

from hsnetlib import HSNet, fastpath
from hsnetlib.backbone import extract_features
from hsnetlib.correlation import mask_features
from hsnetlib.official_style import dense_level_correlations
from hsnetlib.profile import episode, time_paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the backbone copy")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HSNet(args.backbone).eval()
    q, s, m = episode(args.img_size, 1)
    s, m = s[:, 0], m[:, 0]
    learner = model.hpn_learner
    with torch.inference_mode():
        fq, fs = model.features(q), model.features(s)
        masked = model.hypercorrelation(fq, fs, m)  # reference pyramid (sparse Eq. 2, channel-major)
        fq_fast, fs_fast = model.fast_features(q), model.fast_features(s)
        units = fastpath.unit_query_features(fq_fast)
        windows = fastpath.hypercorrelation_qm(units, fs_fast, m, model.pyramid_sizes)
        dense_qm = [w.dense() for w in windows]
        copy = model.folded_backbone.get(model.backbone)  # BatchNorm-folded, channels-last
        img = q.contiguous(memory_format=torch.channels_last)
        backbone = {
            "features (official)": lambda: model.features(q),
            "BN folded, channels-last copy": lambda: extract_features(args.backbone, copy, img),
            "fast_features (CPU: fused oneDNN)": lambda: model.fast_features(q),
        }
        if args.compile:  # not part of predict: an optional lever, measured here only
            compiled = torch.compile(lambda img: extract_features(args.backbone, copy, img))
            t0 = time.perf_counter()
            compiled(img)
            print(f"torch.compile of the backbone copy: {time.perf_counter() - t0:.1f} s to compile")
            backbone["BN folded, channels-last, compiled"] = lambda: compiled(img)
        stages = [
            ("backbone, one image", backbone),
            (
                "Eq. 1-2 hypercorrelation",
                {
                    "dense, stacked (official)": lambda: dense_level_correlations(
                        fq, mask_features(fs, m), model.pyramid_sizes
                    ),
                    "sparse columns (reference)": lambda: model.hypercorrelation(fq, fs, m),
                    "query-major, every position": lambda: fastpath.hypercorrelation_qm(
                        fastpath.unit_query_features(fq_fast), fs_fast, m, model.pyramid_sizes, windowed=False
                    ),
                    "query-major, mask window": lambda: fastpath.hypercorrelation_qm(
                        fastpath.unit_query_features(fq_fast), fs_fast, m, model.pyramid_sizes
                    ),
                },
            ),
            (
                "4D learner + decoder",
                {
                    "channel-major (reference)": lambda: learner(masked),
                    "query-major, full grid": lambda: fastpath.learner_qm(learner, dense_qm),
                    "query-major, mask window": lambda: fastpath.learner_qm(learner, windows),
                },
            ),
        ]
        print(f"{args.backbone} {args.img_size}px 1-shot, {torch.get_num_threads()} threads, torch {torch.__version__}")
        for stage, fns in stages:
            for name, seconds in time_paths(fns, args.repeats).items():
                print(f"{stage:28s} {name:30s} {1000 * seconds:8.1f} ms")


if __name__ == "__main__":
    main()
