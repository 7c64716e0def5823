"""Tiny datasets written in the real on-disk formats (JPEG, palette PNG, pickles, .mat, COCO json)."""

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_jpg(path: Path, rng, size=(30, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path, quality=90)


def write_png(path: Path, label: np.ndarray, mode="P") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label.astype(np.uint8), mode="L")
    if mode == "P":
        img = img.convert("P")  # palette PNG, as VOC ships them; indices = values
    img.save(path)


def make_pascal(root: Path, splits: Path, rng) -> dict:
    """100 images; image i has class 1 + i % 20 in a box, a 255 border around it; val/trn lists per fold."""
    lines = {("val", f): [] for f in range(4)} | {("trn", f): [] for f in range(4)}
    for i in range(100):  # every class: 3 val images, 2 trn images
        name, cls = f"2007_{i:06d}", 1 + i % 20
        write_jpg(root / "VOC2012" / "JPEGImages" / f"{name}.jpg", rng)
        label = np.zeros((30, 40), np.uint8)
        label[5:20, 10:30] = 255
        label[6:19, 11:29] = cls
        if i % 7 == 0:  # a second object of another class
            label[22:28, 2:8] = 1 + (cls + 4) % 20
        write_png(root / "VOC2012" / "SegmentationClassAug" / f"{name}.png", label)
        fold = (cls - 1) // 5
        lines[("val" if i < 60 else "trn", fold)].append(f"{name}__{cls:02d}")
    for (kind, fold), items in lines.items():
        path = splits / "pascal" / kind / f"fold{fold}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in items))
    return lines


def make_coco(root: Path, splits: Path, rng) -> dict:
    classwise = {c: [] for c in range(80)}
    for i in range(60):  # every fold-0 class gets 3 images
        name = f"val2014/COCO_val2014_{i:012d}.jpg"
        cls = (i * 4) % 80  # fold-0 classes only
        write_jpg(root / "COCO2014" / name, rng)
        label = np.zeros((30, 40), np.uint8)
        label[3:15, 5:25] = cls + 1
        write_png(root / "COCO2014" / "annotations" / name.replace(".jpg", ".png"), label, mode="L")
        classwise[cls].append(name)
        if i % 3 == 0:
            classwise[(cls + 4) % 80].append(name)  # listed under a second class too
    for kind in ("val", "trn"):
        path = splits / "coco" / kind / "fold0.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(classwise))
    return classwise


def make_fss(root: Path, splits: Path, rng, categories=("zebra", "apple", "bus")) -> list:
    for cat in categories:
        for n in range(1, 11):
            write_jpg(root / "FSS-1000" / cat / f"{n}.jpg", rng)
            mask = np.zeros((30, 40), np.uint8)
            mask[5 : 5 + n, :20] = 255
            write_png(root / "FSS-1000" / cat / f"{n}.png", mask, mode="L")
    for split in ("trn", "val", "test"):
        path = splits / "fss" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{c}\n" for c in categories))
    return list(categories)


def make_coco_json(path: Path, images, anns, cat_ids=(1, 3, 90)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cats = [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in cat_ids]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
