"""The official implementation's computation, re-stated for timing baselines only.

``hsnet bench inference`` and ``hsnet bench training`` compare hsnetlib with this path in the
same process, so a speed-up is measured on the machine at hand rather than against a figure
taken elsewhere. What it does per shot, as the official test and train scripts do
(juhongm999/hsnet, model/hsnet.py and model/base/correlation.py, read for their structure):

- the whole network, the query backbone included, once per shot;
- Eq. (1) on every support feature, then Eq. (2) *densely* for every layer (normalize query and
  support, one batched product, clamp), every support position included;
- the per-layer correlations stacked per pyramid level (a copy of the largest tensors);
- the 4D learner in the channel-major layout (our reference modules: the same permute/copy
  structure as the official center-pivot layer, minus two ``.contiguous()`` calls, so this
  baseline is if anything slightly *faster* than the official code);
- the K-shot vote of :func:`hsnetlib.model.vote_kshot` (inference);
- training: the backbone without gradients, autograd through the learner (:func:`official_style_logits`).

Not used for any result: :meth:`HSNet.kshot_logits` with ``fused=False`` is the oracle in tests.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .correlation import EPS, mask_features, pyramid_groups, unit_norm
from .model import HSNet, check_episode, vote_kshot


def dense_level_correlations(query_feats, support_feats, pyramid_sizes) -> list[torch.Tensor]:
    """Eq. (2) for every layer and every support position, stacked per level, deepest first."""
    pyramid = []
    for qs, ss in pyramid_groups(query_feats, support_feats, pyramid_sizes):
        corrs = []
        for q, s in zip(qs, ss):
            B, C, Ha, Wa = q.shape
            Hb, Wb = s.shape[-2:]
            q = unit_norm(q.reshape(B, C, -1), 1, EPS)  # (B, C, Ha*Wa)
            s = unit_norm(s.reshape(B, C, -1), 1, EPS)  # (B, C, Hb*Wb)
            corrs.append(torch.bmm(q.transpose(1, 2), s).view(B, Ha, Wa, Hb, Wb).clamp(min=0))  # (B, Ha, Wa, Hb, Wb)
        pyramid.append(torch.stack(corrs).transpose(0, 1).contiguous())  # (B, L, Ha, Wa, Hb, Wb), a copy
    return pyramid


def official_style_logits(model: HSNet, query_img, support_img, support_mask) -> torch.Tensor:
    """One support, with autograd in the learner: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B, 2, H, W)."""
    with torch.no_grad():  # the official code extracts features under no_grad, backbone in eval mode
        query_feats, support_feats = model.features(query_img), model.features(support_img)
        if model.use_support_mask:
            support_feats = mask_features(support_feats, support_mask.float())
        pyramid = dense_level_correlations(query_feats, support_feats, model.pyramid_sizes)
    logits = model.hpn_learner(pyramid)
    return F.interpolate(logits, query_img.shape[-2:], mode="bilinear", align_corners=True)


@torch.inference_mode()
def official_style_predict(model: HSNet, query_img, support_imgs, support_masks) -> torch.Tensor:
    """(B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B, H, W) mask, computed as the official code does."""
    check_episode(query_img, support_imgs, support_masks)
    votes = []
    for k in range(support_imgs.shape[1]):
        logits = official_style_logits(model, query_img, support_imgs[:, k], support_masks[:, k])
        votes.append(logits.argmax(dim=1))
    votes = torch.stack(votes, dim=1)  # (B, K, H, W)
    return votes[:, 0] if votes.shape[1] == 1 else vote_kshot(votes)
