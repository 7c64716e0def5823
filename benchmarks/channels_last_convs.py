"""The fast learner's largest support-dim convolutions (ResNet-50, 400 px, batch 2), forward and
backward, on channel-major and on channels-last images.

    python benchmarks/channels_last_convs.py

Shapes: the finest level's first squeeze layer (5000 images of 4 channels on a 50x50 support grid,
kernel 5, stride 4; weight gradient only: its input is the constant hypercorrelation) and its
second (16 channels on 13x13; input and weight gradients). Median ms of 5 calls.
Results: benchmarks/RESULTS.md.
"""

from functools import partial

import torch
import torch.nn.functional as F

from hsnetlib.bench.timing import time_paths
from hsnetlib.fast.ops import conv_backward

CASES = (  # (images, channels, grid, out channels, kernel, stride, padding, input gradient)
    (5000, 4, 50, 16, 5, 4, 2, False),
    (5000, 16, 13, 64, 5, 4, 2, True),
)


def main() -> None:
    torch.manual_seed(0)
    for n, c, hw, o, k, s, p, need_input in CASES:
        w = torch.randn(o, c, k, k)
        out_hw = (hw + 2 * p - k) // s + 1
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(n, c, hw, hw).contiguous(memory_format=layout)
            g = torch.randn(n, o, out_hw, out_hw).contiguous(memory_format=layout)
            paths = {"forward": partial(F.conv2d, x, w, None, s, p)}
            paths["backward"] = partial(conv_backward, g, x, w, (s, s), (p, p), need_input)
            fwd, bwd = (1000 * t for t in time_paths(paths, 5).values())
            name = "channels-last" if layout == torch.channels_last else "channel-major"
            print(f"({n}, {c}, {hw}, {hw}) -> {o}, k{k} s{s}, {name}: forward {fwd:.0f} ms, backward {bwd:.0f} ms")


if __name__ == "__main__":
    main()
