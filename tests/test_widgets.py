"""Widget logic, driven the way a user drives it: set values, click buttons, read the state."""

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from hsnetlib import HSNet
from hsnetlib.correlation import correlation, mask_features
from hsnetlib.data import make_benchmark
from hsnetlib.widgets import CorrelationExplorer, EpisodeExplorer, layer_names

from tolerance import gamma

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return HSNet("resnet50").eval()


def test_correlation_explorer_follows_sliders_and_dropdown(model):
    item = make_benchmark("toy", split="test", img_size=64, num_episodes=2)[0]
    ex = CorrelationExplorer(model, item["query_img"], item["support_imgs"][0], item["support_masks"][0])
    assert [label for label, _ in ex.layer.options] == layer_names(model) and len(ex.maps) == 13
    ex.layer.value = 3  # entries follow the features, shallow to deep: index 3 = level 1's 4th layer
    ex.x.value, ex.y.value = 0.3, 0.7
    q = model.features(item["query_img"][None])[3]
    s = mask_features(model.features(item["support_imgs"][0][None]), item["support_masks"][0][None])[3]
    Ha, Wa = q.shape[-2:]
    i, j = int(0.7 * Ha), int(0.3 * Wa)
    assert ex.position() == (i, j)
    # the explorer's map is this cosine of unit vectors over C channels, perhaps summed in another order:
    # each is within gamma_C * sum |q_c s_c| <= gamma_C of exact (Cauchy-Schwarz: the sum is <= 1)
    bound = 2 * gamma(q.shape[1])
    torch.testing.assert_close(ex.current_map(), correlation(q, s)[0, i, j], rtol=0, atol=bound)
    ex.layer.value = 10  # level 3 (the deepest, layer4), its first layer
    assert ex.current_map().shape == model.features(item["query_img"][None])[10].shape[-2:]
    before = bytes(ex.figure.value)  # every change redraws the figure (PNG bytes of an Image widget)
    ex.x.value = 0.9
    after = bytes(ex.figure.value)
    assert before.startswith(b"\x89PNG") and after.startswith(b"\x89PNG") and after != before


def test_layer_names_use_the_papers_level_numbering(model):
    names = layer_names(model)
    assert names[0] == "level 1 (H/8) · layer 1/4" and names[4] == "level 2 (H/16) · layer 1/6"
    assert names[-1] == "level 3 (H/32) · layer 3/3"
    vgg = HSNet("vgg16")
    assert [n.split(" ·")[0] for n in layer_names(vgg)] == ["level 1 (H/8)"] * 3 + ["level 2 (H/16)"] * 3 + [
        "level 3 (H/32)"
    ]


def test_correlation_explorer_starts_on_the_query_object(model):
    item = make_benchmark("toy", split="test", img_size=96, num_episodes=1)[0]
    ex = CorrelationExplorer(
        model, item["query_img"], item["support_imgs"][0], item["support_masks"][0], query_mask=item["query_mask"]
    )
    row, col = int(ex.y.value * 96), int(ex.x.value * 96)
    assert item["query_mask"][row, col] == 1


def test_episode_explorer_run_button_compares_hsnet_and_dagger(model):
    dagger = HSNet("resnet50", use_support_mask=False).eval()
    dagger.load_state_dict(model.state_dict())
    ex = EpisodeExplorer({"HSNet": model, "HSNet†": dagger}, img_size=64)
    ex.shot.value, ex.index.value, ex.fold.value = 5, 3, 2
    ex.run.click()
    res = ex.result
    assert res["item"]["support_imgs"].shape == (5, 3, 64, 64)
    assert set(res["preds"]) == {"HSNet", "HSNet†"} and res["preds"]["HSNet"].shape == (64, 64)
    assert all(0 <= v <= 100 for v in res["iou"].values())
    ds = make_benchmark("toy", fold=2, split="test", shot=5, img_size=64)
    assert int(res["item"]["class_id"]) == ds.episode(3).class_id and "IoU" in ex.status.value
    expected = model.predict(
        res["item"]["query_img"][None], res["item"]["support_imgs"][None], res["item"]["support_masks"][None]
    )[0]
    assert torch.equal(res["preds"]["HSNet"], expected)


def png_bytes(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def upload(widget, content):
    widget.value = (
        {
            "name": "x.png",
            "type": "image/png",
            "size": len(content),
            "content": memoryview(content),
            "last_modified": datetime.datetime.now(datetime.UTC),
        },
    )


def test_episode_explorer_on_uploaded_images(model):
    ex = EpisodeExplorer({"HSNet": model}, img_size=64)
    assert ex.segment_uploads() == {} and "Upload" in ex.status.value  # nothing uploaded yet
    rng = np.random.default_rng(0)
    upload(ex.query_upload, png_bytes(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)))
    upload(ex.support_upload, png_bytes(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    upload(ex.mask_upload, png_bytes(mask))
    ex.use_uploads.click()
    assert ex.result["iou"]["HSNet"] is None
    assert ex.result["item"]["support_masks"].sum() > 0
    assert ex.result["preds"]["HSNet"].shape == (50, 70)  # the query's own size: no squashing to a square
    assert "no ground truth" in ex.status.value


def test_episode_explorer_shows_errors_in_its_status_line(model):
    ex = EpisodeExplorer({"HSNet": model}, img_size=64, benchmarks=("toy", "pascal"))
    upload(ex.query_upload, b"this is not an image")
    upload(ex.support_upload, png_bytes(np.zeros((8, 8, 3), np.uint8)))
    upload(ex.mask_upload, png_bytes(np.full((8, 8), 255, np.uint8)))
    ex.use_uploads.click()  # must not raise inside the callback
    assert "error" in ex.status.value and "query" in ex.status.value and "not a readable image" in ex.status.value
    ex.benchmark.value = "pascal"  # no data root
    ex.run.click()
    assert "error" in ex.status.value and "HSNET_DATA" in ex.status.value


def test_episode_explorer_offers_only_the_fold_its_models_never_saw(model):
    ex = EpisodeExplorer({"HSNet": model}, img_size=64, unseen_fold=0)
    assert (ex.fold.min, ex.fold.max, ex.fold.value, ex.fold.disabled) == (0, 0, 0, True)
    ex.fold.value = 2  # the slider cannot leave the unseen fold
    assert ex.fold.value == 0 and ex.dataset().fold == 0
    free = EpisodeExplorer({"HSNet": model}, img_size=64)
    assert (free.fold.min, free.fold.max, free.fold.disabled) == (0, 3, False)
