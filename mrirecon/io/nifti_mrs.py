"""NIfTI-MRS in and out: complex FIDs (x, y, z, t), dwell time in pixdim[4], the JSON header extension.

Read with nibabel (the header extension, code 44, holds SpectrometerFrequency,
ResonantNucleus and the processing provenance); written through the
``nifti-mrs`` package (:func:`nifti_mrs.create_nmrs.gen_nifti_mrs_hdr_ext`),
which validates the file. The arrays this module hands out follow the
``nifti-mrs`` / FSL-MRS convention (the stored data conjugated, as
``NIFTI_MRS(path)[:]`` returns them), so ``fftshift(fft(fid))`` has ppm
increasing with the index (:mod:`mrirecon.mrsi.ppm`).
"""

from __future__ import annotations

import copy
import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError, ShapeMismatchError
from .atomic import atomic_path, check_writable

__all__ = ["MRSData", "load_nifti_mrs", "save_nifti_mrs"]

_EXT_CODE = 44


@dataclass
class MRSData:
    """A loaded NIfTI-MRS file.

    Attributes
    ----------
    data : ndarray, complex64, (x, y, z, t[, ...])
        FIDs in the nifti-mrs / FSL-MRS convention.
    dwell_time_s : float
    spectrometer_frequency_mhz : float
    nucleus : str
    affine : ndarray (4, 4)
    header_extension : dict
        The JSON header extension as read (a copy is written back on output).
    nifti_version : int
    path : Path or None
    """

    data: np.ndarray
    dwell_time_s: float
    spectrometer_frequency_mhz: float
    nucleus: str
    affine: np.ndarray
    header_extension: dict
    nifti_version: int = 2
    path: Path | None = None


def load_nifti_mrs(path, *, dtype=np.complex64) -> MRSData:
    """Read a NIfTI-MRS file (as spec2nii writes them).

    Raises
    ------
    InputFileError
        Missing, not NIfTI, not NIfTI-MRS (no ``mrs_v*`` intent or no header
        extension), real-valued data, no dwell time or spectrometer frequency.
    """
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file")
    try:
        img = nib.load(str(path))
    except Exception as exc:
        raise InputFileError(f"{path}: not a NIfTI file ({exc})") from exc
    hdr = img.header
    intent = hdr.get_intent()[2] if hasattr(hdr, "get_intent") else ""
    if not str(intent).startswith("mrs_v"):
        raise InputFileError(
            f"{path}: not NIfTI-MRS (intent name {intent!r}; expected 'mrs_vM_m', as spec2nii writes)"
        )
    codes = hdr.extensions.get_codes()
    if _EXT_CODE not in codes:
        raise InputFileError(f"{path}: NIfTI-MRS without its JSON header extension (code 44)")
    try:
        ext = json.loads(hdr.extensions[codes.index(_EXT_CODE)].get_content())
    except Exception as exc:
        raise InputFileError(f"{path}: the NIfTI-MRS header extension is not valid JSON ({exc})") from exc
    for key in ("SpectrometerFrequency", "ResonantNucleus"):
        if key not in ext:
            raise InputFileError(f"{path}: the NIfTI-MRS header extension lacks {key!r}")
    raw = np.asanyarray(img.dataobj)
    if not np.iscomplexobj(raw):
        raise InputFileError(f"{path}: NIfTI-MRS data must be complex FIDs, got {raw.dtype}")
    if raw.ndim < 4:
        raise ShapeMismatchError(f"{path}: NIfTI-MRS data must be (x, y, z, t[, ...]), got shape {raw.shape}")
    dwell = float(hdr["pixdim"][4])
    if not dwell > 0:
        raise InputFileError(f"{path}: no dwell time in pixdim[4]")
    sf = ext["SpectrometerFrequency"]
    sf = float(sf[0] if isinstance(sf, list | tuple) else sf)
    nucleus = ext["ResonantNucleus"]
    nucleus = str(nucleus[0] if isinstance(nucleus, list | tuple) else nucleus)
    return MRSData(
        data=np.conj(raw).astype(dtype, copy=False),
        dwell_time_s=dwell,
        spectrometer_frequency_mhz=sf,
        nucleus=nucleus,
        affine=np.asarray(img.affine, dtype=float),
        header_extension=ext,
        nifti_version=2 if isinstance(img, nib.Nifti2Image) else 1,
        path=path,
    )


def save_nifti_mrs(
    path,
    data,
    *,
    dwell_time_s: float,
    spectrometer_frequency_mhz: float | None = None,
    nucleus: str = "1H",
    affine=None,
    header_extension: dict | None = None,
    provenance: dict | None = None,
    force: bool = False,
) -> Path:
    """Write complex FIDs ``data`` (x, y, z, t) as NIfTI-MRS, atomically.

    Parameters
    ----------
    path : str or Path
        ``.nii.gz`` or ``.nii``.
    data : ndarray, complex
        In the nifti-mrs / FSL-MRS convention (as :func:`load_nifti_mrs` returns).
    dwell_time_s : float
    spectrometer_frequency_mhz, nucleus :
        Used when ``header_extension`` is None (a new file).
    affine : (4, 4), optional
    header_extension : dict, optional
        An input's extension to keep (every key, with its dimension tags).
    provenance : dict, optional
        Appended to ``ProcessingApplied`` (``Time`` and ``Program`` filled in
        when missing).
    force : bool
        Overwrite an existing file.
    """
    from nifti_mrs.create_nmrs import gen_nifti_mrs_hdr_ext
    from nifti_mrs.hdr_ext import Hdr_Ext

    from .. import __version__

    check_writable(path, force=force)
    data = np.asarray(data)
    if not np.iscomplexobj(data) or data.ndim < 4:
        raise ShapeMismatchError(
            f"NIfTI-MRS data must be complex (x, y, z, t[, ...]), got {data.dtype} {data.shape}"
        )
    if header_extension is not None:
        ext = copy.deepcopy(header_extension)
    else:
        if spectrometer_frequency_mhz is None:
            raise ShapeMismatchError("a new NIfTI-MRS file needs spectrometer_frequency_mhz")
        ext = Hdr_Ext(float(spectrometer_frequency_mhz), nucleus, dimensions=data.ndim).to_dict()
    if provenance is not None:
        entry = {
            "Time": datetime.datetime.now().isoformat(timespec="seconds"),
            "Program": "mrirecon",
            "Version": __version__,
        }
        entry.update(provenance)
        ext.setdefault("ProcessingApplied", [])
        ext["ProcessingApplied"] = list(ext["ProcessingApplied"]) + [entry]
    hdr_ext = Hdr_Ext.from_header_ext(ext)
    # gen_nifti_mrs_hdr_ext conjugates its input: pass the nifti-mrs-convention data as is
    img = gen_nifti_mrs_hdr_ext(
        data.astype(np.complex64, copy=False), float(dwell_time_s), hdr_ext, affine=affine
    )
    with atomic_path(path, force=force) as tmp:
        img.save(tmp)
    return Path(path)
