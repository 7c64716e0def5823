"""Runs that never clobber each other, outputs that never overwrite inputs, checkpoints that carry their model."""

import os
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from hsnetlib import HSNet
from hsnetlib.checkpoint import load_checkpoint_file
from hsnetlib.cli import main
from hsnetlib.engine import train
from hsnetlib.model_config import ModelConfig
from hsnetlib.run_folder import RunFolderError
from hsnetlib.train_config import TrainConfig

TINY = dict(
    benchmark="toy", model=ModelConfig(backbone="resnet50-w8"), weights=None, img_size=64, batch_size=2,
    max_steps_per_epoch=1, val_episodes=2, epochs=1, progress=False,
)  # fmt: skip


CLI_TINY = ["--benchmark", "toy", "--backbone", "resnet50-w8", "--weights", "none", "--img-size", "64", "--bsz", "2",
            "--max-steps-per-epoch", "1", "--val-episodes", "2", "--no-progress"]  # fmt: skip


def tiny(logdir, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "logdir": str(logdir), **changes})


def test_a_second_process_is_refused_while_a_run_holds_the_folder(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "hsnetlib.cli", "train", *CLI_TINY, "--niter", "5000", "--logpath", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):  # the lock is taken before any training (an event, not a guessed delay)
            if (run / ".lock").is_file() and (run / ".lock").read_text().strip():
                break
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "hsnetlib.cli", "train", *CLI_TINY, "--logpath", str(run), "--overwrite"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2
        assert f"run folder {run} is in use by process {first.pid}" in second.stderr
    finally:
        first.kill()
        first.wait()


def test_only_the_projects_own_temp_files_are_swept_and_only_when_the_run_is_accepted(tmp_path):
    run = tmp_path / "run"
    train(tiny(run))
    (run / "notes.tmp").write_text("the user's own")
    (run / "last.pt.abc123.tmp").write_bytes(b"a temp file this project left")
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(tiny(run))  # refused: nothing touched
    assert (run / "last.pt.abc123.tmp").exists() and (run / "notes.tmp").exists()
    train(tiny(run, overwrite=True))
    assert not (run / "last.pt.abc123.tmp").exists() and (run / "notes.tmp").read_text() == "the user's own"


@pytest.mark.parametrize(
    "change", [{"use_support_mask": False}, {"kernel": "separable"}, {"feature_layers": "last"}, {"pyramid_levels": 1}]
)
def test_a_checkpoint_rebuilds_the_model_that_wrote_it_and_refuses_a_contradicting_flag(tmp_path, change):
    run = tmp_path / "run"
    result = train(tiny(run, model=ModelConfig(backbone="resnet50-w8", **change)))
    loaded = HSNet.load(run / "best.pt")
    ((field, value),) = change.items()
    assert getattr(loaded.config, field) == value
    for k, v in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    default = getattr(ModelConfig(), field)
    with pytest.raises(Exception, match=f"{field}: checkpoint {value!r}, asked {default!r}"):
        HSNet.load(run / "best.pt", **{field: default})


def test_segment_refuses_an_output_that_would_replace_an_input(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (40, 30), "white").save(tmp_path / "q.png")
    Image.new("RGB", (40, 30), "white").save(tmp_path / "s.png")
    Image.new("L", (40, 30), 255).save(tmp_path / "o_mask.png")
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, tmp_path / "best.pt")
    base = ["segment", "--load", str(tmp_path / "best.pt"), "--query", str(tmp_path / "q.png"),
            "--support", str(tmp_path / "s.png"), "--mask", str(tmp_path / "o_mask.png")]  # fmt: skip
    for out, replaced in ((tmp_path / "q.png", "q.png"), (tmp_path / "o.png", "o_mask.png")):  # o_mask.png: the mask
        stamp = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
        assert main([*base, "--out", str(out)]) == 2
        assert replaced in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in tmp_path.glob("*.png")} == stamp  # nothing written


def test_a_tilde_in_the_logpath_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    code = main(["train", *CLI_TINY, "--niter", "1", "--logpath", "~/x"])
    assert code == 0 and (tmp_path / "x" / "best.pt").is_file() and not os.path.exists("~")


