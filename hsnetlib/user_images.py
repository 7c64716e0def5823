"""Your own images as an episode: a query, K support images and their masks, read from files or bytes.

The one path behind ``hsnet segment`` and the explorer's upload buttons. Inputs are checked
before they reach the network, and every error names the file and what to do.

Sizes: the supports (and their masks) are resized to ``img_size`` x ``img_size``, as every
benchmark and the training do; the query keeps its aspect ratio (longer side ``img_size``):
HSNet only upsamples the query dims, so any query size works, and the prediction is returned at
the query's original size. A support mask must have the size of its support image; white
(or any value >= 128 in grey levels) is the object.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import transforms

from .data.episodes import IMAGENET_MEAN, IMAGENET_STD, image_transform, resize_mask
from .errors import HSNetError
from .model import LEARNER, vote_of_totals

Source = str | os.PathLike | bytes  # a file path or the file's bytes


class UserImageError(HSNetError):
    """An image or mask given by the user cannot be used; the message says which one and why."""


@dataclass
class UserEpisode:
    query_img: torch.Tensor  # (3, h, w), longer side img_size, ImageNet-normalized
    support_imgs: torch.Tensor  # (K, 3, s, s)
    support_masks: torch.Tensor  # (K, s, s) in {0, 1}
    query_size: tuple[int, int]  # (H, W) of the original query image
    support_sizes: list[tuple[int, int]]  # (H, W) of each original support image

    def as_item(self) -> dict:
        """The dataset item format (no ground truth): what the plotting helpers take."""
        return {"query_img": self.query_img, "support_imgs": self.support_imgs, "support_masks": self.support_masks}


def _name(source: Source, what: str) -> str:
    return what if isinstance(source, bytes) else f"{what} {os.fspath(source)}"


MAX_PIXELS = 40_000_000  # per input image (a 40-megapixel photo); larger ones are refused before decoding


def open_image(source: Source, what: str) -> Image.Image:
    """The image of ``source`` (path or bytes), decoded and turned upright as its EXIF orientation says (as
    every viewer shows it); ``what`` names it in errors ("query", "support 2"). Images over
    :data:`MAX_PIXELS` are refused from their header, before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise UserImageError(
                    f"{_name(source, what)} is {img.width}x{img.height} pixels, more than the "
                    f"{MAX_PIXELS // 10**6} megapixels accepted; downscale it first (the network sees it at img_size)"
                )
            img.load()
            return ImageOps.exif_transpose(img)  # a copy, upright
    except FileNotFoundError:
        raise UserImageError(f"{_name(source, what)} not found; check the path") from None
    except Image.DecompressionBombError:
        raise UserImageError(
            f"{_name(source, what)} declares more pixels than Pillow will decode (a decompression bomb?); "
            f"give an image of at most {MAX_PIXELS // 10**6} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserImageError(
            f"{_name(source, what)} is not a readable image ({type(err).__name__}); give a JPEG or PNG file"
        ) from None


WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "F")  # grey levels beyond 8 bits


def wide_grey_levels(img: Image.Image, full_range: bool) -> np.ndarray:
    """A grey image of more than 8 bits as (H, W) uint8 (Pillow's own conversion clips at 255):
    ``full_range``: 16-bit levels scaled from 0..65535 (a photo's tones); otherwise, and for 32-bit
    integer or float images, by the image's own maximum when that is above 255."""
    levels = np.asarray(img, dtype=np.float64)
    top = 65535 if full_range and img.mode.startswith("I;16") else max(levels.max(), 255)
    return (levels * (255 / top)).clip(0, 255).round().astype(np.uint8)


def as_rgb(img: Image.Image) -> Image.Image:
    """An image as 8-bit RGB, wide grey levels scaled (:func:`wide_grey_levels`), not clipped."""
    if img.mode in WIDE_GREY:
        return Image.fromarray(wide_grey_levels(img, full_range=True)).convert("RGB")
    return img.convert("RGB")


