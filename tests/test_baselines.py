"""The training-free baselines of ``hsnet demo`` against their definitions, written as loops."""

import pytest
import torch
import torch.nn.functional as F

from hsnetlib.backbone import extract_features
from hsnetlib.baselines import AllBackground, AllForeground, CorrelationBaseline
from hsnetlib.fast import FastHSNet
from hsnetlib.model import HSNet

from naive import cosine_correlation

pytestmark = pytest.mark.numerics  # float comparisons: also run under other kernel paths (tools/kernel_paths.py)


def naive_correlation_baseline(net, query, supports, masks):
    """score(x) = mean_l max_x' C_l(x, x') upsampled, averaged over shots; fg where >= (min+max)/2.
    query (B,3,H,W), supports (B,K,3,H,W), masks (B,K,H,W); one episode and one shot at a time."""
    B, K, _, H, W = supports.shape
    out = torch.zeros(B, H, W, dtype=torch.long)
    margins = torch.zeros(B, H, W, dtype=query.dtype)  # |score - threshold| of every pixel
    for b in range(B):
        q_feats = extract_features("resnet50", net, query[b : b + 1])
        score = torch.zeros(H, W, dtype=query.dtype)
        for k in range(K):
            s_feats = extract_features("resnet50", net, supports[b, k][None])
            layer_maps = []
            for q, s in zip(q_feats, s_feats):
                m = F.interpolate(masks[b, k][None, None].float(), s.shape[-2:], mode="bilinear", align_corners=True)
                c = cosine_correlation(q, s * m)[0]  # (Ha, Wa, Hb, Wb), clamped at 0
                best = c.flatten(2).max(-1).values  # (Ha, Wa)
                layer_maps.append(F.interpolate(best[None, None], (H, W), mode="bilinear", align_corners=True)[0, 0])
            score += torch.stack(layer_maps).mean(0) / K
        threshold = (score.min() + score.max()) / 2
        out[b], margins[b] = (score >= threshold).long(), (score - threshold).abs()
    return out, margins


# Scores are means of cosines in [0, 1]; in float64 the backbone's rounding (53 convolutions of <= 4608
# terms) and Eq. (2)'s keep them within 2 x 53 x gamma_4608 ~ 5e-11 of exact, so a pixel may take the
# other side only within 1e-9 of the threshold (it moves by as much as the scores).
TIE = 1e-9


def _episode(B=2, K=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(B, K, size, size)
    masks[..., 16:40, 20:48] = 1
    if K > 1:
        masks[0, 1] = 0  # an empty support mask: no NaN, the shot just scores 0 everywhere
    return torch.randn(B, 3, size, size, generator=g), torch.randn(B, K, 3, size, size, generator=g), masks


def test_correlation_baseline_is_its_definition():
    torch.manual_seed(0)
    net = HSNet("resnet50").backbone.double()
    q, s, m = (t.double() for t in _episode())
    got = CorrelationBaseline(net=net).predict(q, s, m)
    want, margin = naive_correlation_baseline(net, q, s, m)
    assert got.shape == (2, 64, 64) and torch.equal(got[margin > TIE], want[margin > TIE])


def test_baseline_of_a_model_uses_its_folded_backbone_and_agrees():
    torch.manual_seed(0)
    model = FastHSNet("resnet50").eval().double()
    q, s, m = (t.double() for t in _episode(B=1, K=2, seed=1))
    _, margin = naive_correlation_baseline(model.backbone, q, s, m)
    plain = CorrelationBaseline(net=model.backbone).predict(q, s, m)
    fast = CorrelationBaseline.of_model(model).predict(q, s, m)
    assert model.folded_backbone.built  # built by the baseline's call
    assert torch.equal(plain[margin > TIE], fast[margin > TIE])  # folded BatchNorm: float64 rounding apart


def test_constant_baselines():
    q, s, m = _episode(B=1, K=1)
    assert AllForeground().predict(q, s, m, size=(5, 7)).eq(1).all()
    assert AllBackground().predict(q, s, m).shape == (1, 64, 64)
