"""BIDS in and out for QSM: find multi-echo GRE series, write derivatives.

Input: ``sub-<label>[/ses-<label>]/anat/*_echo-<N>_part-{mag,phase}_MEGRE.nii[.gz]``,
each with a JSON sidecar of the same name (``EchoTime`` in seconds required;
``MagneticFieldStrength`` required unless given; ``Units`` of the phase
honoured), and a brain mask ``<entities>_desc-brain_mask.nii[.gz]`` beside
them if there is one (otherwise one is derived from the magnitude). Output: a BIDS derivatives dataset with ``dataset_description.json``
and, per series, ``*_Chimap.nii.gz`` (ppm), ``*_desc-brain_mask.nii.gz``,
``*_desc-local_fieldmap.nii.gz`` (ppm), each with a provenance JSON, and a
PNG of orthogonal slices.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError, InvalidParameterError

__all__ = [
    "MegreSeries",
    "find_series",
    "load_series",
    "output_paths",
    "write_dataset_description",
    "write_megre_dataset",
    "write_outputs",
]

_MEGRE = re.compile(
    r"^(?P<pre>.+?)_echo-(?P<echo>\d+)(?P<mid>.*?)_part-(?P<part>mag|phase)(?P<post>.*?)_MEGRE\.nii(\.gz)?$"
)


@dataclass
class MegreSeries:
    """One multi-echo GRE acquisition found in a BIDS dataset."""

    subject: str
    session: str | None
    stem: str  # the file name's entities without echo/part (e.g. 'sub-01_ses-1_acq-x')
    anat_dir: Path
    magnitude: list  # paths, sorted by echo number
    phase: list
    mask: Path | None = None  # <stem>_desc-brain_mask.nii[.gz] beside the echoes, if there is one

    @property
    def name(self) -> str:
        return self.stem


def _sidecar(path: Path) -> Path:
    name = path.name
    for s in (".nii.gz", ".nii"):
        if name.endswith(s):
            return path.with_name(name[: -len(s)] + ".json")
    return path.with_suffix(".json")


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise InputFileError(f"{path}: sidecar missing (every MEGRE image needs its JSON)")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path}: unreadable JSON ({exc})") from None


def find_series(root, *, include=None) -> list[MegreSeries]:
    """Every MEGRE series under a BIDS root, optionally only the subjects in ``include``.

    Raises
    ------
    InputFileError
        No such directory, no subject, or an ``include`` label not found.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"{root}: not a directory (expected a BIDS dataset)")
    subjects = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    if include:
        wanted = [s if s.startswith("sub-") else f"sub-{s}" for s in include]
        missing = [s for s in wanted if s not in subjects]
        if missing:
            raise InputFileError(
                f"{root}: no subject {', '.join(missing)} (found: {', '.join(subjects) or 'none'})"
            )
        subjects = wanted
    series = []
    for sub in subjects:
        groups: dict = {}
        for path in sorted((root / sub).glob("**/anat/*_MEGRE.nii*")):
            m = _MEGRE.match(path.name)
            if not m:
                continue
            stem = m["pre"] + m["mid"] + m["post"]
            g = groups.setdefault((path.parent, stem), {"mag": {}, "phase": {}})
            g[m["part"]][int(m["echo"])] = path
        for (anat, stem), g in sorted(groups.items()):
            ses = next((p for p in anat.parts if p.startswith("ses-")), None)
            echoes = sorted(set(g["mag"]) | set(g["phase"]))
            candidates = (anat / f"{stem}_desc-brain_mask.nii.gz", anat / f"{stem}_desc-brain_mask.nii")
            mask = next((p for p in candidates if p.exists()), None)
            mags = [g["mag"].get(e) for e in echoes]
            series.append(MegreSeries(sub, ses, stem, anat, mags, [g["phase"].get(e) for e in echoes], mask))
    if not series:
        raise InputFileError(f"{root}: no *_echo-<N>_part-mag/phase_MEGRE.nii[.gz] files found")
    return series


