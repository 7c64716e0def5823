"""Configuration fields and the command-line flags derived from them.

:func:`opt` declares a field of a config dataclass (:class:`~hsnetlib.model_config.ModelConfig`,
:class:`~hsnetlib.train_config.TrainConfig`, the benchmarks' configs) with its help, choices and
command-line names; :func:`add_config_args` turns the fields into flags and
:func:`config_from_args` the parsed flags back into the dataclass. Nothing is restated.

A field ``batch_size`` becomes ``--batch-size`` (or the official names in its metadata, e.g.
``--bsz``) with the dataclass default, help and choices; a bool field that defaults to True
becomes ``--no-<name>`` (or its name in ``NEGATIVE_FLAGS``), one that defaults to False
``--<name>``; a tuple field takes several values; ``none`` means None; a path field expands ``~``
(once, here at the edge). A field holding another config dataclass contributes that class's flags.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, field, fields, is_dataclass

NEGATIVE_FLAGS = {  # read better than --no-use-support-mask, --no-fast-path
    "use_support_mask": "--no-support-mask",
    "fast_path": "--reference",
}


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (``hsnet: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"hsnet: error: {message} (see `{self.prog} --help`)\n")


def opt(default, help: str, flags: tuple[str, ...] = (), choices=None, type=None, path: bool = False):
    """A config field with its command-line help, optional official flag names, choices, value type
    (of each element, for a tuple) and whether it is a path (``~`` expanded)."""
    meta = {"help": help, "flags": flags, "choices": choices, "type": type, "path": path}
    return field(default=default, metadata=meta)


def check_choices(config, names) -> None:
    """Raise :class:`~hsnetlib.errors.HSNetError` if a field of ``names`` is outside its declared choices."""
    from .errors import HSNetError

    for name in names:
        choices = config.__dataclass_fields__[name].metadata["choices"]
        values = getattr(config, name)
        for value in values if isinstance(values, tuple) else (values,):
            if value not in choices:
                raise HSNetError(f"{name} must be one of {list(choices)}, got {value!r}")


def _nested(f):
    """The config class held by field ``f``, or None."""
    factory = f.default_factory
    return factory if factory is not MISSING and is_dataclass(factory) else None


def _none_or(cast):
    def parse(text: str):
        return None if text.lower() == "none" else cast(text)

    parse.__name__ = cast.__name__  # argparse names the type in its error message
    return parse


def _expanded(text: str) -> str:
    return os.path.expanduser(text)


def add_config_args(parser: argparse.ArgumentParser, config_cls, only=None, defaults=None, skip=()) -> None:
    """Add one flag per field of ``config_cls`` (or per name in ``only``, minus ``skip``); ``defaults``
    overrides some defaults. Nested config fields add their own class's flags."""
    defaults = defaults or {}
    for f in fields(config_cls):
        if _nested(f) is not None:
            add_config_args(parser, _nested(f), only, defaults, skip)
            continue
        if (only is not None and f.name not in only) or f.name in skip:
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
        many = isinstance(default, tuple)
        cast = meta.get("type") or type(default[0] if many else default)
        cast = _expanded if meta.get("path") else cast
        kwargs = {"type": _none_or(cast) if default is None or f.name == "weights" else cast}
        if many:
            kwargs["nargs"] = "+"
        if meta.get("choices") is not None:
            kwargs["choices"] = list(meta["choices"])
        shown = " ".join(map(str, default)) if many else default
        parser.add_argument(*names, dest=f.name, default=default, help=f"{help_text} (default: {shown})", **kwargs)


def config_from_args(config_cls, args: argparse.Namespace, **extra):
    """Build ``config_cls`` from the parsed flags of :func:`add_config_args` (plus ``extra`` fields)."""
    values = {}
    for f in fields(config_cls):
        if _nested(f) is not None:
            values[f.name] = config_from_args(_nested(f), args)
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return config_cls(**{**values, **extra})
