"""The episode protocol shared by every benchmark (Sec. 4 of the paper; the official evaluation code).

An episode is (query image, K support images, one class). For evaluation the official code
seeds NumPy's global RNG with 0 and then draws, in episode order, with
``choice(population, 1, replace=False)[0]``. We reproduce that with one legacy
``RandomState(0)`` and build the whole episode list up front, so the list does not depend
on DataLoader workers. Training episodes are drawn afresh every epoch from a RandomState
seeded with (seed, epoch, index): random, yet reproducible and independent of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from ..errors import HSNetError
from .splits import split_path

PAPER_IMG_SIZE = 400  # the paper's (and the official code's) square input size
MIN_IMG_SIZE = 32  # the backbones divide the input by 32: below it the deepest pyramid level has no grid
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_SPLITS = ("val", "test")
NUM_EVAL_EPISODES = 1000  # PASCAL-5i and COCO-20i test on 1000 episodes


class DatasetError(HSNetError):
    """Dataset files missing or malformed; the message names the path and the fix."""


def check_img_size(img_size, what: str = "img_size") -> int:
    """The one rule for input sizes everywhere (training, evaluation, benchmarks, your own images):
    an int of at least MIN_IMG_SIZE. Returns it; raises HSNetError naming ``what`` otherwise."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < MIN_IMG_SIZE:
        raise HSNetError(
            f"{what} must be an int of at least {MIN_IMG_SIZE} pixels (the backbone divides it by 32), got {img_size!r}"
        )
    return img_size


@dataclass(frozen=True)
class Episode:
    query_name: str  # image name as the benchmark spells it (PASCAL id, COCO/FSS relative path)
    support_names: tuple[str, ...]  # K support image names, duplicates allowed
    class_id: int  # the episode's class, in the benchmark's numbering


def draw(rs: np.random.RandomState, population: Sequence):
    """The official sampling primitive: ``rs.choice(population, 1, replace=False)[0]``.

    Drawing an index consumes the RNG exactly as drawing from the sequence itself does.
    """
    return population[rs.choice(len(population), 1, replace=False)[0]]


def draw_supports(rs: np.random.RandomState, population: Sequence, query, shot: int) -> tuple:
    """Draw until ``shot`` supports differ from the query (supports may repeat)."""
    if not any(p != query for p in population):
        raise DatasetError(f"no support candidate other than the query {query!r}: the class has a single image")
    supports = []
    while len(supports) < shot:
        candidate = draw(rs, population)
        if candidate != query:
            supports.append(candidate)
    return tuple(supports)


