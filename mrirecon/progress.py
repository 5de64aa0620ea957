"""Progress for long loops: a tqdm bar on a terminal, plain lines in a log.

A batch job's stderr is a file: redrawn bars fill it with carriage returns and
escape sequences. :func:`progress` returns a tqdm bar when the stream is a
terminal and a :class:`LineProgress` otherwise, which prints one line at
every ``every``-th update (by default about every 10 % of ``total``, or each
update when the total is unknown or small) and one at the end.
``MRIRECON_PROGRESS=bar|lines|off`` overrides the choice.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["LineProgress", "progress"]


class LineProgress:
    """The subset of tqdm's interface the package uses, printing plain lines."""

    def __init__(
        self, iterable=None, *, total=None, desc="", unit="it", every=None, file=None, disable=False
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.every = every or (max(1, total // 10) if total and total > 20 else 1)
        self.file = file if file is not None else sys.stderr
        self.disable = disable
        self.n, self._last_printed, self._postfix = 0, 0, ""
        self.t0 = time.perf_counter()
        self._closed = False

    def _line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        post = f", {self._postfix}" if self._postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{count} {self.unit}{pct}, {elapsed:.1f} s{post}"

    def _print(self, text) -> None:
        if not self.disable:
            print(text, file=self.file, flush=True)

    def update(self, n=1) -> None:
        self.n += n
        if self.n - self._last_printed >= self.every or (self.total and self.n >= self.total):
            self._last_printed = self.n
            self._print(self._line())

    def set_postfix(self, mapping=None, refresh=True, **kwargs) -> None:
        items = dict(mapping or {}, **kwargs)
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc, refresh=True) -> None:
        self.desc = desc

    def write(self, text, file=None) -> None:
        print(text, file=file if file is not None else self.file, flush=True)

    def close(self) -> None:
        if not self._closed and self.n != self._last_printed:
            self._last_printed = self.n
            self._print(self._line())
        self._closed = True

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _mode(file) -> str:
    wanted = os.environ.get("MRIRECON_PROGRESS", "").strip().lower()
    if wanted in ("bar", "lines", "off"):
        return wanted
    try:
        return "bar" if file.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


def progress(
    iterable=None, *, total=None, desc="", unit="it", leave=False, every=None, disable=False, file=None
):
    """A progress reporter over ``iterable`` (or updated by hand with ``update``).

    Parameters
    ----------
    iterable : iterable, optional
    total : int, optional
        Number of updates expected (``len(iterable)`` by default).
    desc, unit : str
        Shown before and after the count.
    leave : bool
        Keep a terminal bar on screen when done.
    every : int, optional
        Plain-line mode: print every ``every`` updates (default about 10 % of ``total``).
    disable : bool
        Report nothing.
    file : stream, optional
        Default ``sys.stderr``.

    Returns
    -------
    tqdm.tqdm or LineProgress
        Both support iteration, ``update``, ``set_postfix``, ``write``, ``close`` and ``with``.
    """
    file = file if file is not None else sys.stderr
    mode = _mode(file)
    if mode == "bar" and not disable:
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    return LineProgress(
        iterable, total=total, desc=desc, unit=unit, every=every, file=file, disable=disable or mode == "off"
    )