def mask_levels(img: Image.Image) -> np.ndarray:
    """A mask image's object evidence per pixel, (H, W) uint8 in 0..255 (255 = object):

    - with a transparency channel that is not uniform: its opacity (an object drawn on a transparent layer);
    - 16- and 32-bit grey levels: scaled to 0..255 by the image's own maximum (not clipped at 255);
    - colour: the brightest channel, so a red, green or white object on black all count as object.
    """
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        if alpha.min() != alpha.max():
            return alpha
    if img.mode in WIDE_GREY:
        return wide_grey_levels(img, full_range=False)  # any level of a label image counts, so its own maximum
    return np.asarray(img.convert("RGB"), dtype=np.uint8).max(axis=2)


def binary_mask(img: Image.Image, what: str) -> torch.Tensor:
    """A mask image -> (H, W) {0, 1}; it must be binary-like (nearly all pixels near black or near the
    object's level, :func:`mask_levels`)."""
    grey = mask_levels(img)
    mid = ((grey > 32) & (grey < 224)).mean()
    if mid > 0.05:
        raise UserImageError(
            f"{what} is not a binary mask: {100 * mid:.0f}% of its pixels are neither near black nor bright "
            f"(a photo, or a soft brush?); save the mask as a black background with the object in white"
        )
    mask = torch.from_numpy(grey >= 128)
    if not mask.any():
        raise UserImageError(f"{what} is empty (no white pixel): mark the object in white")
    return mask


