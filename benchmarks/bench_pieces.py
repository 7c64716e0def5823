"""Where the time of a K-shot episode goes, batched vs shot by shot (CPU design choice of predict).

    python benchmarks/bench_pieces.py [--backbone resnet50] [--img-size 400] [--shot 5]

Times (best of 2 after a warm-up) the backbone on K support images, the reference hypercorrelation
and the reference 4D learner, once as one batch of K and once as K batches of 1; then the whole
fast ``predict`` with ``FastOptions(batch_shots=True)`` vs ``False`` (interleaved medians of 3).
Results: benchmarks/RESULTS.md.
"""

import argparse
import time

import torch

from hsnetlib import HSNet
from hsnetlib.bench.masks import episode
from hsnetlib.bench.timing import time_paths
from hsnetlib.fast import FastHSNet, FastOptions


def best_of(fn, n=2):
    fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--img-size", type=int, default=400)
    parser.add_argument("--shot", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, K = HSNet(args.backbone).eval(), args.shot
    q, s, m = episode(args.img_size, K)
    with torch.inference_mode():
        fq, fs = model.features(q), model.features(s[0])
        fqK = [f.repeat_interleave(K, 0) for f in fq]
        one = [[f[k : k + 1] for f in fs] for k in range(K)]
        pyrK = model.hypercorrelation(fqK, fs, m[0])
        pyr1 = model.hypercorrelation(fq, one[0], m[0, :1])
        rows = [
            (
                "backbone, K support images",
                best_of(lambda: model.features(s[0])),
                best_of(lambda: [model.features(s[0, k : k + 1]) for k in range(K)]),
            ),
            (
                "hypercorrelation (Eq. 2)",
                best_of(lambda: model.hypercorrelation(fqK, fs, m[0])),
                best_of(lambda: [model.hypercorrelation(fq, one[k], m[0, k : k + 1]) for k in range(K)]),
            ),
            (
                "4D learner + decoder",
                best_of(lambda: model.hpn_learner(pyrK)),
                best_of(lambda: [model.hpn_learner(pyr1) for _ in range(K)]),
            ),
        ]
    # the whole fast predict, shots batched vs one after the other, interleaved medians
    fast = {flag: FastHSNet(model.config, options=FastOptions(batch_shots=flag)).eval() for flag in (True, False)}
    for f in fast.values():
        f.load_state_dict(model.state_dict())
    whole = time_paths({flag: lambda f=f: f.predict(q, s, m) for flag, f in fast.items()}, repeats=3)
    rows.append(("predict (fast path), whole episode", whole[True], whole[False]))
    print(f"{args.backbone} {args.img_size}px {K}-shot, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'piece':32s} {'one batch of K':>15s} {'K x batch 1':>12s}")
    for name, batched, single in rows:
        print(f"{name:32s} {batched:14.2f}s {single:11.2f}s")


if __name__ == "__main__":
    main()
