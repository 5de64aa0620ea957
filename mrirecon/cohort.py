"""Running QSM over many series: in process, or on Dask; resumable, safe to stop.

One series is one task. A task gets paths and parameters (never arrays), reads
its echoes, runs :func:`mrirecon.qsm.pipeline` and writes its derivatives as
one atomic group (:class:`mrirecon.io.atomic.atomic_paths`), wherever it runs.
Each series' chi provenance JSON records a *fingerprint* of the run: every
input file's path, size and modification time, the parameters and the package
version. A rerun skips a series whose outputs are all present with the same
fingerprint; one whose outputs exist with another fingerprint fails with a
message (``force=True`` recomputes it); nothing is overwritten silently.

Engines:

- in process (default): series one after another, no Dask needed;
- ``workers=N``: a :class:`distributed.LocalCluster` of N worker processes on
  127.0.0.1 (dashboard off unless asked for, then on localhost only), each with
  ``MRIRECON_FFT_THREADS`` = usable cores // N so that workers × threads fill
  the machine without oversubscribing it;
- ``scheduler=ADDRESS`` or a scheduler file: an existing Dask scheduler (for
  example one that dask-jobqueue started on SLURM/PBS); its workers need
  mrirecon installed and the data paths visible.

A worker that dies (killed, out of memory) makes its series fail with that
reason; the scheduler does not retry it (``allowed-failures`` 0 on a local
cluster), so a run never hangs on one series.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InvalidParameterError, MriReconError

__all__ = [
    "SeriesResult",
    "fingerprint",
    "outputs_of",
    "process_series",
    "run_cohort",
    "status_of",
    "write_report",
]


@dataclass
class SeriesResult:
    """What happened to one series."""

    series: str  # the series' BIDS stem
    status: str  # "done", "skipped", "failed" or "interrupted"
    time_s: float = 0.0
    output: str | None = None  # the Chimap path
    error: str | None = None
    volumes: int = 1
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------
# what a series is made of, and whether it is done
# --------------------------------------------------------------------------
def _inputs(series) -> list:
    from .io.bids import _sidecar

    paths = []
    for p in list(series.magnitude) + list(series.phase):
        if p is not None:
            paths += [Path(p), _sidecar(Path(p))]
    if series.mask is not None:
        paths.append(Path(series.mask))
    return paths


def fingerprint(series, parameters: dict) -> dict:
    """The inputs (path, size, mtime) and parameters a series' outputs are made from."""
    from . import __version__

    files = []
    for p in _inputs(series):
        try:
            st = p.stat()
            files.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        except OSError:
            files.append({"path": str(p), "size": None, "mtime_ns": None})
    return {"inputs": files, "parameters": _jsonable(parameters), "version": __version__}


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def outputs_of(out_dir, series) -> list:
    """Every file a finished series has in ``out_dir`` (images, their JSON, the figure)."""
    from .io.bids import output_paths
    from .io.nifti import sidecar_path

    paths = output_paths(out_dir, series)
    files = []
    for key in ("chi", "mask", "local"):
        files += [paths[key], sidecar_path(paths[key])]
    return [*files, paths["png"]]


def status_of(out_dir, series, parameters: dict) -> tuple[str, str]:
    """``("new" | "complete" | "stale" | "partial", why)`` of a series' outputs."""
    from .io.nifti import sidecar_path

    files = outputs_of(out_dir, series)
    present = [p for p in files if p.exists()]
    if not present:
        return "new", ""
    if len(present) < len(files):
        missing = ", ".join(p.name for p in files if not p.exists())
        return "partial", f"some outputs are missing ({missing})"
    try:
        recorded = json.loads(sidecar_path(files[0]).read_text()).get("RunFingerprint")
    except (OSError, ValueError):
        recorded = None
    if recorded is None:
        return "stale", "its outputs carry no run fingerprint (written by another version)"
    now = fingerprint(series, parameters)
    for key, what in (
        ("version", "package version"),
        ("parameters", "parameters"),
        ("inputs", "input files"),
    ):
        if recorded.get(key) != now[key]:
            return "stale", f"its outputs were made with other {what}"
    return "complete", ""


