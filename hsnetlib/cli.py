"""The ``hsnet`` command: a thin argparse layer over the library.

    hsnet demo --out DIR                     train + evaluate on the embedded toy benchmark (CPU, minutes)
    hsnet train --benchmark pascal --fold 0  the paper's training (flags mirror the official train.py)
    hsnet test --benchmark pascal --load best_model.pt ...   the official evaluation protocol
    hsnet segment --load CKPT --query Q.jpg --support S.jpg --mask M.png   your own images
    hsnet prepare pascal|coco|check ...      build dataset layouts
    hsnet splits download|verify             fetch / check the official split files
    hsnet bench kernels|inference|training   Table 4, inference latency, training-step speed

Errors exit with status 2 and one line ``hsnet: error: ...`` on stderr.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .cli_config import add_config_args, config_from_args

DATA_FIELDS = ("benchmark", "datapath", "fold", "img_size", "splits_dir", "verify_splits", "num_workers", "device")
MODEL_FIELDS = ("kernel", "use_support_mask")


def cmd_train(args):
    from .engine import train
    from .train_config import TrainConfig

    result = train(config_from_args(TrainConfig, args))
    if result.history is not None:
        print(f"best val mIoU {result.best_miou:.2f} at epoch {result.best_epoch}; run folder {result.logdir}")


def cmd_test(args):
    from .data import make_benchmark
    from .evaluation import evaluate
    from .model import HSNet

    model = HSNet.load(args.load, backbone=args.backbone, kernel=args.kernel, use_support_mask=args.use_support_mask)
    dataset = make_benchmark(
        args.benchmark,
        args.datapath,
        fold=args.fold,
        split="test",
        shot=args.nshot,
        img_size=args.img_size,
        use_original_imgsize=args.use_original_imgsize,
        splits_dir=args.splits_dir,
        verify_splits=args.verify_splits,
    )
    result = evaluate(
        model,
        dataset,
        device=args.device,
        batch_size=args.bsz,
        num_workers=args.num_workers,
        max_episodes=args.episodes,
        predict_kwargs={"precision": args.precision, "fused": not args.reference},
    )
    row = result.row(backbone=model.backbone_name, checkpoint=args.load, precision=args.precision)
    print(
        f"{args.benchmark} fold {args.fold} {args.nshot}-shot: mIoU {result.miou:.2f}  FB-IoU {result.fb_iou:.2f}"
        f"  ({result.episodes} episodes)"
    )
    if args.out:
        row.to_csv(args.out, index=False)


def cmd_segment(args):
    from .checkpoint import load_checkpoint_file
    from .model import HSNet
    from .user_images import load_user_episode, segment
    from .viz import save_segmentation

    if len(args.support) != len(args.mask):
        raise ValueError(f"give one --mask per --support: got {len(args.support)} and {len(args.mask)}")
    saved = load_checkpoint_file(args.load)
    img_size = args.img_size
    if img_size is None:  # hsnetlib checkpoints know the size they were trained at; released ones: 400
        img_size = (saved.get("config") or {}).get("img_size", 400) if isinstance(saved, dict) else 400
    model = HSNet.from_checkpoint(saved, args.load, backbone=args.backbone)
    episode = load_user_episode(args.query, args.support, args.mask, img_size)
    pred = segment(model, episode)
    overlay_path, mask_path = save_segmentation(episode, pred, args.out)
    share = 100 * float(pred.float().mean())
    print(f"{len(args.support)}-shot at {img_size} px: {share:.1f}% of the query is foreground")
    print(f"wrote {overlay_path} (supports, query, prediction) and {mask_path} (mask, white = object)")


def cmd_prepare(args):
    from .data.prepare import check_root, prepare_coco, prepare_pascal

    if args.what == "pascal":
        print(prepare_pascal(args.voc, args.sbd, args.out))
    elif args.what == "coco":
        print(prepare_coco(args.coco, args.out))
    else:
        import pandas as pd

        print(pd.DataFrame(check_root(args.root)).to_string(index=False))


def cmd_splits(args) -> int:
    from .data import splits

    missing = []
    for name in splits.all_split_names():
        if args.action == "download":
            path = splits.split_path(name, args.dir)
        else:
            path = splits.default_splits_dir(args.dir) / name
            if not path.is_file():
                print(f"missing   {name}")
                missing.append(name)
                continue
            path = splits.split_path(name, args.dir, download=False)
        print(f"ok        {path}")
    if missing:
        print(f"hsnet: {len(missing)} split files missing; fetch them with `hsnet splits download`", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, img_size=args.img_size, episodes=args.episodes, seed=args.seed)


def cmd_bench(args):
    import pandas as pd

    from . import profile, training_speed

    if args.what == "kernels":
        table = profile.kernel_table(
            backbone=args.backbone or "resnet101", img_size=args.img_size, repeats=args.repeats, device=args.device
        )
    elif args.what == "inference":
        table = profile.inference_table(
            backbones=args.backbones,
            img_size=args.img_size,
            repeats=args.repeats,
            device=args.device,
            batch=args.batch,
            shots=tuple(args.shots),
            precisions=tuple(args.precisions),
            masks=args.masks or profile.MASK_KINDS,
        )
    else:
        table = training_speed.training_table(
            backbone=args.backbone or "resnet50",
            settings=tuple(args.settings),
            masks=args.masks or ("box", "scattered"),
            repeats=args.repeats,
            device=args.device,
            amp=args.amp,
        )
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.attrs)
        print(table.to_string(index=args.what == "kernels"))
    if args.out:
        table.to_csv(args.out, index=args.what == "kernels")


def _mask_kinds(text: str) -> tuple[str, ...]:
    from .profile import MASK_KINDS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in MASK_KINDS]
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(f"expected mask kinds among {','.join(MASK_KINDS)}, got {text!r}")
    return kinds


def _setting(text: str) -> tuple[int, int]:
    """``400x2`` -> (img_size 400, batch 2)."""
    size, _, batch = text.partition("x")
    if not (size.isdigit() and batch.isdigit()):
        raise argparse.ArgumentTypeError(f"expected SIZExBATCH such as 400x2, got {text!r}")
    return int(size), int(batch)


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (``hsnet: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"hsnet: error: {message} (see `{self.prog} --help`)\n")


def _train_parser(sub) -> None:
    from .train_config import TrainConfig

    p = sub.add_parser("train", help="train HSNet (flags mirror the official train.py)")
    add_config_args(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def _test_parser(sub) -> None:
    from .backbone import BACKBONES
    from .train_config import TrainConfig

    p = sub.add_parser("test", help="evaluate a checkpoint with the official protocol")
    add_config_args(p, TrainConfig, only=DATA_FIELDS + MODEL_FIELDS)
    p.add_argument("--backbone", default=None, choices=list(BACKBONES), help="default: inferred from the checkpoint")
    p.add_argument("--load", required=True, help="checkpoint: official best_model.pt or hsnet's best.pt/last.pt")
    p.add_argument("--nshot", type=int, default=1)
    p.add_argument("--bsz", type=int, default=1)
    p.add_argument("--use-original-imgsize", action="store_true", help="evaluate at each query's original size")
    p.add_argument("--episodes", type=int, default=None, help="only the first N episodes (quick look)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: bfloat16 autocast")
    p.add_argument("--reference", action="store_true", help="the per-shot reference path (official structure)")
    p.add_argument("--out", default=None, help="write the result row to this CSV")
    p.set_defaults(func=cmd_test)


def _segment_parser(sub) -> None:
    from .backbone import BACKBONES

    p = sub.add_parser("segment", help="segment your own query image from K support images and masks")
    p.add_argument("--load", required=True, help="checkpoint: official best_model.pt or hsnet's best.pt")
    p.add_argument("--backbone", default=None, choices=list(BACKBONES), help="default: inferred from the checkpoint")
    p.add_argument("--query", required=True, help="query image (JPEG/PNG)")
    p.add_argument("--support", action="append", required=True, help="support image; repeat for K shots")
    p.add_argument("--mask", action="append", required=True, help="support mask (white = object), one per --support")
    p.add_argument("--img-size", type=int, default=None, help="network input size (default: the checkpoint's, or 400)")
    p.add_argument("--out", default="pred.png", help="overlay PNG; the mask goes beside it as *_mask.png")
    p.set_defaults(func=cmd_segment)


def _data_parsers(sub) -> None:
    p = sub.add_parser("prepare", help="build dataset layouts (SegmentationClassAug, COCO masks) or check a root")
    psub = p.add_subparsers(dest="what", required=True, parser_class=OneLineErrors)
    q = psub.add_parser("pascal", help="VOC2012 + SBD -> VOC2012/SegmentationClassAug")
    q.add_argument("--voc", required=True, help="VOCdevkit/VOC2012 folder")
    q.add_argument("--sbd", default=None, help="SBD 'dataset' folder (holding cls/)")
    q.add_argument("--out", required=True, help="data root to write VOC2012/ into")
    q = psub.add_parser("coco", help="instances_*.json -> COCO2014/annotations/<split>/*.png")
    q.add_argument("--coco", required=True, help="folder with train2014/, val2014/, annotations/")
    q.add_argument("--out", required=True, help="data root to write COCO2014/ into")
    q = psub.add_parser("check", help="report what is present under a data root")
    q.add_argument("root")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser(
        "splits", help="download or verify the official split files (verify: status 1 if one is missing)"
    )
    p.add_argument("action", choices=["download", "verify"])
    p.add_argument("--dir", default=None, help="splits folder (default: ~/.cache/hsnetlib/splits)")
    p.set_defaults(func=cmd_splits)


def _demo_parser(sub) -> None:
    p = sub.add_parser("demo", help="train and evaluate on the toy benchmark (CPU, minutes)")
    p.add_argument("--out", default="demo_out", help="folder for results.csv and predictions.png")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's budget)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--episodes", type=int, default=None, help="test episodes per setting")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def _bench_parser(sub) -> None:
    from .backbone import BACKBONES
    from .profile import MASK_KINDS
    from .train_config import AMP_MODES

    p = sub.add_parser("bench", help="measure kernels (Table 4), inference latency or training steps")
    p.add_argument("what", choices=["kernels", "inference", "training"])
    p.add_argument("--backbone", default=None, choices=list(BACKBONES), help="kernels: resnet101; training: resnet50")
    p.add_argument("--backbones", nargs="+", default=["resnet50"], choices=list(BACKBONES), help="inference")
    p.add_argument("--img-size", type=int, default=None, help="kernels / inference (default: 400)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median), after one warm-up round")
    p.add_argument("--batch", type=int, default=1, help="episodes per call (inference)")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5], help="K values (inference)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument(
        "--masks",
        type=_mask_kinds,
        default=None,
        help=f"support-mask kinds, comma-separated, of {','.join(MASK_KINDS)} "
        f"(default: all three for inference, box,scattered for training)",
    )
    p.add_argument("--settings", nargs="+", type=_setting, default=[(400, 2), (128, 8)], help="training: SIZExBATCH")
    p.add_argument("--amp", default="off", choices=list(AMP_MODES), help="training: add the fused path under AMP")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="also write the table to this CSV")
    p.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="hsnet", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hsnetlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrors)
    for add in (_train_parser, _test_parser, _segment_parser, _data_parsers, _demo_parser, _bench_parser):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
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