def test_overwrite_starts_a_fresh_tensorboard_log_and_resume_with_overwrite_is_refused(tmp_path):
    run = tmp_path / "run"
    train(tiny(run))
    events = set((run / "tensorboard").glob("*")) if (run / "tensorboard").is_dir() else set()
    train(tiny(run, overwrite=True))
    assert not events & set((run / "tensorboard").glob("*"))  # the old run's events are gone
    with pytest.raises(RunFolderError, match="give one of them"):
        train(tiny(run, resume=True, overwrite=True))


def test_resume_refuses_fewer_epochs_and_a_longer_cosine_schedule(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=2, schedule="cosine"))
    with pytest.raises(RunFolderError, match="fewer epochs than the run was started with"):
        train(tiny(run, epochs=1, schedule="cosine", resume=True))
    with pytest.raises(RunFolderError, match="only a constant schedule can be extended"):
        train(tiny(run, epochs=3, schedule="cosine", resume=True))


def test_a_constant_schedule_extended_on_resume_equals_a_straight_run_of_the_final_length(tmp_path):
    straight = train(tiny(tmp_path / "straight", epochs=3))
    train(tiny(tmp_path / "extended", epochs=2))
    extended = train(tiny(tmp_path / "extended", epochs=3, resume=True))
    for (k, a), b in zip(straight.model.state_dict().items(), extended.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_the_demo_refuses_to_replace_an_earlier_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("HSNET_SMOKE", "1")
    assert main(["demo", "--out", str(tmp_path / "d"), "--episodes", "4"]) == 0
    stamp = (tmp_path / "d" / "run" / "last.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(tmp_path / "d"), "--episodes", "4"]) == 2
    assert (tmp_path / "d" / "run" / "last.pt").stat().st_mtime_ns == stamp


def test_a_diverging_run_stops_with_one_line_and_keeps_its_finished_epochs(tmp_path, monkeypatch, capsys):
    """The loss turns NaN at the second training step (epoch 2): one line names the epoch and the step,
    and the first epoch's checkpoint is still there to resume or inspect."""
    real, calls = F.cross_entropy, []

    def loss_that_diverges(logits, gt, *args, **kwargs):
        loss = real(logits, gt, *args, **kwargs)
        if torch.is_grad_enabled():  # a training step (validation runs without gradients)
            calls.append(1)
            return loss * float("nan") if len(calls) >= 2 else loss
        return loss

    monkeypatch.setattr("hsnetlib.engine.F.cross_entropy", loss_that_diverges)
    run = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--niter", "3", "--logpath", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsnet: error: training diverged at epoch") and ", step 1: the loss is nan" in err
    assert err.count("\n") == 1 and "--lr" in err
    assert load_checkpoint_file(run / "last.pt")["epoch"] == 0  # the finished first epoch is kept


def test_a_logpath_that_is_a_dangling_link_or_a_file_is_named(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert main(["train", *CLI_TINY, "--logpath", str(tmp_path / "link")]) == 2
    err = capsys.readouterr().err
    assert f"is a link to {tmp_path / 'nowhere'}, which does not exist" in err and err.count("\n") == 1
    (tmp_path / "file").write_text("the user's notes")
    assert main(["train", *CLI_TINY, "--logpath", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "the user's notes" and not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    "out, message",
    [("pred", "suffix, one of .png"), ("pred.tiff", "got .tiff"), ("outdir", "is a folder"), ("sub/", "is a folder")],
)
def test_segment_checks_its_output_name_before_writing_anything(tmp_path, out, message, capsys, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outdir").mkdir()
    Image.new("RGB", (40, 30), "white").save(tmp_path / "q.png")
    Image.new("L", (40, 30), 255).save(tmp_path / "m.png")
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, tmp_path / "best.pt")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    argv = ["segment", "--load", "best.pt", "--query", "q.png", "--support", "q.png", "--mask", "m.png", "--out", out]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no mask, no figure, no folder