def query_transform(size: tuple[int, int], img_size: int) -> transforms.Compose:
    """Resize (H, W) so that its longer side is ``img_size``, keeping the aspect ratio; then normalize."""
    H, W = size
    scale = img_size / max(H, W)
    target = (max(8, round(H * scale)), max(8, round(W * scale)))
    return transforms.Compose(
        [transforms.Resize(target), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def load_user_episode(query: Source, supports: list[Source], masks: list[Source], img_size: int) -> UserEpisode:
    """Read and check a query, K supports and K masks; see the module docstring for the sizes."""
    if img_size < 32:
        raise UserImageError(f"img_size must be at least 32 pixels, got {img_size}")
    if not supports or len(supports) != len(masks):
        raise UserImageError(
            f"give one mask per support image: got {len(supports)} support image(s) and {len(masks)} mask(s)"
        )
    q = as_rgb(open_image(query, "query"))
    tf = image_transform(img_size)
    imgs, bins, sizes = [], [], []
    for k, (src, msrc) in enumerate(zip(supports, masks), 1):
        img = as_rgb(open_image(src, f"support {k}"))
        mimg = open_image(msrc, f"mask {k}")
        if mimg.size != img.size:
            raise UserImageError(
                f"{_name(msrc, f'mask {k}')} is {mimg.width}x{mimg.height} but {_name(src, f'support {k}')} is "
                f"{img.width}x{img.height}; a mask must have the size of its support image"
            )
        imgs.append(tf(img))
        bins.append(resize_mask(binary_mask(mimg, _name(msrc, f"mask {k}")), (img_size, img_size)))
        sizes.append((img.height, img.width))
    return UserEpisode(
        query_img=query_transform((q.height, q.width), img_size)(q),
        support_imgs=torch.stack(imgs),  # (K, 3, s, s)
        support_masks=torch.stack(bins),  # (K, s, s)
        query_size=(q.height, q.width),
        support_sizes=sizes,
    )


OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")  # the overlay's formats, chosen by the suffix


def segmentation_outputs(out: str | os.PathLike, inputs) -> tuple[Path, Path]:
    """The two files a segmentation writes, checked before anything runs: the overlay ``out`` and the
    mask ``<out stem>_mask.png`` beside it. Refuses a folder, a suffix matplotlib cannot write, and any
    output that is one of ``inputs`` (it would be overwritten)."""
    folder = os.fspath(out).endswith(("/", os.sep))  # Path() drops the trailing separator
    out = Path(out).expanduser()
    if out.is_dir() or folder:
        raise UserImageError(f"--out {out} is a folder; give the overlay's file name, e.g. {out / 'pred.png'}")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserImageError(
            f"--out {out}: the overlay's format comes from its suffix, one of {', '.join(OUTPUT_SUFFIXES)}; "
            f"got {out.suffix or 'none'} (e.g. {out.with_suffix('.png')})"
        )
    mask = out.with_name(out.stem + "_mask.png")
    for path in (out, mask):
        for src in inputs:
            if isinstance(src, (str, os.PathLike)) and _same_file(path, Path(src).expanduser()):
                raise UserImageError(f"--out {out} would write {path}, which is the input {src}; choose another --out")
    return out, mask


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


@torch.no_grad()
def segment(model, episode: UserEpisode, device=None) -> torch.Tensor:
    """HSNet's mask of the query at its original size, (H, W) uint8 in {0, 1} (the K-shot vote for K > 1).

    The same mask as ``model.predict(..., size=episode.query_size)``, made band by band
    (:func:`upsampled_vote`), so memory grows with one byte per output pixel, not with float
    copies of the logits at full size."""
    if device is not None:
        from .evaluation import resolve_device

        model = model.to(resolve_device(device))
    device = next(model.parameters()).device
    logits = model.kshot_logits(  # (1, K, 2, h, w): the learner's resolution
        episode.query_img[None].to(device),
        episode.support_imgs[None].to(device),
        episode.support_masks[None].to(device),
        size=LEARNER,
    )
    return upsampled_vote(logits[0].float().cpu(), episode.query_size)


BAND_VALUES = 4_000_000  # floats per band of upsampled logits (16 MB)


def upsampled_vote(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The learner's (K, 2, h, w) logits -> (H, W) uint8 mask: the model's bilinear upsampling to ``size``
    (corners aligned), argmax per shot and the official K-shot vote (:func:`~hsnetlib.model.vote_kshot`),
    computed over bands of output rows. Rows are blended by explicit weights, columns by
    ``F.interpolate``; only pixels whose two logits tie to float rounding can differ from upsampling
    at once."""
    K, _, h, _ = logits.shape
    H, W = size
    src = torch.arange(H, dtype=torch.float64) * ((h - 1) / (H - 1) if H > 1 else 0.0)  # source row of each row
    top = src.floor().long().clamp(max=h - 1)
    below = (top + 1).clamp(max=h - 1)
    t = (src - top).float().view(-1, 1)  # (H, 1) weight of the row below
    votes = torch.empty((H, W), dtype=torch.uint8 if K < 128 else torch.int16)  # shots voting object, per pixel
    band = max(1, BAND_VALUES // (2 * K * W))
    for y in range(0, H, band):
        rows = slice(y, y + band)
        blend = logits[:, :, top[rows]] * (1 - t[rows]) + logits[:, :, below[rows]] * t[rows]  # (K, 2, n, w)
        up = F.interpolate(blend, size=(blend.shape[-2], W), mode="bilinear", align_corners=True)  # (K, 2, n, W)
        votes[rows] = (up[:, 1] > up[:, 0]).sum(dim=0, dtype=votes.dtype)
    return votes if K == 1 else vote_of_totals(votes[None])[0].to(torch.uint8)


DISPLAY_SIDE = 1024  # figures show the query with a longer side of at most this; the mask file keeps full size


def display_size(size: tuple[int, int], side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(H, W) scaled down (never up) so that its longer side is at most ``side``."""
    H, W = size
    scale = min(1.0, side / max(H, W))
    return max(1, round(H * scale)), max(1, round(W * scale))


def display_query(episode: UserEpisode, side: int = DISPLAY_SIDE) -> torch.Tensor:
    """The query at its original aspect and at most ``side`` pixels long, (3, h, w), for drawing."""
    size = display_size(episode.query_size, side)
    return F.interpolate(episode.query_img[None], size, mode="bilinear", align_corners=False)[0]


def shrink_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (H, W) mask at ``size`` by nearest neighbour (index arithmetic, no float copy of the mask)."""
    H, W = mask.shape
    rows = (torch.arange(size[0]) * H) // size[0]
    cols = (torch.arange(size[1]) * W) // size[1]
    return mask[rows][:, cols]
