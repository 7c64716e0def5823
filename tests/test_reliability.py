"""Bad input gets one clear error naming the input and the fix; nothing already computed is lost.

By kind: checkpoint files, backbone weight files, split files, dataset files, benchmark and
evaluation sizes, training configuration, the command line, and a training run killed at
random points and resumed.
"""

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from fakedata import make_coco, make_fss, make_pascal, write_jpg
from PIL import Image

from hsnetlib import HSNet
from hsnetlib.backbone import build_backbone, imagenet_weights_path
from hsnetlib.checkpoint import load_checkpoint_file
from hsnetlib.cli import main
from hsnetlib.data import DatasetError, SplitFileError, make_benchmark
from hsnetlib.errors import CheckpointError, HSNetError, WeightsError
from hsnetlib.evaluation import evaluate
from hsnetlib.train_config import TrainConfig


class Planted:
    """A pickle that would run a shell command when unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo planted",))


def bad_files(tmp_path) -> dict:
    files = {"empty": b"", "text": b"just some text\n", "truncated": None, "code": pickle.dumps(Planted())}
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    files["truncated"] = good.read_bytes()[:40]
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(data)
    return paths


# -- checkpoint files ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "code"])
def test_a_file_that_is_no_checkpoint_is_named_and_never_run(tmp_path, kind, capfd):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=f"not a checkpoint: {path}") as err:
        load_checkpoint_file(path)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)
    assert "planted" not in capfd.readouterr().out  # the planted command never ran
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        HSNet.load(path)


def test_a_state_dict_without_a_backbone_is_not_a_checkpoint(tmp_path):
    torch.save({"hpn_learner.decoder1.0.weight": torch.ones(1)}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="part.pt .*no backbone"):
        HSNet.load(tmp_path / "part.pt")


def test_cli_prints_one_line_for_a_bad_checkpoint(tmp_path, capsys):
    path = bad_files(tmp_path)["code"]
    assert main(["segment", "--load", str(path), "--query", "q.jpg", "--support", "s.jpg", "--mask", "m.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hsnet: error: not a checkpoint: {path}") and err.count("\n") == 1


# -- backbone weight files ------------------------------------------------------------------------
def cache_file(tmp_path, monkeypatch, data: bytes, prefix: str | None = None):
    """Plant ``data`` as the cached ImageNet file of resnet50, named with ``prefix`` (default: its own hash)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = imagenet_weights_path("resnet50")
    path = path.with_name(f"resnet50-{prefix or hashlib.sha256(data).hexdigest()[:8]}.pth")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    monkeypatch.setattr("hsnetlib.backbone.imagenet_weights_path", lambda name: path)
    return path


def test_cached_imagenet_weights_load_safely_when_the_hash_matches(tmp_path, monkeypatch):
    net = tvm.resnet50()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    cache_file(tmp_path, monkeypatch, (tmp_path / "w.pth").read_bytes())
    assert torch.equal(build_backbone("resnet50", "imagenet").conv1.weight, net.conv1.weight)  # the saved tensor


@pytest.mark.parametrize("kind", ["code", "truncated", "empty"])
def test_a_planted_or_corrupt_imagenet_cache_file_is_refused(tmp_path, monkeypatch, kind, capfd):
    path = cache_file(tmp_path, monkeypatch, bad_files(tmp_path)[kind].read_bytes())  # its hash "matches"
    with pytest.raises(WeightsError, match=f"{path}.*delete it and download it again") as err:
        build_backbone("resnet50", "imagenet")
    assert "weights_only=False" not in str(err.value)
    assert "planted" not in capfd.readouterr().out


def test_an_imagenet_cache_file_with_the_wrong_hash_is_refused(tmp_path, monkeypatch):
    path = cache_file(tmp_path, monkeypatch, b"not the published file", prefix="0676ba61")
    with pytest.raises(WeightsError, match=f"{path} has SHA-256 .*expected 0676ba61"):
        build_backbone("resnet50", "imagenet")


def test_a_local_weights_file_of_another_architecture_is_named(tmp_path):
    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match="(?s)r18.pth does not match the model.*torchvision resnet50 weights file"):
        build_backbone("resnet50", tmp_path / "r18.pth")