# --------------------------------------------------------------------------
# one series (runs in process or on a worker)
# --------------------------------------------------------------------------
def process_series(
    series, out_dir, parameters: dict, *, force: bool = False, command=None, step_callback=None
):
    """Load, reconstruct and write one series; returns a :class:`SeriesResult`.

    Never raises for a problem of the series itself: a bad input or a failure
    inside the pipeline becomes ``status="failed"`` with a one-line message
    naming the file at fault where there is one.

    Parameters
    ----------
    series : mrirecon.io.bids.MegreSeries
    out_dir : str or Path
        The derivatives directory.
    parameters : dict
        ``b0_tesla`` (override or None), ``device`` ("cpu"/"gpu"),
        ``device_name`` (recorded) and ``pipeline``: keywords of
        :func:`mrirecon.qsm.pipeline`.
    force : bool
        Overwrite existing outputs.
    command : str, optional
        Recorded in the provenance.
    step_callback : callable, optional
        Called with each pipeline step's name.
    """
    t0 = time.perf_counter()
    try:
        return _process(series, Path(out_dir), parameters, force, command, step_callback, t0)
    except Exception as exc:  # ours, or a bug / an unexpected library error: report it, keep the others going
        return SeriesResult(series.stem, "failed", time.perf_counter() - t0, error=_describe(exc))


def _process(series, out_dir, parameters, force, command, step_callback, t0):
    from .io import bids

    loaded = _load(series, parameters, None)
    if step_callback:
        step_callback("load")
    if loaded["volumes"] is None:
        result = _run_volumes(loaded, parameters, None, step_callback)
    else:  # a multi-volume series: the first volume sets the mask and λ for all
        (first,) = _run_volumes(loaded, parameters, [0], step_callback)
        rest = _run_volumes(
            loaded, parameters, range(1, loaded["volumes"]), step_callback, fixed=_fixed_of(first)
        )
        result = _series_result([first, *rest], mask_given=loaded["mask"] is not None)
    result.params["Device"] = parameters.get("device_name", parameters.get("device", "cpu"))
    extra = {
        "Command": command,
        "MaskFile": str(series.mask) if series.mask else None,
        "RunFingerprint": fingerprint(series, parameters),
    }
    paths = bids.write_outputs(out_dir, series, result, loaded, force=force, extra=extra)
    if step_callback:
        step_callback("write")
    return SeriesResult(
        series.stem,
        "done",
        time.perf_counter() - t0,
        output=str(paths["chi"]),
        volumes=loaded["volumes"] or 1,
    )


def _run_volumes(loaded, parameters, volumes, step_callback=None, *, fixed=None):
    """The pipeline on a 3-D series (``volumes`` None: one result) or on volumes of a 4-D one (a list).

    The volumes of a 4-D series get ``fixed`` (the first volume's brain mask and
    λ, :func:`_fixed_of`: one mask and one regularisation for the whole time
    series; the dipole kernel and FFT plans are built once and cached).
    """
    import numpy as np

    from . import device, io, qsm

    gpu = parameters.get("device", "cpu") == "gpu"

    def dev(a):
        return device.to_device(a, "gpu") if gpu and a is not None else a

    kw = dict(parameters.get("pipeline", {}))
    mask = loaded["mask"]
    if fixed is not None:
        mask = fixed["mask"]
        if fixed["lam"] is not None:
            kw["lam"] = fixed["lam"]
    results = []
    for t in [None] if volumes is None else volumes:
        mag, pha = loaded["magnitude"], loaded["phase"]
        if t is not None:
            mag, pha = np.ascontiguousarray(mag[..., t]), np.ascontiguousarray(pha[..., t])
        result = qsm.pipeline(
            dev(mag),
            dev(pha),
            loaded["te_s"],
            b0_tesla=loaded["b0_tesla"],
            voxel_size_mm=loaded["voxel_size_mm"],
            b0_dir=io.b0_direction_from_affine(loaded["affine"]),
            phase_units=loaded["phase_units"],
            mask=dev(mask),
            step_callback=step_callback if volumes is None else None,
            **kw,
        )
        for name in ("chi", "local_field_ppm", "total_field_hz", "mask", "brain_mask", "field_noise_ppm"):
            value = getattr(result, name, None)
            if value is not None:
                setattr(result, name, device.to_numpy(value))  # one copy out
        results.append(result)
        if t is not None and step_callback:
            step_callback(f"volume {t + 1}")
    return results[0] if volumes is None else results


