"""FastHSNet: the function of :class:`hsnetlib.model.HSNet`, from the same modules and parameters, faster.

Equal to the reference up to float rounding: logits for every backbone, batch 1/2 and K = 1/3/5,
gradients of every learnable parameter, a 30-step Adam run in lockstep (tests:
``tests/test_fast_model.py``, ``tests/test_fast_training.py``). What it changes, each a lever of
:class:`FastOptions` that a benchmark can switch off (``benchmarks/training_levers.py``):

- the backbone with BatchNorm folded, on CPU as fused oneDNN convolutions (:mod:`.backbone`);
- Eq. (1)-(2) written query-major, only inside the mask's window (:mod:`.correlation`);
- the 4D learner on the query-major layout, with its own backward passes (:mod:`.learner`);
- K shots: the query backbone once per episode, not once per shot; the shots as one batch where
  that is faster (:func:`batch_shots_by_default`).

Other learners (the separable or full kernel, one pyramid level) run the reference modules behind
the fast backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import HSNet, check_episode, output_size, upsample_logits
from .backbone import FoldedBackbone
from .correlation import hypercorrelation_qm, unit_query_features
from .learner import QueryMajor

SMALL_KSHOT_BATCH = 2**21  # CPU: entries of the finest 4D correlation of all shots, per channel


@dataclass(frozen=True)
class FastOptions:
    """The fast path's levers; each default is the fastest measured choice (benchmarks/RESULTS.md)."""

    onednn_backbone: bool = True  # CPU float32: the backbone as fused oneDNN convolutions from packed weights
    own_backward: bool = True  # the learner's own backward passes; False: autograd (windows expanded in training)
    window: bool | None = None  # Eq. (2) and the first 4D layers inside the mask's window; None: CPU yes, CUDA no
    batch_shots: bool | None = None  # K shots as one batch; None: :func:`batch_shots_by_default`


def batch_shots_by_default(query_img: torch.Tensor, shots: int) -> bool:
    """Whether the K shots run as one batch: always on CUDA; on CPU when the finest correlation of all
    shots, B*K*(H/8 * W/8)^2 entries, is at most ``SMALL_KSHOT_BATCH`` (96 px, 8 episodes, 5 shots:
    0.8M, 1.07-1.13x faster batched; 400 px, one episode: 31M, 1.7x *slower* batched: large 6D
    batches thrash the cache; benchmarks/RESULTS.md)."""
    if query_img.device.type == "cuda":
        return True
    B, _, H, W = query_img.shape
    return B * shots * ((H // 8) * (W // 8)) ** 2 <= SMALL_KSHOT_BATCH


def compute_dtype(feats: torch.Tensor) -> torch.dtype:
    """The dtype of Eq. (2)'s products: autocast's (bfloat16) when it is on, else the features'."""
    if torch.is_autocast_enabled(feats.device.type):
        return torch.get_autocast_dtype(feats.device.type)
    return feats.dtype


class FastHSNet(HSNet):
    """:class:`~hsnetlib.model.HSNet`'s function, faster; ``options``: the levers (:class:`FastOptions`).

    Same constructor, modules, state dict and checkpoints as HSNet (``FastHSNet.load`` loads any of them).
    """

    def __init__(self, config=None, weights=None, options: FastOptions | None = None, **changes):
        super().__init__(config, weights, **changes)
        self.options = options or FastOptions()
        self.folded_backbone = FoldedBackbone(self.config.backbone, self.options.onednn_backbone)
        self.fast_learner = self.config.kernel == "center-pivot" and self.levels == 3
        self.layout = QueryMajor(self.options.own_backward)

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`HSNet.features` through the folded backbone (channels-last outputs)."""
        feats = self.folded_backbone.features(self.backbone, img)
        return feats if self.feature_ids is None else [feats[i] for i in self.feature_ids]

    def _windowed(self, img: torch.Tensor) -> bool:
        return self.options.window if self.options.window is not None else img.device.type != "cuda"

    def _logits(self, query_feats, support_feats, support_mask, windowed: bool) -> torch.Tensor:
        """Low-resolution logits (B, 2, h, w) from extracted features, with autograd in the learner."""
        if not self.fast_learner:
            return self.hpn_learner(self.hypercorrelation(query_feats, support_feats, support_mask))
        dtype = compute_dtype(query_feats[0])
        with torch.no_grad():  # the frozen backbone and Eq. (1)-(2) hold no learnable parameter
            units = unit_query_features(query_feats, dtype)
            mask = support_mask if self.config.use_support_mask else None
            pyramid = hypercorrelation_qm(units, support_feats, mask, self.pyramid_sizes, dtype, windowed=windowed)
        return self.hpn_learner(pyramid, self.layout)

    def forward(self, query_img, support_img, support_mask, size=None) -> torch.Tensor:
        """:meth:`HSNet.forward`: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B, 2, H, W) (or ``size``)."""
        check_episode(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1), self.dtype)
        query_feats, support_feats = self.features(query_img), self.features(support_img)
        logits = self._logits(query_feats, support_feats, support_mask, self._windowed(query_img))
        return upsample_logits(logits, output_size(size, query_img))

    @torch.inference_mode()
    def kshot_logits(self, query_img, support_imgs, support_masks, size=None) -> torch.Tensor:
        """:meth:`HSNet.kshot_logits` with the query backbone once for all K shots, the shots one after the
        other or as one batch (``options.batch_shots``): -> (B, K, 2, H, W) (or ``size``)."""
        check_episode(query_img, support_imgs, support_masks, self.dtype)
        B, K = support_imgs.shape[:2]
        size = output_size(size, query_img)
        batched = self.options.batch_shots
        batched = batch_shots_by_default(query_img, K) if batched is None else batched
        chunk, windowed = (K if batched else 1), self._windowed(query_img)
        query_feats = self.features(query_img)  # once for all K shots
        logits = []
        for k0 in range(0, K, chunk):
            n = min(chunk, K - k0)
            q = query_feats if n == 1 else [f.repeat_interleave(n, dim=0) for f in query_feats]  # (B*n, C, h, w)
            s = self.features(support_imgs[:, k0 : k0 + n].flatten(0, 1))  # (B*n, C, h, w)
            out = self._logits(q, s, support_masks[:, k0 : k0 + n].flatten(0, 1), windowed).float()  # (B*n, 2, h, w)
            out = upsample_logits(out, size)
            logits.append(out.view(B, n, *out.shape[1:]))
        return torch.cat(logits, dim=1)  # (B, K, 2, H, W)
