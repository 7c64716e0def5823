import os
import socket
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from hsnetlib import HSNet
from hsnetlib.checkpoint import save_atomic
from hsnetlib.data import make_benchmark
from hsnetlib.engine import make_scheduler, train, train_one_epoch
from hsnetlib.train_config import TrainConfig

TINY = dict(
    benchmark="toy",
    backbone="resnet50",
    weights=None,
    img_size=64,
    batch_size=4,
    epochs=2,
    max_steps_per_epoch=2,
    val_episodes=4,
    progress=False,
)


def cfg(**values) -> TrainConfig:
    """A TrainConfig from flat fields (model fields such as backbone go to config.model)."""
    return TrainConfig().with_changes(**values)


def learner_state(model):
    return {k: v.clone() for k, v in model.hpn_learner.state_dict().items()}


def test_loss_decreases_on_a_repeated_toy_batch():
    ds = make_benchmark("toy", split="trn", img_size=64)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    model = HSNet("resnet50")
    opt = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    stats = [
        train_one_epoch(
            model,
            [batch] * 6,
            opt,
            make_scheduler(opt, "constant", 6),
            torch.device("cpu"),
            class_ids=ds.class_ids,
            progress=False,
        )
        for _ in range(3)
    ]
    assert stats[-1]["loss"] < stats[0]["loss"]
    assert all(s["steps"] == 6 for s in stats)


