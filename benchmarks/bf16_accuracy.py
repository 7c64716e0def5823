"""Toy-benchmark mIoU of a trained HSNet in fp32 vs bf16 (the bar: bf16 within 0.5 mIoU of fp32).

    hsnet demo --out demo_out                      # trains the toy model (writes demo_out/run/best.pt)
    python benchmarks/bf16_accuracy.py [--load demo_out/run/best.pt] [--episodes 300] [--img-size 128]

Evaluates the checkpoint on toy fold 0's test episodes (the demo's setting), 1- and 5-shot, with
the reference path (``fused=False``), the default fast path in fp32 and in bf16, and prints the differences.
Results: benchmarks/RESULTS.md.
"""

import argparse

import pandas as pd

from hsnetlib import HSNet
from hsnetlib.data import make_benchmark
from hsnetlib.evaluation import evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", default="demo_out/run/best.pt")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    model = HSNet.load(args.load)
    rows = []
    for shot in (1, 5):
        test = make_benchmark(
            "toy", fold=0, split="test", shot=shot, img_size=args.img_size, num_episodes=args.episodes
        )
        for path, precision in (("reference", "fp32"), ("fused", "fp32"), ("fused", "bf16")):
            kwargs = {"precision": precision, "fused": path == "fused"}
            r = evaluate(model, test, batch_size=args.batch, progress=False, predict_kwargs=kwargs)
            row = {"shot": shot, "path": path, "precision": precision, "miou": r.miou, "fb_iou": r.fb_iou}
            rows.append({**row, "episodes": r.episodes})
    table = pd.DataFrame(rows).round(2)
    print(table.to_string(index=False))
    for shot in (1, 5):
        fused = table[(table.shot == shot) & (table.path == "fused")].set_index("precision")["miou"]
        ref = table[(table.shot == shot) & (table.path == "reference")]["miou"].iloc[0]
        fp32_gap, bf16_gap = fused["fp32"] - ref, fused["bf16"] - fused["fp32"]
        print(f"{shot}-shot: fused fp32 - reference = {fp32_gap:+.2f}, bf16 - fp32 = {bf16_gap:+.2f} mIoU")


if __name__ == "__main__":
    main()
