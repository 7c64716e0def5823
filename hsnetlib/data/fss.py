"""FSS-1000 (Li et al. 2020): 1000 classes, 10 images each, fixed trn/val/test class splits.

Layout under the data root::

    FSS-1000/<category>/{1..10}.jpg and {1..10}.png   # mask: grayscale, >= 128 is foreground

Categories of a split are sorted by name; class ids are trn 0..519, val 520..759, test
760..999. Metadata: each category's ``*.jpg`` files in sorted path order (1, 10, 2, ..., 9);
one episode per image; supports are ``n.jpg`` with n drawn from 1..10, never the query.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .episodes import DatasetError, Episode, OfficialSplitDataset, draw_supports, open_label_map, open_rgb
from .splits import read_fss_split

CLASS_OFFSET = {"trn": 0, "val": 520, "test": 760}


class FSSDataset(OfficialSplitDataset):
    benchmark = "fss"
    nclass = 1000
    nfolds = 1

    def __init__(self, root, **options):  # options: see OfficialSplitDataset
        super().__init__(root, **options)
        split = self.split
        self.base = Path(root) / "FSS-1000"
        if not self.base.is_dir():
            raise DatasetError(f"{self.base} not found: expected FSS-1000/<category>/<n>.jpg under {root}")
        self.categories = sorted(read_fss_split(self.split_file(f"fss/{split}.txt")))
        self.class_ids = [CLASS_OFFSET[split] + i for i in range(len(self.categories))]
        self.metadata = []  # "category/n.jpg", in sorted path order within each category
        for cat in self.categories:
            folder = self.base / cat
            if not folder.is_dir():
                raise DatasetError(f"FSS-1000 category folder {folder} not found (listed in fss/{split}.txt)")
            self.metadata += [f"{cat}/{p.name}" for p in sorted(folder.iterdir(), key=str) if p.suffix == ".jpg"]
        self._finish_init()

    def _episode(self, rs, query):
        cat = query.split("/")[0]
        cls = CLASS_OFFSET[self.split] + self.categories.index(cat)
        supports = draw_supports(rs, [f"{cat}/{n}.jpg" for n in range(1, 11)], query, self.shot)
        return Episode(query, supports, cls)

    def eval_episodes(self, rs):
        return [self._episode(rs, q) for q in self.metadata]

    def num_train_items(self):
        return len(self.metadata)

    def train_episode(self, rs, idx):
        return self._episode(rs, self.metadata[idx])

    def read_image(self, name):
        return open_rgb(self.base / name)

    def read_mask(self, name, class_id):
        label = open_label_map((self.base / name).with_suffix(".png"), mode="L")
        return label >= 128, np.zeros_like(label, dtype=bool)
