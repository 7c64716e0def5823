"""CUDA: the fused training step (batched correlation), AMP (bf16, fp16 with a GradScaler) and
inference, wherever a CUDA device is present; skipped with the reason otherwise."""

import pytest
import torch
import torch.nn.functional as F

from hsnetlib import HSNet
from hsnetlib.profile import bench_masks
from hsnetlib.training_speed import training_step

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none visible to torch)"),
]


@pytest.fixture
def episode():
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 3, 128, 128, generator=g), torch.randn(2, 3, 128, 128, generator=g)
    gt = (torch.rand(2, 128, 128, generator=g) > 0.5).long()
    return [t.cuda() for t in (q, s, bench_masks("scattered", 128, 2), gt)]


def test_fused_training_gradients_on_cuda_equal_the_reference(episode, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare fp32 with fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = HSNet("resnet50").cuda().train()
    q, s, m, gt = episode
    grads = []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(q, s, m, fused=fused), gt).backward()
        grads.append({n: p.grad.clone() for n, p in model.hpn_learner.named_parameters()})
    for name, ref in grads[0].items():
        err = (grads[1][name] - ref).norm() / ref.norm().clamp(min=1e-12)
        assert err <= 1e-4, (name, err.item())


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(episode, amp):
    torch.manual_seed(0)
    model = HSNet("resnet50").cuda().train()
    optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    losses = [training_step(model, optimizer, "fused", *episode, amp=amp, scaler=scaler) for _ in range(5)]
    assert all(loss == loss and loss < 10 for loss in losses)
    assert all(torch.isfinite(p).all() for p in model.hpn_learner.parameters())


def test_cuda_predict_equals_the_cpu_reference(episode):
    torch.manual_seed(0)
    model = HSNet("resnet50").eval()
    q, s, m, _ = [t.cpu() for t in episode]
    ref = model.kshot_logits(q, s[:, None], m[:, None], fused=False)
    fast = model.cuda().kshot_logits(q.cuda(), s[:, None].cuda(), m[:, None].cuda()).cpu()
    torch.testing.assert_close(fast, ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())
