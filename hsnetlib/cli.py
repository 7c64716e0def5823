"""The ``hsnet`` command: each subcommand is a few lines over the library's functions.

Errors exit with status 2 and one line ``hsnet: error: ...`` on stderr. Only the subcommand that runs
is built (and imports PyTorch), so ``hsnet --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from . import __version__
from .cli_config import OneLineErrors

DESCRIPTION = """HSNet (Hypercorrelation Squeeze for Few-Shot Segmentation, ICCV 2021): train, evaluate and
measure it, or segment your own images. `hsnet COMMAND --help` explains each command."""


@dataclass(frozen=True)
class Command:
    summary: str  # one line, for `hsnet --help`
    example: str  # a command line that works as typed (after the README's quick start)


COMMANDS = {
    "demo": Command(
        "train and evaluate HSNet on the embedded toy benchmark (CPU, under 10 minutes, no download)",
        "hsnet demo --out demo_out",
    ),
    "train": Command(
        "train HSNet as the paper does (flags mirror the official train.py)",
        "hsnet train --benchmark pascal --fold 0 --backbone resnet101 --datapath Datasets_HSN --logpath runs/pascal-f0",
    ),
    "test": Command(
        "evaluate a checkpoint with the official protocol (model and input size from the checkpoint)",
        "hsnet test --benchmark toy --load demo_out/run/best.pt --episodes 300",
    ),
    "segment": Command(
        "segment your own query image from K support images and their masks",
        "hsnet segment --load demo_out/run/best.pt --query demo_out/examples/query.png "
        "--support demo_out/examples/support.png --mask demo_out/examples/support_mask.png --out pred.png",
    ),
    "pretrain": Command(
        "pre-train the toy world's backbone (weights='toy'; minutes on a CPU, deterministic from its seed)",
        "hsnet pretrain --backbone resnet50-w16",
    ),
    "prepare": Command(
        "build the dataset layouts (PASCAL SegmentationClassAug, COCO masks) or check a data root",
        "hsnet prepare check Datasets_HSN",
    ),
    "splits": Command(
        "download or verify the official split files (verify: exit status 1 if one is missing)",
        "hsnet splits verify",
    ),
    "bench": Command(
        "measure the 4D kernels (Table 4), inference latency or the training step",
        "hsnet bench inference --backbones resnet50 --precisions fp32",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``hsnet`` parser; only ``command``'s own flags are built (the others list their summary)."""
    from . import cli_commands

    parser = OneLineErrors(prog="hsnet", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hsnetlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrors, metavar="COMMAND")
    for name, spec in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=spec.summary,
            description=f"{spec.summary}.\n\nexample:\n  {spec.example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == command:
            getattr(cli_commands, f"add_{name}_args")(p)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, OSError) as err:  # bad input (HSNetError and checks) or files: one line; bugs keep their trace
        message = " ".join(str(err).split())  # one line
        print(f"hsnet: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hsnet: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