# -- split files: names stay inside the dataset root; empty or incomplete files are named -------------
@pytest.fixture
def roots(tmp_path):
    rng = np.random.default_rng(0)
    root, splits = tmp_path / "data", tmp_path / "splits"
    make_pascal(root, splits, rng)
    make_coco(root, splits, rng)
    make_fss(root, splits, rng)
    return root, splits


def build(benchmark, roots, **kw):
    root, splits = roots
    return make_benchmark(benchmark, root, split="val", splits_dir=splits, verify_splits=False, **kw)


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "a/../../b", "..\\\\x"])
def test_split_names_that_leave_the_dataset_root_are_refused(roots, name):
    _, splits = roots
    (splits / "pascal" / "val" / "fold0.txt").write_text(f"{name}__01\n")
    with pytest.raises(SplitFileError, match="not a path inside the dataset root"):
        build("pascal", roots)
    (splits / "fss" / "val.txt").write_text(f"{name}\n")
    with pytest.raises(SplitFileError, match="fss/val.txt:1: .* not a path inside the dataset root"):
        build("fss", roots)
    (splits / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps({0: [name, "val2014/x.jpg"]}))
    with pytest.raises(SplitFileError, match="not a path inside the dataset root"):
        build("coco", roots)


@pytest.mark.parametrize("benchmark, file", [("pascal", "pascal/val/fold0.txt"), ("fss", "fss/val.txt")])
def test_an_empty_split_file_is_named(roots, benchmark, file):
    (roots[1] / file).write_text("\n")
    with pytest.raises(SplitFileError, match=f"{file} lists nothing"):
        build(benchmark, roots)


def test_a_coco_split_missing_a_fold_class_is_named(roots):
    classwise = pickle.loads((roots[1] / "coco" / "val" / "fold0.pkl").read_bytes())
    del classwise[72]
    (roots[1] / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps(classwise))
    with pytest.raises(DatasetError, match=r"coco/val/fold0.pkl list no image of classes \[72\]"):
        build("coco", roots)


# -- dataset files ----------------------------------------------------------------------------------
def test_an_rgb_pascal_mask_is_named(roots):
    dataset = build("pascal", roots)
    name = dataset.episode(0).query_name
    rgb = np.zeros((30, 40, 3), np.uint8)  # legal values, wrong format
    Image.fromarray(rgb).save(roots[0] / "VOC2012" / "SegmentationClassAug" / f"{name}.png")
    with pytest.raises(DatasetError, match=f"{name}.png has shape \\(30, 40, 3\\): an RGB colour mask"):
        dataset[0]


def test_an_image_and_its_mask_of_different_sizes_are_named(roots):
    dataset = build("pascal", roots)
    name = dataset.episode(0).query_name
    write_jpg(roots[0] / "VOC2012" / "JPEGImages" / f"{name}.jpg", np.random.default_rng(1), size=(31, 40))
    with pytest.raises(DatasetError, match=f"mask of {name} is 40x30 .* its image is 40x31"):
        dataset[0]


# -- sizes and configuration --------------------------------------------------------------------------
def test_evaluation_sizes_must_be_positive():
    dataset = make_benchmark("toy", split="test", img_size=64, num_episodes=4)
    for kwargs in ({"max_episodes": 0}, {"batch_size": 0}, {"num_workers": -1}):
        with pytest.raises(ValueError, match="must be >= 1"):
            evaluate(None, dataset, **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"benchmark": "voc"}, "benchmark must be one of"),
        ({"backbone": "resnet18"}, "backbone must be one of"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": float("inf")}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"num_workers": -1}, "num_workers must be >= 0"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"logdir": " "}, "logdir is empty"),
    ],
)
def test_train_config_values_are_checked_in_one_place(change, message):
    with pytest.raises(HSNetError, match=message):
        TrainConfig().with_changes(**change).validate()


