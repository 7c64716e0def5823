"""Run-time settings read from the environment, in one place.

``HSNET_SMOKE=1`` makes ``hsnet demo`` tiny (seconds instead of minutes), for quick local
checks and the tests of the demo; nothing stored or checked by nbval depends on it. Read it through
:func:`smoke`, which looks at the environment every time (no cached state).
"""

from __future__ import annotations

import os
from pathlib import Path


def smoke() -> bool:
    """True when ``HSNET_SMOKE`` is set to 1/true/yes."""
    return os.environ.get("HSNET_SMOKE", "").strip().lower() in {"1", "true", "yes"}


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The dataset root: the argument, else ``$HSNET_DATA``, else None."""
    root = root if root is not None else os.environ.get("HSNET_DATA")
    return Path(root).expanduser() if root else None


def cache_dir() -> Path:
    """Where hsnetlib caches downloads (split files): ``$HSNET_CACHE`` or ``~/.cache/hsnetlib``."""
    return Path(os.environ.get("HSNET_CACHE", Path.home() / ".cache" / "hsnetlib")).expanduser()
