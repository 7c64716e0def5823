"""COCO-20i (Nguyen & Todorovic 2019): 80 COCO classes in 4 interleaved folds of 20.

Layout under the data root::

    COCO2014/train2014/*.jpg, COCO2014/val2014/*.jpg
    COCO2014/annotations/{train2014,val2014}/<image>.png   # class index 1..80, 0 background

Fold f holds classes f, f+4, ..., f+76. ``coco/{trn,val}/fold{f}.pkl`` maps each class to the
images that contain it. Episodes ignore their index: class, query and supports are all drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .episodes import (
    NUM_EVAL_EPISODES,
    DatasetError,
    Episode,
    OfficialSplitDataset,
    check_classes_listed,
    draw,
    draw_supports,
    open_label_map,
    open_rgb,
)
from .splits import read_coco_split


class CocoDataset(OfficialSplitDataset):
    benchmark = "coco"
    nclass = 80

    def __init__(self, root, **options):  # options: see OfficialSplitDataset
        super().__init__(root, **options)
        fold = self.fold
        self.base = Path(root) / "COCO2014"
        if not (self.base / "annotations").is_dir():
            raise DatasetError(
                f"{self.base / 'annotations'} not found: expected COCO2014/{{train2014,val2014,annotations}} under "
                f"{root}; run `hsnet prepare coco --coco ... --out {root}` (README, Datasets)"
            )
        fold_classes = [fold + 4 * v for v in range(20)]
        self.class_ids = fold_classes if self.is_eval else [c for c in range(80) if c not in fold_classes]
        kind = "val" if self.is_eval else "trn"
        self.classwise = read_coco_split(self.split_file(f"coco/{kind}/fold{fold}.pkl"))
        check_classes_listed(self.classwise, self.class_ids, f"coco/{kind}/fold{fold}.pkl")
        self.metadata = sorted({name for names in self.classwise.values() for name in names})
        self._finish_init()

    def _episode(self, rs):
        cls = int(draw(rs, self.class_ids))
        query = draw(rs, self.classwise[cls])
        return Episode(query, draw_supports(rs, self.classwise[cls], query, self.shot), cls)

    def eval_episodes(self, rs):
        return [self._episode(rs) for _ in range(NUM_EVAL_EPISODES)]

    def num_train_items(self):
        return len(self.metadata)

    def train_episode(self, rs, idx):
        return self._episode(rs)

    def read_image(self, name):
        return open_rgb(self.base / name)

    def read_mask(self, name, class_id):
        path = (self.base / "annotations" / name).with_suffix(".png")
        label = open_label_map(path)
        if label.ndim != 2 or label.max(initial=0) > 80:
            raise DatasetError(
                f"mask {path} has shape {label.shape} and max {label.max(initial=0)}; expected an (H, W) map of "
                f"class indices 0..80. Rebuild it with `hsnet prepare coco`"
            )
        return label == class_id + 1, np.zeros_like(label, dtype=bool)
