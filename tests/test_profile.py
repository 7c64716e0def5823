"""Measurement code: structure and the deterministic columns (never wall time)."""

import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.profile import PAPER_TABLE4, inference_table, kernel_table, learner_flops


@pytest.mark.slow
def test_kernel_table_counts_and_ratios():
    table = kernel_table("resnet50", img_size=48, repeats=1, device="cpu", isolate=False)
    assert list(table.index) == ["full", "separable", "center-pivot"]
    assert table.loc["center-pivot", "params_M"] == pytest.approx(2.573794, abs=1e-3)
    assert table.loc["full", "GMACs_vs_CP"] > 3  # dense k^4 vs 2 k^2 taps: k^2/2 = 4.5 (k=3) to 12.5 (k=5)
    assert table.loc["center-pivot", "GFLOPs"] == pytest.approx(2 * table.loc["center-pivot", "GMACs"], rel=1e-3)
    assert table.loc["full", "paper_time_ms"] == PAPER_TABLE4["full"]["time_ms"]
    assert (table["time_ms"] > 0).all() and (table["memory_MB"] >= 0).all()


def test_learner_flops_grow_with_image_size():
    model = HSNet("resnet50")
    assert learner_flops(model, 96) > 4 * learner_flops(model, 48)


def test_inference_table_structure():
    table = inference_table(
        ("resnet50",),
        img_size=48,
        repeats=1,
        device="cpu",
        shots=(1, 2),
        precisions=("fp32",),
        masks=("box", "scattered"),
    )
    assert list(table["path"]) == ["official-style", "reference", "fused"] * 4
    assert list(table["mask"]) == ["box"] * 6 + ["scattered"] * 6 and list(table["shot"][::3]) == [1, 2, 1, 2]
    assert (table["GFLOP"] > 0).all()
    assert (table[table.path == "official-style"]["speedup_vs_official_style"] == 1).all()
    by = table[table["mask"] == "box"].set_index(["shot", "path"])["GFLOP"]
    assert by[(2, "fused")] < by[(2, "reference")] <= by[(2, "official-style")]  # query backbone once; sparse Eq. 2
    assert (table["mask_agreement_%"] >= 99.5).all()


def test_official_style_predict_matches_reference():
    from hsnetlib.official_style import official_style_predict
    from hsnetlib.profile import episode

    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    for shot in (1, 3):
        q, s, m = episode(64, shot, batch=2)
        assert torch.equal(official_style_predict(model, q, s, m), model.predict(q, s, m, fused=False))
