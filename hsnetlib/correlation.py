"""Support feature masking and the hypercorrelation pyramid (Sec. 3.1, Eq. 1-2).

Eq. (1), support feature masking:   F^s_l <- F^s_l * zeta(M^s)
    zeta = bilinear resize of the support mask to the feature's size (align_corners=True).

Eq. (2), 4D correlation of layer l:
    C_l(x^q, x^s) = ReLU( F^q_l(x^q) . F^s_l(x^s) / (||F^q_l(x^q)|| ||F^s_l(x^s)||) )

Departure from the bare formula, kept for compatibility with the released weights:
``eps = 1e-5`` is *added to each L2 norm* before dividing, so a masked-out (all-zero)
support feature gives a correlation of exactly 0 instead of NaN.

The correlations of all layers that share a spatial size are stacked as channels: one
hypercorrelation ``C_p`` of shape ``(B, |L_p|, Ha, Wa, Hb, Wb)`` per pyramid level p. Levels are
numbered as in the paper (p = 1 the finest, H/8; p = 3 the deepest, H/32) and returned deepest
first, [C_3, C_2, C_1]: the order the 4D learner consumes them in.

Because Eq. (2) is a cosine, the scale of a support feature does not matter: a soft mask value
in (0, 1] gives the same correlation as 1, so a soft support mask acts as the binary mask of
its nonzero positions. The one exception is the eps: where the resized mask is tiny (the rim
of the object on a fine grid) the scaled feature's norm is comparable to eps and the cosine
shrinks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

EPS = 1e-5  # added to each L2 norm in Eq. (2), as the official code does


def resized_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """zeta of Eq. (1): (B, H, W) -> (B, 1, h, w), bilinear with align_corners=True, in the mask's float dtype."""
    mask = mask.unsqueeze(1) if mask.is_floating_point() else mask.unsqueeze(1).float()  # (B, 1, H, W)
    return F.interpolate(mask, tuple(size), mode="bilinear", align_corners=True)  # (B, 1, h, w)


def unit_norm(x: torch.Tensor, dim: int, eps: float = EPS) -> torch.Tensor:
    """x divided by (its L2 norm along ``dim`` + eps): the normalization of Eq. (2) with the official eps."""
    return x / (x.norm(dim=dim, p=2, keepdim=True) + eps)


def kept_support_positions(support_mask: torch.Tensor, size) -> torch.Tensor:
    """The support positions of a (h, w) feature grid that Eq. (1) keeps: zeta(M^s) > 0, as (B, h, w) bool.

    A small support object can vanish on a coarse grid: the align-corners bilinear resize samples
    the mask at the grid points only, and if none of them falls inside the object every support
    feature of that layer is zeroed, so its correlations are all 0 for that episode.
    """
    return resized_mask(support_mask, size)[:, 0] > 0  # (B, h, w)


def mask_features(support_feats: Sequence[torch.Tensor], support_mask: torch.Tensor) -> list[torch.Tensor]:
    """Eq. (1): multiply every support feature map by the bilinearly resized support mask.

    support_feats: list of (B, C_l, H_l, W_l); support_mask: (B, H, W) with values in [0, 1].
    """
    mask = support_mask.to(support_feats[0].dtype)  # (B, H, W)
    return [feat * resized_mask(mask, feat.shape[-2:]) for feat in support_feats]


def correlation(query_feat: torch.Tensor, support_feat: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Eq. (2) for one layer: (B, C, Ha, Wa) x (B, C, Hb, Wb) -> (B, Ha, Wa, Hb, Wb)."""
    B, C, Ha, Wa = query_feat.shape
    Hb, Wb = support_feat.shape[-2:]
    q = unit_norm(query_feat.reshape(B, C, Ha * Wa), 1, eps)  # (B, C, Ha*Wa)
    s = unit_norm(support_feat.reshape(B, C, Hb * Wb), 1, eps)  # (B, C, Hb*Wb)
    corr = torch.bmm(q.transpose(1, 2), s).clamp(min=0)  # (B, Ha*Wa, Hb*Wb): cosines, negatives cut by the ReLU
    return corr.view(B, Ha, Wa, Hb, Wb)


def pyramid_groups(query_feats: Sequence, support_feats: Sequence, pyramid_sizes: Sequence[int]):
    """Split per-layer features (shallow to deep) into pyramid levels, deepest first:
    -> [(query feats of level p, support feats of level p)] for p = 3, 2, 1.

    pyramid_sizes: how many layers each level holds, deepest first (ResNet-50: (3, 6, 4) = layer4,
    layer3, layer2); they must sum to the number of features.
    """
    if len(query_feats) != sum(pyramid_sizes) or len(support_feats) != len(query_feats):
        raise ValueError(
            f"expected {sum(pyramid_sizes)} query and support feature maps for pyramid {tuple(pyramid_sizes)}, "
            f"got {len(query_feats)} and {len(support_feats)}"
        )
    ends = [sum(pyramid_sizes[i:]) for i in range(len(pyramid_sizes))]  # the deepest group sits at the end
    return [(query_feats[e - n : e], support_feats[e - n : e]) for e, n in zip(ends, pyramid_sizes)]


def hypercorrelation(
    query_feats: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    pyramid_sizes: Sequence[int],
    eps: float = EPS,
) -> list[torch.Tensor]:
    """Stack per-layer correlations into the hypercorrelation pyramid, deepest level first.

    query_feats / support_feats: the backbone's L intermediate features, shallow to deep.
    pyramid_sizes: how many of those layers each level holds, deepest first
        (ResNet50: (3, 6, 4) = layer4, layer3, layer2), summing to L.
    Returns ``[C_3, C_2, C_1]`` (deepest first), each (B, |L_p|, Ha_p, Wa_p, Hb_p, Wb_p).
    """
    return [
        torch.stack([correlation(q, s, eps) for q, s in zip(qs, ss)], dim=1)  # (B, |L_p|, Ha, Wa, Hb, Wb)
        for qs, ss in pyramid_groups(query_feats, support_feats, pyramid_sizes)
    ]
