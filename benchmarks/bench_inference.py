"""Per-episode inference latency of HSNet.predict (hsnetlib.profile.inference_table).

Three paths timed in one process on the same weights and inputs: ``official-style`` (the official
code's computation, hsnetlib/official_style.py), ``reference`` (``predict(fused=False)``, the test
oracle) and ``fused`` (the default ``predict``, hsnetlib/fastpath.py) in fp32 and bf16; with FLOPs
and achieved GFLOP/s against this machine's measured GEMM peak.

    python benchmarks/bench_inference.py [--backbones resnet50 resnet101 vgg16] [--img-size 400] [--repeats 3]
        [--shots 1 5] [--precisions fp32 bf16] [--batch 1] [--device auto] [--out table.csv]

Same as `hsnet bench inference`. Results: benchmarks/RESULTS.md.
"""

import argparse

import pandas as pd

from hsnetlib.profile import inference_table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "resnet101", "vgg16"])
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    table = inference_table(
        args.backbones,
        args.img_size,
        args.repeats,
        args.device,
        shots=tuple(args.shots),
        precisions=tuple(args.precisions),
        batch=args.batch,
    )
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.attrs)
        print(table.to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
