"""CUDA: the fused training step (batched correlation), AMP (bf16, fp16 with a GradScaler) and
inference, wherever a CUDA device is present; skipped with the reason otherwise."""

import pytest
import torch
import torch.nn.functional as F

from hsnetlib import FastHSNet, HSNet
from hsnetlib.bench.masks import bench_masks
from hsnetlib.bench.training import training_step

from tolerance import assert_gradients_close, assert_network_close, gradient_magnitudes

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


def pair():
    torch.manual_seed(0)
    ref = HSNet("resnet50")
    fast = FastHSNet(ref.config)
    fast.load_state_dict(ref.state_dict())
    return ref.cuda(), fast.cuda()


def test_fast_training_gradients_on_cuda_equal_the_reference(episode, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare fp32 with fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ref, fast = (m.train() for m in pair())
    q, s, m, gt = episode
    grads = []
    for model in (ref, fast):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(q, s, m), gt).backward()
        grads.append({n: p.grad.clone() for n, p in model.hpn_learner.named_parameters()})
    magnitudes, counts = gradient_magnitudes(ref, lambda net: F.cross_entropy(net(q, s, m), gt))
    assert_gradients_close(grads[1], grads[0], magnitudes, counts)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_training_steps_on_cuda(episode, amp):
    torch.manual_seed(0)
    model = FastHSNet("resnet50").cuda().train()
    optimizer = torch.optim.Adam(model.hpn_learner.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    losses = [training_step(model, optimizer, *episode, amp=amp, scaler=scaler) for _ in range(5)]
    assert all(loss == loss and loss < 10 for loss in losses)
    assert all(torch.isfinite(p).all() for p in model.hpn_learner.parameters())


def test_cuda_predict_equals_the_cpu_reference(episode, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare fp32 with fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ref, fast = (m.eval() for m in pair())
    q, s, m, _ = [t.cpu() for t in episode]
    expected = ref.cpu().kshot_logits(q, s[:, None], m[:, None])
    got = fast.kshot_logits(q.cuda(), s[:, None].cuda(), m[:, None].cuda()).cpu()
    assert_network_close(got, expected)
