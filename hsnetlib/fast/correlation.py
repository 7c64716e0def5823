"""Eq. (1)-(2) in the fast path's query-major, channels-last layout: the same hypercorrelation as
:func:`hsnetlib.correlation.hypercorrelation`, stored ``(B, Ha, Wa, Hb, Wb, |L_p|)`` and only where it can
be nonzero (tests: ``tests/test_fast_layers.py``).

- The layers' correlations (one matrix product each) are interleaved into the channels-last layout
  by one stacking pass over the output (the layout the 4D convolutions run fastest on). Small levels (the toy
  recipes' 98 px: at most 13^4 = 28,561 entries per item and layer) take one batched product for all
  items, the mask applied to the features; large ones (400 px: 50^4) go item by item, so that the
  positions outside each item's mask can be skipped (:data:`SKIP_MIN_ENTRIES` sits between the two).
- ``windowed`` (the CPU choice): only the mask's bounding window of the support grid is stored
  (:class:`SupportWindow`), and within it only the support positions inside the resized mask are
  computed; the others correlate to exactly 0, since Eq. (1) zeroes their features. Finding them
  reads the mask on the host; on CUDA (``windowed=False``) every position is computed instead,
  with no host synchronization. The result is the same.
- ``dtype``: the compute dtype of the products (bfloat16 under autocast); norms in the features' dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..correlation import EPS, pyramid_groups, resized_mask, unit_norm

SKIP_MIN_ENTRIES = 2**16  # per item and layer, Ha*Wa*h*w: from here on, item by item with masked-out columns skipped


def unit_query_features(query_feats: Sequence[torch.Tensor], dtype: torch.dtype, eps: float = EPS):
    """The query side of Eq. (2), once per query: each (B, C, H, W) feature divided by (its L2 norm
    over C + eps), in ``dtype``."""
    return [unit_norm(q, 1, eps).to(dtype) for q in query_feats]


@dataclass
class SupportWindow:
    """A hypercorrelation restricted to the support rows/columns that can be nonzero.

    ``corr`` (B, Ha, Wa, h, w, L) holds the correlations at support rows top..top+h-1 and columns
    left..left+w-1 of the full (Hb, Wb) grid; every other support position is masked out by
    Eq. (1), so its correlation is exactly 0 and never stored.
    """

    corr: torch.Tensor
    top: int
    left: int
    full: tuple[int, int]

    def dense(self) -> torch.Tensor:
        """The full hypercorrelation (B, Ha, Wa, Hb, Wb, L), zeros outside the window."""
        h, w = self.corr.shape[3:5]
        Hb, Wb = self.full
        pad = (0, 0, self.left, Wb - self.left - w, self.top, Hb - self.top - h)
        return F.pad(self.corr, pad)

    @property
    def is_full(self) -> bool:
        return tuple(self.corr.shape[3:5]) == tuple(self.full)


def _mask_window(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, Hb, Wb) resized mask -> (top, bottom, left, right), exclusive ends, of its nonzero part (all items)."""
    rows = (mask > 0).any(dim=2).any(dim=0).nonzero().squeeze(1)
    cols = (mask > 0).any(dim=1).any(dim=0).nonzero().squeeze(1)
    if rows.numel() == 0:  # an empty mask: keep one position so that shapes stay valid; it correlates to 0
        return 0, 1, 0, 1
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def hypercorrelation_qm(
    query_units: Sequence[torch.Tensor],
    support_feats: Sequence[torch.Tensor],
    support_mask: torch.Tensor | None,
    pyramid_sizes: Sequence[int],
    dtype: torch.dtype,
    eps: float = EPS,
    windowed: bool = True,
) -> list[SupportWindow]:
    """Eq. (1)-(2): -> [C_3, C_2, C_1] (paper numbering, deepest first) as :class:`SupportWindow` s, each
    ``corr`` (B, Ha, Wa, h, w, |L_p|) over the support window that holds the (resized) mask.

    query_units: :func:`unit_query_features` of the query features, shallow to deep, each (B, C_l, Ha, Wa).
    support_feats: the support features (unmasked), shallow to deep, each (B, C_l, Hb, Wb).
    support_mask: (B, H, W) in [0, 1], or None for HSNet† (no masking, every position).
    """
    pyramid = []
    for qs, ss in pyramid_groups(query_units, support_feats, pyramid_sizes):
        B, _, Ha, Wa = qs[0].shape
        Hb, Wb = ss[0].shape[-2:]
        mask = None if support_mask is None else resized_mask(support_mask, (Hb, Wb))[:, 0]  # (B, Hb, Wb)
        top, bottom, left, right = _mask_window(mask) if windowed and mask is not None else (0, Hb, 0, Wb)
        h, w = bottom - top, right - left
        if mask is not None:
            mask = mask[:, top:bottom, left:right].flatten(1)  # (B, h*w)
        out = torch.empty(B, Ha * Wa, h * w, len(qs), dtype=dtype, device=qs[0].device)  # (B, Ha*Wa, h*w, L)
        window = (slice(None), slice(None), slice(top, bottom), slice(left, right))
        if windowed and mask is not None and Ha * Wa * h * w >= SKIP_MIN_ENTRIES:
            _correlate_kept(out, qs, [s[window] for s in ss], mask, eps)
        else:
            _correlate_all(out, qs, [s[window] for s in ss], mask, eps)
        pyramid.append(SupportWindow(out.view(B, Ha, Wa, h, w, len(qs)), top, left, (Hb, Wb)))
    return pyramid


