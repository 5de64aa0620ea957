"""NIfTI in and out, B0 direction from the affine, grid checks, JSON sidecars."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError, InvalidParameterError, ShapeMismatchError
from .atomic import NIFTI_SUFFIXES as _NIFTI_SUFFIXES
from .atomic import atomic_path

__all__ = [
    "Volume",
    "b0_direction_from_affine",
    "check_same_grid",
    "load_nifti",
    "save_nifti",
    "sidecar_path",
    "write_json",
]


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


def _igzip():
    """The ISA-L gzip module (``isal.igzip``), or None where it is not installed."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a dependency; zlib through nibabel otherwise
        return None
    return igzip


_WHOLE_GZ_MAX_BYTES = 256 << 20  # compressed; the one-shot read holds compressed + raw + array

_SIZEOF_HDR = {n.to_bytes(4, order): n for n in (348, 540) for order in ("little", "big")}


def _load_gz_whole(path: Path):
    """A whole ``.nii.gz`` decompressed in one ISA-L call and parsed from memory.

    Decoding the inputs is a large part of a pipeline run: one-shot ISA-L
    inflation reads a 1 mm echo (47 MB compressed) in 0.23 s against 0.36 s
    through nibabel's streamed zlib. None where ISA-L is missing (the caller
    falls back to :func:`nibabel.load`).
    """
    import nibabel as nib

    igzip = _igzip()
    if igzip is None or path.stat().st_size > _WHOLE_GZ_MAX_BYTES:
        return None  # a long 4-D series: nibabel's streamed read holds one copy, not three
    raw = igzip.decompress(path.read_bytes())
    kind = _SIZEOF_HDR.get(raw[:4])
    if kind is None:
        raise InputFileError(f"{path}: not a NIfTI image (no NIfTI-1/2 header after decompression)")
    return (nib.Nifti1Image if kind == 348 else nib.Nifti2Image).from_bytes(raw)


def _is_nifti_name(path: Path) -> bool:
    return str(path).lower().endswith(_NIFTI_SUFFIXES)


def load_nifti(path, *, ndim: int | None = 3, dtype=np.float32, volumes=None) -> Volume:
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
    volumes : (t0, t1), optional
        Of a 4-D file, read only volumes t0..t1-1 (time is the last, slowest
        axis in the file: the rest of it is not converted, and a ``.nii`` is
        not read past t1).

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
        img = None
        if volumes is None and path.name.lower().endswith(".gz"):
            img = _load_gz_whole(path)
        if img is None:
            img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputFileError(f"{path}: not a NIfTI image")
        if volumes is None:
            data = np.asanyarray(img.dataobj)
        else:
            t0, t1 = (int(v) for v in volumes)
            if len(img.shape) != 4 or not 0 <= t0 < t1 <= img.shape[3]:
                raise ShapeMismatchError(f"{path}: no volumes {t0}..{t1 - 1} in shape {tuple(img.shape)}")
            data = np.asarray(img.dataobj[..., t0:t1])  # scaled by nibabel's proxy
            if data.dtype.kind not in "fc":
                data = data.astype(np.float64 if dtype in (None, np.float64) else np.float32)
    except (InputFileError, ShapeMismatchError):
        raise
    except Exception as exc:
        raise InputFileError(f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc})") from None
    if data.dtype.kind == "c" and (dtype is None or np.dtype(dtype).kind != "c"):
        raise InputFileError(f"{path}: holds complex values; expected a real-valued volume")
    if volumes is None and (img.header.get_slope_inter() != (None, None) or data.dtype.kind not in "fc"):
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
    igzip = _igzip() if path.name.lower().endswith(".gz") else None
    with atomic_path(path, force=force) as tmp:
        if igzip is None:
            nib.save(img, str(tmp))
        else:  # ISA-L deflate, level 1: 0.16 s for a 1 mm float32 volume against 1-2 s through zlib
            with igzip.IGzipFile(filename=str(tmp), mode="wb", compresslevel=1, mtime=0) as f:
                img.to_stream(f)
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
