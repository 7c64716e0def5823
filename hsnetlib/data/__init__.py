"""Episodic few-shot segmentation benchmarks: PASCAL-5i, COCO-20i, FSS-1000 and the embedded toy.

``make_benchmark(name, root, fold, split, shot, ...)`` is the one entry point; every
benchmark returns a ``torch.utils.data.Dataset`` with ``episode(i)`` and the same item dict.
"""

from __future__ import annotations

import os

from ..settings import data_root
from .coco import CocoDataset
from .episodes import DatasetError, Episode, EpisodicDataset
from .fss import FSSDataset
from .pascal import PascalDataset
from .splits import SplitFileError
from .toy import ToyDataset

BENCHMARKS = {"pascal": PascalDataset, "coco": CocoDataset, "fss": FSSDataset, "toy": ToyDataset}


def make_benchmark(
    name: str,
    root: str | os.PathLike | None = None,
    fold: int = 0,
    split: str = "trn",
    shot: int = 1,
    splits_dir: str | os.PathLike | None = None,
    img_size: int = 400,
    use_original_imgsize: bool = False,
    verify_splits: bool = True,
    **kwargs,
) -> EpisodicDataset:
    """Build benchmark ``name`` ("pascal" | "coco" | "fss" | "toy").

    root: folder holding VOC2012/, COCO2014/, FSS-1000/ (default ``$HSNET_DATA``); unused by "toy".
    split: "trn" (fresh episodes each epoch, see ``set_epoch``), "val" or "test" (the official,
        fixed episode list). verify_splits: check official split files against their SHA-256
        (False for custom splits; the toy benchmark has none). Extra keyword arguments go to the
        dataset class (``seed``, ``download_splits``; toy: ``pool_size``, ``num_episodes``, ``image_seed``).
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    if name != "toy":
        root = data_root(root)
        if root is None:
            raise DatasetError(
                f"no dataset root for {name}: give --datapath (in Python: root=...) or set HSNET_DATA to the folder "
                f"that holds VOC2012/, COCO2014/, FSS-1000/ (README, Datasets)"
            )
        kwargs.update(splits_dir=splits_dir, verify_splits=verify_splits)
    return BENCHMARKS[name](
        root, fold=fold, split=split, shot=shot, img_size=img_size, use_original_imgsize=use_original_imgsize, **kwargs
    )


__all__ = ["BENCHMARKS", "DatasetError", "Episode", "EpisodicDataset", "SplitFileError", "make_benchmark"]
