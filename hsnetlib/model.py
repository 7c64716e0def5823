"""HSNet: hypercorrelation construction, 4D squeeze/mix learner, 2D decoder (Sec. 3, Fig. 2).

    query, support ──backbone──> L feature pairs ──Eq.1-2──> hypercorrelations C_3, C_2, C_1
    C_p ──f^sqz_p (4D conv ×3, support dims strided)──> squeezed C_p
    C_3 ⊕ C_2 ──f^mix_2──> ⊕ C_1 ──f^mix_1──> mean over support dims = Z ──decoder──> logits (B, 2, H, W)

Pyramid levels are numbered as in the paper: p = 1 is the finest (H/8, ResNet's layer2), p = 3
the deepest (H/32, layer4); Z has the query size of level 1. Lists of levels run deepest first
([C_3, C_2, C_1]), the order in which the learner consumes them.

Module names (``backbone``, ``hpn_learner.encoder_layer4.0.conv1`` ...) are those of the
released checkpoints, so ``best_model.pt`` loads without a translation table.

Where the code is more specific than the paper: the mixing step upsamples the deeper
level's *query* dims (Ha, Wa) bilinearly to the next level's; after squeezing, all levels
have the same support size (2x2 at 400x400), so only the query dims differ. The official
code names that helper ``interpolate_support_dims`` although it resizes the query dims.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fastpath
from .backbone import FoldedBackbone, build_backbone, check_backbone_name, extract_features
from .checkpoint import check_compatible, infer_backbone, load_checkpoint_file, model_state_from
from .conv4d import KERNELS
from .correlation import hypercorrelation, mask_features

SQUEEZE_CHANNELS = (16, 64, 128)  # out channels of the three 4D convs of every squeeze block
SQUEEZE_KERNELS = ((3, 3, 3), (5, 3, 3), (5, 5, 3))  # deepest, middle, shallowest level
SQUEEZE_STRIDES = ((2, 2, 2), (4, 2, 2), (4, 4, 2))  # support-dim strides, same order
GROUPS = 4  # GroupNorm groups


def conv4d_block(kernel: str, in_channels: int, out_channels, kernel_sizes, strides) -> nn.Sequential:
    """[4D conv -> GroupNorm(4) -> ReLU] x len(out_channels): f^sqz / f^mix of Sec. 3.2."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown 4D kernel {kernel!r}; expected one of {sorted(KERNELS)}")
    layers: list[nn.Module] = []
    for out_ch, k, s in zip(out_channels, kernel_sizes, strides):
        layers += [KERNELS[kernel](in_channels, out_ch, k, s, k // 2), nn.GroupNorm(GROUPS, out_ch), nn.ReLU(True)]
        in_channels = out_ch
    return nn.Sequential(*layers)


def upsample_query_dims(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=True) of the query dims: (B, C, Ha, Wa, Hb, Wb) -> (B, C, *size, Hb, Wb)."""
    B, C, Ha, Wa, Hb, Wb = x.shape
    y = x.permute(0, 4, 5, 1, 2, 3).reshape(B * Hb * Wb, C, Ha, Wa)  # (B*Hb*Wb, C, Ha, Wa)
    y = F.interpolate(y, size, mode="bilinear", align_corners=True)  # (B*Hb*Wb, C, Ha', Wa')
    return y.view(B, Hb, Wb, C, *size).permute(0, 3, 4, 5, 1, 2)  # (B, C, Ha', Wa', Hb, Wb)


class HPNLearner(nn.Module):
    """The 4D learner: squeeze the hypercorrelations, mix them coarse-to-fine, decode in 2D.

    ``in_channels`` holds |L_p| for each level, deepest first. Three levels is HSNet; one level
    (the deepest only, no mixing) is the pyramid ablation of :class:`HSNet` (``pyramid_levels=1``).
    """

    def __init__(self, in_channels: tuple[int, ...], kernel: str = "center-pivot"):
        super().__init__()
        if len(in_channels) not in (1, 3):
            raise ValueError(f"the learner takes 1 or 3 pyramid levels, got {len(in_channels)}")
        out, kernels, strides = SQUEEZE_CHANNELS, SQUEEZE_KERNELS, SQUEEZE_STRIDES
        self.levels = len(in_channels)
        # Module names are those of the released checkpoints: "4, 3, 2" are ResNet's layer4/3/2, i.e. the
        # paper's pyramid levels p = 3 (deepest, H/32), 2 (H/16) and 1 (finest, H/8).
        self.encoder_layer4 = conv4d_block(kernel, in_channels[0], out, kernels[0], strides[0])
        if self.levels == 3:
            self.encoder_layer3 = conv4d_block(kernel, in_channels[1], out, kernels[1], strides[1])
            self.encoder_layer2 = conv4d_block(kernel, in_channels[2], out, kernels[2], strides[2])
            self.encoder_layer4to3 = conv4d_block(kernel, 128, (128,) * 3, (3,) * 3, (1,) * 3)
            self.encoder_layer3to2 = conv4d_block(kernel, 128, (128,) * 3, (3,) * 3, (1,) * 3)
        self.decoder1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(True), nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(True)
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(True), nn.Conv2d(64, 2, 3, padding=1))

    def encode(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """[C_3, C_2, C_1] (paper numbering, deepest first) -> Z (B, 128, Ha_1, Wa_1): squeeze, mix,
        average over the support dims."""
        if self.levels == 1:
            mixed = self.encoder_layer4(pyramid[0])  # (B, 128, Ha3, Wa3, hb, wb)
        else:
            sqz3 = self.encoder_layer4(pyramid[0])  # f^sqz_3: (B, 128, Ha3, Wa3, hb, wb)
            sqz2 = self.encoder_layer3(pyramid[1])  # f^sqz_2: (B, 128, Ha2, Wa2, hb, wb)
            sqz1 = self.encoder_layer2(pyramid[2])  # f^sqz_1: (B, 128, Ha1, Wa1, hb, wb)
            mix2 = self.encoder_layer4to3(upsample_query_dims(sqz3, sqz2.shape[2:4]) + sqz2)  # f^mix_2
            mixed = self.encoder_layer3to2(upsample_query_dims(mix2, sqz1.shape[2:4]) + sqz1)  # f^mix_1
        B, C, Ha, Wa = mixed.shape[:4]
        return mixed.reshape(B, C, Ha, Wa, -1).mean(dim=-1)  # (B, 128, Ha1, Wa1)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Hypercorrelation pyramid -> low-resolution logits (B, 2, 2*Ha_1, 2*Wa_1)."""
        x = self.decoder1(self.encode(pyramid))  # (B, 64, Ha1, Wa1)
        x = F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)
        return self.decoder2(x)  # (B, 2, 2*Ha1, 2*Wa1)


def selected_features(pyramid_sizes, feature_layers: str, pyramid_levels: int) -> list[int] | None:
    """Indices (shallow to deep) of the backbone features an ablated HSNet keeps; None = all of them.

    pyramid_sizes: layers per level, deepest first, e.g. ResNet-50 (3, 6, 4): features 10-12 are
    level 3, 4-9 level 2, 0-3 level 1.
    """
    if feature_layers == "all" and pyramid_levels == 3:
        return None
    ends = torch.tensor(pyramid_sizes).flip(0).cumsum(0).tolist()  # shallow first: end index of each level
    groups = [list(range(end - size, end)) for end, size in zip(ends, reversed(pyramid_sizes))]
    groups = groups[3 - pyramid_levels :]  # keep the deepest levels
    return [i for g in groups for i in (g[-1:] if feature_layers == "last" else g)]


IMAGE_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def check_episode(query_img, support_imgs, support_masks) -> None:
    """Validate an episode's tensors before they reach the network; raise ValueError saying what was
    expected: float images normalized as ImageNet (``hsnetlib.data.episodes.image_transform``) of shape
    (B, 3, H, W) and (B, K, 3, H, W), masks (B, K, H, W), B >= 1, K >= 1, no NaN or Inf."""
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs), ("support_masks", support_masks)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}; use torch.as_tensor")
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs)):
        if t.dtype not in IMAGE_DTYPES:
            raise ValueError(
                f"{name} must be a float32 image tensor normalized as ImageNet, got dtype {t.dtype}; "
                f"convert with hsnetlib.data.episodes.image_transform (uint8 images) or .float()"
            )
    if query_img.dim() != 4 or query_img.shape[1] != 3:
        raise ValueError(f"query_img must have shape (B, 3, H, W), got {tuple(query_img.shape)}")
    B = query_img.shape[0]
    if support_imgs.dim() != 5 or support_imgs.shape[0] != B or support_imgs.shape[2] != 3:
        raise ValueError(f"support_imgs must have shape ({B}, K, 3, H, W), got {tuple(support_imgs.shape)}")
    K, Hs, Ws = support_imgs.shape[1], support_imgs.shape[-2], support_imgs.shape[-1]
    if tuple(support_masks.shape) != (B, K, Hs, Ws):
        raise ValueError(f"support_masks must have shape ({B}, {K}, {Hs}, {Ws}), got {tuple(support_masks.shape)}")
    if B == 0 or K == 0:
        raise ValueError(f"an episode needs at least one query and one support, got B={B}, K={K}")
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs), ("support_masks", support_masks)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf values; check the image loading and normalization")


