import math

import pandas as pd
import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.reproduce import find_checkpoints, paper_miou, paper_table, reproduce


def test_paper_numbers_are_read_from_the_csv_tables():
    assert paper_miou("pascal", "resnet101", 0, 1) == 67.3
    assert paper_miou("pascal", "vgg16", 3, 5) == 58.6
    assert paper_miou("coco", "resnet50", 1, 5) == 51.3
    assert paper_miou("fss", "resnet50", 0, 5) == 87.8
    t1 = paper_table("pascal")
    hsnet = t1[(t1.method == "HSNet") & (t1.backbone == "resnet101")].set_index("shot")
    for shot in (1, 5):  # the transcribed mean is the mean of the folds (to the paper's rounding)
        folds = hsnet.loc[shot, ["fold0", "fold1", "fold2", "fold3"]]
        assert abs(folds.mean() - hsnet.loc[shot, "mean"]) <= 0.051


def test_find_checkpoints_by_name(tmp_path):
    for name in ("pascal_fold2_resnet101.pt", "fss_fold0_vgg16.pt", "notes.pt", "coco_fold9_resnet50.pt"):
        (tmp_path / name).write_bytes(b"")
    found = find_checkpoints(tmp_path)
    assert [(c["benchmark"], c["fold"], c["backbone"]) for c in found] == [
        ("fss", 0, "vgg16"),
        ("pascal", 2, "resnet101"),
    ]
    assert find_checkpoints(tmp_path / "missing") == []


def test_reproduce_runs_the_protocol_and_reports_differences():
    model = HSNet("resnet50")
    table = reproduce(
        [{"benchmark": "toy", "fold": 0, "backbone": "resnet50", "model": model, "img_size": 48}],
        shots=(1,),
        max_episodes=3,
        progress=False,
    )
    assert isinstance(table, pd.DataFrame) and table.loc[0, "episodes"] == 3
    assert math.isnan(table.loc[0, "miou_paper"]) and 0 <= table.loc[0, "miou_ours"] <= 100
    with pytest.raises(FileNotFoundError, match="data/paper"):
        paper_table("pascal", paper_dir=torch.__path__[0])
