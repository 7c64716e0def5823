import json

import numpy as np
import pytest
from fakedata import make_coco_json, write_jpg, write_png
from PIL import Image
from scipy.io import savemat

from hsnetlib.data import DatasetError
from hsnetlib.data.prepare import check_root, coco_class_map, prepare_coco, prepare_pascal


def test_prepare_pascal_merges_voc_and_sbd_voc_first(tmp_path):
    rng = np.random.default_rng(0)
    voc, sbd, out = tmp_path / "VOCdevkit" / "VOC2012", tmp_path / "SBD" / "dataset", tmp_path / "root"
    for name in ("a", "b", "c"):
        write_jpg(voc / "JPEGImages" / f"{name}.jpg", rng)
    voc_a = np.zeros((30, 40), np.uint8)
    voc_a[2:5, 2:5], voc_a[5, :] = 3, 255
    write_png(voc / "SegmentationClass" / "a.png", voc_a)
    (sbd / "cls").mkdir(parents=True)
    for name, value in (("a", 9), ("b", 7)):
        seg = np.full((30, 40), value, np.uint8)
        savemat(sbd / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": seg, "CategoriesPresent": [value]}})
    counts = prepare_pascal(voc, sbd, out, progress=False)
    assert counts == {"voc": 1, "sbd": 1, "skipped": 0}
    aug = out / "VOC2012" / "SegmentationClassAug"
    assert np.array_equal(np.array(Image.open(aug / "a.png")), voc_a)  # VOC wins over SBD
    assert (np.array(Image.open(aug / "b.png")) == 7).all()
    assert (out / "VOC2012" / "JPEGImages" / "c.jpg").is_file()
    assert prepare_pascal(voc, sbd, out, progress=False) == {"voc": 0, "sbd": 0, "skipped": 2}  # resumable
    assert not list(aug.glob("*.part"))


def test_prepare_pascal_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="JPEGImages/ and SegmentationClass/"):
        prepare_pascal(tmp_path, None, tmp_path / "out")
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    with pytest.raises(DatasetError, match="contains cls/"):
        prepare_pascal(tmp_path, tmp_path / "nosbd", tmp_path / "out")


def test_prepare_pascal_refuses_an_output_inside_the_voc_folder(tmp_path):
    voc = tmp_path / "VOC2012"
    write_jpg(voc / "JPEGImages" / "a.jpg", np.random.default_rng(0))
    (voc / "SegmentationClass").mkdir()
    with pytest.raises(
        DatasetError, match="lies inside the VOC2012 folder .* would form a loop; give an --out outside"
    ):
        prepare_pascal(voc, None, voc / "JPEGImages" / "prepared")
    assert not (voc / "JPEGImages" / "prepared").exists()  # refused before anything was written


def test_prepare_coco_paints_class_indices_largest_first(tmp_path):
    coco, out = tmp_path / "coco", tmp_path / "root"
    write_jpg(coco / "val2014" / "COCO_val2014_000000000001.jpg", np.random.default_rng(0))
    images = [{"id": 1, "file_name": "COCO_val2014_000000000001.jpg", "height": 30, "width": 40}]
    big = [0, 0, 40, 0, 40, 30, 0, 30]  # whole image, category 3 -> class 2
    small = [10, 10, 20, 10, 20, 20, 10, 20]  # 10x10 square, category 90 -> class 3
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 90,
            "segmentation": [small],
            "area": 100,
            "bbox": [10, 10, 10, 10],
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 3,
            "segmentation": [big],
            "area": 1200,
            "bbox": [0, 0, 40, 30],
            "iscrowd": 0,
        },
    ]
    make_coco_json(coco / "annotations" / "instances_val2014.json", images, anns)
    counts = prepare_coco(coco, out, splits=("val2014",), progress=False)
    assert counts == {"val2014": {"written": 1, "skipped": 0}}
    label = np.array(Image.open(out / "COCO2014" / "annotations" / "val2014" / "COCO_val2014_000000000001.png"))
    assert label[15, 15] == 3 and label[2, 2] == 2 and set(np.unique(label)) == {2, 3}
    assert coco_class_map([90, 1, 3]) == {1: 1, 3: 2, 90: 3}
    assert json.loads((coco / "annotations" / "instances_val2014.json").read_text())["images"][0]["id"] == 1


def test_check_root_reports_missing_with_fix(tmp_path):
    rows = {r["what"]: r for r in check_root(tmp_path)}
    assert rows["VOC2012/SegmentationClassAug"]["status"] == "missing"
    assert "hsnet prepare pascal" in rows["VOC2012/SegmentationClassAug"]["fix"]
    write_jpg(tmp_path / "FSS-1000" / "cat" / "1.jpg", np.random.default_rng(0))
    assert {r["what"]: r for r in check_root(tmp_path)}["FSS-1000/<class>/*.jpg"]["status"] == "ok"
