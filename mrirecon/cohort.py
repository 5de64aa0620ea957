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
    except MriReconError as exc:
        return SeriesResult(series.stem, "failed", time.perf_counter() - t0, error=str(exc))
    except MemoryError:
        return SeriesResult(series.stem, "failed", time.perf_counter() - t0, error="out of memory")
    except Exception as exc:  # a bug or an unexpected library error: report it, keep the others going
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return SeriesResult(
            series.stem,
            "failed",
            time.perf_counter() - t0,
            error=f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})",
        )


def _process(series, out_dir, parameters, force, command, step_callback, t0):
    from . import device, io, qsm
    from .io import bids

    loaded = bids.load_series(series, b0_tesla=parameters.get("b0_tesla"))
    if step_callback:
        step_callback("load")
    gpu = parameters.get("device", "cpu") == "gpu"

    def dev(a):
        return device.to_device(a, "gpu") if gpu and a is not None else a

    result = qsm.pipeline(
        dev(loaded["magnitude"]),
        dev(loaded["phase"]),
        loaded["te_s"],
        b0_tesla=loaded["b0_tesla"],
        voxel_size_mm=loaded["voxel_size_mm"],
        b0_dir=io.b0_direction_from_affine(loaded["affine"]),
        phase_units=loaded["phase_units"],
        mask=dev(loaded["mask"]),
        step_callback=step_callback,
        **parameters.get("pipeline", {}),
    )
    for name in ("chi", "local_field_ppm", "total_field_hz", "mask", "brain_mask"):
        value = getattr(result, name, None)
        if value is not None:
            setattr(result, name, device.to_numpy(value))  # one copy out
    result.params["Device"] = parameters.get("device_name", parameters.get("device", "cpu"))
    extra = {
        "Command": command,
        "MaskFile": str(series.mask) if series.mask else None,
        "RunFingerprint": fingerprint(series, parameters),
    }
    paths = bids.write_outputs(out_dir, series, result, loaded, force=force, extra=extra)
    if step_callback:
        step_callback("write")
    return SeriesResult(series.stem, "done", time.perf_counter() - t0, output=str(paths["chi"]))


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
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
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
            for s in todo:
                fut = client.submit(
                    process_series, s, str(out_dir), parameters, force=force, command=command, pure=False
                )
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