def _load_all(paths, volumes, while_reading=None):
    """:func:`load_nifti` of every path, on the CPU threads at once (gzip inflation releases the GIL).

    ``while_reading`` (optional) is called in this thread while the files are
    read, e.g. to import what comes next. Returns ``(volume, number of NaN/Inf
    values)`` per path. Errors are those of the first failing path in order,
    as a serial loop raises them.
    """
    from concurrent.futures import ThreadPoolExecutor

    import nibabel  # noqa: F401  (imported here, before the readers start, not by them at once)

    from ..threads import n_threads
    from .nifti import _igzip, load_nifti

    _igzip()

    def one(p):
        v = load_nifti(p, ndim=None, volumes=volumes)
        return v, int(v.data.size - np.count_nonzero(np.isfinite(v.data)))  # counted on this thread

    n = min(len(paths), n_threads())
    if n <= 1:
        if while_reading is not None:
            while_reading()
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="mrirecon-load") as ex:
        futures = [ex.submit(one, p) for p in paths]
        if while_reading is not None:
            while_reading()
        return [f.result() for f in futures]


def _stack(arrays):
    """``numpy.stack`` of equal-shape arrays, the copies on the threads (one 1 mm echo each)."""
    from .._parallel import concurrently

    out = np.empty((len(arrays),) + arrays[0].shape, dtype=np.result_type(*arrays))

    def copy(i):
        return lambda: np.copyto(out[i], arrays[i])

    concurrently(*[copy(i) for i in range(len(arrays))])
    return out


