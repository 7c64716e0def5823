"""Toy-benchmark mIoU of a trained HSNet in fp32 vs bf16 (issue 7: bf16 must stay within 0.5 mIoU).

    hsnet demo --out demo_out                      # trains the toy model (writes demo_out/run/best.pt)
    python benchmarks/bf16_accuracy.py [--load demo_out/run/best.pt] [--episodes 300] [--img-size 128]

Evaluates the checkpoint on toy fold 0's test episodes (the demo's setting), 1- and 5-shot, with
``predict(precision="fp32")`` and ``predict(precision="bf16")``, and prints the difference.
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
    model = HSNet.from_official_checkpoint(args.load)
    rows = []
    for shot in (1, 5):
        test = make_benchmark(
            "toy", fold=0, split="test", shot=shot, img_size=args.img_size, num_episodes=args.episodes
        )
        for precision in ("fp32", "bf16"):
            r = evaluate(
                model,
                test,
                batch_size=args.batch,
                progress=False,
                predict_kwargs={"precision": precision},
            )
            rows.append(
                {"shot": shot, "precision": precision, "miou": r.miou, "fb_iou": r.fb_iou, "episodes": r.episodes}
            )
    table = pd.DataFrame(rows).round(2)
    print(table.to_string(index=False))
    for shot in (1, 5):
        by = table[table.shot == shot].set_index("precision")["miou"]
        print(f"{shot}-shot: bf16 - fp32 = {by['bf16'] - by['fp32']:+.2f} mIoU")


if __name__ == "__main__":
    main()
