"""What every benchmark shares: timing (medians, round-robin), machine description, Markdown tables.

Benchmarks print ratios against a baseline measured in the same run and quote
medians; nothing here asserts a speed.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import NamedTuple

__all__ = [
    "Timed",
    "cpu_model",
    "fmt",
    "interleaved_times",
    "machine_info",
    "machine_line",
    "markdown_table",
    "median_time",
    "time_to_within",
]


class Timed(NamedTuple):
    """Median wall time (s), every timed call's time (s), and the last call's result."""

    median_s: float
    times_s: list
    result: object


def median_time(fn, repeats, *, setup=None) -> Timed:
    """Time ``fn()`` ``repeats`` times (``setup()`` runs untimed before each call)."""
    times, out = [], None
    for _ in range(max(1, int(repeats))):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return Timed(statistics.median(times), times, out)


def interleaved_times(methods, repeats) -> dict:
    """``{name: (median, times)}`` for ``{name: (fn, setup or None)}``, timed round-robin.

    Round-robin timing spreads a machine that speeds up or slows down during
    the run over every method instead of biasing the one timed last.
    """
    times = {name: [] for name in methods}
    for _ in range(max(1, int(repeats))):
        for name, (fn, setup) in methods.items():
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), t) for name, t in times.items()}


def time_to_within(history, final, rel=0.01):
    """``(time, iteration)`` at which a solver's error comes within ``rel`` of ``final`` and stays.

    ``history`` is a :class:`mrirecon.solvers.History` with ``errors``,
    ``iterations`` and ``times`` (``None`` errors are skipped).
    """
    errs = list(history.errors)
    its = history.iterations
    idx = len(errs) - 1
    for i in range(len(errs) - 1, -1, -1):
        if errs[i] is None:
            continue
        if abs(errs[i] - final) <= rel * final:
            idx = i
        else:
            break
    return history.times[idx], its[idx]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, cores, FFT threads and backend, and the versions that decide the timings."""
    import numpy as np

    from .. import __version__, fft

    info = {
        "cpu": cpu_model(),
        "cpus_visible": os.cpu_count(),
        "threads": fft.n_threads(),
        "backend": fft.backend(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "mrirecon": __version__,
    }
    for name in ("pyfftw", "scipy"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "unknown")
        except ImportError:
            info[name] = None
    return info


def machine_line(info=None) -> str:
    """One line describing the machine, for the top of a benchmark's output."""
    info = info or machine_info()
    return (
        f"machine: {info['cpu']}, {info['cpus_visible']} CPUs visible, {info['threads']} FFT threads; "
        f"backend {info['backend']} (pyfftw {info['pyfftw']}, numpy {info['numpy']}, scipy {info['scipy']})"
    )


def fmt(value, spec, suffix="") -> str:
    """``value`` formatted with ``spec`` (and ``suffix``), or an en dash for ``None``."""
    return "–" if value is None else f"{value:{spec}}{suffix}"


def markdown_table(header, rows, *, align=None) -> str:
    """A Markdown table: ``header`` (column names), ``rows`` (lists of cells, already text).

    ``align`` is one character per column, ``"l"`` or ``"r"``; default: the
    first column left, the others right (numbers).
    """
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out, stem, doc, text):
    """Write ``doc`` as ``OUT/STEM.json`` and ``text`` as ``OUT/STEM.md`` (creating ``out``); returns the folder."""
    import json
    from pathlib import Path

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=float))
    (out / f"{stem}.md").write_text(text)
    return out