# -- the command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "inference", "--shots", "0"], "shots must be >= 1"),
        (["bench", "inference", "--repeats", "0"], "repeats must be >= 1"),
        (["bench", "kernels", "--img-size", "8"], "img_size must be an int of at least 32"),
        (["bench", "training", "--settings", "128x0"], "batch must be >= 1"),
        (["train", "--benchmark", "toy", "--logpath", ""], "logdir is empty"),
        (["train", "--benchmark", "toy", "--bsz", "0"], "batch_size must be >= 1"),
        (["train", "--benchmark", "toy", "--shot", "5"], "1-shot episodes"),
        (["prepare", "check", "/no/such/root"], "data root /no/such/root does not exist"),
        (["demo", "--episodes", "2"], "--episodes must be at least 4"),
    ],
)
def test_cli_refuses_bad_values_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsnet: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "device, message",
    [
        ("bogus", "unknown device 'bogus'; expected auto, cpu, cuda or cuda:N"),
        ("meta", "device 'meta' cannot run HSNet here"),
        ("cuda:9", "device 'cuda:9'"),  # no GPU here: "sees no CUDA device"; with one: "has N CUDA device(s)"
    ],
)
@pytest.mark.parametrize("command", ["train", "test", "bench inference", "bench training", "segment"])
def test_a_device_that_cannot_run_is_one_line_on_every_command(tmp_path, command, device, message, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, ckpt)
    argv = {
        "train": ["train", "--benchmark", "toy", "--logpath", str(tmp_path / "run")],
        "test": ["test", "--benchmark", "toy", "--load", str(ckpt), "--episodes", "2"],
        "bench inference": ["bench", "inference", "--repeats", "1"],
        "bench training": ["bench", "training", "--repeats", "1"],
        "segment": ["segment", "--load", str(ckpt), "--query", "q.jpg", "--support", "s.jpg", "--mask", "m.png"],
    }[command]
    assert main([*argv, "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsnet: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()  # a refused run leaves no folder behind


@pytest.mark.parametrize("size", [0, -5, 16])
def test_an_input_size_below_the_minimum_is_refused_by_test_and_by_the_datasets(tmp_path, size, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, ckpt)
    argv = ["test", "--benchmark", "toy", "--load", str(ckpt), "--episodes", "2", "--img-size", str(size)]
    assert main(argv) == 2  # 0 is not "no size given": it is refused like any other bad size
    assert f"--img-size must be an int of at least 32 pixels (the backbone divides it by 32), got {size}" in (
        capsys.readouterr().err
    )
    with pytest.raises(HSNetError, match=f"img_size must be an int of at least 32 pixels .*got {size}"):
        make_benchmark("toy", split="test", img_size=size)


def test_splits_verify_fails_when_files_are_missing(tmp_path, capsys):
    assert main(["splits", "verify", "--dir", str(tmp_path)]) == 1
    out = capsys.readouterr()
    assert "missing   pascal/val/fold0.txt" in out.out and "hsnet splits download" in out.err


def test_no_verify_splits_flag_reaches_the_datasets(roots, tmp_path, capsys):
    root, splits = roots
    argv = ["test", "--benchmark", "pascal", "--datapath", str(root), "--splits-dir", str(splits)]
    torch.save(HSNet("resnet50").state_dict(), tmp_path / "m.pt")
    argv += ["--load", str(tmp_path / "m.pt"), "--episodes", "2", "--img-size", "64"]
    assert main(argv) == 2 and "--no-verify-splits" in capsys.readouterr().err  # a custom file fails the checksum
    assert main([*argv, "--no-verify-splits"]) == 0
    assert "pascal fold 0 1-shot, " in capsys.readouterr().out


# -- a run killed at random points, then resumed, ends where an uninterrupted run ends ------------------
TRAIN = [
    *("--benchmark toy --backbone resnet50 --weights none --img-size 64 --bsz 2 --niter 4".split()),
    *("--max-steps-per-epoch 2 --val-episodes 2 --no-progress --seed 1".split()),
]


# the child logs every progress event of hsnetlib.engine (steps, validations, checkpoints) to stdout
CHILD = (
    "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout, format='event %(message)s'); "
    "from hsnetlib.cli import main; sys.exit(main())"
)


def run_train(logdir, extra=(), kill_at_event=None) -> tuple[int | None, int]:
    """Run ``hsnet train`` in a child process; with ``kill_at_event=k``, SIGKILL it as soon as it has
    reported its k-th progress event (or let it finish if it reports fewer). -> (exit status or None
    if killed, events seen). Kill points are events of the run itself, never wall-clock times, so a
    loaded machine kills at the same places."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, "train", *TRAIN, "--logpath", str(logdir), *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    events = 0
    for line in proc.stdout:
        events += line.startswith("event ")
        if kill_at_event is not None and events == kill_at_event:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return None, events
    return proc.wait(), events


@pytest.mark.slow
def test_a_run_killed_at_random_points_resumes_to_the_same_weights(tmp_path):
    status, total = run_train(tmp_path / "straight")
    assert status == 0 and total > 8
    # Three kills at seeded events: one before the first checkpoint (nothing to resume: a fresh start),
    # one after it (the run resumes from last.pt), one anywhere; then a run to the end.
    rng, logdir = random.Random(0), tmp_path / "killed"
    first_save = 4  # events of an epoch: step 1 done, step 2 done, validated, last.pt saved, metrics.csv written
    plan = [rng.randint(1, first_save - 1), rng.randint(first_save + 1, first_save + 4), rng.randint(1, 8)]
    progressed = 0
    for kill_at in [*plan, None]:
        resume = ["--resume"] if (logdir / "last.pt").exists() else []
        had = load_checkpoint_file(logdir / "last.pt")["epoch"] if resume else -1
        status, _ = run_train(logdir, resume, kill_at)
        if kill_at is None:
            assert status == 0
        else:
            assert status is None, f"the run ended before its event {kill_at}"
            progressed += (logdir / "last.pt").exists() and load_checkpoint_file(logdir / "last.pt")["epoch"] > had
    assert progressed >= 1
    straight, killed = (load_checkpoint_file(d / "last.pt") for d in (tmp_path / "straight", logdir))
    assert killed["epoch"] == straight["epoch"] == 3
    for key, value in straight["model"].items():
        assert torch.equal(value, killed["model"][key]), key
    drop = {"seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in killed["history"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in straight["history"]
    ]
    assert not list(logdir.glob("*.tmp"))
    metrics = (logdir / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 5 and [line.split(",")[0] for line in metrics[1:]] == ["0", "1", "2", "3"]


# -- a full disk while writing: the message names the file, the previous version survives ----------------
def test_a_full_disk_while_saving_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from hsnetlib.checkpoint import save_atomic, write_text_atomic

    save_atomic({"epoch": torch.tensor(1)}, tmp_path / "last.pt")
    write_text_atomic(tmp_path / "config.json", '{"a": 1}')

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=f"could not write {tmp_path / 'last.pt'} .*free disk space"):
        save_atomic({"epoch": torch.tensor(2)}, tmp_path / "last.pt")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="could not write .*config.json .*No space left"):
        write_text_atomic(tmp_path / "config.json", '{"a": 2}')
    monkeypatch.undo()
    assert int(load_checkpoint_file(tmp_path / "last.pt")["epoch"]) == 1
    assert (tmp_path / "config.json").read_text() == '{"a": 1}' and sorted(os.listdir(tmp_path)) == [
        "config.json",
        "last.pt",
    ]


def test_float64_images_for_a_float32_model_are_named():
    model = HSNet("resnet50").eval()
    q, s, m = torch.randn(1, 3, 64, 64).double(), torch.randn(1, 1, 3, 64, 64).double(), torch.ones(1, 1, 64, 64)
    with pytest.raises(ValueError, match="query_img is torch.float64 but the model is torch.float32"):
        model.predict(q, s, m)


def test_a_run_folder_given_as_checkpoint_names_the_file_inside(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, run / "best.pt")
    with pytest.raises(CheckpointError, match=r"is a folder, not a file; give the file inside it, e.g. .*best.pt"):
        HSNet.load(run)
    code = main(["segment", "--load", str(run), "--query", "q.jpg", "--support", "s.jpg", "--mask", "m.png"])
    assert code == 2 and "is a folder, not a file" in capsys.readouterr().err


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    state = HSNet("resnet50-w8").state_dict()
    state["hpn_learner.decoder2.2.weight"][0] = float("nan")
    torch.save({"model": state}, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="NaN or infinite weights .*hpn_learner.decoder2.2.weight"):
        HSNet.load(tmp_path / "best.pt")


def test_a_damaged_last_pt_names_best_pt_and_overwrite(tmp_path):
    torch.save({"model": HSNet("resnet50-w8").state_dict()}, tmp_path / "last.pt")
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(tmp_path / "last.pt")
    message = str(err.value)
    assert "best.pt may still load" in message and "--overwrite" in message
    reason = message.split("(", 1)[1].split(")")[0]
    assert reason.endswith((" ...", "short")) or len(reason) < 140  # cut at a word, never mid-word


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_split_files_saved_with_a_byte_order_mark_or_as_utf16_are_read(roots, encoding):
    for file, benchmark in (("pascal/val/fold0.txt", "pascal"), ("fss/val.txt", "fss")):
        path = roots[1] / file
        plain = path.read_text()
        expected = [build(benchmark, roots).episode(i) for i in range(3)]
        path.write_text(plain, encoding=encoding)  # the first name would carry an invisible U+FEFF
        assert [build(benchmark, roots).episode(i) for i in range(3)] == expected


def test_a_split_file_in_another_encoding_is_named(roots):
    (roots[1] / "fss" / "val.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(SplitFileError, match="fss/val.txt is not UTF-8 text .* save it as UTF-8"):
        build("fss", roots)


def test_an_fss_category_listed_twice_or_with_a_slash_is_named(roots):
    path = roots[1] / "fss" / "val.txt"
    first = path.read_text().splitlines()[0]
    path.write_text(f"{first}\n{first}\n")
    with pytest.raises(SplitFileError, match=f"fss/val.txt:2: category '{first}' is listed again .*line 1"):
        build("fss", roots)
    path.write_text(f"{first}/sub\n")
    with pytest.raises(SplitFileError, match="fss/val.txt:1: .* not a category folder name"):
        build("fss", roots)


@pytest.mark.parametrize(
    "content, message",
    [
        ((0, ["val2014/x.jpg"]), "got a tuple"),
        (None, "got a NoneType"),
        ({"0": ["val2014/x.jpg"]}, "key '0' is not a COCO class index"),
        ({0: {"val2014/x.jpg"}}, "class 0 maps to set"),
        ({0: [None]}, "class 0 maps to a list holding non-strings"),
    ],
)
def test_coco_split_pickles_of_unexpected_shape_are_named(roots, content, message):
    (roots[1] / "coco" / "val" / "fold0.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(SplitFileError, match=f"coco/val/fold0.pkl: .*{message}"):
        build("coco", roots)


@pytest.mark.parametrize("name", ["fss/val.txt", "pascal/val/fold0.txt"])
def test_the_offline_split_message_names_the_splits_folder_itself(tmp_path, name):
    from hsnetlib.data.splits import manual_instructions

    message = manual_instructions(name, tmp_path / "splits" / name)
    assert f"copy its splits folder to {tmp_path / 'splits'};" in message and str(tmp_path / "splits" / name) in message


def test_a_compressed_checkpoint_that_would_expand_far_beyond_its_size_is_refused(tmp_path):
    import zipfile

    torch.save({"model": {"w": torch.zeros(4)}}, tmp_path / "real.pt")
    with zipfile.ZipFile(tmp_path / "real.pt") as src, zipfile.ZipFile(tmp_path / "bomb.pt", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_STORED)
        dst.writestr("archive/data/9", b"\0" * 50 * 2**20, compress_type=zipfile.ZIP_DEFLATED)  # 50 MB in ~50 KB
    with pytest.raises(CheckpointError, match="would expand to .* GB from .* MB on disk"):
        load_checkpoint_file(tmp_path / "bomb.pt")
    assert load_checkpoint_file(tmp_path / "real.pt")["model"]["w"].shape == (4,)  # a plain torch.save loads


def test_a_csv_given_as_checkpoint_is_called_a_text_file(tmp_path):
    (tmp_path / "results.csv").write_text("method,miou\nHSNet,70.3\n")
    with pytest.raises(CheckpointError, match=r"results.csv \(it is a text file, not a file written by torch.save\)"):
        load_checkpoint_file(tmp_path / "results.csv")