def _fixed_of(first):
    """What every later volume of a series takes from its first: brain mask and λ."""
    return {"mask": first.brain_mask, "lam": first.params["Inversion"]["lam"]}


def _series_result(parts, *, mask_given):
    """Per-volume results (3-D) or runs of volumes (4-D), in time order, as one series result.

    χ, local and total field are stacked along a last (time) axis; the mask is
    where every volume's result is defined (χ and local field zero outside it).
    """
    import numpy as np

    from .qsm import PipelineResult

    def cat(name):
        vals = [getattr(p, name) for p in parts]
        if any(v is None for v in vals):
            return None
        return np.concatenate([v if v.ndim == 4 else v[..., None] for v in vals], axis=-1)

    common = np.logical_and.reduce([p.mask for p in parts])
    while common.ndim > 3:  # runs of volumes that are series results already
        common = common.all(axis=-1)
    chi, local = cat("chi"), cat("local_field_ppm")
    chi *= common[..., None]
    local *= common[..., None]
    timings = {}
    for p in parts:
        for k, v in p.timings_s.items():
            timings[k] = timings.get(k, 0.0) + v
    params = dict(parts[0].params)
    params["Volumes"] = int(chi.shape[-1])
    params["Series"] = (
        "4-D (x, y, z, t): each volume through the pipeline with the first volume's "
        + ("mask" if mask_given else "brain mask")
        + " and lambda"
    )
    return PipelineResult(
        chi,
        local,
        cat("total_field_hz"),
        common,
        parts[0].brain_mask,
        timings,
        params,
        cat("field_noise_ppm"),
    )


# --------------------------------------------------------------------------
# a long 4-D series over several workers
# --------------------------------------------------------------------------
PARTIAL_DIR = ".mrirecon-partial"  # under OUT: the volumes a chunked series has done so far


def _partial_dir(out_dir, series) -> Path:
    return Path(out_dir) / PARTIAL_DIR / series.stem


def _n_volumes(series):
    """The series' number of volumes from its first echo's header (None: 3-D); no data read."""
    import nibabel as nib

    try:
        shape = nib.load(str(series.magnitude[0])).shape
    except Exception:
        return None  # the task that reads it reports the problem
    return int(shape[3]) if len(shape) == 4 and shape[3] > 1 else None


def _save_part(path: Path, result) -> None:
    import numpy as np

    from .io.atomic import atomic_path

    arrays = {
        k: getattr(result, k)
        for k in ("chi", "local_field_ppm", "total_field_hz", "mask", "brain_mask", "field_noise_ppm")
        if getattr(result, k) is not None
    }
    meta = json.dumps({"params": result.params, "timings_s": result.timings_s}, default=_jsonable)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, force=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(meta), **arrays)


def _load_part(path):
    import numpy as np

    from .qsm import PipelineResult

    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        get = {k: (z[k] if k in z.files else None) for k in z.files}
    return PipelineResult(
        get["chi"],
        get["local_field_ppm"],
        get["total_field_hz"],
        get["mask"],
        get["brain_mask"],
        meta["timings_s"],
        meta["params"],
        get.get("field_noise_ppm"),
    )


def _series_head(series, out_dir, parameters):
    """Task: a chunked series' first volume; its part file, mask and λ (or the failure)."""
    t0 = time.time()
    try:
        loaded = _load(series, parameters, (0, 1))
        (first,) = _run_volumes(loaded, parameters, [0])
        path = _partial_dir(out_dir, series) / "volumes-00000.npz"
        _save_part(path, first)
        return {
            "start": t0,
            "fixed": _fixed_of(first),
            "part": str(path),
            "mask_given": loaded["mask"] is not None,
        }
    except Exception as exc:
        return {"start": t0, "error": _describe(exc)}