def load_series(series: MegreSeries, *, b0_tesla=None, volumes=None, while_reading=None):
    """Load a series' echoes with their sidecars; checks everything before returning.

    Returns
    -------
    dict with ``magnitude``, ``phase`` (echo, x, y, z) float32 — or
    (echo, x, y, z, t) for a multi-volume series, ``volumes`` then t, else
    None — ``te_s``, ``b0_tesla``, ``phase_units``, ``affine``, ``header``,
    ``voxel_size_mm``; with ``volumes=(t0, t1)`` only those volumes of a
    4-D series are kept (``volumes`` is still the series' length).
    ``while_reading``, a callable, runs in this thread while the echoes are
    read on others.
    """
    from .nifti import check_same_grid, load_nifti

    for kind, paths in (("magnitude", series.magnitude), ("phase", series.phase)):
        for i, p in enumerate(paths):
            if p is None:
                other = series.phase[i] if kind == "magnitude" else series.magnitude[i]
                raise InputFileError(f"{other}: its {kind} echo is missing")
    numbers = [int(_MEGRE.match(p.name)["echo"]) for p in series.magnitude]
    if numbers != list(range(1, len(numbers) + 1)):
        raise InputFileError(
            f"{series.anat_dir}/{series.stem}: echoes {numbers} are not numbered 1..{len(numbers)}"
        )
    vols, nonfinite = zip(*_load_all([*series.magnitude, *series.phase], volumes, while_reading), strict=True)
    vols = list(vols)
    vols_m, vols_p = vols[: len(series.magnitude)], vols[len(series.magnitude) :]
    for v in vols_m + vols_p:  # (x, y, z, 1) is one volume
        if volumes is None and v.data.ndim == 4 and v.data.shape[3] == 1:
            v.data = v.data[..., 0]
    ref = vols_m[0]
    if ref.data.ndim not in (3, 4):
        raise InputFileError(
            f"{ref.path}: expected a 3-D echo (x, y, z) or a 4-D series of volumes (x, y, z, t), "
            f"got shape {ref.data.shape}"
        )
    for v in vols_m[1:] + vols_p:
        check_same_grid(ref, v)
        if v.data.shape != ref.data.shape:
            raise InputFileError(
                f"{v.path} has shape {v.data.shape} but {ref.path.name} has {ref.data.shape}"
            )
    # the series' length (only the volumes asked for were read)
    n_volumes = int(ref.header.get_data_shape()[3]) if ref.data.ndim == 4 else None
    te, b0s, units = [], [], []
    for pm, pp in zip(series.magnitude, series.phase, strict=True):
        meta_m, meta_p = _read_json(_sidecar(pm)), _read_json(_sidecar(pp))
        t = meta_p.get("EchoTime", meta_m.get("EchoTime"))
        tm, tp = meta_m.get("EchoTime"), meta_p.get("EchoTime")
        if (
            isinstance(tm, (int, float))
            and isinstance(tp, (int, float))
            and abs(float(tm) - float(tp)) > 1e-6 * max(abs(float(tm)), abs(float(tp)), 1e-9)
        ):
            raise InputFileError(
                f"EchoTime disagrees between {_sidecar(pm)} ({tm!r}) and {_sidecar(pp)} ({tp!r})"
            )
        if t is None:
            raise InputFileError(f"{_sidecar(pp)}: no EchoTime (seconds)")
        if not isinstance(t, (int, float)) or not 0 < t < 1:
            raise InputFileError(f"{_sidecar(pp)}: EchoTime must be in seconds (0 < TE < 1), got {t!r}")
        te.append(float(t))
        b0s.append(meta_p.get("MagneticFieldStrength", meta_m.get("MagneticFieldStrength")))
        units.append(meta_p.get("Units"))
    if b0_tesla is None:
        if any(b is None for b in b0s):
            raise InputFileError(
                f"{_sidecar(series.phase[0])}: no MagneticFieldStrength; give it with --b0-tesla"
            )
        if len(set(b0s)) != 1:
            raise InputFileError(
                f"{series.stem}: echoes disagree on MagneticFieldStrength: {sorted(set(b0s))}"
            )
        b0_tesla = float(b0s[0])
    if len(set(units)) > 1:
        raise InputFileError(f"{series.stem}: phase echoes disagree on Units: {units}")
    for v, bad in zip(vols, nonfinite, strict=True):
        if bad:
            raise InputFileError(f"{v.path}: {bad} NaN/Inf values")
    mag, pha = _stack([v.data for v in vols_m]), _stack([v.data for v in vols_p])
    unit = units[0]
    if unit is not None and str(unit).lower() in ("radian", "radians"):
        unit = "rad"
    mask = None
    if series.mask is not None:
        mvol = load_nifti(series.mask)
        check_same_grid(ref, mvol)
        mask = mvol.data != 0
        if not mask.any():
            raise InputFileError(f"{series.mask}: mask is empty")
    return {
        "mask": mask,
        "mask_path": series.mask,
        "magnitude": mag,
        "phase": pha,
        "volumes": n_volumes,
        "te_s": te,
        "b0_tesla": b0_tesla,
        "phase_units": unit,
        "affine": ref.affine,
        "header": ref.header,
        "voxel_size_mm": ref.voxel_size_mm,
    }


