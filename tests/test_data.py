import glob
import os
import pickle

import numpy as np
import pytest
import torch
from fakedata import make_coco, make_fss, make_pascal, write_jpg
from PIL import Image
from torch.utils.data import DataLoader

from hsnetlib.data import DatasetError, SplitFileError, make_benchmark
from hsnetlib.data import splits as split_files


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("data")
    root, splits = base / "Datasets_HSN", base / "splits"
    rng = np.random.default_rng(0)
    info = {
        "pascal": make_pascal(root, splits, rng),
        "coco": make_coco(root, splits, rng),
        "fss": make_fss(root, splits, rng),
    }
    return root, splits, info


def build(name, roots, **kw):
    root, splits, _ = roots
    kw.setdefault("verify_splits", False)
    kw.setdefault("download_splits", False)
    return make_benchmark(name, root, splits_dir=splits, img_size=kw.pop("img_size", 32), **kw)


# -- oracles: the official sampling written out with NumPy's global RNG, as the official code does --
def official_pascal(lines, shot, n=1000):
    state = np.random.get_state()
    np.random.seed(0)
    metadata = [[line.split("__")[0], int(line.split("__")[1]) - 1] for line in lines]
    classwise = {c: [name for name, k in metadata if k == c] for c in range(20)}
    out = []
    for idx in range(n):
        query, cls = metadata[idx % len(metadata)]
        supports = []
        while len(supports) < shot:
            s = np.random.choice(classwise[cls], 1, replace=False)[0]
            if s != query:
                supports.append(s)
        out.append((query, tuple(supports), cls))
    np.random.set_state(state)
    return out


def official_coco(classwise, class_ids, shot, n=1000):
    state = np.random.get_state()
    np.random.seed(0)
    out = []
    for _ in range(n):
        cls = np.random.choice(class_ids, 1, replace=False)[0]
        query = np.random.choice(classwise[cls], 1, replace=False)[0]
        supports = []
        while len(supports) < shot:
            s = np.random.choice(classwise[cls], 1, replace=False)[0]
            if s != query:
                supports.append(s)
        out.append((query, tuple(supports), int(cls)))
    np.random.set_state(state)
    return out


def official_fss(base, categories, offset, shot):
    state = np.random.get_state()
    np.random.seed(0)
    out = []
    for cat in sorted(categories):
        for path in sorted(glob.glob(os.path.join(base, cat, "*"))):
            if not path.endswith(".jpg"):
                continue
            supports = []
            while len(supports) < shot:
                n = np.random.choice(range(1, 11), 1, replace=False)[0]
                s = os.path.join(os.path.dirname(path), f"{n}.jpg")
                if s != path:
                    supports.append(s)
            rel = lambda p: os.path.relpath(p, base)
            out.append((rel(path), tuple(rel(s) for s in supports), offset + sorted(categories).index(cat)))
    np.random.set_state(state)
    return out


@pytest.mark.parametrize("shot", [1, 5])
def test_pascal_episodes_match_official_protocol(roots, shot):
    ds = build("pascal", roots, fold=1, split="test", shot=shot)
    expected = official_pascal(roots[2]["pascal"][("val", 1)], shot)
    got = [(e.query_name, e.support_names, e.class_id) for e in map(ds.episode, range(len(ds)))]
    assert got == expected and len(got) == 1000
    assert any(len(set(s)) < len(s) for _, s, _ in got) or shot == 1  # duplicates among supports allowed


@pytest.mark.parametrize("shot", [1, 5])
def test_coco_episodes_match_official_protocol(roots, shot):
    ds = build("coco", roots, fold=0, split="val", shot=shot)
    expected = official_coco(roots[2]["coco"], [4 * v for v in range(20)], shot)
    got = [(e.query_name, e.support_names, e.class_id) for e in map(ds.episode, range(len(ds)))]
    assert got == expected and len(got) == 1000


@pytest.mark.parametrize("shot", [1, 5])
def test_fss_episodes_match_official_protocol(roots, shot):
    root, _, info = roots
    ds = build("fss", roots, split="test", shot=shot)
    expected = official_fss(str(root / "FSS-1000"), info["fss"], 760, shot)
    got = [(e.query_name, e.support_names, e.class_id) for e in map(ds.episode, range(len(ds)))]
    assert got == expected
    assert [e.query_name for e in map(ds.episode, range(10))][:3] == ["apple/1.jpg", "apple/10.jpg", "apple/2.jpg"]
    assert ds.class_ids[0] == 760 and len(ds) == 30


def test_episode_list_does_not_depend_on_workers(roots):
    ds = build("pascal", roots, fold=0, split="test", shot=2)
    sub = torch.utils.data.Subset(ds, range(12))
    names = []
    for workers in (0, 2):
        loader = DataLoader(sub, batch_size=4, num_workers=workers)
        names.append([n for b in loader for n in b["query_name"]] + [s for b in loader for s in b["support_names"][1]])
    assert names[0] == names[1]


