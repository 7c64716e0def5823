"""HSNet: hypercorrelation construction, 4D squeeze/mix learner, 2D decoder (Sec. 3, Fig. 2).

    query, support ──backbone──> L feature pairs ──Eq.1-2──> hypercorrelations C_4, C_3, C_2
    C_p ──f^sqz_p (4D conv ×3, support dims strided)──> Z_p
    Z_4 ⊕ Z_3 ──f^mix──> ⊕ Z_2 ──f^mix──> mean over support dims ──decoder──> logits (B, 2, H, W)

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
from .backbone import build_backbone, check_backbone_name, extract_features, inference_copy
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
    """The 4D learner: squeeze the three hypercorrelations, mix them coarse-to-fine, decode in 2D."""

    def __init__(self, in_channels: tuple[int, int, int], kernel: str = "center-pivot"):
        super().__init__()
        c4, c3, c2 = in_channels  # hypercorrelation channels, deepest first
        out, (k4, k3, k2), (s4, s3, s2) = SQUEEZE_CHANNELS, SQUEEZE_KERNELS, SQUEEZE_STRIDES
        self.encoder_layer4 = conv4d_block(kernel, c4, out, k4, s4)
        self.encoder_layer3 = conv4d_block(kernel, c3, out, k3, s3)
        self.encoder_layer2 = conv4d_block(kernel, c2, out, k2, s2)
        self.encoder_layer4to3 = conv4d_block(kernel, 128, (128,) * 3, (3,) * 3, (1,) * 3)
        self.encoder_layer3to2 = conv4d_block(kernel, 128, (128,) * 3, (3,) * 3, (1,) * 3)
        self.decoder1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(True), nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(True)
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(True), nn.Conv2d(64, 2, 3, padding=1))

    def encode(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """[C_4, C_3, C_2] -> Z (B, 128, Ha_2, Wa_2): squeeze, mix, average over support dims."""
        sqz4 = self.encoder_layer4(pyramid[0])  # (B, 128, Ha4, Wa4, hb, wb)
        sqz3 = self.encoder_layer3(pyramid[1])  # (B, 128, Ha3, Wa3, hb, wb)
        sqz2 = self.encoder_layer2(pyramid[2])  # (B, 128, Ha2, Wa2, hb, wb)
        mix43 = self.encoder_layer4to3(upsample_query_dims(sqz4, sqz3.shape[2:4]) + sqz3)
        mix432 = self.encoder_layer3to2(upsample_query_dims(mix43, sqz2.shape[2:4]) + sqz2)
        B, C, Ha, Wa = mix432.shape[:4]
        return mix432.reshape(B, C, Ha, Wa, -1).mean(dim=-1)  # (B, 128, Ha2, Wa2)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Hypercorrelation pyramid -> low-resolution logits (B, 2, 2*Ha_2, 2*Wa_2)."""
        x = self.decoder1(self.encode(pyramid))  # (B, 64, Ha2, Wa2)
        x = F.interpolate(x, (x.shape[-2] * 2, x.shape[-1] * 2), mode="bilinear", align_corners=True)
        return self.decoder2(x)  # (B, 2, 2*Ha2, 2*Wa2)


