"""Reproducing Tables 1-3: the paper's numbers beside ours, from released checkpoints.

Checkpoints are found by file name under a folder (default ``data/checkpoints`` or
``$HSNET_CHECKPOINTS``): ``{benchmark}_fold{f}_{backbone}.pt``, e.g. ``pascal_fold0_resnet101.pt``
(FSS: ``fss_fold0_resnet50.pt``). Rename the released ``best_model.pt`` files that way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from .build import load_model
from .data import make_benchmark
from .evaluation import evaluate

PAPER_DIR = Path(__file__).resolve().parent.parent / "data" / "paper"
CHECKPOINT_NAME = re.compile(r"^(pascal|coco|fss)_fold([0-3])_(resnet50|resnet101|vgg16)\.pt$")
TABLE_FILES = {"pascal": "table1_pascal.csv", "coco": "table2_coco.csv", "fss": "table3_fss.csv"}


def paper_table(benchmark: str, paper_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The paper's table for ``benchmark`` (pascal | coco | fss | kernels) as a DataFrame."""
    files = {**TABLE_FILES, "kernels": "table4_kernels.csv"}
    path = Path(paper_dir or PAPER_DIR) / files[benchmark]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the paper tables live in the repository's data/paper/")
    return pd.read_csv(path)


def paper_miou(benchmark: str, backbone: str, fold: int, shot: int, paper_dir=None) -> float:
    """HSNet's mIoU in the paper for one (benchmark, backbone, fold, shot)."""
    table = paper_table(benchmark, paper_dir)
    rows = table[(table.method == "HSNet") & (table.backbone == backbone)]
    if benchmark == "fss":
        return float(rows[f"miou_{shot}shot"].iloc[0]) if len(rows) else float("nan")
    rows = rows[rows.shot == shot]
    return float(rows[f"fold{fold}"].iloc[0]) if len(rows) else float("nan")


def find_checkpoints(folder: str | os.PathLike | None = None) -> list[dict]:
    """[{benchmark, fold, backbone, path}] for every ``{benchmark}_fold{f}_{backbone}.pt`` in ``folder``."""
    folder = Path(folder or os.environ.get("HSNET_CHECKPOINTS", PAPER_DIR.parent / "checkpoints"))
    found = []
    for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        match = CHECKPOINT_NAME.match(path.name)
        if match:
            found.append({"benchmark": match[1], "fold": int(match[2]), "backbone": match[3], "path": path})
    return found


def reproduce(
    checkpoints: list[dict], root=None, shots=(1, 5), device="auto", batch_size=1, max_episodes=None, progress=True
) -> pd.DataFrame:
    """Run the official protocol for every checkpoint and shot: ours, the paper's, and the difference."""
    rows = []
    for ck in checkpoints:
        model = ck.get("model") or load_model(ck["path"], backbone=ck["backbone"])
        for shot in shots:
            ds = make_benchmark(
                ck["benchmark"], root, fold=ck["fold"], split="test", shot=shot, img_size=ck.get("img_size", 400)
            )
            r = evaluate(model, ds, device=device, batch_size=batch_size, progress=progress, max_episodes=max_episodes)
            paper = (
                paper_miou(ck["benchmark"], ck["backbone"], ck["fold"], shot)
                if ck["benchmark"] in TABLE_FILES
                else float("nan")
            )
            rows.append(
                {
                    "benchmark": ck["benchmark"],
                    "backbone": ck["backbone"],
                    "fold": ck["fold"],
                    "shot": shot,
                    "episodes": r.episodes,
                    "miou_ours": round(r.miou, 1),
                    "miou_paper": paper,
                    "diff": round(r.miou - paper, 1),
                    "fb_iou_ours": round(r.fb_iou, 1),
                }
            )
    return pd.DataFrame(rows)
