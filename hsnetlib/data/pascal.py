"""PASCAL-5i (Shaban et al. 2017): 20 VOC classes in 4 folds of 5, SBD-augmented masks.

Layout under the data root (the official "Datasets_HSN" layout)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClassAug/<id>.png   # class index 1..20, 0 background, 255 boundary

Fold f holds classes 5f..5f+4 (0-based). ``val``/``test`` episodes come from
``pascal/val/fold{f}.txt``; ``trn`` uses the ``pascal/trn`` lists of the three other folds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .episodes import (
    DatasetError,
    OfficialSplitDataset,
    PascalProtocol,
    open_label_map,
    open_rgb,
)
from .splits import read_pascal_split

IGNORE_LABEL = 255


class PascalDataset(PascalProtocol, OfficialSplitDataset):
    benchmark = "pascal"
    nclass = 20

    def __init__(self, root, **options):  # options: see OfficialSplitDataset
        super().__init__(root, **options)
        fold = self.fold
        self.img_dir = Path(root) / "VOC2012" / "JPEGImages"
        self.ann_dir = Path(root) / "VOC2012" / "SegmentationClassAug"
        for d in (self.img_dir, self.ann_dir):
            if not d.is_dir():
                raise DatasetError(
                    f"{d} not found: expected the PASCAL layout VOC2012/{{JPEGImages,SegmentationClassAug}} under "
                    f"{root}; run `hsnet prepare pascal --voc ... --sbd ... --out {root}` (README, Datasets)"
                )
        fold_classes = [fold * 5 + i for i in range(5)]
        self.class_ids = fold_classes if self.is_eval else [c for c in range(20) if c not in fold_classes]
        folds = [fold] if self.is_eval else [g for g in range(4) if g != fold]
        kind = "val" if self.is_eval else "trn"
        self.metadata: list[tuple[str, int]] = []
        for g in folds:
            path = self.split_file(f"pascal/{kind}/fold{g}.txt")
            self.metadata += read_pascal_split(path)
        self.index_classes()
        self._finish_init()

    def read_image(self, name):
        return open_rgb(self.img_dir / f"{name}.jpg")

    def read_mask(self, name, class_id):
        path = self.ann_dir / f"{name}.png"
        label = open_label_map(path)
        if label.ndim != 2:
            raise DatasetError(
                f"mask {path} has shape {label.shape}: an RGB colour mask; expected a single-channel map of class "
                f"indices 0..20 and 255 (boundary). Rebuild SegmentationClassAug with `hsnet prepare pascal`"
            )
        bad = np.setdiff1d(np.unique(label), [*range(21), IGNORE_LABEL])
        if bad.size:
            raise DatasetError(
                f"mask {path} has values {bad.tolist()}; expected class indices 0..20 and 255 (boundary). "
                f"Is it an RGB colour mask? Rebuild SegmentationClassAug with `hsnet prepare pascal`"
            )
        return label == class_id + 1, label == IGNORE_LABEL