def check_episode(query_img, support_imgs, support_masks) -> None:
    """Validate ``predict``'s inputs; raise ValueError naming the expected shapes."""
    if query_img.dim() != 4 or query_img.shape[1] != 3:
        raise ValueError(f"query_img must have shape (B, 3, H, W), got {tuple(query_img.shape)}")
    B = query_img.shape[0]
    if support_imgs.dim() != 5 or support_imgs.shape[0] != B or support_imgs.shape[2] != 3:
        raise ValueError(f"support_imgs must have shape ({B}, K, 3, H, W), got {tuple(support_imgs.shape)}")
    K, Hs, Ws = support_imgs.shape[1], support_imgs.shape[-2], support_imgs.shape[-1]
    if tuple(support_masks.shape) != (B, K, Hs, Ws):
        raise ValueError(f"support_masks must have shape ({B}, {K}, {Hs}, {Ws}), got {tuple(support_masks.shape)}")


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
        use_support_mask: False gives HSNet† of Table 1 (no support feature masking, Eq. 1).
    """

    def __init__(self, backbone="resnet50", kernel="center-pivot", weights=None, use_support_mask=True):
        super().__init__()
        spec = check_backbone_name(backbone)
        self.backbone_name, self.kernel, self.use_support_mask = backbone, kernel, use_support_mask
        self.pyramid_sizes = spec.pyramid_sizes
        self.backbone = build_backbone(backbone, weights)
        self.hpn_learner = HPNLearner(spec.pyramid_sizes, kernel)

    def train(self, mode: bool = True):
        """Train the learner; the backbone stays frozen in eval mode (its BatchNorm stats never move)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the backbone's intermediate features, shallow to deep."""
        return extract_features(self.backbone_name, self.backbone, img)

    @torch.no_grad()
    def fast_features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """:meth:`features` through a copy of the backbone with BatchNorm folded into the convolutions
        and channels-last weights (:func:`~hsnetlib.backbone.inference_copy`), built on first use
        (one deepcopy) and kept beside the module, never in its state dict. The copy is keyed
        on the backbone's tensors (storage, in-place version, device, dtype): changing, loading,
        replacing or moving any of them rebuilds it. It holds no input-size assumption; it costs
        the backbone's memory once more (ResNet-50: 97 MB; VGG-16: its 56 MB of conv layers).
        Features come out channels-last."""
        state = self.backbone.state_dict(keep_vars=True).values()
        key = tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in state)
        cached = self.__dict__.get("_fast_backbone")
        if cached is None or cached[0] != key:
            cached = (key, inference_copy(self.backbone_name, self.backbone))
            self.__dict__["_fast_backbone"] = cached  # not a submodule: no state-dict entries, no .to()
        return extract_features(self.backbone_name, cached[1], img.contiguous(memory_format=torch.channels_last))

    @torch.no_grad()
    def hypercorrelation(self, query_feats, support_feats, support_mask) -> list[torch.Tensor]:
        """Eq. (1)-(2) on extracted features: -> [C_4, C_3, C_2], each (B, |L_p|, Ha, Wa, Hb, Wb)."""
        if self.use_support_mask:
            support_feats = mask_features(support_feats, support_mask.float())
        return hypercorrelation(query_feats, support_feats, self.pyramid_sizes)

    def forward(self, query_img, support_img, support_mask, size=None) -> torch.Tensor:
        """One support: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B, 2, H, W) (or ``size``)."""
        check_episode(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1))
        pyramid = self.hypercorrelation(self.features(query_img), self.features(support_img), support_mask)
        logits = self.hpn_learner(pyramid)  # (B, 2, h, w)
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        return F.interpolate(logits, size, mode="bilinear", align_corners=True)

    def kshot_logits(
        self, query_img, support_imgs, support_masks, size=None, fused=True, precision="fp32", batch_shots=None
    ):
        """Logits of every shot: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B, K, 2, H, W) (or ``size``).

        ``fused=False`` runs the network once per shot, query backbone included, as the official
        code does (the correctness oracle). The default computes the query features once and runs
        the 4D learner through :mod:`hsnetlib.fastpath` (same maths, fewer copies and FLOPs; the
        paper's center-pivot kernel only, other kernels use the reference modules); the K shots run
        as one batch on CUDA and one after the other on CPU (measured faster there: large 6D batches
        thrash the cache, benchmarks/RESULTS.md); ``batch_shots=True/False`` overrides that choice.
        ``precision="bf16"``: bfloat16 autocast.
        """
        check_episode(query_img, support_imgs, support_masks)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        B, K = support_imgs.shape[:2]
        size = tuple(size) if size is not None else tuple(query_img.shape[-2:])
        bf16 = precision == "bf16"
        amp = torch.autocast(query_img.device.type, torch.bfloat16, enabled=bf16)
        with torch.inference_mode(), amp:
            if not fused:
                logits = [self(query_img, support_imgs[:, k], support_masks[:, k], size).float() for k in range(K)]
                return torch.stack(logits, dim=1)  # (B, K, 2, H, W)
            fast = fastpath.supports_fast_path(self.hpn_learner)
            dtype = torch.bfloat16 if bf16 else torch.float32
            query_feats = self.fast_features(query_img)  # once for all K shots
            if fast:  # the query side of Eq. (2), also once
                query_feats = fastpath.unit_query_features(query_feats, dtype)
            batched = batch_shots if batch_shots is not None else query_img.device.type == "cuda"
            chunk = K if batched else 1  # CPU: large batches thrash the cache
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
    def from_official_checkpoint(cls, path: str | os.PathLike, backbone: str | None = None, **kwargs) -> HSNet:
        """Load a released ``best_model.pt`` (keys with or without ``module.``) or an hsnetlib checkpoint.

        Loads strictly, on CPU, with ``weights_only=True``. ``backbone=None`` infers it from the keys.
        Extra keyword arguments (``kernel``, ``use_support_mask``) go to the constructor.
        """
        state = model_state_from(load_checkpoint_file(path), path)
        model = cls(backbone=backbone or infer_backbone(state), weights=None, **kwargs)
        check_compatible(model, state, path)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
