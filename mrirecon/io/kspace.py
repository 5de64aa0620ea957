"""Multi-coil Cartesian k-space files: NumPy (npy/npz), BART cfl/hdr, fastMRI HDF5, ISMRMRD."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputFileError
from .atomic import atomic_path

__all__ = [
    "KSPACE_SUFFIXES",
    "is_ismrmrd",
    "load_kspace",
    "read_cfl",
    "read_ismrmrd",
    "write_cfl",
    "write_ismrmrd",
]

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
        fastMRI multi-coil HDF5 (``kspace`` ``(slices, coil, H, W)``, the
        phase encoding along W → ``(slices, coil, W, H)``), or ISMRMRD HDF5
        (see :func:`read_ismrmrd`), opened read-only.
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
            import zipfile

            if not zipfile.is_zipfile(path):
                raise InputFileError(
                    f"{path}: not a NumPy .npz archive (a zip of .npy arrays, as numpy.savez writes)"
                )
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
        elif suffix in (".h5", ".hdf5") and is_ismrmrd(path):
            return read_ismrmrd(path)
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


# --------------------------------------------------------------------------
# ISMRMRD
# --------------------------------------------------------------------------
def is_ismrmrd(path) -> bool:
    """Whether ``path`` is an HDF5 file holding an ISMRMRD dataset (``/dataset/xml``)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "dataset" in f and "xml" in f["dataset"]
    except Exception:
        return False


def _limit(limits, name, n):
    lim = getattr(limits, name, None) if limits is not None else None
    if lim is None:
        return 0, n - 1, n // 2
    return int(lim.minimum), int(lim.maximum), int(lim.center)


def read_ismrmrd(path) -> dict:
    """Read Cartesian multi-coil k-space from an ISMRMRD file (read-only) into ``(coil, *spatial)``.

    Supported: the first encoding of the XML header; its encoded space (the
    matrix acquisitions are placed in, by their ``kspace_encode_step_1`` /
    ``_2`` indices relative to the encoding limits' centre, so that the
    k-space centre lands at index ``n // 2``; the readout by
    ``center_sample``); readout oversampling cropped to the recon space's
    matrix (image-space crop along the readout, as the Gadgetron does); the
    acceleration factor; noise measurements (``ACQ_IS_NOISE_MEASUREMENT``)
    returned as ``noise`` (coil, samples) for prewhitening; parallel-calibration
    lines (``ACQ_IS_PARALLEL_CALIBRATION`` and ``..._AND_IMAGING``) placed in
    the k-space and listed in ``acs_rows``; several slices and repetitions as a
    leading batch axis. Skipped: navigator, phase-correction, dummy-scan and
    feedback acquisitions. Not supported (an error): non-Cartesian
    trajectories, several encodings mixed in one file.

    Returns
    -------
    dict
        ``kspace`` complex64 ``(coil, e1[, e2], readout)`` or ``(batch, coil, ...)``
        for several slices/repetitions; ``noise`` (if any); ``accel`` (header's
        factor along e1); ``acs_rows`` (indices along e1); ``batch`` (list of
        (slice, repetition)); ``fov_mm``; ``readout_oversampling``.
    """
    import ismrmrd
    import ismrmrd.xsd

    path = Path(path)
    try:
        dset = ismrmrd.Dataset(str(path), "dataset", mode="r")
    except Exception as exc:
        raise InputFileError(f"{path}: not a readable ISMRMRD file ({type(exc).__name__}: {exc})") from None
    try:
        try:
            header = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
            enc = header.encoding[0]
        except Exception as exc:
            raise InputFileError(f"{path}: bad ISMRMRD XML header ({type(exc).__name__}: {exc})") from None
        traj = str(getattr(enc.trajectory, "value", enc.trajectory)).lower()
        if "cartesian" not in traj:
            raise InputFileError(f"{path}: trajectory '{traj}' is not supported (Cartesian only)")
        es, rs = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
        nx, ny, nz = int(es.x), int(es.y), int(es.z)
        lim = enc.encodingLimits
        e1min, e1max, e1c = _limit(lim, "kspace_encoding_step_1", ny)
        e2min, e2max, e2c = _limit(lim, "kspace_encoding_step_2", nz)
        accel = 1
        if enc.parallelImaging is not None:
            accel = int(enc.parallelImaging.accelerationFactor.kspace_encoding_step_1)
        try:
            n_acq = dset.number_of_acquisitions()
        except Exception as exc:
            raise InputFileError(f"{path}: no acquisitions ({type(exc).__name__}: {exc})") from None
        skip = [
            getattr(ismrmrd, f)
            for f in (
                "ACQ_IS_NAVIGATION_DATA",
                "ACQ_IS_PHASECORR_DATA",
                "ACQ_IS_DUMMYSCAN_DATA",
                "ACQ_IS_RTFEEDBACK_DATA",
                "ACQ_IS_HPFEEDBACK_DATA",
                "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA",
                "ACQ_IS_PHASE_STABILIZATION",
                "ACQ_IS_PHASE_STABILIZATION_REFERENCE",
            )
            if hasattr(ismrmrd, f)
        ]
        noise, lines, acs = [], [], set()
        for i in range(n_acq):
            try:
                acq = dset.read_acquisition(i)
            except Exception as exc:
                raise InputFileError(
                    f"{path}: acquisition {i} of {n_acq} cannot be read ({type(exc).__name__}: {exc})"
                ) from None
            if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                noise.append(np.asarray(acq.data, dtype=np.complex64))
                continue
            if any(acq.is_flag_set(f) for f in skip):
                continue
            if int(acq.trajectory_dimensions) > 0:
                raise InputFileError(f"{path}: acquisition {i} has a trajectory (non-Cartesian data)")
            idx = acq.idx
            e1 = int(idx.kspace_encode_step_1) - e1c + ny // 2
            e2 = int(idx.kspace_encode_step_2) - e2c + nz // 2 if nz > 1 else 0
            if not (0 <= e1 < ny and 0 <= e2 < nz):
                raise InputFileError(
                    f"{path}: acquisition {i} encode step ({idx.kspace_encode_step_1}, "
                    f"{idx.kspace_encode_step_2}) lies outside the encoded matrix {ny}x{nz}"
                )
            if acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) or acq.is_flag_set(
                ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
            ):
                acs.add(e1)
            key = (int(idx.slice), int(idx.repetition))
            lines.append((key, e1, e2, int(acq.center_sample), np.asarray(acq.data, dtype=np.complex64)))
    finally:
        dset.close()
    if not lines:
        raise InputFileError(f"{path}: no imaging acquisitions")
    nc = lines[0][4].shape[0]
    keys = sorted({ln[0] for ln in lines})
    out = np.zeros((len(keys), nc, ny, nz, nx), dtype=np.complex64)
    pos = {k: j for j, k in enumerate(keys)}
    for key, e1, e2, centre, data in lines:
        if data.shape[0] != nc:
            raise InputFileError(f"{path}: acquisitions have {nc} and {data.shape[0]} coils")
        start = nx // 2 - centre
        ns = data.shape[1]
        if start < 0 or start + ns > nx:
            raise InputFileError(f"{path}: a readout of {ns} samples (centre {centre}) exceeds {nx}")
        out[pos[key], :, e1, e2, start : start + ns] = data
    rx = int(rs.x)
    if 0 < rx < nx:  # readout oversampling: crop the recon field of view in image space
        from ..fft import fftc, ifftc

        img = ifftc(out, axes=(-1,))
        lo = nx // 2 - rx // 2
        out = fftc(np.ascontiguousarray(img[..., lo : lo + rx]), axes=(-1,)).astype(np.complex64)
    if nz == 1:
        out = out[:, :, :, 0, :]
    result = {
        "kspace": out[0] if len(keys) == 1 else out,
        "accel": accel,
        "acs_rows": np.array(sorted(acs), dtype=int),
        "batch": keys,
        "readout_oversampling": nx / rx if rx else 1.0,
        "fov_mm": [float(enc.reconSpace.fieldOfView_mm.x), float(enc.reconSpace.fieldOfView_mm.y)],
        "format": "ISMRMRD",
    }
    if noise:
        result["noise"] = np.concatenate(noise, axis=1)
    return result