def write_dataset_description(out_dir, *, source=None) -> Path:
    """Write (or keep) the derivatives' ``dataset_description.json``."""
    from .. import __version__
    from .nifti import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset_description.json"
    desc = {
        "Name": "mrirecon QSM derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mrirecon", "Version": __version__, "Description": "closed-form L2 QSM"}],
    }
    if source:
        desc["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    if path.exists():
        return path
    return write_json(path, desc)


def output_paths(out_dir, series: MegreSeries) -> dict:
    """Where a series' derivatives go."""
    rel = series.anat_dir.relative_to(series.anat_dir.parents[1 if series.session is None else 2])
    base = Path(out_dir) / rel
    return {
        "chi": base / f"{series.stem}_Chimap.nii.gz",
        "mask": base / f"{series.stem}_desc-brain_mask.nii.gz",
        "local": base / f"{series.stem}_desc-local_fieldmap.nii.gz",
        "png": base / f"{series.stem}_Chimap.png",
    }


def write_outputs(out_dir, series: MegreSeries, result, loaded, *, extra=None, force=False) -> dict:
    """Write a series' Chimap, mask, local field (+ JSON each) and PNG: all or nothing."""
    from .. import __version__
    from ..plot import orthoslices
    from .atomic import atomic_paths, check_writable
    from .nifti import save_nifti, sidecar_path, write_json

    paths = output_paths(out_dir, series)
    targets = [paths["png"]] + [
        p for k in ("chi", "mask", "local") for p in (paths[k], sidecar_path(paths[k]))
    ]
    paths["chi"].parent.mkdir(parents=True, exist_ok=True)
    for p in targets:
        check_writable(p, force=force)
    sources = [str(p) for p in series.magnitude + series.phase]
    common = {
        "Sources": sources,
        "Software": {"name": "mrirecon", "version": __version__},
        **result.params,
        "Timings_s": {k: round(v, 4) for k, v in result.timings_s.items()},
        **(extra or {}),
    }
    items = [
        (
            "chi",
            result.chi,
            {"Description": "magnetic susceptibility", "Units": "ppm", "Reference": "mean inside the mask"},
        ),
        (
            "mask",
            result.mask,
            {"Description": "mask of the Chimap (brain mask eroded by background removal)"},
        ),
        (
            "local",
            result.local_field_ppm,
            {"Description": "local (background-removed) field", "Units": "ppm"},
        ),
    ]
    shown = result.chi[..., 0] if result.chi.ndim == 4 else result.chi  # a series: its first volume
    fig = orthoslices(shown, voxel_size_mm=loaded["voxel_size_mm"], suptitle=f"{series.stem}: χ (ppm)")
    # one group: the series' files all appear, or none (also on SIGTERM/SIGINT)
    order = [p for key, _, _ in items for p in (paths[key], sidecar_path(paths[key]))] + [paths["png"]]
    with atomic_paths(order, force=force) as tmps:
        tmp = dict(zip(order, tmps, strict=True))
        for key, data, meta in items:
            save_nifti(tmp[paths[key]], data, loaded["affine"], loaded["header"], force=True)
            write_json(tmp[sidecar_path(paths[key])], {**meta, **common}, force=True)
        fig.savefig(tmp[paths["png"]], dpi=100, format="png")
    return paths


def write_megre_dataset(
    root, subject, data, *, affine=None, force=False, phase_units="rad", write_mask=False
) -> list[Path]:
    """Write simulated MEGRE data (:func:`mrirecon.phantoms.simulate_megre`) as a BIDS subject.

    For tests and demos. Returns the written image paths.
    """
    from .nifti import save_nifti, write_json

    root = Path(root)
    if not subject.startswith("sub-"):
        subject = f"sub-{subject}"
    anat = root / subject / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    if not (root / "dataset_description.json").exists():
        write_json(
            root / "dataset_description.json", {"Name": "mrirecon simulated MEGRE", "BIDSVersion": "1.9.0"}
        )
    if affine is None:
        affine = np.diag([*data.voxel_size_mm, 1.0])
        affine[:3, 3] = -np.asarray(data.voxel_size_mm) * (np.asarray(data.chi.shape) - 1) / 2
    if phase_units not in ("rad", "arbitrary"):
        raise InvalidParameterError(f"phase_units must be 'rad' or 'arbitrary', got {phase_units!r}")
    written = []
    for i, te in enumerate(data.te_s, start=1):
        for part, img in (("mag", data.magnitude[i - 1]), ("phase", data.phase[i - 1])):
            if part == "phase" and phase_units == "arbitrary":
                img = np.round((img + np.pi) / (2 * np.pi) * 4096 - 2048).clip(-2048, 2047)
            path = anat / f"{subject}_echo-{i}_part-{part}_MEGRE.nii.gz"
            save_nifti(path, img, affine, force=force)
            meta = {"EchoTime": te, "MagneticFieldStrength": data.b0_tesla}
            if part == "phase":
                meta["Units"] = phase_units
            write_json(path.with_name(path.name[: -len(".nii.gz")] + ".json"), meta, force=force)
            written.append(path)
    if write_mask:
        path = anat / f"{subject}_desc-brain_mask.nii.gz"
        save_nifti(path, data.mask, affine, force=force)
        written.append(path)
    return written
