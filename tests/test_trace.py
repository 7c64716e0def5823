"""The squeeze traced stage by stage: the shapes of the paper's Fig. 2 at 400x400, and the trace is the model."""

import pytest
import torch

from hsnetlib import HSNet
from hsnetlib.trace import center_pivot_kernels, shape_table, trace_episode

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def test_support_dims_are_squeezed_and_query_dims_kept_at_400():
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    mask = torch.zeros(1, 400, 400)
    mask[:, 100:300, 120:260] = 1
    stages = trace_episode(model, torch.randn(1, 3, 400, 400), torch.randn(1, 3, 400, 400), mask)
    rows = {r["stage"]: (r["query (Ha, Wa)"], r["support (Hb, Wb)"]) for r in shape_table(stages)}
    support = lambda block: [rows[f"{block} · 4D conv {i}/3"][1] for i in (1, 2, 3)]  # noqa: E731
    assert rows["f^sqz_3 input: C_3"] == ("13x13", "13x13") and support("f^sqz_3") == ["7x7", "4x4", "2x2"]
    assert rows["f^sqz_2 input: C_2"] == ("25x25", "25x25") and support("f^sqz_2") == ["7x7", "4x4", "2x2"]
    assert rows["f^sqz_1 input: C_1"] == ("50x50", "50x50") and support("f^sqz_1") == ["13x13", "4x4", "2x2"]
    assert all(rows[f"f^sqz_{p} · 4D conv 3/3"][0] == q for p, q in ((3, "13x13"), (2, "25x25"), (1, "50x50")))
    assert rows["f^mix_2 input: upsampled + f^sqz_2"] == ("25x25", "2x2")
    assert rows["f^mix_1 · 4D conv 3/3"] == ("50x50", "2x2")
    assert rows["Z: mean over the support dims"] == ("50x50", "-")
    assert stages[-1].shape == (1, 2, 400, 400)
    # the trace is the model: its last stage equals the model's own output, and Z is the mean of f^mix_1
    logits = model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), torch.ones(1, 64, 64))
    small = trace_episode(model, torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64), torch.ones(1, 64, 64))
    assert torch.equal(small[-1].output, logits)  # the same modules on the same tensors, in the same order
    by_name = {s.name: s.output for s in stages}
    mix = by_name["f^mix_1 · 4D conv 3/3"]  # conv output, before GroupNorm and ReLU: Z is taken after them
    assert by_name["Z: mean over the support dims"].shape == mix.shape[:4]


def test_one_level_model_traces_without_mixing_and_kernels_are_the_two_planes():
    model = HSNet("resnet50", pyramid_levels=1).eval()
    stages = trace_episode(model, torch.randn(1, 3, 96, 96), torch.randn(1, 3, 96, 96), torch.ones(1, 96, 96))
    assert not any(s.name.startswith("f^mix") for s in stages)
    conv = model.hpn_learner.encoder_layer4[0]
    q, s = center_pivot_kernels(conv)
    assert q.shape == (16, 3, 3) and s.shape == (16, 3, 3)
    torch.testing.assert_close(q, conv.conv1.weight.mean(1))  # a mean of 3 float32 weights: rounding ~1e-7 of them
