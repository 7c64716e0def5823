"""Toy-benchmark mIoU of a trained HSNet: reference, fast fp32 and fast bf16 (the bar: bf16 within 0.5 mIoU).

    hsnet demo --out demo_out                      # trains the toy model (writes demo_out/run/best.pt)
    python benchmarks/bf16_accuracy.py [--load demo_out/run/best.pt] [--episodes 300]

Evaluates the checkpoint on toy fold 0's test episodes at its trained size, 1- and 5-shot, with the
reference computation (hsnetlib.model.HSNet), the fast path in fp32 and in bf16 autocast, and prints
the differences. Results: benchmarks/RESULTS.md.
"""

import argparse

import pandas as pd

from hsnetlib.build import load_saved_model
from hsnetlib.checkpoint import load_checkpoint_file, trained_img_size
from hsnetlib.data import make_benchmark
from hsnetlib.evaluation import evaluate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", default="demo_out/run/best.pt")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    saved = load_checkpoint_file(args.load)
    img_size = trained_img_size(saved) or 400
    rows = []
    for shot in (1, 5):
        test = make_benchmark("toy", fold=0, split="test", shot=shot, img_size=img_size, num_episodes=args.episodes)
        for path, precision in (("reference", "fp32"), ("fast", "fp32"), ("fast", "bf16")):
            model = load_saved_model(saved, args.load, fast_path=path == "fast")
            r = evaluate(model, test, batch_size=args.batch, progress=False, precision=precision)
            row = {"shot": shot, "path": path, "precision": precision, "miou": r.miou, "fb_iou": r.fb_iou}
            rows.append({**row, "episodes": r.episodes})
    table = pd.DataFrame(rows).round(2)
    print(f"{args.load}, {img_size} px")
    print(table.to_string(index=False))
    for shot in (1, 5):
        fast = table[(table.shot == shot) & (table.path == "fast")].set_index("precision")["miou"]
        ref = table[(table.shot == shot) & (table.path == "reference")]["miou"].iloc[0]
        fp32_gap, bf16_gap = fast["fp32"] - ref, fast["bf16"] - fast["fp32"]
        print(f"{shot}-shot: fast fp32 - reference = {fp32_gap:+.2f}, bf16 - fp32 = {bf16_gap:+.2f} mIoU")


if __name__ == "__main__":
    main()
