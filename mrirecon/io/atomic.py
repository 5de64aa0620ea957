"""Atomic outputs: a temporary file beside the target, renamed into place only on success.

Every writer in the package goes through :class:`atomic_path` (and
:func:`check_writable` before any work starts), so an output either appears
whole or not at all, and an existing file is replaced only with ``force``.
:class:`atomic_paths` does the same for a group of files that belong together
(all appear or none). This is also the one place that cleans up when the
process is told to stop: inside :func:`stop_signals`, SIGTERM (a batch
scheduler's time limit) raises :class:`Terminated` and SIGINT raises
``KeyboardInterrupt`` in the main thread, so every ``with`` block unwinds and
removes its temporary file; whatever is still registered is removed on the
way out. Temporary names are ``.<name>.<random>.tmp<suffix>`` beside the
target, so :func:`sweep_temporaries` can also remove those that another
process (a killed worker) left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import InputFileError, InvalidParameterError, OutputExistsError

__all__ = [
    "NIFTI_SUFFIXES",
    "Terminated",
    "atomic_path",
    "atomic_paths",
    "check_output_dir",
    "check_writable",
    "live_temporaries",
    "stop_signals",
    "sweep_temporaries",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_NIFTI_SUFFIXES = NIFTI_SUFFIXES


def check_writable(path, *, force: bool) -> Path:
    """Raise unless ``path`` may be written: it must not exist unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite it")
    if path.is_dir():
        raise OutputExistsError(f"{path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputFileError(f"{path}: directory {parent} does not exist")
    return path


def check_output_dir(out_dir, names, *, force: bool) -> list:
    """Paths ``out_dir/name`` for a command writing several files into one directory.

    ``out_dir`` may not exist yet (it is created by the writer); if it exists
    it must be a directory, and none of the files may exist unless ``force``.
    Checked before any work starts.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"{out} exists and is not a directory")
    paths = [out / name for name in names]
    if out.is_dir():
        for path in paths:
            check_writable(path, force=force)
    return paths


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class atomic_path:
    """Context manager giving a temporary path that replaces ``path`` on success.

    The temporary file lives in the same directory (so the final rename is
    atomic) and keeps the suffix, so writers that look at the extension work.
    On an exception it is removed and ``path`` is untouched.
    """

    def __init__(self, path, *, force: bool = False):
        self.path = check_writable(path, force=force)

    def __enter__(self) -> Path:
        self.tmp = _temporary(self.path)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                stop = _pending_stop()
                if stop is not None:
                    self.tmp.unlink(missing_ok=True)
                    raise stop()
                os.replace(self.tmp, self.path)
            else:
                self.tmp.unlink(missing_ok=True)
        finally:
            _forget(self.tmp)
        return False


class atomic_paths:
    """Context manager giving temporary paths for a group of outputs: all appear, or none.

    Yields one temporary path per target (in order). On success they are
    renamed into place with SIGINT/SIGTERM held back (a signal that arrives
    meanwhile is delivered once the whole group is in place); on an exception
    every temporary is removed and no target is touched.
    """

    def __init__(self, paths, *, force: bool = False):
        self.paths = [check_writable(p, force=force) for p in paths]

    def __enter__(self) -> list:
        self.tmps = []
        try:
            for p in self.paths:
                self.tmps.append(_temporary(p))
        except BaseException:
            self._discard()
            raise
        return list(self.tmps)

    def _discard(self):
        for t in self.tmps:
            t.unlink(missing_ok=True)
            _forget(t)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard()
            return False
        stop = _pending_stop()
        if stop is not None:
            self._discard()
            raise stop()
        with _signals_held():
            for t, p in zip(self.tmps, self.paths, strict=True):
                os.replace(t, p)
                _forget(t)
        return False


# --------------------------------------------------------------------------
# temporaries and stop signals
# --------------------------------------------------------------------------
_live: set = set()
_live_lock = threading.Lock()


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM inside :func:`stop_signals` (exit code 143)."""

    exit_code = 128 + signal.SIGTERM


def _temporary(path: Path) -> Path:
    name = path.name
    suffix = next((s for s in _NIFTI_SUFFIXES if name.lower().endswith(s)), path.suffix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{name}.", suffix=f".tmp{suffix}")
    tmp = Path(tmp)
    with _live_lock:
        _live.add(tmp)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    return tmp


def _forget(tmp: Path) -> None:
    with _live_lock:
        _live.discard(tmp)


def live_temporaries() -> list:
    """Temporary files this process is writing now (not yet renamed into place)."""
    with _live_lock:
        return sorted(_live)


def _remove_live() -> list:
    with _live_lock:
        paths = list(_live)
        _live.clear()
    for p in paths:
        p.unlink(missing_ok=True)
    return paths


def sweep_temporaries(targets) -> list:
    """Remove the temporary files that writers of ``targets`` left beside them; returns them.

    For outputs another process was writing when it was killed (a Dask
    worker, a process that got SIGKILL): the pattern is the one
    :class:`atomic_path` uses, so nothing else is touched.
    """
    removed = []
    for target in targets:
        target = Path(target)
        if not target.parent.is_dir():
            continue
        for p in target.parent.glob(f".{target.name}.*.tmp*"):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM back for a few renames (main thread, POSIX only)."""
    held = _is_main_thread() and hasattr(signal, "pthread_sigmask")
    if held:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


# The stop signal that arrived, as the exception it raises; kept because an
# exception raised by a signal handler while a finaliser runs (``__del__``, a
# weakref callback) is printed and swallowed by Python, and the process would
# then go on and commit its outputs. Commit points and :func:`stop_signals`
# check it, so a swallowed signal still stops the command before it writes
# (an ``except`` block that handles the stop may still write its report).
_stop_requested: list = []


def _pending_stop():
    """The exception class of a stop still to be raised; None inside an ``except`` handling it."""
    if _stop_requested and not isinstance(sys.exc_info()[1], (Terminated, KeyboardInterrupt)):
        return _stop_requested[0]
    return None


def _raise_terminated(signum, frame):
    _stop_requested[:] = [Terminated]
    raise Terminated()


def _raise_interrupt(signum, frame):
    _stop_requested[:] = [KeyboardInterrupt]
    raise KeyboardInterrupt()


@contextlib.contextmanager
def stop_signals():
    """SIGTERM raises :class:`Terminated`, SIGINT ``KeyboardInterrupt``; live temporaries removed on exit.

    Installed by the ``mrirecon`` command around every subcommand. Outside the
    main thread it only removes the temporaries on the way out. A signal whose
    exception Python swallowed (it arrived while a finaliser ran) is not lost:
    the next commit of an output, or the end of the block, raises it.
    """
    installed = _is_main_thread()
    if installed:
        _stop_requested.clear()
        old_term = signal.signal(signal.SIGTERM, _raise_terminated)
        old_int = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
        stop = _pending_stop() if installed else None
        if stop is not None:
            raise stop()
    finally:
        if installed:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)
            _stop_requested.clear()
        _remove_live()
