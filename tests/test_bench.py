"""Measurement code: structure and the deterministic columns (never wall time)."""

import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.bench.inference import InferenceBench, inference_table
from hsnetlib.bench.kernels import KernelBench, kernel_table, learner_flops
from hsnetlib.bench.masks import MASK_KINDS, bench_masks
from hsnetlib.bench.training import TrainingBench, parse_setting, training_table
from hsnetlib.errors import HSNetError
from hsnetlib.reproduce import paper_table


@pytest.mark.slow
def test_kernel_table_counts_and_ratios():
    table = kernel_table(KernelBench("resnet50", img_size=48, repeats=1, device="cpu"), isolate=False)
    assert list(table.index) == ["full", "separable", "center-pivot"]
    # an integer count (2,573,794 parameters) that the table rounds to millions with 3 decimals: +-0.0005
    assert table.loc["center-pivot", "params_M"] == pytest.approx(2.573794, abs=5e-4)
    assert table.loc["full", "GMACs_vs_CP"] > 3  # dense k^4 vs 2 k^2 taps: k^2/2 = 4.5 (k=3) to 12.5 (k=5)
    # FLOPs = 2 x MACs exactly (integer counts); the table rounds both to 3 decimals: +-0.0005 each
    gflops, gmacs = table.loc["center-pivot", "GFLOPs"], table.loc["center-pivot", "GMACs"]
    assert abs(gflops - 2 * gmacs) <= 0.0005 + 2 * 0.0005
    paper = paper_table("kernels").set_index("kernel")
    assert table.loc["full", "paper_time_ms"] == paper.loc["full", "time_ms"]  # read from data/paper, not restated
    assert (table["time_ms"] > 0).all() and (table["memory_MB"] >= 0).all()


def test_learner_flops_grow_with_image_size():
    model = HSNet("resnet50")
    assert learner_flops(model, 96) > 4 * learner_flops(model, 48)


def test_inference_table_structure():
    bench = InferenceBench(
        img_size=48, repeats=1, device="cpu", shots=(1, 2), precisions=("fp32",), masks=("box", "scattered")
    )
    table = inference_table(bench)
    assert list(table["path"]) == ["reference", "fast"] * 4
    assert list(table["mask"]) == ["box"] * 4 + ["scattered"] * 4 and list(table["shot"][::2]) == [1, 2, 1, 2]
    assert (table["GFLOP"] > 0).all()
    assert (table[table.path == "reference"]["speedup"] == 1).all()
    by = table[table["mask"] == "box"].set_index(["shot", "path"])["GFLOP"]
    assert by[(2, "fast")] < by[(2, "reference")]  # query backbone once; Eq. (2) only inside the mask
    assert (table["mask_agreement_%"] >= 99.5).all()


def test_training_table_structure():
    bench = TrainingBench(settings=("48x2",), masks=("box",), repeats=1, memory=False, device="cpu")
    table = training_table(bench)
    assert list(table["path"]) == ["reference", "fast"] and (table["ms_per_step"] > 0).all()
    assert table.loc[table.path == "reference", "speedup"].item() == 1


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_bench_masks_are_binary_and_seeded(kind):
    masks = bench_masks(kind, 64, 3)
    assert masks.shape == (3, 64, 64) and set(masks.unique().tolist()) <= {0.0, 1.0} and masks.any()
    assert torch.equal(masks, bench_masks(kind, 64, 3))


def test_bench_settings_and_sizes_are_checked():
    assert parse_setting("400x2") == (400, 2)
    with pytest.raises(ValueError, match="SIZExBATCH"):
        parse_setting("400")
    with pytest.raises(HSNetError, match="at least 32"):
        kernel_table(KernelBench(img_size=16))
    with pytest.raises(HSNetError, match="repeats must be >= 1"):
        inference_table(InferenceBench(repeats=0))


def test_blob_masks_cover_half_the_image_and_span_all_of_it():
    """The realistic kind: half of the positions in, spread over the whole grid (a bounding box of at least
    70 % of each side, so the window saves little), different for every mask."""
    masks = bench_masks("blobs", 96, 4, seed=3)
    assert ((masks.mean(dim=(1, 2)) - 0.5).abs() <= 0.01).all()  # thresholded at its median
    for m in masks:
        rows, cols = m.amax(dim=1).nonzero(), m.amax(dim=0).nonzero()
        assert rows.max() - rows.min() >= 0.7 * 96 and cols.max() - cols.min() >= 0.7 * 96
    assert not torch.equal(masks[0], masks[1])
