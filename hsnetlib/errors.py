"""The project's errors: each names the input (path or argument), what was expected and the fix.

Every bad-input error of hsnetlib derives from :class:`HSNetError` (itself a ``ValueError``), so a
caller can catch them all at once; the ``hsnet`` command prints them as one line and exits 2.
Other exceptions are bugs or faults of the environment and keep their traceback.
"""


class HSNetError(ValueError):
    """A bad input to hsnetlib; the message says what was expected and what to do."""


class CheckpointError(HSNetError):
    """A file that is not a loadable HSNet checkpoint."""


class WeightsError(HSNetError):
    """Backbone weights that are missing, corrupt or fail their published hash."""