def _series_chunk(series, out_dir, parameters, head, volumes):
    """Task: volumes [t0, t1) of a chunked series with the first volume's mask and λ."""
    if "error" in head:
        return {"error": head["error"]}
    try:
        loaded = _load(series, parameters, volumes)
        parts = _run_volumes(loaded, parameters, range(volumes[1] - volumes[0]), fixed=head["fixed"])
        path = _partial_dir(out_dir, series) / f"volumes-{volumes[0]:05d}.npz"
        _save_part(path, _series_result(parts, mask_given=head["mask_given"]))
        return {"part": str(path)}
    except Exception as exc:
        return {"error": _describe(exc)}


def _series_assemble(series, out_dir, parameters, head, chunks, force, command):
    """Task: stack a chunked series' parts and write its derivatives as one group."""
    from .io import bids

    out_dir = Path(out_dir)
    start = head.get("start", time.time())
    for part in (head, *chunks):
        if "error" in part:
            _sweep_partial(out_dir, series)
            return SeriesResult(series.stem, "failed", time.time() - start, error=part["error"])
    try:
        loaded = _load(series, parameters, (0, 1))
        result = _series_result(
            [_load_part(p["part"]) for p in (head, *chunks)], mask_given=head["mask_given"]
        )
        result.params["Device"] = parameters.get("device_name", parameters.get("device", "cpu"))
        result.params["Chunks"] = 1 + len(chunks)
        extra = {
            "Command": command,
            "MaskFile": str(series.mask) if series.mask else None,
            "RunFingerprint": fingerprint(series, parameters),
        }
        paths = bids.write_outputs(out_dir, series, result, loaded, force=force, extra=extra)
    except Exception as exc:
        return SeriesResult(series.stem, "failed", time.time() - start, error=_describe(exc))
    finally:
        _sweep_partial(out_dir, series)
    n = result.chi.shape[-1]
    return SeriesResult(series.stem, "done", time.time() - start, output=str(paths["chi"]), volumes=n)


def _load(series, parameters, volumes):
    """A series' echoes (all volumes, or ``volumes=(t0, t1)`` of a 4-D series).

    While the files are inflated on the other threads, this one imports what the
    pipeline and the figures need (:func:`_warm_up`).
    """
    from .io import bids

    return bids.load_series(
        series, b0_tesla=parameters.get("b0_tesla"), volumes=volumes, while_reading=_warm_up
    )


_WARM_UP_MODULES = (
    "mrirecon.qsm.pipeline",
    "mrirecon.qsm.masking",
    "mrirecon.qsm.phase",
    "mrirecon.qsm.background",
    "mrirecon.qsm.inversion",
    "mrirecon.qsm.lcurve",
    "mrirecon.qsm.iterative",
    "scipy.ndimage",
    "scipy.spatial",
    "skimage.filters",
    "mrirecon.plot",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)


def _warm_up():
    """Import the modules a series needs after loading and start the FFT backend (once per process).

    Python imports of the pipeline, SciPy, pyfftw and matplotlib take about 2 s
    in a new process; run while the echoes are read (gzip inflation does not
    hold the GIL), they cost little of that. A module that fails to import is
    left to fail where it is used, with that step's message.
    """
    import importlib

    from . import fft

    for name in _WARM_UP_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    fft.preload()


