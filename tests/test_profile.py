"""Measurement code: structure and the deterministic columns (never wall time)."""

import pytest

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
    table = inference_table(("resnet50",), img_size=48, repeats=1, device="cpu", shots=(1, 2), precisions=("fp32",))
    assert list(table["path"]) == ["reference", "fused", "reference", "fused"]
    assert (table["GFLOP"] > 0).all() and (table[table.path == "reference"]["speedup_vs_reference"] == 1).all()
    fused = table[table.path == "fused"].set_index("shot")
    assert fused.loc[2, "GFLOP"] < table[(table.path == "reference") & (table.shot == 2)]["GFLOP"].iloc[0]