def test_pascal_item_format_and_ignore_pixels(roots):
    ds = build("pascal", roots, fold=0, split="test", shot=2, img_size=40)
    item = ds[0]
    assert item["query_img"].shape == (3, 40, 40) and item["support_imgs"].shape == (2, 3, 40, 40)
    assert item["support_masks"].shape == (2, 40, 40) and item["query_mask"].shape == (40, 40)
    assert set(item["query_mask"].unique().tolist()) == {0.0, 1.0}
    assert item["query_ignore_idx"].sum() > 0 and (item["query_ignore_idx"] * item["query_mask"]).sum() == 0
    assert item["org_query_imsize"].tolist() == [30, 40]
    raw = torch.tensor(np.array(Image.open(ds.ann_dir / f"{item['query_name']}.png")))
    expected = torch.nn.functional.interpolate((raw == item["class_id"] + 1)[None, None].float(), (40, 40))[0, 0]
    assert torch.equal(item["query_mask"], expected)  # nearest resize of the class mask
    orig = build("pascal", roots, fold=0, split="test", shot=1, use_original_imgsize=True)[0]
    assert orig["query_mask"].shape == (30, 40) and orig["query_img"].shape == (3, 32, 32)


def test_training_episodes_change_with_epoch_but_are_reproducible(roots):
    assert set(build("pascal", roots, fold=0, split="trn").class_ids) == set(range(5, 20))
    ds = make_benchmark("toy", fold=0, split="trn", pool_size=40, img_size=32)
    first = [ds.episode(i) for i in range(len(ds))]
    assert first == [ds.episode(i) for i in range(len(ds))]
    ds.set_epoch(1)
    assert first != [ds.episode(i) for i in range(len(ds))]
    assert all(e.query_name not in e.support_names for e in first)


def test_missing_folders_and_split_files_explain_the_fix(roots, tmp_path):
    with pytest.raises(DatasetError, match=r"VOC2012/JPEGImages not found.*hsnet prepare pascal"):
        make_benchmark("pascal", tmp_path, splits_dir=tmp_path)
    with pytest.raises(DatasetError, match="HSNET_DATA"):
        make_benchmark("coco", None)
    root, _, _ = roots
    with pytest.raises(SplitFileError, match=r"fold0.txt not found; download https://raw.githubusercontent.com"):
        make_benchmark("pascal", root, splits_dir=tmp_path, split="test", download_splits=False)


def test_offline_download_is_a_clear_error(roots, tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(split_files.urllib.request, "urlopen", offline)
    with pytest.raises(SplitFileError, match="not available offline.*hsnet splits download"):
        make_benchmark("fss", roots[0], splits_dir=tmp_path, split="test")


def test_split_checksums_are_verified_before_parsing(tmp_path):
    path = tmp_path / "coco" / "val" / "fold0.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({0: ["a.jpg"]}))
    with pytest.raises(SplitFileError, match="SHA-256"):
        split_files.split_path("coco/val/fold0.pkl", tmp_path)
    assert split_files.split_path("coco/val/fold0.pkl", tmp_path, verify=False) == path


def test_split_pickles_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({0: [Evil()]}))
    with pytest.raises(SplitFileError, match="only dict/list/int/str"):
        split_files.read_coco_split(path)


def test_corrupted_image_and_bad_mask_values(roots, tmp_path):
    ds = build("pascal", roots, fold=0, split="test")
    ep = ds.episode(0)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    ds.img_dir = tmp_path
    (tmp_path / f"{ep.query_name}.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DatasetError, match=rf"{ep.query_name}.jpg cannot be read"):
        ds[0]
    ds = build("pascal", roots, fold=0, split="test")
    ds.ann_dir = tmp_path
    Image.fromarray(np.full((30, 40), 77, np.uint8)).save(tmp_path / f"{ep.query_name}.png")
    with pytest.raises(DatasetError, match=r"values \[77\]; expected class indices 0..20 and 255"):
        ds[0]


def test_fold_and_name_out_of_range(roots):
    with pytest.raises(ValueError, match="fold 4 out of range for pascal: expected 0..3"):
        build("pascal", roots, fold=4)
    with pytest.raises(ValueError, match="unknown benchmark"):
        make_benchmark("voc")
    with pytest.raises(ValueError, match="split must be"):
        make_benchmark("toy", split="train")


def test_single_image_class_cannot_loop_forever(tmp_path):
    rng = np.random.default_rng(0)
    from fakedata import write_png

    write_jpg(tmp_path / "VOC2012" / "JPEGImages" / "a.jpg", rng)
    write_png(tmp_path / "VOC2012" / "SegmentationClassAug" / "a.png", np.ones((30, 40)))
    (tmp_path / "pascal" / "val").mkdir(parents=True)
    (tmp_path / "pascal" / "val" / "fold0.txt").write_text("a__01\n")
    with pytest.raises(DatasetError, match="single image"):
        make_benchmark("pascal", tmp_path, splits_dir=tmp_path, split="val", verify_splits=False)
