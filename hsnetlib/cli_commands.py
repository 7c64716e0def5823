"""The subcommands of ``hsnet`` (:mod:`hsnetlib.cli`): for each, its flags (``add_<name>_args``, derived from
the config dataclasses where one exists) and what it runs. Heavy imports happen inside, when a command runs."""

from __future__ import annotations

import argparse
import sys

DATA_FIELDS = ("benchmark", "datapath", "fold", "splits_dir", "verify_splits", "num_workers", "device", "fast_path")


def _model_flags_from_checkpoint(p: argparse.ArgumentParser) -> None:
    """The model's flags, each defaulting to what the checkpoint says (a flag that contradicts it is refused)."""
    from .cli_config import NEGATIVE_FLAGS
    from .model_config import ModelConfig

    for f in ModelConfig.__dataclass_fields__.values():
        meta, flag = f.metadata, f"--{f.name.replace('_', '-')}"
        shown = f"{meta['help']} (default: the checkpoint's)"
        if isinstance(f.default, bool):
            flag = NEGATIVE_FLAGS.get(f.name, flag) if f.default else flag
            p.add_argument(flag, dest=f.name, action="store_const", const=not f.default, default=None, help=shown)
        else:
            kind, choices = type(f.default), meta["choices"]
            p.add_argument(flag, dest=f.name, default=None, type=kind, choices=choices, help=shown)


def _expected_model(args) -> dict:
    from .model_config import ModelConfig

    return {name: getattr(args, name) for name in ModelConfig.__dataclass_fields__}


def load_for_cli(args):
    """(model, checkpoint content, input size) from ``--load`` and the model / size flags."""
    from .build import load_saved_model
    from .checkpoint import load_checkpoint_file, trained_img_size
    from .data.episodes import PAPER_IMG_SIZE, check_img_size

    saved = load_checkpoint_file(args.load)
    model = load_saved_model(saved, args.load, args.fast_path, **_expected_model(args))
    trained = trained_img_size(saved)
    if args.img_size is not None and trained is not None and args.img_size != trained:
        raise ValueError(
            f"--img-size {args.img_size} contradicts {args.load}, trained at {trained} px; drop --img-size "
            f"to evaluate at the trained size"
        )
    size = check_img_size(args.img_size if args.img_size is not None else trained or PAPER_IMG_SIZE, "--img-size")
    return model, saved, size


def weights_of(saved) -> str:
    """How the checkpoint's backbone was initialized, in words."""
    config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(config, dict):
        return "released checkpoint"
    return {None: "random backbone", "imagenet": "ImageNet backbone"}.get(config.get("weights"), f"{config['weights']}")


# -- train ---------------------------------------------------------------------------------------
def add_train_args(p):
    from .cli_config import add_config_args
    from .train_config import TrainConfig

    add_config_args(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def cmd_train(args):
    from .cli_config import config_from_args
    from .engine import train
    from .train_config import TrainConfig

    result = train(config_from_args(TrainConfig, args))
    if result.history is not None:
        print(f"best val mIoU {result.best_miou:.2f} at epoch {result.best_epoch}; run folder {result.logdir}")
        print(f"next: hsnet test --benchmark {args.benchmark} --fold {args.fold} --load {result.logdir / 'best.pt'}")


# -- test ----------------------------------------------------------------------------------------
def add_test_args(p):
    from .cli_config import add_config_args
    from .evaluation import PRECISIONS
    from .train_config import TrainConfig

    add_config_args(p, TrainConfig, only=DATA_FIELDS)
    _model_flags_from_checkpoint(p)
    p.add_argument("--load", required=True, help="checkpoint: official best_model.pt or hsnet's best.pt / last.pt")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the checkpoint's, else 400)")
    p.add_argument("--nshot", type=int, default=1, help="supports per episode (K)")
    p.add_argument("--bsz", type=int, default=1, help="episodes per batch")
    p.add_argument("--use-original-imgsize", action="store_true", help="score at each query's original size")
    p.add_argument("--episodes", type=int, default=None, help="only the first N episodes (a quick look)")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="bf16: bfloat16 autocast")
    p.add_argument("--out", default=None, help="also write the result row to this CSV")
    p.set_defaults(func=cmd_test)


def cmd_test(args):
    from .data import make_benchmark
    from .evaluation import evaluate

    model, saved, img_size = load_for_cli(args)
    dataset = make_benchmark(
        args.benchmark, args.datapath, fold=args.fold, split="test", shot=args.nshot, img_size=img_size,
        use_original_imgsize=args.use_original_imgsize, splits_dir=args.splits_dir, verify_splits=args.verify_splits,
    )  # fmt: skip
    name = type(model).__name__
    result = evaluate(
        model, dataset, device=args.device, batch_size=args.bsz, num_workers=args.num_workers,
        max_episodes=args.episodes, precision=args.precision, desc=f"test {name} {args.nshot}-shot",
    )  # fmt: skip
    weights = weights_of(saved)
    print(
        f"{args.benchmark} fold {args.fold} {args.nshot}-shot, {args.load} ({weights}), {img_size} px, "
        f"{result.episodes} episodes: mIoU {result.miou:.2f}  FB-IoU {result.fb_iou:.2f}"
    )
    if args.out:
        row = result.row(backbone=model.backbone_name, checkpoint=str(args.load), img_size=img_size, weights=weights)
        row.assign(precision=args.precision).to_csv(args.out, index=False)