def _correlate_all(out, qs, ss, mask, eps) -> None:
    """Every window position of every item at once: one batched product per layer, masked-out positions
    zeroed by the mask itself (their correlation is then exactly 0). out: (B, Ha*Wa, h*w, L)."""
    m = None if mask is None else mask.unsqueeze(1)  # (B, 1, h*w)
    layers = []
    for q, s in zip(qs, ss):
        s = s.flatten(2)  # (B, C, h*w)
        sn = unit_norm(s if m is None else s * m.to(s.dtype), 1, eps).to(out.dtype)  # Eq. (1), then normalized
        layers.append(torch.bmm(q.flatten(2).transpose(1, 2), sn).clamp_(min=0))  # (B, Ha*Wa, C) @ (B, C, h*w)
    torch.stack(layers, dim=-1, out=out)


def _correlate_kept(out, qs, ss, mask, eps) -> None:
    """Item by item, only the window positions inside the item's mask (large levels: the saved products
    outweigh the per-item loop). out: (B, Ha*Wa, h*w, L)."""
    for b in range(out.shape[0]):
        keep = _kept_columns(mask[b])
        if keep is not None:
            out[b].zero_()  # masked-out support features correlate to exactly 0 (a memset beats a scatter)
            if keep.numel() == 0:
                continue
        layers = []
        for q, s in zip(qs, ss):
            s = s[b].flatten(1)  # (C, h*w)
            s, m = (s, mask[b]) if keep is None else (s[:, keep], mask[b, keep])  # (C, n_kept)
            sn = unit_norm(s * m.to(s.dtype), 0, eps).to(out.dtype)  # Eq. (1), then normalized
            layers.append(torch.mm(q[b].flatten(1).t(), sn).clamp_(min=0))  # (Ha*Wa, C) @ (C, n_kept)
        if keep is None:
            torch.stack(layers, dim=-1, out=out[b])  # (Ha*Wa, h*w, L)
        else:
            out[b].index_copy_(1, keep, torch.stack(layers, dim=-1))  # (Ha*Wa, n_kept, L) into the kept columns


def _kept_columns(mask: torch.Tensor) -> torch.Tensor | None:
    """The window positions inside the mask (h*w,) -> their indices, or None when all are inside."""
    keep = (mask > 0).nonzero().squeeze(1)
    return None if keep.numel() == mask.numel() else keep
