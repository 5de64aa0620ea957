"""Atomic outputs: a temporary file beside the target, renamed into place only on success.

Every writer in the package goes through :class:`atomic_path` (and
:func:`check_writable` before any work starts), so an output either appears
whole or not at all, and an existing file is replaced only with ``force``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InputFileError, OutputExistsError

__all__ = ["NIFTI_SUFFIXES", "atomic_path", "check_writable"]

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
        name = self.path.name
        suffix = next((s for s in _NIFTI_SUFFIXES if name.lower().endswith(s)), self.path.suffix)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{name}.", suffix=f".tmp{suffix}")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False
