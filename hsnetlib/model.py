"""HSNet: hypercorrelation construction, 4D squeeze/mix learner, 2D decoder (Sec. 3, Fig. 2).

    query, support ──backbone──> L feature pairs ──Eq.1-2──> hypercorrelations C_3, C_2, C_1
    C_p ──f^sqz_p (4D conv ×3, support dims strided)──> squeezed C_p
    C_3 ⊕ C_2 ──f^mix_2──> ⊕ C_1 ──f^mix_1──> mean over support dims = Z ──decoder──> logits (B, 2, H, W)

This file is the reference computation, the official code's structure: the oracle of the tests.
:class:`hsnetlib.fast.FastHSNet` computes the same function faster from the same modules.

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
from dataclasses import fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import BACKBONES, backbone_reference, build_backbone, extract_features
from .checkpoint import check_compatible, infer_backbone, load_checkpoint_file, model_state_from, with_backbone
from .conv4d import KERNELS
from .correlation import hypercorrelation, mask_features
from .errors import CheckpointError, HSNetError
from .model_config import ModelConfig

SQUEEZE_CHANNELS = (16, 64, 128)  # out channels of the three 4D convs of every squeeze block
SQUEEZE_KERNELS = ((3, 3, 3), (5, 3, 3), (5, 5, 3))  # deepest, middle, shallowest level
SQUEEZE_STRIDES = ((2, 2, 2), (4, 2, 2), (4, 4, 2))  # support-dim strides, same order
GROUPS = 4  # GroupNorm groups


def conv4d_block(kernel: str, in_channels: int, out_channels, kernel_sizes, strides) -> nn.Sequential:
    """[4D conv -> GroupNorm(4) -> ReLU] x len(out_channels): f^sqz / f^mix of Sec. 3.2."""
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


class ChannelMajor:
    """How the learner's steps run on the official layout (B, C, Ha, Wa, Hb, Wb): the reference.

    :class:`HPNLearner` states the order of the steps once; a layout says how each step runs
    (the fast path's query-major layout: :class:`hsnetlib.fast.learner.QueryMajor`)."""

    @staticmethod
    def block(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        return block(x)

    @staticmethod
    def mix_input(deeper: torch.Tensor, finer: torch.Tensor) -> torch.Tensor:
        """The deeper level upsampled to the finer one's query size, plus the finer one."""
        return upsample_query_dims(deeper, finer.shape[2:4]) + finer

    @staticmethod
    def support_mean(x: torch.Tensor) -> torch.Tensor:
        B, C, Ha, Wa = x.shape[:4]
        return x.reshape(B, C, Ha, Wa, -1).mean(dim=-1)  # (B, C, Ha, Wa)


class HPNLearner(nn.Module):
    """The 4D learner: squeeze the hypercorrelations, mix them coarse-to-fine, decode in 2D.

    ``in_channels`` holds |L_p| for each level, deepest first. Three levels is HSNet; one level
    (the deepest only, no mixing) is the pyramid ablation (``ModelConfig.pyramid_levels=1``).
    """

    # Module names are those of the released checkpoints: "4, 3, 2" are ResNet's layer4/3/2, i.e. the
    # paper's pyramid levels p = 3 (deepest, H/32), 2 (H/16) and 1 (finest, H/8).
    SQUEEZE = (("encoder_layer4", "f^sqz_3"), ("encoder_layer3", "f^sqz_2"), ("encoder_layer2", "f^sqz_1"))
    MIX = (("encoder_layer4to3", "f^mix_2"), ("encoder_layer3to2", "f^mix_1"))

    def __init__(self, in_channels: tuple[int, ...], kernel: str = "center-pivot"):
        super().__init__()
        if len(in_channels) not in (1, 3):
            raise ValueError(f"the learner takes 1 or 3 pyramid levels, got {len(in_channels)}")
        self.levels = len(in_channels)
        specs = zip(in_channels, SQUEEZE_KERNELS, SQUEEZE_STRIDES)
        for (name, _), (inch, k, s) in zip(self.SQUEEZE, specs):
            setattr(self, name, conv4d_block(kernel, inch, SQUEEZE_CHANNELS, k, s))
        for name, _ in self.MIX[: self.levels - 1]:
            setattr(self, name, conv4d_block(kernel, 128, (128,) * 3, (3,) * 3, (1,) * 3))
        self.decoder1 = nn.Sequential(
            nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(True), nn.Conv2d(128, 64, 3, padding=1), nn.ReLU(True)
        )
        self.decoder2 = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(True), nn.Conv2d(64, 2, 3, padding=1))

    def blocks(self) -> list[tuple[str, str]]:
        """(module name, paper name) of every 4D block, in the order they run."""
        return [*self.SQUEEZE[: self.levels], *self.MIX[: self.levels - 1]]

    def encode(self, pyramid: list, layout=ChannelMajor) -> torch.Tensor:
        """[C_3, C_2, C_1] (paper numbering, deepest first) -> Z (B, 128, Ha_1, Wa_1): squeeze every
        level, mix them coarse to fine, average over the support dims."""
        squeezed = [layout.block(getattr(self, name), c) for (name, _), c in zip(self.SQUEEZE, pyramid)]
        mixed = squeezed[0]  # f^sqz_3: (B, 128, Ha3, Wa3, hb, wb)
        for (name, _), finer in zip(self.MIX, squeezed[1:]):  # f^mix_2 at level 2's query size, then f^mix_1
            mixed = layout.block(getattr(self, name), layout.mix_input(mixed, finer))
        return layout.support_mean(mixed)  # (B, 128, Ha1, Wa1)

    def forward(self, pyramid: list, layout=ChannelMajor) -> torch.Tensor:
        """Hypercorrelation pyramid -> low-resolution logits (B, 2, 2*Ha_1, 2*Wa_1)."""
        x = self.decoder1(self.encode(pyramid, layout))  # (B, 64, Ha1, Wa1)
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


def check_episode(query_img, support_imgs, support_masks, dtype: torch.dtype = torch.float32) -> None:
    """Validate an episode's tensors before they reach the network; raise HSNetError saying what was
    expected: images normalized as ImageNet (``hsnetlib.data.episodes.image_transform``) of shape
    (B, 3, H, W) and (B, K, 3, H, W) in the model's dtype ``dtype``, masks (B, K, H, W), B >= 1,
    K >= 1, no NaN or Inf."""
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs), ("support_masks", support_masks)):
        if not isinstance(t, torch.Tensor):
            raise HSNetError(f"{name} must be a torch.Tensor, got {type(t).__name__}; use torch.as_tensor")
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs)):
        if t.dtype != dtype:
            raise HSNetError(
                f"{name} is {t.dtype} but the model is {dtype}: give {dtype} images normalized as ImageNet "
                f"(hsnetlib.data.episodes.image_transform for image files; .to({dtype}) for tensors); "
                f"for bfloat16 compute run in fp32 under autocast (precision='bf16')"
            )
    if query_img.dim() != 4 or query_img.shape[1] != 3:
        raise HSNetError(f"query_img must have shape (B, 3, H, W), got {tuple(query_img.shape)}")
    B = query_img.shape[0]
    if support_imgs.dim() != 5 or support_imgs.shape[0] != B or support_imgs.shape[2] != 3:
        raise HSNetError(f"support_imgs must have shape ({B}, K, 3, H, W), got {tuple(support_imgs.shape)}")
    K, Hs, Ws = support_imgs.shape[1], support_imgs.shape[-2], support_imgs.shape[-1]
    if tuple(support_masks.shape) != (B, K, Hs, Ws):
        raise HSNetError(f"support_masks must have shape ({B}, {K}, {Hs}, {Ws}), got {tuple(support_masks.shape)}")
    if B == 0 or K == 0:
        raise HSNetError(f"an episode needs at least one query and one support, got B={B}, K={K}")
    for name, t in (("query_img", query_img), ("support_imgs", support_imgs), ("support_masks", support_masks)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise HSNetError(f"{name} contains NaN or Inf values; check the image loading and normalization")


LEARNER = "learner"  # size= for the learner's own resolution (a quarter of the query's for ResNets): no upsampling


def output_size(size, query_img: torch.Tensor) -> tuple[int, int] | str:
    """The logits' output size: ``size`` (a pair of positive ints, or :data:`LEARNER`), or the query's
    size when None."""
    if size is None:
        return tuple(query_img.shape[-2:])
    if isinstance(size, str) and size == LEARNER:
        return LEARNER
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise HSNetError(f"size must be a pair (h, w) of positive ints or {LEARNER!r}, got {size!r}") from None
    if h < 1 or w < 1:
        raise HSNetError(f"size must be a pair (h, w) of positive ints, got {size!r}")
    return h, w


def upsample_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """The learner's logits (B, 2, h, w) at ``size`` (from :func:`output_size`): bilinear, corners aligned."""
    return logits if size == LEARNER else F.interpolate(logits, size, mode="bilinear", align_corners=True)


def vote_kshot(votes: torch.Tensor) -> torch.Tensor:
    """The official K-shot vote: (B, K, H, W) argmax masks -> (B, H, W) mask (:func:`vote_of_totals`)."""
    return vote_of_totals(votes.sum(dim=1)).long()


def vote_of_totals(total: torch.Tensor) -> torch.Tensor:
    """(B, H, W) number of shots voting object at each pixel -> (B, H, W) bool mask.

    The official rule: divide by max(largest total in that image, 1), keep pixels >= 0.5; computed as
    2 * total >= largest, which is the same test in integers (no float copy of the totals)."""
    top = total.flatten(1).max(dim=1).values.clamp(min=1).view(-1, 1, 1)  # (B, 1, 1)
    return 2 * total >= top


def _referenced_weights(saved, config: ModelConfig, path) -> str | None:
    """The backbone weights a checkpoint refers to instead of carrying them ("toy" / "imagenet"), checked
    against this machine's file; None when the checkpoint holds the backbone's tensors itself."""
    ref = saved.get("backbone_ref") if isinstance(saved, dict) else None
    if ref is None:
        return None
    here = backbone_reference(config.backbone, ref["weights"])
    if here is None:
        build_backbone(config.backbone, ref["weights"])  # fetches or makes the file, or says how
        here = backbone_reference(config.backbone, ref["weights"])
    if here is None or here["sha256"] != ref["sha256"]:
        found = "no file" if here is None else f"a file with SHA-256 {here['sha256'][:12]}..."
        raise CheckpointError(
            f"checkpoint {path} was trained on {config.backbone} weights={ref['weights']!r} with SHA-256 "
            f"{ref['sha256'][:12]}..., but this machine has {found}; use the same weights file (the toy one is "
            f"deterministic from `hsnet pretrain`'s defaults), or load the run's last.pt, which carries them"
        )
    return ref["weights"]


def saved_model_config(saved) -> dict | None:
    """The model configuration stored in an hsnetlib checkpoint (``"model_config"``; run folders of
    earlier versions kept the same fields in their flat ``"config"``), or None (released checkpoints)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        return None
    if isinstance(saved.get("model_config"), dict):
        return dict(saved["model_config"])
    flat, names = saved.get("config"), [f.name for f in fields(ModelConfig)]
    if isinstance(flat, dict) and all(k in flat for k in names):
        return {k: flat[k] for k in names}
    return None


class HSNet(nn.Module):
    """Hypercorrelation Squeeze Network (Min, Kang, Cho, ICCV 2021), the reference computation.

    Args:
        config: a :class:`~hsnetlib.model_config.ModelConfig`, or a backbone name
            ("resnet50" | "resnet101" | "vgg16") for the default model with that backbone.
        weights: backbone weights: None (random, no download), "imagenet", or a local file.
        **changes: fields of the config to change, e.g. ``HSNet("resnet50", use_support_mask=False)``
            for HSNet† of Table 1.
    The backbone is frozen and always in eval mode.
    """

    def __init__(self, config: ModelConfig | str | None = None, weights=None, **changes):
        super().__init__()
        if config is None or isinstance(config, str):
            config = ModelConfig(**({"backbone": config} if config else {}))
        self.config = replace(config, **changes)
        spec = BACKBONES[self.config.backbone]
        self.feature_ids = selected_features(spec.pyramid_sizes, self.config.feature_layers, self.levels)
        sizes = (1,) * 3 if self.config.feature_layers == "last" else spec.pyramid_sizes  # deepest first
        self.pyramid_sizes = sizes[: self.levels]
        self.backbone = build_backbone(self.config.backbone, weights)
        self.hpn_learner = HPNLearner(self.pyramid_sizes, self.config.kernel)

    backbone_name = property(lambda self: self.config.backbone)
    use_support_mask = property(lambda self: self.config.use_support_mask)
    levels = property(lambda self: self.config.pyramid_levels)
    dtype = property(lambda self: self.hpn_learner.decoder2[-1].weight.dtype)

    def train(self, mode: bool = True):
        """Train the learner; the backbone stays frozen in eval mode (its BatchNorm stats never move)."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> the backbone's intermediate features that HSNet correlates, shallow to deep (Sec. 3.1)."""
        feats = extract_features(self.config.backbone, self.backbone, img)
        return feats if self.feature_ids is None else [feats[i] for i in self.feature_ids]

    @torch.no_grad()
    def hypercorrelation(self, query_feats, support_feats, support_mask) -> list[torch.Tensor]:
        """Eq. (1)-(2) on extracted features: -> [C_3, C_2, C_1] (deepest first), each (B, |L_p|, Ha, Wa, Hb, Wb)."""
        if self.config.use_support_mask:
            support_feats = mask_features(support_feats, support_mask.to(support_feats[0].dtype))
        return hypercorrelation(query_feats, support_feats, self.pyramid_sizes)

    def forward(self, query_img, support_img, support_mask, size=None) -> torch.Tensor:
        """One support: (B,3,H,W), (B,3,H,W), (B,H,W) -> logits (B, 2, H, W) (or ``size``: a pair (h, w), or
        :data:`LEARNER` for the learner's own resolution, see :func:`output_size`). The call of every
        training loop; differentiable in the learner's parameters."""
        check_episode(query_img, support_img.unsqueeze(1), support_mask.unsqueeze(1), self.dtype)
        query_feats, support_feats = self.features(query_img), self.features(support_img)  # Sec. 3.1
        pyramid = self.hypercorrelation(query_feats, support_feats, support_mask)  # Eq. (1)-(2)
        logits = self.hpn_learner(pyramid)  # Sec. 3.2-3.3: (B, 2, H/4, W/4)
        return upsample_logits(logits, output_size(size, query_img))

    @torch.inference_mode()
    def kshot_logits(self, query_img, support_imgs, support_masks, size=None) -> torch.Tensor:
        """Logits of every shot: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> (B, K, 2, H, W) (or ``size``): the
        network once per shot, query backbone included, as the official code does."""
        check_episode(query_img, support_imgs, support_masks, self.dtype)
        shots = [self(query_img, support_imgs[:, k], support_masks[:, k], size) for k in range(support_imgs.shape[1])]
        return torch.stack(shots, dim=1).float()  # (B, K, 2, H, W)

    def predict(self, query_img, support_imgs, support_masks, size=None) -> torch.Tensor:
        """K-shot prediction: (B,3,H,W), (B,K,3,H,W), (B,K,H,W) -> binary mask (B, H, W) (or ``size``).

        K = 1: argmax. K > 1: the official vote over the K argmax masks (:func:`vote_kshot`).
        ``size=(h, w)`` upsamples the logits to that size before the argmax (original-size evaluation).
        """
        logits = self.kshot_logits(query_img, support_imgs, support_masks, size)
        votes = (logits[:, :, 1] > logits[:, :, 0]).long()  # = argmax over the 2 classes (ties -> 0), a cheap pass
        return votes[:, 0] if votes.shape[1] == 1 else vote_kshot(votes)  # (B, H, W)

    @classmethod
    def load(cls, path: str | os.PathLike, **expected) -> HSNet:
        """Load a checkpoint: a released ``best_model.pt`` of the official code (keys with or without
        ``module.``) or hsnetlib's own ``best.pt`` / ``last.pt``; see :meth:`from_checkpoint`."""
        return cls.from_checkpoint(load_checkpoint_file(path), path, **expected)

    @classmethod
    def from_checkpoint(cls, saved, path: str | os.PathLike = "<checkpoint>", **expected) -> HSNet:
        """:meth:`load` on a checkpoint already read with :func:`~hsnetlib.checkpoint.load_checkpoint_file`.

        The model is the one that wrote the checkpoint: its saved :class:`ModelConfig` (hsnetlib's own
        checkpoints), else the default model with the backbone its keys show (released checkpoints).
        ``expected``: model settings the caller requires (``kernel="full"``, ``use_support_mask=False``,
        ``backbone=...``; None = no requirement). A checkpoint with a saved configuration that says
        otherwise is refused with both values; one without adopts them. Loads strictly, on CPU.
        """
        state = model_state_from(saved, path)
        expected = {k: v for k, v in expected.items() if v is not None}
        stored = saved_model_config(saved)
        if stored is None:
            config = ModelConfig(**{"backbone": infer_backbone(state, path), **expected})
        else:
            config = ModelConfig.from_dict(stored, f"checkpoint {path}")
            conflicts = [
                f"{k}: checkpoint {getattr(config, k)!r}, asked {v!r}"
                for k, v in expected.items()
                if getattr(config, k) != v
            ]
            if conflicts:
                raise CheckpointError(
                    f"checkpoint {path} was trained as another model ({'; '.join(conflicts)}); "
                    f"drop the flag to load it as it was trained, or load a checkpoint of the model you asked for"
                )
        model = cls(config, weights=_referenced_weights(saved, config, path))
        state = with_backbone(saved, state, model)  # best.pt of a run: the backbone comes from its file
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise CheckpointError(
                f"checkpoint {path} holds NaN or infinite weights ({len(bad)} tensors, e.g. {bad[0]}): the run that "
                f"wrote it diverged or the file was damaged; load an earlier checkpoint (best.pt) or train again"
            )
        check_compatible(model, state, path)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def num_learnable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