def _describe(exc) -> str:
    """One line for a failure: the message of ours, else the exception and where it was raised."""
    if isinstance(exc, MriReconError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory"
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"


def _sweep_partial(out_dir, series) -> None:
    """Remove what a killed run left of a chunked series (its parts; the folder when empty)."""
    import shutil

    d = _partial_dir(out_dir, series)
    shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        d.parent.rmdir()


def _chunks(n_volumes, n_workers):
    """Volume ranges after the first: about two per worker, at least one volume each."""
    rest = n_volumes - 1
    size = max(1, -(-rest // (2 * max(1, n_workers))))
    return [(t, min(t + size, n_volumes)) for t in range(1, n_volumes, size)]


# --------------------------------------------------------------------------
# many series
# --------------------------------------------------------------------------
def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_engine(workers, scheduler):
    if workers is not None and scheduler is not None:
        raise InvalidParameterError("give --workers or --scheduler, not both")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidParameterError(f"--workers must be a positive integer, got {workers!r}")
    if workers is not None or scheduler is not None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise InvalidParameterError(
                "--workers/--scheduler need Dask: pip install 'mrirecon[cluster]' (dask[distributed])"
            ) from None


def run_cohort(
    series_list,
    out_dir,
    parameters: dict,
    *,
    workers=None,
    scheduler=None,
    dashboard=False,
    force=False,
    command=None,
    log=print,
    progress=True,
    timings=None,
):
    """Process every series; returns one :class:`SeriesResult` per series, in input order.

    Series whose outputs are complete (same fingerprint) are skipped; with
    ``force`` everything is recomputed. On SIGINT/SIGTERM (``KeyboardInterrupt``
    / :class:`mrirecon.io.atomic.Terminated`) the tasks still running are
    cancelled, the temporary files of the series being written are removed,
    and the exception is re-raised with ``.results`` attached (what finished).

    Parameters
    ----------
    series_list : list of mrirecon.io.bids.MegreSeries
    out_dir : path
    parameters : dict
        See :func:`process_series`.
    workers : int, optional
        Run on a local Dask cluster of this many worker processes.
    scheduler : str, optional
        Address (``tcp://host:8786``) or scheduler-file path of an existing Dask scheduler.
    dashboard : bool
        Start the local cluster's dashboard (on 127.0.0.1, a free port).
    force : bool
    command : str, optional
    log : callable
        Where the informational lines go (skipped series); finished series are
        reported on stdout, failures on stderr.
    progress : bool
        Show progress over series (:func:`mrirecon.progress.progress`).
    timings : dict, optional
        Filled with ``startup_s``: the time to start the local cluster and its
        workers (0 in process or on an existing scheduler).
    """
    _check_engine(workers, scheduler)
    out_dir = Path(out_dir)
    results = {}
    todo = []
    for s in series_list:
        st, why = status_of(out_dir, s, parameters)
        if st == "complete" and not force:
            results[s.stem] = SeriesResult(s.stem, "skipped", output=str(outputs_of(out_dir, s)[0]))
            log(f"{s.stem}: skipped (outputs up to date)")
        elif st in ("stale", "partial") and not force:
            results[s.stem] = SeriesResult(
                s.stem, "failed", error=f"{outputs_of(out_dir, s)[0].parent}: {why}; use --force to recompute"
            )
            print(f"{s.stem}: error: {results[s.stem].error}", file=sys.stderr, flush=True)
        else:
            todo.append(s)
    # temporaries that an earlier run left when it was killed outright
    from .io.atomic import sweep_temporaries

    for s in todo:
        sweep_temporaries(outputs_of(out_dir, s))
        _sweep_partial(out_dir, s)
    from .progress import progress as make_progress

    bar = make_progress(total=len(todo), desc="series", unit="series", disable=not progress or not todo)

    def finished(res):
        results[res.series] = res
        bar.update(1)
        if res.status == "done":
            bar.write(f"{res.series}: wrote {res.output} ({res.time_s:.1f} s)", file=sys.stdout)
        else:
            bar.write(f"{res.series}: error: {res.error}", file=sys.stderr)

    try:
        if workers is None and scheduler is None:
            for s in todo:
                finished(process_series(s, out_dir, parameters, force=force, command=command))
        else:
            startup = _run_dask(
                todo, out_dir, parameters, force, command, workers, scheduler, dashboard, finished
            )
            if timings is not None:
                timings["startup_s"] = startup
    except BaseException as exc:
        for s in todo:
            if s.stem not in results:
                sweep_temporaries(outputs_of(out_dir, s))
                _sweep_partial(out_dir, s)
                results[s.stem] = SeriesResult(s.stem, "interrupted")
        exc.results = [results[s.stem] for s in series_list]
        raise
    finally:
        bar.close()
    return [results[s.stem] for s in series_list]


def _run_dask(todo, out_dir, parameters, force, command, workers, scheduler, dashboard, finished):
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    startup = 0.0
    try:
        if scheduler is None:
            t0 = time.perf_counter()
            threads = max(1, _usable_cores() // workers)
            env = {
                "MRIRECON_FFT_THREADS": str(threads),
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "MRIRECON_PROGRESS": "off",
            }
            # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which hands freed
            # memory back to the system at once: every large array of the next step then
            # page-faults in anew (measured: a 192³ series 8.5 s in a worker against 5.7 s
            # without it, 5.4 s in process). One series at a time per worker needs no trimming.
            pre_spawn = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {})
            pre_spawn.pop("MALLOC_TRIM_THRESHOLD_", None)
            with dask.config.set(
                {
                    "distributed.scheduler.allowed-failures": 0,
                    "distributed.nanny.pre-spawn-environ": pre_spawn,
                }
            ):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0" if dashboard else None,
                    silence_logs=logging.ERROR,
                    env=env,
                )
            client = Client(cluster)
            client.wait_for_workers(workers)
            startup = time.perf_counter() - t0
            if dashboard:
                print(f"Dask dashboard: {client.dashboard_link}", flush=True)
        elif Path(scheduler).is_file():
            client = Client(scheduler_file=str(scheduler))
        else:
            client = Client(scheduler)
        with client:
            by_future = {}
            n_workers = max(1, len(client.scheduler_info().get("workers", {})))
            for s in todo:
                nt = _n_volumes(s) if n_workers > 1 else None
                if nt is None or nt < 3:  # one series, one task
                    fut = client.submit(
                        process_series, s, str(out_dir), parameters, force=force, command=command, pure=False
                    )
                else:  # a long series: its first volume, then runs of volumes on every worker, then one writer
                    args = (s, str(out_dir), parameters)
                    head = client.submit(_series_head, *args, pure=False)
                    parts = [
                        client.submit(_series_chunk, *args, head, v, pure=False)
                        for v in _chunks(nt, n_workers)
                    ]
                    fut = client.submit(_series_assemble, *args, head, parts, force, command, pure=False)
                by_future[fut] = s
            try:
                for fut in as_completed(list(by_future)):
                    s = by_future[fut]
                    try:
                        res = fut.result()
                    except Exception as exc:  # the task did not return: its worker died
                        name = type(exc).__name__
                        why = (
                            "its worker died (killed or out of memory)"
                            if "Killed" in name
                            else f"{name}: {exc}"
                        )
                        res = SeriesResult(s.stem, "failed", error=why)
                    finished(res)
            except BaseException:
                client.cancel(list(by_future), force=True)
                raise
    finally:
        if cluster is not None:
            cluster.close()
    return startup


# --------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------
def summary_table(results) -> str:
    """A plain-text table: series, status, time, output (or the error)."""
    rows = [("series", "status", "time (s)", "output")]
    for r in results:
        rows.append((r.series, r.status, f"{r.time_s:.1f}" if r.time_s else "–", r.output or r.error or ""))
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        f"{row[0]:<{width[0]}}  {row[1]:<{width[1]}}  {row[2]:>{width[2]}}  {row[3]}" for row in rows
    )


def write_report(out_dir, results, *, command=None, engine=None, started=None) -> Path:
    """Write ``OUT/logs/mrirecon-run-<UTC time>.json`` (atomically); returns its path."""
    from . import __version__
    from .io.nifti import write_json

    logs = Path(out_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started or time.time()))
    path = logs / f"mrirecon-run-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = logs / f"mrirecon-run-{stamp}-{n}.json"
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    doc = {
        "Command": command,
        "Version": __version__,
        "Engine": engine,
        "Started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)) if started else None,
        "Finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "Counts": counts,
        "Series": [asdict(r) for r in results],
    }
    return write_json(path, doc)
