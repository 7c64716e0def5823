"""Your own images: `hsnet segment` and the explorer's uploads share one checked path."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hsnetlib import HSNet
from hsnetlib.checkpoint import save_atomic
from hsnetlib.cli import main
from hsnetlib.user_images import UserImageError, load_user_episode, segment


def write(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:45] = 255
    return {
        "query": write(tmp_path / "q.jpg", rng.integers(0, 255, (50, 100, 3), dtype=np.uint8)),
        "support": write(tmp_path / "s.png", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)),
        "mask": write(tmp_path / "m.png", mask),
        "dir": tmp_path,
    }


def test_query_keeps_its_aspect_and_supports_are_square(files):
    ep = load_user_episode(files["query"], [files["support"]] * 2, [files["mask"]] * 2, img_size=64)
    assert ep.query_img.shape == (3, 32, 64) and ep.query_size == (50, 100)
    assert ep.support_imgs.shape == (2, 3, 64, 64) and ep.support_masks.shape == (2, 64, 64)
    assert set(ep.support_masks.unique().tolist()) == {0.0, 1.0}
    # the mask box covers rows 10..29 of 40 and columns 20..44 of 60: the same fraction after resizing
    assert abs(ep.support_masks[0].mean().item() - (20 * 25) / (40 * 60)) < 0.02


def test_bytes_work_like_paths(files):
    raw = [files[k].read_bytes() for k in ("query", "support", "mask")]
    a = load_user_episode(raw[0], [raw[1]], [raw[2]], 64)
    b = load_user_episode(files["query"], [files["support"]], [files["mask"]], 64)
    assert torch.equal(a.query_img, b.query_img) and torch.equal(a.support_masks, b.support_masks)


def test_bad_inputs_name_the_file_and_the_fix(files):
    d = files["dir"]
    (d / "broken.jpg").write_bytes(b"not an image at all")
    with pytest.raises(UserImageError, match=r"support 1 .*broken.jpg is not a readable image"):
        load_user_episode(files["query"], [d / "broken.jpg"], [files["mask"]], 64)
    with pytest.raises(UserImageError, match="query .*nope.jpg not found"):
        load_user_episode(d / "nope.jpg", [files["support"]], [files["mask"]], 64)
    grey = write(d / "grey.png", np.full((40, 60), 128, np.uint8))
    with pytest.raises(UserImageError, match="not a binary mask"):
        load_user_episode(files["query"], [files["support"]], [grey], 64)
    small = write(d / "small.png", np.full((20, 30), 255, np.uint8))
    with pytest.raises(UserImageError, match="20x30|30x20"):
        load_user_episode(files["query"], [files["support"]], [small], 64)
    empty = write(d / "empty.png", np.zeros((40, 60), np.uint8))
    with pytest.raises(UserImageError, match="empty"):
        load_user_episode(files["query"], [files["support"]], [empty], 64)
    with pytest.raises(UserImageError, match="one mask per support"):
        load_user_episode(files["query"], [files["support"]], [], 64)


def test_segment_command_writes_overlay_and_mask(files, capsys):
    model = HSNet("resnet50").eval()
    ckpt = files["dir"] / "model.pt"
    save_atomic({"model": model.state_dict(), "config": {"img_size": 64}}, ckpt)
    out = files["dir"] / "out" / "pred.png"
    argv = ["segment", "--load", str(ckpt), "--query", str(files["query"]), "--out", str(out)]
    argv += ["--support", str(files["support"]), "--mask", str(files["mask"])] * 2
    assert main(argv) == 0
    assert "2-shot at 64 px" in capsys.readouterr().out
    mask = np.array(Image.open(out.with_name("pred_mask.png")))
    assert mask.shape == (50, 100) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(out).size[0] > 300  # the overlay figure
    ep = load_user_episode(files["query"], [files["support"]] * 2, [files["mask"]] * 2, 64)
    assert np.array_equal(mask > 0, segment(model, ep).numpy() > 0)


def test_segment_command_reports_bad_input_in_one_line(files, capsys):
    ckpt = files["dir"] / "model.pt"
    save_atomic({"model": HSNet("resnet50").state_dict()}, ckpt)
    bad = files["dir"] / "bad.png"
    bad.write_bytes(io.BytesIO(b"xx").getvalue())
    argv = ["segment", "--load", str(ckpt), "--query", str(files["query"])]
    assert main(argv + ["--support", str(files["support"]), "--mask", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hsnet: error: mask 1") and "bad.png" in err and "\n" not in err
