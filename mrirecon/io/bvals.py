"""FSL b-value/b-vector text files (``.bval``/``.bvec``), read and written with NumPy.

dipy's ``read_bvals_bvecs`` reads the same files, but dipy is an optional
extra here and a heavy import (about a second); the format is two plain text
tables, which NumPy reads exactly. ``.bval``: one row of n b-values (s/mm²).
``.bvec``: three rows (x, y, z) of n unit vectors in FSL's convention (the
image's voxel axes, with x flipped for a neurological-order affine —
mrirecon neither flips nor rotates them). A ``.bvec`` stored as n rows of
three is accepted too. The tests check both against dipy's reader.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ..errors import InputFileError, ShapeMismatchError
from .atomic import NIFTI_SUFFIXES, atomic_path

__all__ = ["bval_bvec_paths", "read_bvals_bvecs", "write_bvals_bvecs"]


def bval_bvec_paths(nifti_path) -> tuple[Path, Path]:
    """``OUT.nii.gz`` → (``OUT.bval``, ``OUT.bvec``), beside it."""
    path = Path(nifti_path)
    name = path.name
    for s in NIFTI_SUFFIXES:
        if name.lower().endswith(s):
            name = name[: -len(s)]
            break
    return path.with_name(name + ".bval"), path.with_name(name + ".bvec")


def _load(path, what):
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such {what} file")
    try:
        a = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputFileError(f"{path}: not a {what} text table of numbers ({exc})") from None
    if a.size == 0:
        raise InputFileError(f"{path}: empty {what} file")
    return a


def read_bvals_bvecs(bval_path, bvec_path) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL ``.bval``/``.bvec`` files: (bvals (n,), bvecs (n, 3)), float64.

    Raises
    ------
    InputFileError
        Missing or unreadable file, or not a table of numbers.
    ShapeMismatchError
        bvals not one row/column, bvecs not 3 × n (or n × 3), or counts that differ.
    """
    bvals = _load(bval_path, "bval")
    if 1 not in bvals.shape:
        raise ShapeMismatchError(f"{bval_path}: expected one row of b-values, got a {bvals.shape} table")
    bvals = bvals.reshape(-1)
    bvecs = _load(bvec_path, "bvec")
    n = bvals.size
    if bvecs.shape == (3, n):
        bvecs = bvecs.T
    elif bvecs.shape != (n, 3):
        raise ShapeMismatchError(
            f"{bvec_path}: expected 3 rows of {n} values (one b-vector per b-value), got {bvecs.shape}"
        )
    return bvals, np.ascontiguousarray(bvecs)


def write_bvals_bvecs(bval_path, bvec_path, bvals, bvecs, *, force: bool = False) -> tuple[Path, Path]:
    """Write FSL ``.bval`` (one row) and ``.bvec`` (three rows), atomically.

    ``bvecs`` is (n, 3) (or (3, n)).
    """
    b = np.asarray(bvals, dtype=np.float64).reshape(-1)
    g = np.asarray(bvecs, dtype=np.float64)
    if g.shape == (3, b.size) and b.size != 3:
        g = g.T
    if g.shape != (b.size, 3):
        raise ShapeMismatchError(f"bvecs must be ({b.size}, 3) for {b.size} b-values, got {g.shape}")
    with contextlib.ExitStack() as stack:  # both appear, or neither
        tb = stack.enter_context(atomic_path(bval_path, force=force))
        tg = stack.enter_context(atomic_path(bvec_path, force=force))
        np.savetxt(tb, b[None, :], fmt="%.6g", delimiter=" ")
        np.savetxt(tg, g.T, fmt="%.8f", delimiter=" ")
    return Path(bval_path), Path(bvec_path)