def write_ismrmrd(
    path, kspace, *, accel=1, acs_rows=(), noise=None, oversampling=2, fov_mm=220.0, force=False
):
    """Write a 2-D multi-coil Cartesian slice ``(coil, e1, readout)`` as an ISMRMRD file (for tests, phantoms).

    The readout is oversampled by ``oversampling`` (zero-padded image along the
    readout, as a scanner's wider readout field of view sees an object inside
    the recon field of view); lines whose k-space is all zero are not written;
    ``acs_rows`` get the parallel-calibration flag (``..._AND_IMAGING`` where
    they lie on the lattice); ``noise`` ``(coil, samples)`` is written first as
    a noise measurement. Atomic (temp file + rename).
    """
    import ismrmrd
    import ismrmrd.xsd as xsd

    from ..fft import fftc, ifftc

    k = np.asarray(kspace, dtype=np.complex64)
    nc, ny, nx = k.shape
    nxo = int(round(nx * oversampling))
    img = ifftc(k, axes=(-1,))
    pad = np.zeros((nc, ny, nxo), dtype=np.complex64)
    lo = nxo // 2 - nx // 2
    pad[..., lo : lo + nx] = img
    ko = fftc(pad, axes=(-1,)).astype(np.complex64)
    fov = float(fov_mm)
    enc = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=nxo, y=ny, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=fov * oversampling, y=fov, z=5.0),
        ),
        reconSpace=xsd.encodingSpaceType(
            matrixSize=xsd.matrixSizeType(x=nx, y=ny, z=1),
            fieldOfView_mm=xsd.fieldOfViewMm(x=fov, y=fov, z=5.0),
        ),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=ny - 1, center=ny // 2),
            kspace_encoding_step_2=xsd.limitType(minimum=0, maximum=0, center=0),
            slice=xsd.limitType(minimum=0, maximum=0, center=0),
        ),
        trajectory=xsd.trajectoryType("cartesian"),
        parallelImaging=xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(
                kspace_encoding_step_1=int(accel), kspace_encoding_step_2=1
            )
        ),
    )
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=127_740_000),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(receiverChannels=nc),
        encoding=[enc],
    )
    acs_rows = set(int(r) for r in acs_rows)
    sampled = np.flatnonzero(np.any(k != 0, axis=(0, 2)))
    lattice = set(sampled) - acs_rows
    with atomic_path(path, force=force) as tmp:
        dset = ismrmrd.Dataset(str(tmp), "dataset", mode="w")
        try:
            dset.write_xml_header(xsd.ToXML(header))

            def acquisition(data, e1, flags):
                acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data))
                acq.center_sample = data.shape[1] // 2
                acq.idx.kspace_encode_step_1 = int(e1)
                for f in flags:
                    acq.set_flag(f)
                dset.append_acquisition(acq)

            if noise is not None:
                acquisition(np.asarray(noise, dtype=np.complex64), 0, [ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
            for e1 in sampled:
                flags = []
                if e1 in acs_rows:
                    flags.append(
                        ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING
                        if any((e1 - r) % int(accel) == 0 for r in lattice)
                        else ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
                    )
                acquisition(ko[:, e1, :], e1, flags)
        finally:
            dset.close()
    return Path(path)
