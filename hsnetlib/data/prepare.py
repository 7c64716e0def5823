"""Dataset preparation: build the layouts the benchmarks read (``hsnet prepare ...``).

- PASCAL-5i needs ``VOC2012/SegmentationClassAug``: VOC2012's own ``SegmentationClass`` PNGs
  (palette indices; 255 = boundary) for the images VOC annotated, SBD's ``cls/<id>.mat``
  (``GTcls.Segmentation``) for the rest. VOC's mask wins where both exist.
- COCO-20i needs one PNG per image under ``COCO2014/annotations/{train2014,val2014}/`` with
  the class index 1..80 (position of the category id in the sorted list, + 1). Instances are
  painted largest first, so an object lying on a bigger one stays visible; crowd regions
  (``iscrowd=1``) are painted with their class like any other instance.

Every output file is written to a temporary name and renamed, and existing outputs are
skipped, so an interrupted run leaves no half-written file and simply resumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from .episodes import DatasetError


def _write_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array.astype(np.uint8), mode="L").save(tmp, format="PNG")
    os.replace(tmp, path)


def _link_dir(src: Path, dst: Path) -> None:
    """Make ``dst`` point at ``src`` (symlink) unless it already exists."""
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=True)


def read_sbd_mat(path: Path) -> np.ndarray:
    """SBD ``cls/<id>.mat`` -> (H, W) uint8 class map (``GTcls.Segmentation``)."""
    from scipy.io import loadmat

    try:
        return np.asarray(loadmat(path, struct_as_record=False, squeeze_me=True)["GTcls"].Segmentation, dtype=np.uint8)
    except (KeyError, AttributeError, ValueError, OSError) as err:
        raise DatasetError(f"{path} is not an SBD class annotation (expected GTcls.Segmentation): {err}") from None


def prepare_pascal(
    voc: str | os.PathLike, sbd: str | os.PathLike | None, out: str | os.PathLike, progress: bool = True
) -> dict:
    """Build ``out/VOC2012/{JPEGImages,SegmentationClassAug}``.

    voc: the VOC2012 folder (holding JPEGImages/ and SegmentationClass/).
    sbd: SBD's ``dataset`` folder (holding cls/), or None for VOC masks only.
    Returns counts: {"voc": n, "sbd": n, "skipped": n}.
    """
    voc, out = Path(voc), Path(out) / "VOC2012"
    if not (voc / "JPEGImages").is_dir() or not (voc / "SegmentationClass").is_dir():
        raise DatasetError(f"{voc} must contain JPEGImages/ and SegmentationClass/ (the VOC2012 folder of VOCdevkit)")
    sbd_dir = Path(sbd) / "cls" if sbd is not None else None
    if sbd_dir is not None and not sbd_dir.is_dir():
        raise DatasetError(f"{sbd_dir} not found: pass SBD's 'dataset' folder, the one that contains cls/")
    if out.resolve() != voc.resolve() and out.resolve().is_relative_to(voc.resolve()):
        raise DatasetError(
            f"the output folder {out} lies inside the VOC2012 folder {voc}: its link to {voc / 'JPEGImages'} would "
            f"form a loop; give an --out outside {voc} (for example {voc.resolve().parent.parent / 'hsnet-data'})"
        )
    if voc.resolve() != out.resolve():
        _link_dir(voc / "JPEGImages", out / "JPEGImages")
    target = out / "SegmentationClassAug"
    sources = {p.stem: ("voc", p) for p in (voc / "SegmentationClass").glob("*.png")}
    for p in sbd_dir.glob("*.mat") if sbd_dir is not None else []:
        sources.setdefault(p.stem, ("sbd", p))  # VOC's own mask takes precedence
    counts = {"voc": 0, "sbd": 0, "skipped": 0}
    for name, (kind, src) in tqdm(sorted(sources.items()), desc="SegmentationClassAug", disable=not progress):
        dst = target / f"{name}.png"
        if dst.exists():
            counts["skipped"] += 1
            continue
        if kind == "voc":
            with Image.open(src) as img:
                if img.mode not in ("P", "L"):
                    raise DatasetError(f"{src} has mode {img.mode}; expected a palette PNG of class indices")
                label = np.array(img)
        else:
            label = read_sbd_mat(src)
        _write_png(label, dst)
        counts[kind] += 1
    return counts


def coco_class_map(category_ids: Iterable[int]) -> dict[int, int]:
    """COCO category id -> class index 1..80 (position in the sorted ids + 1)."""
    return {cid: i + 1 for i, cid in enumerate(sorted(category_ids))}


def prepare_coco(
    coco: str | os.PathLike, out: str | os.PathLike, splits=("train2014", "val2014"), progress: bool = True
) -> dict:
    """Build ``out/COCO2014/annotations/<split>/<image>.png`` from ``instances_<split>.json``.

    coco: folder with train2014/, val2014/ and annotations/instances_{train,val}2014.json.
    """
    from pycocotools.coco import COCO

    coco, out = Path(coco), Path(out) / "COCO2014"
    counts = {}
    for split in splits:
        ann_file = coco / "annotations" / f"instances_{split}.json"
        if not ann_file.is_file():
            raise DatasetError(f"{ann_file} not found: download COCO 2014 annotations (README, Datasets)")
        if coco.resolve() != out.resolve() and (coco / split).is_dir():
            _link_dir(coco / split, out / split)
        api = COCO(str(ann_file))
        classes = coco_class_map(api.getCatIds())
        written = skipped = 0
        for img_id in tqdm(sorted(api.getImgIds()), desc=f"COCO {split} masks", disable=not progress):
            info = api.loadImgs(img_id)[0]
            dst = out / "annotations" / split / (Path(info["file_name"]).stem + ".png")
            if dst.exists():
                skipped += 1
                continue
            label = np.zeros((info["height"], info["width"]), dtype=np.uint8)
            anns = sorted(api.loadAnns(api.getAnnIds(imgIds=img_id)), key=lambda a: -a["area"])
            for ann in anns:  # largest first: smaller objects end up on top
                label[api.annToMask(ann) > 0] = classes[ann["category_id"]]
            _write_png(label, dst)
            written += 1
        counts[split] = {"written": written, "skipped": skipped}
    return counts


def check_root(root: str | os.PathLike) -> list[dict]:
    """What is present under a data root, per benchmark, and what to run for what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"data root {root} does not exist or is not a folder; create it and put the datasets in it (README)"
        )
    voc, coco, fss = root / "VOC2012", root / "COCO2014", root / "FSS-1000"

    def count(folder: Path, pattern: str) -> int:
        return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0

    rows = [
        {
            "benchmark": "pascal",
            "what": "VOC2012/JPEGImages",
            "files": count(voc / "JPEGImages", "*.jpg"),
            "fix": "download VOC2012 (README, Datasets)",
        },
        {
            "benchmark": "pascal",
            "what": "VOC2012/SegmentationClassAug",
            "files": count(voc / "SegmentationClassAug", "*.png"),
            "fix": f"hsnet prepare pascal --voc VOCdevkit/VOC2012 --sbd SBD/dataset --out {root}",
        },
        {
            "benchmark": "coco",
            "what": "COCO2014/{train,val}2014",
            "files": count(coco / "train2014", "*.jpg") + count(coco / "val2014", "*.jpg"),
            "fix": "download COCO 2014 train/val images (README, Datasets)",
        },
        {
            "benchmark": "coco",
            "what": "COCO2014/annotations/*/*.png",
            "files": count(coco / "annotations", "*/*.png"),
            "fix": f"hsnet prepare coco --coco COCO2014 --out {root}",
        },
        {
            "benchmark": "fss",
            "what": "FSS-1000/<class>/*.jpg",
            "files": count(fss, "*/*.jpg"),
            "fix": "download FSS-1000 and unpack it as FSS-1000/ (README, Datasets)",
        },
    ]
    for row in rows:
        row["status"] = "ok" if row["files"] else "missing"
    return rows
