"""Deprecated location of :mod:`mrirecon.io.bids` (kept for one release; import that instead)."""

import warnings

from .io.bids import *  # noqa: F403
from .io.bids import __all__  # noqa: F401

warnings.warn(
    "mrirecon.bids moved to mrirecon.io.bids; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
