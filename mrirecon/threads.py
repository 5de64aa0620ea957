"""The thread policy: how many threads CPU work may use.

One place that both the FFT core (:mod:`mrirecon.fft`) and the element-wise
pool (:mod:`mrirecon._parallel`) read, so neither imports the other for it.
``MRIRECON_FFT_THREADS`` overrides the default of every core the process may
run on (its CPU affinity, which batch schedulers and containers set).
"""

from __future__ import annotations

import os
import warnings

__all__ = ["n_threads"]


def n_threads() -> int:
    """Threads used by CPU transforms (``MRIRECON_FFT_THREADS`` or usable cores)."""
    value = os.environ.get("MRIRECON_FFT_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n >= 1:
            return n
        warnings.warn(
            f"MRIRECON_FFT_THREADS={value!r} is not a positive integer; using all cores",
            stacklevel=2,
        )
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
