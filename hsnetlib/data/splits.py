"""The official split files: where they come from, how they are verified, how they are parsed.

They come from the official repository (github juhongm999/hsnet, commit 6b1bc12, folder
``data/splits/``) and are cached in ``~/.cache/hsnetlib/splits`` (``$HSNET_CACHE``), or read
from ``splits_dir`` / ``$HSNET_SPLITS``. Every file with an official name is checked against
the SHA-256 recorded below *before* it is parsed; the COCO pickles are additionally read with
an unpickler that refuses every class (they hold only dicts, lists, ints and strings), so not
even a custom, unverified split file can run code.

File formats:
- ``pascal/{trn,val}/fold{f}.txt``: lines ``IMAGEID__CC`` (CC = class 1..20).
- ``coco/{trn,val}/fold{f}.pkl``: pickled ``{class 0..79: [image path relative to COCO2014/, ...]}``.
- ``fss/{trn,val,test}.txt``: one FSS-1000 class folder name per line.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import urllib.request
from pathlib import Path

from ..errors import HSNetError
from ..settings import cache_dir

SPLITS_COMMIT = "6b1bc12"
SPLITS_URL = "https://raw.githubusercontent.com/juhongm999/hsnet/{commit}/data/splits/{name}"

SPLIT_SHA256 = {
    "coco/trn/fold0.pkl": "5a94e113d8c150a7e20723360dd9779eaa1305ccddc28dff4501e29ed3df5c45",
    "coco/trn/fold1.pkl": "69629cdd84fd57b3bb4e281b5bf65440f7ecf9b62eb119f1d8d7fe78b0fb02a8",
    "coco/trn/fold2.pkl": "594adc4b8ebecf9b8b559284f334ff3dd3fa3c150317cbc6ce7917ce81a08c03",
    "coco/trn/fold3.pkl": "07b38ccc9e15ebfd1ab6288eeaad3a5f289bbba3419807212169fd44b89cc5c5",
    "coco/val/fold0.pkl": "96002389be83b4730d13b814398f54eb2baf5c3283598ec2288d60624d6ef9c3",
    "coco/val/fold1.pkl": "a34deecdf2858fc436f5ea4d5a2d46b6674ce09f7ebce41c34b694116381fa56",
    "coco/val/fold2.pkl": "0f275c5e9bf538f6ef8a95054f6daf2519b53785c4ab7fd07e633dda57dac1e5",
    "coco/val/fold3.pkl": "927597bd78036a460abdab243330667af6ceffdb483bc3331ae55d148f00c449",
    "fss/test.txt": "26f1b9e9dd0c4a58c01db306aeb5bccb5de361d544ec1b15f219efc4b74c0bf1",
    "fss/trn.txt": "815bce03f2502719ba3bd9c1f79111b74ec8ab63e6111830ff7312de49b1cf17",
    "fss/val.txt": "9cac02c58602f2789b4e6393200e450e3ba1edae6673d6a87ae2063d0c547aee",
    "pascal/trn/fold0.txt": "40fded8be6afbc4b70953277f2a178af8055cddd4e73fb4646b7bf19704b9da2",
    "pascal/trn/fold1.txt": "558167c3c6fea0cda1bb7c7a275e66d5de7bc13cbc97e00c5872ac84d5f0954e",
    "pascal/trn/fold2.txt": "d07e35f4a4ae95774c619bafb57d65d682dbd5b9f33c7f71a4f5cef8e3f99609",
    "pascal/trn/fold3.txt": "ffe09100c0c4d9c19d074a33b0f29fe5a89a730579ba39a9f9e908186298ac17",
    "pascal/val/fold0.txt": "748e2f4732ac502cb3aa1f3768936b394bd7ba4e611ac5bf959291a268e249df",
    "pascal/val/fold1.txt": "afce1929e4dacbc13c07f9a26d4ce7738d415e1b18443fe173e58303836f5c14",
    "pascal/val/fold2.txt": "50b1f5218e8f882ca65d85da5be230b978a70067e9b3e0e9fca1528f546bd7fb",
    "pascal/val/fold3.txt": "c3825d7c52d1608d4c62c5b85d6ef3f74cf5898032bc068a94c971df17bdf71a",
}


class SplitFileError(HSNetError):
    """A split file is missing, cannot be downloaded, or fails verification."""


def default_splits_dir(splits_dir: str | os.PathLike | None = None) -> Path:
    """``splits_dir``, else ``$HSNET_SPLITS``, else ``<cache>/splits``."""
    chosen = splits_dir or os.environ.get("HSNET_SPLITS") or cache_dir() / "splits"
    return Path(chosen).expanduser()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manual_instructions(name: str, target: Path) -> str:
    """How to get split file ``name`` (saved at ``target``) by hand: its URL, or a copy of the whole splits folder."""
    url = SPLITS_URL.format(commit=SPLITS_COMMIT, name=name)
    folder = target.parents[len(Path(name).parts) - 1]  # the splits folder itself, whatever the file's depth
    return (
        f"download {url} to {target} (or run `hsnet splits download` on a machine with internet and copy its "
        f"splits folder to {folder}; pass splits_dir=... or set HSNET_SPLITS to use another folder)"
    )


def download_split(name: str, splits_dir: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """Fetch one official split file into the splits folder, verified, written atomically."""
    target = default_splits_dir(splits_dir) / name
    url = SPLITS_URL.format(commit=SPLITS_COMMIT, name=name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except OSError as err:
        msg = f"split file {name} is not available offline ({err}); {manual_instructions(name, target)}"
        raise SplitFileError(msg) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SPLIT_SHA256[name]:
        raise SplitFileError(f"downloaded {url} has SHA-256 {digest}, expected {SPLIT_SHA256[name]}; not saved")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    tmp.write_bytes(payload)
    os.replace(tmp, target)
    return target


def split_path(
    name: str, splits_dir: str | os.PathLike | None = None, download: bool = True, verify: bool = True
) -> Path:
    """Path of split file ``name`` (e.g. ``"pascal/val/fold0.txt"``), downloaded and verified as needed.

    verify=False accepts a custom file of that name (for your own splits or tests); it is
    still parsed safely.
    """
    target = default_splits_dir(splits_dir) / name
    if not target.is_file():
        if not download or name not in SPLIT_SHA256:
            raise SplitFileError(f"split file {target} not found; {manual_instructions(name, target)}")
        return download_split(name, splits_dir)
    if verify:
        if name not in SPLIT_SHA256:
            raise SplitFileError(
                f"{name} is not an official split file; pass verify_splits=False (hsnet --no-verify-splits) to use it"
            )
        digest = sha256(target)
        if digest != SPLIT_SHA256[name]:
            raise SplitFileError(
                f"{target} has SHA-256 {digest}, expected {SPLIT_SHA256[name]} (official, commit {SPLITS_COMMIT}); "
                f"delete it to download again, or for a custom split pass verify_splits=False (--no-verify-splits)"
            )
    return target


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers only: any class reference (the way pickles run code) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"split pickle refers to {module}.{name}; only dict/list/int/str are allowed")


def relative_name(name: str, where: str) -> str:
    """A file or folder name from a split file, checked to stay inside the dataset root: relative,
    no ``..`` part, no backslash, not empty (``where`` names the file and line for the message)."""
    if not name or name.startswith("/") or "\\" in name or ".." in name.split("/"):
        raise SplitFileError(
            f"{where}: {name!r} is not a path inside the dataset root; split files list names relative to "
            f"it (e.g. 2007_000032, train2014/COCO_train2014_000000000009.jpg, ab_wheel)"
        )
    return name


def _nonempty(items, path: Path):
    if not items:
        raise SplitFileError(f"{path} lists nothing; a split file needs at least one entry (see the README, Datasets)")
    return items


def split_lines(path: Path) -> list[str]:
    """A text split file's lines: UTF-8, with or without a byte-order mark (editors on Windows add one),
    or UTF-16 with its mark; anything else is refused naming the file."""
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8-sig")  # drops a leading BOM, which would make the first name "not found"
        except UnicodeDecodeError as err:
            raise SplitFileError(
                f"{path} is not UTF-8 text (byte {err.start}: {raw[err.start : err.start + 1]!r}); "
                f"save it as UTF-8, one name per line"
            ) from None
    return text.splitlines()


def read_pascal_split(path: Path) -> list[tuple[str, int]]:
    """``IMAGEID__CC`` lines -> [(image id, class 0..19)] in file order."""
    items = []
    for lineno, line in enumerate(split_lines(path), 1):
        if not line.strip():
            continue
        name, sep, cls = line.strip().partition("__")
        if not sep or not cls.isdigit() or not 1 <= int(cls) <= 20:
            raise SplitFileError(f"{path}:{lineno}: expected IMAGEID__CC with CC in 01..20, got {line!r}")
        items.append((relative_name(name, f"{path}:{lineno}"), int(cls) - 1))
    return _nonempty(items, path)


def read_coco_split(path: Path) -> dict[int, list[str]]:
    """Pickled {class 0..79: [path relative to COCO2014/]} -> the same dict (safely unpickled)."""
    try:
        data = _DataOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as err:
        raise SplitFileError(f"{path} is not a COCO-20i split pickle ({err})") from None
    if not isinstance(data, dict):
        raise SplitFileError(f"{path}: expected a dict class -> list of image paths, got a {type(data).__name__}")
    for k, v in data.items():
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < 80:
            raise SplitFileError(f"{path}: key {k!r} is not a COCO class index 0..79 (an int)")
        if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
            got = type(v).__name__ if not isinstance(v, list) else "a list holding non-strings"
            raise SplitFileError(f"{path}: class {k} maps to {got}; expected a list of image paths (strings)")
    return _nonempty({k: [relative_name(p, f"{path} (class {k})") for p in v] for k, v in data.items()}, path)


def read_fss_split(path: Path) -> list[str]:
    """One FSS-1000 category per line -> the categories, in file order; each a folder name (no "/"), once."""
    seen: dict[str, int] = {}
    for lineno, line in enumerate(split_lines(path), 1):
        name = line.strip()
        if not name:
            continue
        relative_name(name, f"{path}:{lineno}")
        if "/" in name:
            raise SplitFileError(f"{path}:{lineno}: {name!r} is not a category folder name (it holds '/')")
        if name in seen:
            raise SplitFileError(
                f"{path}:{lineno}: category {name!r} is listed again (first at line {seen[name]}); a repeated "
                f"category would be a class with no episode, scored as IoU 0: remove the repeat"
            )
        seen[name] = lineno
    return _nonempty(list(seen), path)


def all_split_names() -> list[str]:
    return sorted(SPLIT_SHA256)