# -- segment -------------------------------------------------------------------------------------
def add_segment_args(p):
    from .cli_config import add_config_args
    from .train_config import TrainConfig

    add_config_args(p, TrainConfig, only=("device", "fast_path"))
    _model_flags_from_checkpoint(p)
    p.add_argument("--load", required=True, help="checkpoint: official best_model.pt or hsnet's best.pt")
    p.add_argument("--query", required=True, help="query image (JPEG/PNG)")
    p.add_argument("--support", action="append", required=True, help="support image; repeat for K shots")
    p.add_argument("--mask", action="append", required=True, help="support mask (white = object), one per --support")
    p.add_argument("--img-size", type=int, default=None, help="network input size (default: the checkpoint's, or 400)")
    p.add_argument("--out", default="pred.png", help="overlay PNG; the mask goes beside it as <name>_mask.png")
    p.set_defaults(func=cmd_segment)


def cmd_segment(args):
    from .evaluation import resolve_device
    from .user_images import load_user_episode, segment, segmentation_outputs
    from .viz import save_segmentation

    if len(args.support) != len(args.mask):
        raise ValueError(f"give one --mask per --support: got {len(args.support)} and {len(args.mask)}")
    outputs = segmentation_outputs(args.out, [args.query, *args.support, *args.mask])  # checked before any work
    device = resolve_device(args.device)
    model, _, img_size = load_for_cli(args)
    episode = load_user_episode(args.query, args.support, args.mask, img_size)
    pred = segment(model, episode, device)
    overlay_path, mask_path = save_segmentation(episode, pred, *outputs)
    share = 100 * float(pred.float().mean())
    print(f"{len(args.support)}-shot at {img_size} px: {share:.1f}% of the query is foreground")
    print(f"wrote {overlay_path} (supports, query, prediction) and {mask_path} (mask, white = object)")


# -- the toy backbone ----------------------------------------------------------------------------
def add_pretrain_args(p):
    from .cli_config import add_config_args
    from .toy_pretrain import PretrainConfig

    add_config_args(p, PretrainConfig)
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args):
    from .cli_config import config_from_args
    from .toy_pretrain import PretrainConfig, pretrain

    path = pretrain(config_from_args(PretrainConfig, args))
    print(f"wrote {path}; HSNet(backbone={args.backbone!r}, weights='toy') now loads it")


# -- data ----------------------------------------------------------------------------------------
def add_prepare_args(p):
    from .cli_config import OneLineErrors

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


def cmd_prepare(args):
    from .data.prepare import check_root, prepare_coco, prepare_pascal

    if args.what == "pascal":
        print(prepare_pascal(args.voc, args.sbd, args.out))
    elif args.what == "coco":
        print(prepare_coco(args.coco, args.out))
    else:
        import pandas as pd

        print(pd.DataFrame(check_root(args.root)).to_string(index=False))


def add_splits_args(p):
    p.add_argument("action", choices=["download", "verify"])
    p.add_argument("--dir", default=None, help="splits folder (default: ~/.cache/hsnetlib/splits)")
    p.set_defaults(func=cmd_splits)


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


# -- demo and bench ------------------------------------------------------------------------------
def add_demo_args(p):
    p.add_argument("--out", default="demo_out", help="folder for the run, results.csv, predictions.png, examples/")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's budget)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default: the demo's)")
    p.add_argument("--episodes", type=int, default=None, help="test episodes per setting (default: the demo's)")
    p.add_argument("--seed", type=int, default=0, help="seeds the model's initialization and the training episodes")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args):
    from .demo import run_demo

    run_demo(args.out, args.steps, args.img_size, args.episodes, args.seed, overwrite=args.overwrite)


def add_bench_args(p):
    from .bench.inference import InferenceBench
    from .bench.kernels import KernelBench
    from .bench.training import TrainingBench
    from .cli_config import OneLineErrors, add_config_args

    bsub = p.add_subparsers(dest="what", required=True, parser_class=OneLineErrors)
    for what, config, text in (
        ("kernels", KernelBench, "Table 4: the three 4D kernels in the same network"),
        ("inference", InferenceBench, "per-episode latency, fast path vs reference"),
        ("training", TrainingBench, "one training step, fast path vs reference"),
    ):
        q = bsub.add_parser(what, help=text, description=text)
        add_config_args(q, config)
        q.add_argument("--out", default=None, help="also write the table to this CSV")
        q.set_defaults(func=cmd_bench, config=config)


def cmd_bench(args):
    import pandas as pd

    from .cli_config import config_from_args

    bench = config_from_args(args.config, args)
    if args.what == "kernels":
        from .bench.kernels import kernel_table as table_of
    elif args.what == "inference":
        from .bench.inference import inference_table as table_of
    else:
        from .bench.training import training_table as table_of
    table = table_of(bench)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(table.attrs)
        print(table.to_string(index=args.what == "kernels"))
    if args.out:
        table.to_csv(args.out, index=args.what == "kernels")