def test_resume_gives_the_same_weights_as_a_straight_run(tmp_path):
    straight = train(cfg(**TINY, logdir=str(tmp_path / "a")))
    train(cfg(**{**TINY, "epochs": 1}, logdir=str(tmp_path / "b")))
    resumed = train(cfg(**TINY, logdir=str(tmp_path / "b"), resume=True))
    for k, v in learner_state(straight.model).items():
        assert torch.equal(v, resumed.model.hpn_learner.state_dict()[k]), k
    assert list(resumed.history["epoch"]) == [0, 1]
    assert {"config.json", "metrics.csv", "last.pt", "best.pt"} <= set(os.listdir(tmp_path / "b"))
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "config", "best_miou"}
    assert HSNet.load(tmp_path / "b" / "best.pt").backbone_name == "resnet50"


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"epoch": torch.tensor(1)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_bad_config_values():
    with pytest.raises(ValueError, match="amp must be"):
        train(cfg(**{**TINY, "amp": "int8"}))
    with pytest.raises(ValueError, match="needs CUDA"):
        train(cfg(**{**TINY, "amp": "fp16", "device": "cpu"}, logdir="/tmp/hsnet-unused"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path):
    import ddp_worker

    config = {**TINY, "epochs": 1, "max_steps_per_epoch": 3, "logdir": str(tmp_path / "run")}
    mp.spawn(ddp_worker.run, args=(2, free_port(), config, str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    start = HSNet("resnet50").hpn_learner.state_dict()  # same seed 0 init: training moved the weights
    assert any(not torch.equal(w0[k], start[k]) for k in w0)
    assert (tmp_path / "run" / "last.pt").exists()  # rank 0 wrote the run folder


def hsnet(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "hsnetlib.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HSNET_SMOKE": "1"},
        timeout=300,
    )


def test_cli_help_and_version():
    for args in (["--help"], ["train", "--help"], ["test", "--help"], ["prepare", "--help"], ["demo", "--help"]):
        r = hsnet(*args)
        assert r.returncode == 0 and "usage: hsnet" in r.stdout
    assert hsnet("--version").stdout.startswith("hsnetlib ")


@pytest.mark.slow
def test_cli_train_then_test_on_toy(tmp_path):
    run = tmp_path / "run"
    train_args = [
        "train",
        "--benchmark",
        "toy",
        "--backbone",
        "resnet50",
        "--weights",
        "none",
        "--img-size",
        "64",
        "--bsz",
        "2",
        "--niter",
        "1",
        "--max-steps-per-epoch",
        "2",
        "--val-episodes",
        "2",
        "--logpath",
        str(run),
    ]
    r = hsnet(*train_args)
    assert r.returncode == 0, r.stderr
    assert "best val mIoU" in r.stdout and (run / "best.pt").exists()
    again = hsnet(*train_args)  # the same command again: refused, nothing replaced
    assert again.returncode == 2 and "already holds a run" in again.stderr and "--resume" not in again.stdout
    r = hsnet(
        "test",
        "--benchmark",
        "toy",
        "--backbone",
        "resnet50",
        "--load",
        str(run / "best.pt"),
        "--img-size",
        "64",
        "--episodes",
        "4",
        "--out",
        str(tmp_path / "res.csv"),
    )
    assert r.returncode == 0, r.stderr
    assert "mIoU" in r.stdout and (tmp_path / "res.csv").read_text().startswith("benchmark,fold,shot,miou,fb_iou")
    common = ["test", "--benchmark", "toy", "--backbone", "resnet50", "--load", str(run / "best.pt")]
    common += ["--img-size", "64", "--episodes", "4"]
    fast = hsnet(*common, "--out", str(tmp_path / "fast.csv"))
    ref = hsnet(*common, "--reference", "--out", str(tmp_path / "ref.csv"))
    bf16 = hsnet(*common, "--precision", "bf16", "--out", str(tmp_path / "bf16.csv"))
    assert fast.returncode == ref.returncode == bf16.returncode == 0, bf16.stderr
    fast, ref = pd.read_csv(tmp_path / "fast.csv"), pd.read_csv(tmp_path / "ref.csv")
    # the two paths' masks differ only at pixels whose logits tie within rounding (test_fast_model); one
    # such pixel moves a class's IoU by 100 / |union| points (unions ~1000 px at 64 px): 0.5 allows five
    assert fast["miou"].iloc[0] == pytest.approx(ref["miou"].iloc[0], abs=0.5)
    assert pd.read_csv(tmp_path / "bf16.csv")["precision"].iloc[0] == "bf16"
    r = hsnet("test", "--benchmark", "toy", "--backbone", "resnet101", "--load", str(run / "best.pt"))
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert "trained as another model (backbone: checkpoint 'resnet50', asked 'resnet101')" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--backbone", "resnet18"], "invalid choice: 'resnet18'"),
        (["test", "--benchmark", "toy", "--fold", "7", "--load", "x.pt"], "not found"),
        (
            ["train", "--benchmark", "toy", "--fold", "7", "--weights", "none", "--logpath", "/tmp/x"],
            "fold 7 out of range",
        ),
        (
            ["train", "--benchmark", "pascal", "--datapath", "/nonexistent", "--weights", "none"],
            "VOC2012/JPEGImages not found",
        ),
        (["train", "--benchmark", "toy", "--weights", "none", "--shot", "5"], "training uses 1-shot episodes"),
        (["train", "--benchmark", "toy", "--weights", "none", "--max-steps-per-epoch", "0"], "must be >= 1"),
        (
            ["train", "--benchmark", "toy", "--weights", "none", "--resume", "--logpath", "/nonexistent/typo"],
            "cannot resume: /nonexistent/typo/last.pt not found",
        ),
        (["demo", "--episodes", "2", "--out", "/nonexistent/demo"], "--episodes must be at least 4"),
        (["segment", "--load", "x.pt", "--query", "q.jpg", "--support", "s.jpg"], "arguments are required: --mask"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args, message):
    r = hsnet(*args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_folder_policy_refuses_to_mix_or_lose_runs(tmp_path):
    from hsnetlib.run_folder import RunFolderError

    first = cfg(**{**TINY, "epochs": 1}, logdir=str(tmp_path / "run"))
    train(first)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run .*resume.*overwrite"):
        train(first)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before  # nothing replaced
    for change in ({"fold": 1}, {"lr": 0.01}, {"img_size": 96}, {"seed": 3}, {"use_support_mask": False}):
        with pytest.raises(RunFolderError, match=f"configuration differs .*{next(iter(change))}"):
            train(cfg(**{**TINY, **change, "epochs": 2}, logdir=str(tmp_path / "run"), resume=True))
    with pytest.raises(RunFolderError, match="cannot resume: .*typo.*last.pt not found"):
        train(cfg(**TINY, logdir=str(tmp_path / "typo"), resume=True))
    (tmp_path / "run" / "last.pt.abc.tmp").write_bytes(b"half a file")
    again = train(cfg(**{**TINY, "epochs": 1}, logdir=str(tmp_path / "run"), overwrite=True))
    assert list(again.history["epoch"]) == [0] and not list((tmp_path / "run").glob("*.tmp"))


def test_metrics_csv_agrees_with_last_checkpoint(tmp_path):
    from hsnetlib.checkpoint import load_checkpoint_file

    result = train(cfg(**TINY, logdir=str(tmp_path / "run")))
    ckpt = load_checkpoint_file(tmp_path / "run" / "last.pt")
    saved = pd.DataFrame(ckpt["history"])
    pd.testing.assert_frame_equal(saved, result.history, check_dtype=False)
    assert list(saved["epoch"]) == [0, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shot": 5}, "1-shot episodes"),
        ({"max_steps_per_epoch": 0}, "max_steps_per_epoch must be >= 1"),
        ({"val_episodes": 0}, "val_episodes must be >= 1"),
        ({"img_size": 0}, "img_size must be an int of at least 32"),
        ({"logdir": ""}, "logdir is empty"),
    ],
)
def test_config_values_that_would_train_nothing_are_refused(tmp_path, change, message):
    config = cfg(**{**TINY, "logdir": str(tmp_path / "r"), **change})
    with pytest.raises(ValueError, match=message):
        train(config)


def test_best_and_last_are_independent_files(tmp_path):
    result = train(cfg(**TINY, logdir=str(tmp_path / "run")))
    last, best = tmp_path / "run" / "last.pt", tmp_path / "run" / "best.pt"
    assert os.stat(last).st_ino != os.stat(best).st_ino  # rewriting one in place never changes the other
    saved = best.read_bytes()
    with open(last, "r+b") as f:  # rewrite last.pt in place, as a restore from a backup would
        f.write(b"\0" * 16)
    assert best.read_bytes() == saved and result.best_epoch >= 0


@pytest.mark.slow
def test_cli_demo_end_to_end_in_smoke_size(tmp_path):
    r = hsnet("demo", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "demo" / "results.csv")
    weights = table.weights.iloc[0]  # "toy" (the shipped toy backbone), "imagenet" where its file is on disk
    threshold = [f"correlation threshold, {weights} backbone", "correlation threshold, random backbone"]
    assert list(table.method) == (["HSNet", *threshold, "all foreground"]) * 2
    assert list(table.shot) == [1] * 4 + [5] * 4 and (table.episodes == 8).all()
    assert {"img_size", "backbone", "weights", "steps", "seed"} <= set(table.columns) and (table.img_size == 64).all()
    assert table.miou.between(0, 100).all() and (tmp_path / "demo" / "predictions.png").stat().st_size > 0
    assert (tmp_path / "demo" / "run" / "best.pt").is_file() and (weights != "toy" or "weights='toy'" in r.stdout)
    assert f"checkpoint: {tmp_path / 'demo' / 'run' / 'best.pt'}" in r.stdout and "mIoU: mean over" in r.stdout
    command = r.stdout.strip().splitlines()[-1].split()  # the ready-to-paste next step, with files that exist
    assert command[:2] == ["hsnet", "segment"]
    done = hsnet(*command[1:])
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "segmented.png").is_file() and (tmp_path / "demo" / "segmented_mask.png").is_file()
