"""Table 4 on this machine: the three 4D kernels in the same HSNet (hsnetlib.profile.kernel_table).

    python benchmarks/bench_kernels.py [--backbone resnet101] [--img-size 400] [--repeats 3] [--out kernels.csv]

Same as `hsnet bench kernels`. Results and the machine they came from: benchmarks/RESULTS.md.
"""

import argparse

import pandas as pd

from hsnetlib.profile import kernel_table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet101")
    parser.add_argument("--img-size", type=int, default=None, help="default: 400, the paper's size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    table = kernel_table(args.backbone, args.img_size, args.repeats, args.device)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.attrs)
        print(table)
    if args.out:
        table.to_csv(args.out)


if __name__ == "__main__":
    main()
