"""Multi-coil Cartesian k-space files: NumPy (npy/npz), BART cfl/hdr, fastMRI HDF5."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from .atomic import atomic_path

__all__ = ["KSPACE_SUFFIXES", "load_kspace", "read_cfl", "write_cfl"]

KSPACE_SUFFIXES = (".npy", ".npz", ".cfl", ".hdr", ".h5", ".hdf5")


def read_cfl(path) -> np.ndarray:
    """Read a BART ``.cfl``/``.hdr`` pair (complex64, column-major, BART dimension order)."""
    base = Path(str(path).removesuffix(".cfl").removesuffix(".hdr"))
    hdr, cfl = base.with_suffix(".hdr"), base.with_suffix(".cfl")
    for p in (hdr, cfl):
        if not p.exists():
            raise InputFileError(f"{p}: no such file (a BART array needs both .hdr and .cfl)")
    try:
        lines = [ln for ln in hdr.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        dims = [int(v) for v in lines[0].split()]
    except (OSError, ValueError, IndexError) as exc:
        raise InputFileError(f"{hdr}: not a BART header ({exc})") from None
    n = int(np.prod(dims))
    data = np.fromfile(cfl, dtype=np.complex64)
    if data.size != n:
        raise InputFileError(f"{cfl}: {data.size} values, the header says {dims} ({n})")
    return data.reshape(dims, order="F")


def write_cfl(path, array, *, force: bool = False) -> Path:
    """Write a BART ``.cfl``/``.hdr`` pair (atomically, both or neither)."""
    import contextlib

    base = Path(str(path).removesuffix(".cfl").removesuffix(".hdr"))
    arr = np.asarray(array, dtype=np.complex64)
    dims = list(arr.shape) + [1] * max(0, 16 - arr.ndim)
    with contextlib.ExitStack() as stack:
        tmp_h = stack.enter_context(atomic_path(base.with_suffix(".hdr"), force=force))
        tmp_c = stack.enter_context(atomic_path(base.with_suffix(".cfl"), force=force))
        tmp_h.write_text("# Dimensions\n" + " ".join(str(d) for d in dims) + "\n")
        arr.reshape(-1, order="F").tofile(tmp_c)
    return base


def load_kspace(path, *, key="kspace", slice_index=None) -> dict:
    """Read multi-coil Cartesian k-space into the package's layout ``(coil, *spatial)``.

    Phase-encoding axes come first in ``spatial`` and the readout last.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (an array ``(coil, *spatial)``), ``.npz`` (arrays ``kspace``
        and optionally ``sens``, ``mask``, ``noise``), BART ``.cfl``/``.hdr``
        (dimensions READ, PHS1, PHS2, COIL, ... → ``(coil, PHS1[, PHS2], READ)``),
        or fastMRI multi-coil HDF5 (``kspace`` ``(slices, coil, H, W)``, the
        phase encoding along W → ``(slices, coil, W, H)``), opened read-only.
    key : str
        The dataset name in ``.npz``/HDF5 files.
    slice_index : int, optional
        For fastMRI files: read only this slice.

    Returns
    -------
    dict
        ``kspace`` (complex64) and whatever else the file holds (``sens``, ``mask``, ``noise``).
    """
    path = Path(path)
    if not path.exists() and not path.with_suffix(".cfl").exists():
        raise InputFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    out = {}
    try:
        if suffix == ".npy":
            out["kspace"] = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if key not in z:
                    raise InputFileError(f"{path}: no array '{key}' (found: {', '.join(z.files)})")
                out = {k: z[k] for k in z.files}
                out["kspace"] = out.pop(key)
        elif suffix in (".cfl", ".hdr"):
            a = read_cfl(path)
            if any(d != 1 for d in a.shape[4:]):
                raise InputFileError(
                    f"{path}: only READ, PHS1, PHS2 and COIL dimensions are supported, got {a.shape}"
                )
            a = a.reshape((tuple(a.shape) + (1, 1, 1, 1))[:4])
            k = np.moveaxis(a, (3, 1, 2, 0), (0, 1, 2, 3))  # (coil, phs1, phs2, read)
            out["kspace"] = k[:, :, 0, :] if k.shape[2] == 1 else k
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(path, "r") as f:
                if key not in f:
                    raise InputFileError(f"{path}: no dataset '{key}' (found: {', '.join(f.keys())})")
                ds = f[key]
                k = ds[slice_index] if slice_index is not None else ds[()]
            out["kspace"] = np.swapaxes(k, -1, -2)  # fastMRI: phase encoding along W → first
        else:
            raise InputFileError(
                f"{path}: unknown k-space format (expected one of {', '.join(KSPACE_SUFFIXES)})"
            )
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    k = np.asarray(out["kspace"])
    if k.dtype.kind != "c":
        raise InputFileError(f"{path}: k-space must be complex, got {k.dtype}")
    if k.ndim < 3:
        raise InputFileError(
            f"{path}: k-space must be (coil, *spatial) with 2 or 3 spatial axes, got shape {k.shape}"
        )
    out["kspace"] = k.astype(np.complex64, copy=False)
    return out
