"""Toy runs: trained once, reused by every notebook after; a different configuration is refused."""

import os

import pytest

from hsnetlib.run_folder import RunFolderError
from hsnetlib.toy_runs import ToyRecipe, backbone_weights, toy_config, toy_model

TINY = ToyRecipe(img_size=64, batch_size=2, epochs=2, steps_per_epoch=1, val_episodes=2, bn_batches=1)


def test_finished_run_is_loaded_not_retrained(tmp_path):
    model, run = toy_model(tmp_path / "run", TINY)
    stamp = os.stat(tmp_path / "run" / "last.pt").st_mtime_ns
    again, rerun = toy_model(tmp_path / "run", TINY)
    assert os.stat(tmp_path / "run" / "last.pt").st_mtime_ns == stamp  # nothing trained or written
    assert list(rerun.history.epoch) == [0, 1] and rerun.best_miou == run.best_miou
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert a.equal(b)
    assert not again.training


def test_half_finished_run_is_continued(tmp_path):
    toy_model(tmp_path / "run", ToyRecipe(**{**TINY.__dict__, "epochs": 1}))
    _, run = toy_model(tmp_path / "run", TINY)  # epochs may grow: the run continues
    assert list(run.history.epoch) == [0, 1]


def test_a_different_recipe_in_the_same_folder_is_refused(tmp_path):
    toy_model(tmp_path / "run", TINY)
    with pytest.raises(RunFolderError, match="img_size: 64 -> 80"):
        toy_model(tmp_path / "run", ToyRecipe(**{**TINY.__dict__, "img_size": 80}))
    with pytest.raises(RunFolderError, match="use_support_mask: True -> False"):
        toy_model(tmp_path / "run", TINY, use_support_mask=False)


def test_config_and_weights_note():
    config = toy_config("runs/x", TINY, None, use_support_mask=False)
    assert (config.img_size, config.max_steps_per_epoch, config.recalibrate_bn) == (64, 1, 1)
    assert not config.model.use_support_mask and not config.progress
    weights, note = backbone_weights("resnet50", download=False)
    assert note.startswith("backbone weights: ") and (weights is None) == ("RANDOM" in note)
