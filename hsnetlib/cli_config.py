"""Command-line flags derived from a config dataclass (:class:`~hsnetlib.train_config.TrainConfig`).

A field ``batch_size`` becomes ``--batch-size`` (or the official names in its metadata, e.g.
``--bsz``) with the dataclass default, help and choices; a bool field that defaults to True
becomes ``--no-<name>`` (``--no-use-support-mask`` is spelled ``--no-support-mask``), one that
defaults to False ``--<name>``; ``weights none`` means None. Nothing is restated here.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

NEGATIVE_FLAGS = {"use_support_mask": "--no-support-mask"}  # reads better than --no-use-support-mask


def _none_or(cast):
    def parse(text: str):
        return None if text.lower() == "none" else cast(text)

    parse.__name__ = cast.__name__  # argparse names the type in its error message
    return parse


def add_config_args(parser: argparse.ArgumentParser, config_cls, only=None, defaults=None) -> None:
    """Add one flag per field of ``config_cls`` (or per name in ``only``); ``defaults`` overrides some defaults."""
    defaults = defaults or {}
    for f in fields(config_cls):
        if only is not None and f.name not in only:
            continue
        meta, default = f.metadata, defaults.get(f.name, f.default)
        help_text = meta.get("help", "")
        if isinstance(default, bool):
            flag = NEGATIVE_FLAGS.get(f.name, f"--no-{f.name.replace('_', '-')}") if default else None
            flag = flag or f"--{f.name.replace('_', '-')}"
            action = "store_false" if default else "store_true"
            help_text = f"turn off: {help_text}" if default else help_text
            parser.add_argument(flag, dest=f.name, action=action, default=default, help=help_text)
            continue
        names = meta.get("flags") or (f"--{f.name.replace('_', '-')}",)
        cast = meta.get("type") or type(default)
        kwargs = {"type": _none_or(cast) if default is None or f.name == "weights" else cast}
        if meta.get("choices") is not None:
            kwargs["choices"] = list(meta["choices"])
        parser.add_argument(*names, dest=f.name, default=default, help=f"{help_text} (default: {default})", **kwargs)


def config_from_args(config_cls, args: argparse.Namespace, **extra):
    """Build ``config_cls`` from the parsed flags of :func:`add_config_args` (plus ``extra`` fields)."""
    values = {f.name: getattr(args, f.name) for f in fields(config_cls) if hasattr(args, f.name)}
    return config_cls(**{**values, **extra})
