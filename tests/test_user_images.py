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


def expected_box(files):
    return load_user_episode(files["query"], [files["support"]], [files["mask"]], 64).support_masks


def test_phone_photos_are_turned_upright_by_their_exif_orientation(files):
    d = files["dir"]
    upright_support = Image.open(files["support"])
    sideways = upright_support.transpose(Image.Transpose.ROTATE_90)  # stored rotated, EXIF says: turn it back
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display, undoing ROTATE_90 (counter-clockwise)
    sideways.save(d / "phone.jpg", exif=exif, quality=100)
    mask_sideways = Image.open(files["mask"]).transpose(Image.Transpose.ROTATE_90)
    mask_sideways.save(d / "phone_mask.png", exif=exif)
    ep = load_user_episode(files["query"], [d / "phone.jpg"], [d / "phone_mask.png"], 64)
    assert ep.support_sizes == [(40, 60)]  # upright: as every viewer shows it
    assert torch.equal(ep.support_masks, expected_box(files))


def test_a_mask_drawn_on_a_transparent_layer_uses_its_opacity(files):
    mask = np.asarray(Image.open(files["mask"]))
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: only the alpha channel tells the object
    rgba[..., 3] = mask
    path = write(files["dir"] / "alpha.png", rgba)
    ep = load_user_episode(files["query"], [files["support"]], [path], 64)
    assert torch.equal(ep.support_masks, expected_box(files))


def test_sixteen_bit_and_coloured_masks_are_read_not_clipped(files):
    mask = np.asarray(Image.open(files["mask"])) > 0
    deep = Image.fromarray((mask * 40000).astype(np.uint16))  # 16-bit grey: 0 and 40000 of 65535
    deep.save(files["dir"] / "deep.png")
    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = mask * 255  # a red object on black: L would be 76, "grey"
    for path in (files["dir"] / "deep.png", write(files["dir"] / "red.png", red)):
        ep = load_user_episode(files["query"], [files["support"]], [path], 64)
        assert torch.equal(ep.support_masks, expected_box(files))


def test_sixteen_bit_grey_photos_keep_their_tones(files):
    """A 16-bit grey query / support (scanners, microscopes) is scaled from 0..65535, not clipped at 255."""
    ramp = np.linspace(0, 65535, 40 * 60).reshape(40, 60).astype(np.uint16)
    Image.fromarray(ramp).save(files["dir"] / "deep.png")
    eight = write(files["dir"] / "eight.png", (ramp // 257).astype(np.uint8))  # the same tones in 8 bits
    a = load_user_episode(files["dir"] / "deep.png", [files["dir"] / "deep.png"], [files["mask"]], 64)
    b = load_user_episode(eight, [eight], [files["mask"]], 64)
    # the two roundings differ by at most one 8-bit level: 1/255 / ImageNet std 0.225 = 0.017; 0.05 < 3 levels
    assert (a.query_img - b.query_img).abs().max() < 0.05
    assert (a.support_imgs - b.support_imgs).abs().max() < 0.05


def test_huge_images_are_refused_from_their_header(files):
    Image.new("L", (8000, 6000)).save(files["dir"] / "huge.png")  # 48 megapixels, a few KB on disk
    with pytest.raises(UserImageError, match="8000x6000 pixels, more than the 40 megapixels"):
        load_user_episode(files["dir"] / "huge.png", [files["support"]], [files["mask"]], 64)


@pytest.mark.numerics
@pytest.mark.parametrize("shot", [1, 3])
def test_banded_upsampling_gives_the_mask_of_upsampling_at_once(shot, monkeypatch):
    """segment()'s band-by-band mask equals model.predict(size=...) except where the two upsampled logits
    tie within float32 rounding (relative 1e-5 of their magnitude: both sides are sums of 4 products)."""
    from hsnetlib.model import vote_kshot
    from hsnetlib.user_images import upsampled_vote

    torch.manual_seed(shot)
    logits = torch.randn(shot, 2, 9, 13)  # the learner's resolution
    size = (61, 47)  # odd, not a multiple of the input
    full = torch.nn.functional.interpolate(logits, size, mode="bilinear", align_corners=True)  # (K, 2, H, W)
    votes = (full[:, 1] > full[:, 0]).long()[None]  # (1, K, H, W)
    expected = votes[0, 0] if shot == 1 else vote_kshot(votes)[0]
    monkeypatch.setattr("hsnetlib.user_images.BAND_VALUES", 2 * shot * 47 * 5)  # bands of 5 rows
    got = upsampled_vote(logits, size)
    assert got.shape == size and got.dtype == torch.uint8
    near_tie = ((full[:, 1] - full[:, 0]).abs() <= 1e-5 * full.abs().amax(dim=1)).any(dim=0)
    assert torch.equal(got.bool()[~near_tie], expected.bool()[~near_tie])


@pytest.mark.numerics
def test_segment_is_model_predict_at_the_original_size(files):
    model = HSNet("resnet50").eval()
    ep = load_user_episode(files["query"], [files["support"]] * 2, [files["mask"]] * 2, 64)
    logits = model.kshot_logits(ep.query_img[None], ep.support_imgs[None], ep.support_masks[None], ep.query_size)
    ref = model.predict(ep.query_img[None], ep.support_imgs[None], ep.support_masks[None], size=ep.query_size)[0]
    # upsampled in bands or at once, a pixel's two logits are blends of the same 4 values in another order:
    # its vote can change only where they tie within float32 rounding (relative 1e-5 of their size)
    near_tie = ((logits[0, :, 1] - logits[0, :, 0]).abs() <= 1e-5 * logits[0].abs().amax(dim=1)).any(dim=0)
    assert torch.equal(segment(model, ep).long()[~near_tie], ref[~near_tie])


def peak_rss_of_segment(tmp_path, ckpt, query) -> int:
    """Peak resident memory (bytes) of one `hsnet segment` process on ``query``."""
    import subprocess
    import sys

    argv = ["segment", "--load", str(ckpt), "--query", str(query), "--out", str(tmp_path / "o.png")]
    argv += ["--support", str(tmp_path / "s.png"), "--mask", str(tmp_path / "m.png")]
    code = "\n".join(
        [
            "import resource, sys",
            "from hsnetlib.cli import main",
            f"rc = main({argv!r})",
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)",
        ]
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return int(run.stdout.split()[-1]) * 1024  # ru_maxrss is in KB on Linux


def test_a_large_query_costs_memory_in_proportion_to_its_pixels(files, tmp_path):
    """A 20-megapixel query adds a few bytes per pixel (the decoded image: 3, the mask file: 1-2), not
    float copies at full size (the logits, the query and its overlay: 6 GB at 40 megapixels)."""
    ckpt = tmp_path / "model.pt"
    save_atomic({"model": HSNet("resnet50").eval().state_dict(), "config": {"img_size": 64}}, ckpt)
    big = np.zeros((4000, 5000, 3), np.uint8)
    big[1000:3000, 1000:4000] = 200
    write(tmp_path / "big.png", big)
    write(tmp_path / "small.png", big[::50, ::50].copy())
    extra = peak_rss_of_segment(tmp_path, ckpt, tmp_path / "big.png")
    extra -= peak_rss_of_segment(tmp_path, ckpt, tmp_path / "small.png")
    assert extra < 12 * big.shape[0] * big.shape[1], f"{extra / 2**20:.0f} MB more for a 20-megapixel query"
    mask = Image.open(tmp_path / "o_mask.png")
    assert mask.size == (5000 // 50, 4000 // 50)  # the last run wrote the small query's mask at its size