def image_transform(img_size: int) -> transforms.Compose:
    """PIL -> Resize((s, s)) bilinear -> ToTensor -> ImageNet Normalize, as the official code."""
    return transforms.Compose(
        [
            transforms.Resize((img_size, img_size)),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an (H, W) label map, as the official code (F.interpolate)."""
    return F.interpolate(mask[None, None].float(), size, mode="nearest")[0, 0]


def open_rgb(path) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image {path} not found; check the dataset root (see `hsnet prepare check`)") from None
    except OSError as err:
        raise DatasetError(f"image {path} cannot be read ({err}); re-download or re-extract it") from None


def open_label_map(path, mode: str | None = None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.array(img.convert(mode) if mode else img)
    except FileNotFoundError:
        raise DatasetError(f"mask {path} not found; run `hsnet prepare` for this benchmark") from None
    except OSError as err:
        raise DatasetError(f"mask {path} cannot be read ({err}); re-create it with `hsnet prepare`") from None


class EpisodicDataset(Dataset):
    """Base class: episodes, image loading and the item format shared by all benchmarks.

    Subclasses set ``benchmark``/``nclass``/``nfolds``, fill ``self.class_ids`` and their
    metadata in ``__init__`` before calling :meth:`_finish_init`, and implement
    ``eval_episodes(rs)``, ``train_episode(rs, idx)``, ``num_train_items()``,
    ``read_image(name)`` and ``read_mask(name, class_id) -> (label map, ignore map)``.
    """

    benchmark = "base"
    nclass = 0
    nfolds = 4

    def __init__(self, fold: int, split: str, shot: int, img_size: int, use_original_imgsize: bool, seed: int):
        if split not in ("trn", "val", "test"):
            raise ValueError(f"split must be 'trn', 'val' or 'test', got {split!r}")
        if not 0 <= fold < self.nfolds:
            raise ValueError(f"fold {fold} out of range for {self.benchmark}: expected 0..{self.nfolds - 1}")
        if shot < 1:
            raise ValueError(f"shot must be >= 1, got {shot}")
        check_img_size(img_size)
        self.fold, self.split, self.shot, self.img_size, self.seed = fold, split, shot, img_size, seed
        self.use_original_imgsize = use_original_imgsize
        self.transform = image_transform(img_size)
        self.epoch = 0
        self.episodes: list[Episode] | None = None

    def _finish_init(self) -> None:
        if self.split in EVAL_SPLITS:
            self.episodes = self.eval_episodes(np.random.RandomState(self.seed))

    # -- episodes -------------------------------------------------------------------------
    @property
    def is_eval(self) -> bool:
        return self.split in EVAL_SPLITS

    def __len__(self) -> int:
        return len(self.episodes) if self.is_eval else self.num_train_items()

    def set_epoch(self, epoch: int) -> None:
        """Training: draw a fresh set of episodes for this epoch (call before iterating)."""
        self.epoch = epoch

    def episode(self, i: int) -> Episode:
        """The identity of episode ``i`` (names and class) without reading any image."""
        if not 0 <= i < len(self):
            raise IndexError(f"episode {i} out of range 0..{len(self) - 1}")
        if self.is_eval:
            return self.episodes[i]
        return self.train_episode(np.random.RandomState([self.seed, self.epoch, i]), i)

    # -- items ----------------------------------------------------------------------------
    def load_mask(self, name: str, class_id: int, size: tuple[int, int] | None, image: Image.Image):
        """-> (binary mask, ignore mask), float (H, W), resized to ``size`` (nearest) unless None.
        The mask must have the size of ``image`` (the file it annotates)."""
        label, ignore = self.read_mask(name, class_id)  # (H, W) each: {0,1} target and {0,1} ignore
        if tuple(label.shape[:2]) != (image.height, image.width):
            raise DatasetError(
                f"the mask of {name} is {label.shape[1]}x{label.shape[0]} (w x h) but its image is "
                f"{image.width}x{image.height}; a mask must annotate its image pixel for pixel: re-create it "
                f"(`hsnet prepare`) or re-extract the image"
            )
        both = torch.stack([torch.as_tensor(label), torch.as_tensor(ignore)]).float()  # (2, H, W)
        if size is not None:
            both = F.interpolate(both[None], size, mode="nearest")[0]
        return both[0], both[1]

    def __getitem__(self, i: int) -> dict:
        ep = self.episode(i)
        size = (self.img_size, self.img_size)
        query = self.read_image(ep.query_name)
        org_size = (query.height, query.width)
        query_mask, query_ignore = self.load_mask(
            ep.query_name, ep.class_id, None if self.use_original_imgsize else size, query
        )
        supports = [self.read_image(n) for n in ep.support_names]
        support_imgs = torch.stack([self.transform(img) for img in supports])  # (K, 3, s, s)
        support_masks = torch.stack(
            [self.load_mask(n, ep.class_id, size, img)[0] for n, img in zip(ep.support_names, supports)]
        )  # (K, s, s)
        return {
            "query_img": self.transform(query),  # (3, s, s)
            "query_mask": query_mask,  # (s, s), or original (H, W) with use_original_imgsize
            "query_ignore_idx": query_ignore,  # same shape; 1 = boundary pixel excluded from metrics
            "support_imgs": support_imgs,
            "support_masks": support_masks,
            "class_id": torch.tensor(ep.class_id),
            "query_name": ep.query_name,
            "support_names": list(ep.support_names),
            "org_query_imsize": torch.tensor(org_size),  # (H, W) of the original query image
        }

    # -- subclass hooks ---------------------------------------------------------------------
    def eval_episodes(self, rs: np.random.RandomState) -> list[Episode]:
        raise NotImplementedError

    def train_episode(self, rs: np.random.RandomState, idx: int) -> Episode:
        raise NotImplementedError

    def num_train_items(self) -> int:
        raise NotImplementedError

    def read_image(self, name: str) -> Image.Image:
        raise NotImplementedError

    def read_mask(self, name: str, class_id: int):
        raise NotImplementedError


def check_classes_listed(classwise: dict, class_ids, split_files: str) -> None:
    """Every class the fold uses must have images in the split files (custom splits may miss some)."""
    missing = [c for c in class_ids if not classwise.get(c)]
    if missing:
        raise DatasetError(
            f"{split_files} list no image of classes {missing} (0-based), which this fold uses; "
            f"complete the custom split files or use the official ones (`hsnet splits download`)"
        )


class OfficialSplitDataset(EpisodicDataset):
    """Base of the real benchmarks: a data root plus the official split files.

    Args:
        root: the folder holding VOC2012/, COCO2014/, FSS-1000/.
        fold, split, shot, img_size, use_original_imgsize, seed: see :class:`EpisodicDataset`.
        splits_dir: where the split files are (default: the cache, ``$HSNET_SPLITS``).
        verify_splits: check official files against their SHA-256 (False for custom splits).
        download_splits: fetch a missing official split file.
    """

    def __init__(
        self,
        root,
        fold=0,
        split="trn",
        shot=1,
        img_size=400,
        use_original_imgsize=False,
        splits_dir=None,
        verify_splits=True,
        download_splits=True,
        seed=0,
    ):
        super().__init__(fold, split, shot, img_size, use_original_imgsize, seed)
        self.root = Path(root)
        self.splits_dir, self.verify_splits, self.download_splits = splits_dir, verify_splits, download_splits

    def split_file(self, name: str) -> Path:
        """The verified path of split file ``name`` (e.g. ``"pascal/val/fold0.txt"``)."""
        return split_path(name, self.splits_dir, self.download_splits, self.verify_splits)


def pascal_style_episodes(
    rs: np.random.RandomState, metadata: Sequence[tuple[str, int]], shot: int, n: int = NUM_EVAL_EPISODES
) -> list[Episode]:
    """PASCAL protocol: episode i queries metadata[i mod len]; supports from its class, file order."""
    classwise: dict[int, list[str]] = {}
    for name, cls in metadata:
        classwise.setdefault(cls, []).append(name)
    episodes = []
    for i in range(n):
        query, cls = metadata[i % len(metadata)]
        episodes.append(Episode(query, draw_supports(rs, classwise[cls], query, shot), int(cls)))
    return episodes


class PascalProtocol:
    """Episodes of the PASCAL-5i protocol over ``self.metadata`` = [(image name, class)] (PASCAL, toy).

    Evaluation: :func:`pascal_style_episodes` (``self.num_episodes`` of them). Training: item i
    queries metadata[i] and draws its supports from the images of the same class.
    """

    num_episodes = NUM_EVAL_EPISODES

    def index_classes(self) -> None:
        """Build ``self.classwise``: class -> its image names, in metadata order."""
        self.classwise: dict[int, list[str]] = {}
        for name, cls in self.metadata:
            self.classwise.setdefault(cls, []).append(name)

    def eval_episodes(self, rs):
        return pascal_style_episodes(rs, self.metadata, self.shot, self.num_episodes)

    def num_train_items(self):
        return len(self.metadata)

    def train_episode(self, rs, idx):
        query, cls = self.metadata[idx]
        return Episode(query, draw_supports(rs, self.classwise[cls], query, self.shot), cls)