def check_size(size) -> tuple[int, int] | None:
    """``size`` for the output: None (the query's size) or a pair of positive ints (h, w)."""
    if size is None:
        return None
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (h, w) of positive ints, got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be a pair (h, w) of positive ints, got {size!r}")
    return h, w


SMALL_KSHOT_BATCH = 2**21  # CPU: entries of the finest 4D correlation of all shots, per channel


def batch_shots_by_default(query_img: torch.Tensor, shots: int) -> bool:
    """Whether :meth:`HSNet.kshot_logits` runs the K shots as one batch: always on CUDA; on CPU
    when the finest correlation of all shots, B*K*(H/8 * W/8)^2 entries, is at most
    ``SMALL_KSHOT_BATCH`` (96 px, 8 episodes, 5 shots: 0.8M, 1.07-1.13x faster batched; 400 px,
    one episode: 31M, 1.7x *slower* batched, large 6D batches thrash the cache; benchmarks/RESULTS.md)."""
    if query_img.device.type == "cuda":
        return True
    B, _, H, W = query_img.shape
    return B * shots * ((H // 8) * (W // 8)) ** 2 <= SMALL_KSHOT_BATCH


def vote_kshot(votes: torch.Tensor) -> torch.Tensor:
    """The official K-shot vote: (B, K, H, W) argmax masks -> (B, H, W) mask.

    Sum the K masks, divide by max(largest vote in that image, 1), keep pixels >= 0.5.
    """
    total = votes.sum(dim=1).float()  # (B, H, W)
    top = total.flatten(1).max(dim=1).values.clamp(min=1).view(-1, 1, 1)  # (B, 1, 1)
    return (total / top >= 0.5).long()


class HSNet(nn.Module):
    """Hypercorrelation Squeeze Network (Min, Kang, Cho, ICCV 2021).

    Args:
        backbone: "resnet50" | "resnet101" | "vgg16"; frozen and always in eval mode.
        kernel: "center-pivot" (the paper's) or another 4D kernel of ``hsnetlib.conv4d.KERNELS``.
        weights: backbone weights: None (random, no download), "imagenet", or a local file.
        use_support_mask: False gives HSNet† of Table 1 (no support feature masking, Eq. 1); train
            and test it that way, as the paper does.
        feature_layers: "all" (the paper's: every bottleneck) or "last" (ablation: only the last
            layer of each pyramid level, |L_p| = 1).
        pyramid_levels: 3 (the paper's) or 1 (ablation: the deepest level alone, no mixing).
    """

    def __init__(
        self,
        backbone="resnet50",
        kernel="center-pivot",
        weights=None,
        use_support_mask=True,
        feature_layers="all",
        pyramid_levels=3,
    ):
        super().__init__()
        spec = check_backbone_name(backbone)
        if feature_layers not in ("all", "last") or pyramid_levels not in (1, 3):
            raise ValueError(
                f"feature_layers must be 'all' or 'last' and pyramid_levels 1 or 3, "
                f"got {feature_layers!r} and {pyramid_levels!r}"
            )
        self.backbone_name, self.kernel, self.use_support_mask = backbone, kernel, use_support_mask
        self.feature_layers, self.pyramid_levels = feature_layers, pyramid_levels
        self.feature_ids = selected_features(spec.pyramid_sizes, feature_layers, pyramid_levels)
        sizes = (1,) * 3 if feature_layers == "last" else spec.pyramid_sizes  # deepest first
        self.pyramid_sizes = sizes[:pyramid_levels]
        self.backbone = build_backbone(backbone, weights)
        self.folded_backbone = FoldedBackbone(backbone)  # the fast path's backbone copy, built on first use
        self.hpn_learner = HPNLearner(self.pyramid_sizes, kernel)

    def train(self, mode: bool = True):
        """Train the learner; the backbone stays frozen in eval mode (its BatchNorm stats never move)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the backbone's intermediate features that HSNet correlates, shallow to deep."""
        return self._select(extract_features(self.backbone_name, self.backbone, img))

    def _select(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return feats if self.feature_ids is None else [feats[i] for i in self.feature_ids]

    @torch.no_grad()
    def fast_features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`features` through ``self.folded_backbone``: the backbone with BatchNorm folded into the
        convolutions, channels-last, on CPU as fused oneDNN convolutions (:class:`~hsnetlib.backbone.FoldedBackbone`,
        built on first use, rebuilt when the backbone changes; ``model.folded_backbone.clear()`` frees it).
        Same features up to float rounding; they come out channels-last."""
        img = img.contiguous(memory_format=torch.channels_last)
        return self._select(self.folded_backbone.features(self.backbone, img))

    @torch.no_grad()
    def hypercorrelation(self, query_feats, support_feats, support_mask) -> list[torch.Tensor]:
        """Eq. (1)-(2) on extracted features: -> [C_3, C_2, C_1] (deepest first), each (B, |L_p|, Ha, Wa, Hb, Wb)."""
        if self.use_support_mask:
            support_feats = mask_features(support_feats, support_mask.float())
        return hypercorrelation(query_feats, support_feats, self.pyramid_sizes)

    def _check_input_dtype(self, img: torch.Tensor) -> None:
        weight = next(self.hpn_learner.parameters())
        if img.dtype == torch.float64 and weight.dtype != torch.float64:
            raise ValueError(
                f"the images are float64 but the model is {weight.dtype}; convert them with .float() "
                f"(or the model with .double())"
            )

    def forward(self, query_img, support_img, support_mask, size=None, fused=True) -> torch.Tensor:
        """One support: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B, 2, H, W) (or ``size``).

        The call of every training loop; differentiable in the learner's parameters. ``fused=True``
        (default) computes the same function through :mod:`hsnetlib.fastpath`: the BatchNorm-folded
        backbone copy, Eq. (1)-(2) only at masked support positions, the query-major 4D learner
        (center-pivot kernel, three levels; other learners use the reference modules).
        ``fused=False`` runs the reference modules, the official computation (the oracle in tests).
        """
        check_episode(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1))
        self._check_input_dtype(query_img)
        size = check_size(size)
        if fused:
            logits = self._fused_logits(query_img, support_img, support_mask)  # (B, 2, h, w)
        else:
            pyramid = self.hypercorrelation(self.features(query_img), self.features(support_img), support_mask)
            logits = self.hpn_learner(pyramid)  # (B, 2, h, w)
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        return F.interpolate(logits, size, mode="bilinear", align_corners=True)

    def _fused_logits(self, query_img, support_img, support_mask) -> torch.Tensor:
        """Low-resolution logits (B, 2, h, w) through the fast path, with autograd in the learner."""
        query_feats, support_feats = self.fast_features(query_img), self.fast_features(support_img)
        if not fastpath.supports_fast_path(self.hpn_learner):
            return self.hpn_learner(self.hypercorrelation(query_feats, support_feats, support_mask))
        with torch.no_grad():  # the frozen backbone and Eq. (1)-(2) hold no learnable parameter
            pyramid = fastpath.hypercorrelation_qm(
                fastpath.unit_query_features(query_feats),
                support_feats,
                support_mask if self.use_support_mask else None,
                self.pyramid_sizes,
                windowed=query_img.device.type != "cuda",  # CUDA: batched products, no host synchronization
            )
        return fastpath.learner_qm(self.hpn_learner, pyramid)

    def kshot_logits(
        self, query_img, support_imgs, support_masks, size=None, fused=True, precision="fp32", batch_shots=None
    ):
        """Logits of every shot: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B, K, 2, H, W) (or ``size``).

        ``fused=False`` runs the network once per shot, query backbone included, as the official
        code does (the correctness oracle). The default computes the query features once and runs
        the 4D learner through :mod:`hsnetlib.fastpath` (same maths, fewer copies and FLOPs; the
        paper's center-pivot kernel only, other kernels use the reference modules); the K shots run
        as one batch on CUDA and, on CPU, when their correlations are small, else one after the
        other (:func:`batch_shots_by_default`); ``batch_shots=True/False`` overrides that choice.
        ``precision="bf16"``: bfloat16 autocast.
        """
        check_episode(query_img, support_imgs, support_masks)
        self._check_input_dtype(query_img)
        size = check_size(size)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        B, K = support_imgs.shape[:2]
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        bf16 = precision == "bf16"
        amp = torch.autocast(query_img.device.type, torch.bfloat16, enabled=bf16)
        with torch.inference_mode(), amp:
            if not fused:
                logits = [
                    self(query_img, support_imgs[:, k], support_masks[:, k], size, fused=False).float()
                    for k in range(K)
                ]
                return torch.stack(logits, dim=1)  # (B, K, 2, H, W)
            fast = fastpath.supports_fast_path(self.hpn_learner)
            dtype = torch.bfloat16 if bf16 else torch.float32
            query_feats = self.fast_features(query_img)  # once for all K shots
            if fast:  # the query side of Eq. (2), also once
                query_feats = fastpath.unit_query_features(query_feats, dtype)
            batched = batch_shots if batch_shots is not None else batch_shots_by_default(query_img, K)
            chunk = K if batched else 1
            logits = []
            for k0 in range(0, K, chunk):
                n = min(chunk, K - k0)
                q = query_feats if n == 1 else [f.repeat_interleave(n, dim=0) for f in query_feats]  # (B*n, C, h, w)
                s = self.fast_features(support_imgs[:, k0 : k0 + n].flatten(0, 1))  # (B*n, C, h, w)
                mask = support_masks[:, k0 : k0 + n].flatten(0, 1)  # (B*n, H, W)
                if fast:
                    support_mask = mask if self.use_support_mask else None
                    # batched shots: batched products, no per-item windows (no host synchronization)
                    pyramid = fastpath.hypercorrelation_qm(
                        q, s, support_mask, self.pyramid_sizes, dtype, windowed=not batched
                    )
                    out = fastpath.learner_qm(self.hpn_learner, pyramid).float()  # (B*n, 2, h, w)
                else:
                    out = self.hpn_learner(self.hypercorrelation(q, s, mask)).float()  # (B*n, 2, h, w)
                out = F.interpolate(out, size, mode="bilinear", align_corners=True)
                logits.append(out.view(B, n, 2, *size))
            return torch.cat(logits, dim=1)  # (B, K, 2, H, W)

    def predict(
        self, query_img, support_imgs, support_masks, size=None, fused=True, precision="fp32", batch_shots=None
    ):
        """K-shot prediction: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> binary mask (B, H, W) (or ``size``).

        K = 1: argmax. K > 1: the official vote over the K argmax masks (:func:`vote_kshot`).
        ``size=(h, w)`` upsamples the logits to that size before the argmax (original-size evaluation).
        ``fused`` / ``precision`` / ``batch_shots``: see :meth:`kshot_logits`.
        """
        logits = self.kshot_logits(query_img, support_imgs, support_masks, size, fused, precision, batch_shots)
        votes = (logits[:, :, 1] > logits[:, :, 0]).long()  # = argmax over the 2 classes (ties -> 0), a cheap pass
        return votes[:, 0] if votes.shape[1] == 1 else vote_kshot(votes)  # (B, H, W)

    @classmethod
    def load(cls, path: str | os.PathLike, backbone: str | None = None, **kwargs) -> HSNet:
        """Load a checkpoint: a released ``best_model.pt`` of the official code (keys with or without
        ``module.``) or hsnetlib's own ``best.pt`` / ``last.pt``.

        Loads strictly, on CPU, with ``weights_only=True``. ``backbone=None`` infers it from the keys.
        Extra keyword arguments (``kernel``, ``use_support_mask``) go to the constructor.
        """
        return cls.from_checkpoint(load_checkpoint_file(path), path, backbone, **kwargs)

    @classmethod
    def from_checkpoint(cls, saved, path: str | os.PathLike = "<checkpoint>", backbone: str | None = None, **kwargs):
        """:meth:`load` on a checkpoint already read with :func:`~hsnetlib.checkpoint.load_checkpoint_file`."""
        state = model_state_from(saved, path)
        model = cls(backbone=backbone or infer_backbone(state, path), weights=None, **kwargs)
        check_compatible(model, state, path)
        model.load_state_dict(state, strict=True)
        return model.eval()

    from_official_checkpoint = load  # the name of earlier releases

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
