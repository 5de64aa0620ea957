"""NIfTI in and out, B0 direction from the affine, JSON sidecars, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputFileError, InvalidParameterError, OutputExistsError, ShapeMismatchError

__all__ = [
    "Volume",
    "atomic_path",
    "b0_direction_from_affine",
    "check_same_grid",
    "check_writable",
    "load_nifti",
    "save_nifti",
    "sidecar_path",
    "write_json",
]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Volume:
    """A loaded NIfTI volume.

    Attributes
    ----------
    data : ndarray
        Voxel values in NIfTI voxel order (x, y, z[, ...]), scaled by the
        header's slope/intercept.
    affine : ndarray, (4, 4)
        Voxel-to-world (RAS+, mm) affine as nibabel reports it (sform, else qform).
    header : nibabel.Nifti1Header
    path : Path
    """

    data: np.ndarray
    affine: np.ndarray
    header: object
    path: Path

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Voxel size from the header's pixdim (mm)."""
        return tuple(float(z) for z in self.header.get_zooms()[:3])


def _is_nifti_name(path: Path) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def load_nifti(path, *, ndim: int | None = 3, dtype=np.float32) -> Volume:
    """Load a NIfTI-1/2 volume.

    Parameters
    ----------
    path : str or Path
    ndim : int or None
        Required number of dimensions (trailing singleton dimensions are
        dropped first); None accepts any.
    dtype : dtype
        Data type of ``data`` (float32 by default). ``None``: float64 for
        integer or scaled data, the file's own type for unscaled floats.

    Raises
    ------
    InputFileError
        Missing or unreadable file, or not NIfTI.
    ShapeMismatchError
        Wrong number of dimensions.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory, expected a NIfTI file (.nii or .nii.gz)")
    if not _is_nifti_name(path):
        raise InputFileError(f"{path}: not a NIfTI file name (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputFileError(f"{path}: not a NIfTI image")
        data = np.asanyarray(img.dataobj)
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from None
    if data.dtype.kind == "c" and (dtype is None or np.dtype(dtype).kind != "c"):
        raise InputFileError(f"{path}: holds complex values; expected a real-valued volume")
    if img.header.get_slope_inter() != (None, None) or data.dtype.kind not in "fc":
        data = np.asarray(img.get_fdata(dtype=np.float64 if dtype in (None, np.float64) else np.float32))
    if ndim is not None:
        while data.ndim > ndim and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != ndim:
            raise ShapeMismatchError(
                f"{path}: expected a {ndim}-D volume (x, y, z), got shape {tuple(img.shape)}"
            )
    if dtype is not None:
        data = np.asarray(data, dtype=dtype)
    return Volume(data, np.asarray(img.affine, dtype=float), img.header, path)


def b0_direction_from_affine(affine) -> tuple[float, float, float]:
    """Unit B0 direction in the array's voxel axes from a NIfTI affine.

    Notes
    -----
    Scanner z (the last RAS+ axis) is B0. With ``R`` the rotation part of the
    affine (its 3×3 block with the voxel sizes divided out of the columns,
    projected onto the nearest orthogonal matrix to drop shear and rounding),
    ``b = Rᵀ ẑ``. The inverse of the scaled affine is not used: it would mix
    the voxel sizes into the direction.
    """
    a = np.asarray(affine, dtype=float)
    if a.shape not in ((4, 4), (3, 3)) or not np.all(np.isfinite(a)):
        raise InvalidParameterError(f"affine must be a finite 4x4 (or 3x3) matrix, got shape {a.shape}")
    m = a[:3, :3]
    zooms = np.linalg.norm(m, axis=0)
    if np.any(zooms < 1e-9):
        raise InvalidParameterError("affine is singular: a voxel axis has zero length")
    r = m / zooms
    u, _, vt = np.linalg.svd(r)
    r = u @ vt
    b = r.T @ np.array([0.0, 0.0, 1.0])
    b /= np.linalg.norm(b)
    b[np.abs(b) < 1e-12] = 0.0
    return (float(b[0]), float(b[1]), float(b[2]))


def check_same_grid(a: Volume, b: Volume, *, atol_mm: float = 1e-3) -> None:
    """Raise :class:`ShapeMismatchError` unless two volumes share shape and affine."""
    if a.data.shape[:3] != b.data.shape[:3]:
        raise ShapeMismatchError(
            f"{b.path.name} has shape {b.data.shape[:3]} but {a.path.name} has {a.data.shape[:3]}"
        )
    if not np.allclose(a.affine, b.affine, atol=atol_mm, rtol=0):
        raise ShapeMismatchError(f"{b.path.name} and {a.path.name} have different affines (voxel grids)")


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


def save_nifti(
    path, data, affine, header=None, *, force: bool = False, description: str | None = None
) -> Path:
    """Write ``data`` as NIfTI atomically, keeping the reference header's geometry.

    Parameters
    ----------
    path : str or Path
        ``.nii`` or ``.nii.gz``.
    data : ndarray
        Written as float32 (bool as uint8), with no scaling.
    affine : (4, 4) array
    header : nibabel header, optional
        Copied (units, dimension info, and the qform/sform codes when its
        affine equals ``affine``; nibabel resets them otherwise); data type
        and scaling are reset.
    force : bool
        Overwrite an existing file.
    description : str, optional
        Stored in the header's ``descrip`` field (80 bytes at most).
    """
    import nibabel as nib

    path = Path(path)
    if not _is_nifti_name(path):
        raise InvalidParameterError(f"{path}: output must end in .nii or .nii.gz")
    data = np.asarray(data)
    data = data.astype(np.uint8) if data.dtype == bool else data.astype(np.float32, copy=False)
    hdr = header.copy() if header is not None else None
    img = nib.Nifti1Image(data, affine, hdr)
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    if description:
        img.header["descrip"] = description.encode()[:79]
    with atomic_path(path, force=force) as tmp:
        nib.save(img, str(tmp))
    return path


def sidecar_path(path) -> Path:
    """``OUT.nii.gz`` → ``OUT.json`` (the BIDS sidecar convention)."""
    path = Path(path)
    name = path.name
    for s in _NIFTI_SUFFIXES:
        if name.lower().endswith(s):
            return path.with_name(name[: -len(s)] + ".json")
    return path.with_suffix(".json")


def write_json(path, obj, *, force: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False)
            fh.write("\n")
    return path


# --------------------------------------------------------------------------
# multi-coil k-space files
# --------------------------------------------------------------------------
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
