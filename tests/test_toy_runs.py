"""Toy runs: trained once, reused by every notebook after; a different configuration is refused."""

import os

import pytest

from hsnetlib.run_folder import RunFolderError
from hsnetlib.toy_runs import IMAGENET, PRETRAINED, RANDOM, ToyRecipe, default_backbone, toy_config, toy_model

TINY = ToyRecipe(
    img_size=64, batch_size=2, epochs=2, steps_per_epoch=1, schedule="constant", val_episodes=2, bn_batches=1
)


def test_finished_run_is_loaded_not_retrained(tmp_path):
    model, run = toy_model(tmp_path / "run", TINY, RANDOM)
    stamp = os.stat(tmp_path / "run" / "last.pt").st_mtime_ns
    again, rerun = toy_model(tmp_path / "run", TINY, RANDOM)
    assert os.stat(tmp_path / "run" / "last.pt").st_mtime_ns == stamp  # nothing trained or written
    assert list(rerun.history.epoch) == [0, 1] and rerun.best_miou == run.best_miou
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert a.equal(b)
    assert not again.training


def test_half_finished_run_is_continued(tmp_path):
    toy_model(tmp_path / "run", ToyRecipe(**{**TINY.__dict__, "epochs": 1}), RANDOM)
    _, run = toy_model(tmp_path / "run", TINY, RANDOM)  # epochs may grow: the run continues
    assert list(run.history.epoch) == [0, 1]


def test_a_different_recipe_in_the_same_folder_is_refused(tmp_path):
    toy_model(tmp_path / "run", TINY, RANDOM)
    with pytest.raises(RunFolderError, match="img_size: 64 -> 80"):
        toy_model(tmp_path / "run", ToyRecipe(**{**TINY.__dict__, "img_size": 80}), RANDOM)
    with pytest.raises(RunFolderError, match="use_support_mask: True -> False"):
        toy_model(tmp_path / "run", TINY, RANDOM, use_support_mask=False)
    with pytest.raises(RunFolderError, match="weights: None -> 'toy'"):
        toy_model(tmp_path / "run", TINY, PRETRAINED)


def test_config_of_each_backbone():
    config = toy_config("runs/x", TINY, RANDOM, use_support_mask=False)
    assert (config.img_size, config.max_steps_per_epoch, config.recalibrate_bn) == (64, 1, 1)
    assert not config.model.use_support_mask and not config.progress and config.weights is None
    pretrained = toy_config("runs/x", TINY, PRETRAINED)
    assert (pretrained.model.backbone, pretrained.weights, pretrained.recalibrate_bn) == ("resnet50-w16", "toy", 0)
    assert toy_config("runs/x", TINY).weights == default_backbone().weights  # the default: ImageNet, else toy


def test_imagenet_is_first_choice_when_its_file_is_on_disk(monkeypatch):
    import hsnetlib.toy_runs as toy_runs

    monkeypatch.setattr(toy_runs, "imagenet_weights_available", lambda name: name == "resnet50")
    assert default_backbone() == IMAGENET
    monkeypatch.setattr(toy_runs, "imagenet_weights_available", lambda name: False)
    assert default_backbone() == PRETRAINED


def test_several_runs_train_side_by_side_in_child_processes_then_load(tmp_path):
    from hsnetlib.toy_runs import ToyRun, toy_models

    runs = [
        ToyRun(str(tmp_path / "a"), TINY, RANDOM),
        ToyRun(str(tmp_path / "b"), TINY, RANDOM, (("use_support_mask", False),)),
    ]
    first = toy_models(runs, workers=2)
    assert [list(r.history.epoch) for _, r in first] == [[0, 1], [0, 1]]
    assert first[0][0].config.use_support_mask and not first[1][0].config.use_support_mask
    stamps = [os.stat(tmp_path / n / "last.pt").st_mtime_ns for n in "ab"]
    again = toy_models(runs, workers=2)  # finished: loaded, nothing trained
    assert [os.stat(tmp_path / n / "last.pt").st_mtime_ns for n in "ab"] == stamps
    for (m1, _), (m2, _) in zip(first, again):
        assert all(a.equal(b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_best_pt_refers_to_a_reproducible_backbone_instead_of_carrying_it(tmp_path):
    import torch

    from hsnetlib import HSNet
    from hsnetlib.checkpoint import load_checkpoint_file
    from hsnetlib.errors import CheckpointError

    model, _ = toy_model(tmp_path / "run", ToyRecipe(**{**TINY.__dict__, "epochs": 1}), PRETRAINED)
    best, last = load_checkpoint_file(tmp_path / "run" / "best.pt"), load_checkpoint_file(tmp_path / "run" / "last.pt")
    assert not any(k.startswith("backbone.") for k in best["model"]) and "optimizer" not in best
    assert best["backbone_ref"]["weights"] == "toy" and len(best["backbone_ref"]["sha256"]) == 64
    assert any(k.startswith("backbone.") for k in last["model"])  # last.pt resumes: it carries everything
    loaded = HSNet.load(tmp_path / "run" / "best.pt")
    for k, v in last["model"].items():
        assert torch.equal(loaded.state_dict()[k], v), k  # the same model, backbone rebuilt from its file
    best["backbone_ref"]["sha256"] = "0" * 64  # trained on other weights than this machine's file
    torch.save(best, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="trained on resnet50-w16 weights='toy' with SHA-256 000000000000"):
        HSNet.load(tmp_path / "other.pt")
    random, _ = toy_model(tmp_path / "random", ToyRecipe(**{**TINY.__dict__, "epochs": 1}), RANDOM)
    assert any(k.startswith("backbone.") for k in load_checkpoint_file(tmp_path / "random" / "best.pt")["model"])
