"""The same function as the paper modules, faster: :class:`FastHSNet` and its levers (:class:`FastOptions`).

Every file here imports the paper modules it re-lays out and says which reference it equals and
which tests prove it; nothing outside this wing and the measurement code depends on its internals.
"""

from .model import FastHSNet, FastOptions

__all__ = ["FastHSNet", "FastOptions"]
