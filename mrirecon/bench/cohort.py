"""The cohort benchmark: ``mrirecon run`` over a simulated cohort in process and on Dask, and a 4-D series.

1. A simulated multi-echo GRE head (3 echoes) is written once as BIDS and copied
   to ``--subjects`` subjects. The whole cohort then runs three ways, in one
   process each time with a fresh output directory: in process, on a local
   Dask cluster of 1 worker (all cores' FFT threads: the same work as in
   process, so the difference is Dask's scheduling overhead) and of 2 workers
   (one FFT thread each). Reported: wall time, subjects per minute, the
   cluster's start-up (until its workers are up),
   the overhead per series against in process with the start-up taken out
   (absolute and as a share of the in-process series' median time), and the
   series times as the engines measured them. A warm-up series runs first,
   so FFTW's plans for the grid are in the wisdom on disk for every engine.
2. A 4-D local-field series (``--volumes`` volumes at ``--series-size``³, 2 mm
   by default) inverted by :func:`mrirecon.qsm.closed_form_l2` in one call:
   time per volume against the median single-volume closed form on the same
   grid (warm), and the first (cold) call of each.

Nothing is asserted: the machine may be shared and noisy.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import machine_info, machine_line, markdown_table, median_time, write_results

DESCRIPTION = (
    __doc__
    + """
example:
  mrirecon bench cohort                               # 8 subjects at 192^3 (1 mm), 100 volumes at 96^3
  mrirecon bench cohort --size 64 --subjects 4 --volumes 10 --series-size 48 --out /tmp/bc
"""
)

__all__ = ["run"]


def _cohort(root: Path, size: int, subjects: int) -> None:
    from ..io import bids
    from ..phantoms import simulate_megre

    data = simulate_megre((size, size, size), seed=0)
    bids.write_megre_dataset(root, "01", data, write_mask=True)
    src = root / "sub-01"
    for i in range(2, subjects + 1):
        dst = root / f"sub-{i:02d}"
        shutil.copytree(src, dst)
        for p in sorted(dst.rglob("sub-01_*")):
            p.rename(p.with_name(p.name.replace("sub-01_", f"sub-{i:02d}_")))


def _engine_run(root, out, parameters, workers):
    from .. import cohort
    from ..io import bids

    series = bids.find_series(root)
    timings = {}
    t0 = time.perf_counter()
    results = cohort.run_cohort(
        series, out, parameters, workers=workers, progress=False, log=lambda _: None, timings=timings
    )
    wall = time.perf_counter() - t0
    bad = [r for r in results if r.status != "done"]
    if bad:
        raise RuntimeError(f"cohort benchmark: {bad[0].series} {bad[0].status}: {bad[0].error}")
    return wall, [r.time_s for r in results], timings.get("startup_s", 0.0)


def _series_4d(size, volumes, repeats, log):
    from .. import qsm
    from ..phantoms import head_phantom, simulate_field

    ph = head_phantom((size, size, size))
    field = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask, noise_ppm=0.003, seed=0)
    kw = {"voxel_size_mm": ph.voxel_size_mm, "lam": 0.01}
    t0 = time.perf_counter()
    qsm.closed_form_l2(field, ph.mask, **kw)
    cold_single = time.perf_counter() - t0
    single = median_time(lambda: qsm.closed_form_l2(field, ph.mask, **kw), repeats).median_s
    rng = np.random.default_rng(1)
    vols = np.empty((*field.shape, volumes), dtype=np.float32)
    for t in range(volumes):
        vols[..., t] = field * (1 + 0.01 * rng.standard_normal())
    series_times = [
        median_time(lambda: qsm.closed_form_l2(vols, ph.mask, **kw), 1).median_s for _ in range(2)
    ]
    per_volume = min(series_times) / volumes
    log(
        f"4-D series {size}^3 x {volumes}: {min(series_times):.2f} s, {1e3 * per_volume:.1f} ms per volume; "
        f"single volume {1e3 * single:.1f} ms (cold {1e3 * cold_single:.0f} ms): "
        f"ratio {per_volume / single:.2f}"
    )
    return {
        "size": size,
        "volumes": volumes,
        "voxel_size_mm": ph.voxel_size_mm,
        "series_s": series_times,
        "per_volume_s": per_volume,
        "single_volume_s": single,
        "single_volume_cold_s": cold_single,
        "ratio": per_volume / single,
    }


def run(
    *, size=192, subjects=8, volumes=100, series_size=96, repeats=5, workers=(1, 2), out=None, log=print
) -> dict:
    """Run the benchmark; returns the results (and writes JSON + Markdown into ``out``).

    ``workers``: the local-cluster sizes to run besides the in-process baseline.
    """
    info = machine_info()
    log(f"# cohort benchmark: {subjects} subjects at {size}^3, 3 echoes\n# {machine_line(info)}")
    parameters = {"b0_tesla": None, "device": "cpu", "pipeline": {}}  # the pipeline's defaults
    rows = {}
    with tempfile.TemporaryDirectory(prefix="mrirecon-bench-cohort-") as tmp:
        root = Path(tmp) / "bids"
        t0 = time.perf_counter()
        _cohort(root, size, subjects)
        log(f"simulated and wrote the cohort in {time.perf_counter() - t0:.1f} s")
        # one warm-up series, so that FFTW's planning of this grid is in the wisdom on disk for every engine
        from .. import cohort
        from ..io import bids

        first = bids.find_series(root)[:1]
        cohort.run_cohort(first, Path(tmp) / "warm-up", parameters, progress=False, log=lambda _: None)
        engines = [("in process", None)] + [(f"Dask, {n} worker{'s' if n > 1 else ''}", n) for n in workers]
        for name, n_workers in engines:
            wall, times, startup = _engine_run(
                root, Path(tmp) / name.replace(" ", "_").replace(",", ""), parameters, n_workers
            )
            rows[name] = {"wall_s": wall, "series_s": times, "median_series_s": statistics.median(times)}
            rows[name]["startup_s"] = startup
            log(f"{name}: {wall:.1f} s for {subjects} series ({60 * subjects / wall:.1f} subjects/min)")
    base = rows["in process"]
    per_series = base["median_series_s"]
    table_rows = []
    for name, r in rows.items():
        overhead = (r["wall_s"] - r["startup_s"] - base["wall_s"]) / subjects
        r["overhead_per_series_s"] = overhead
        r["overhead_fraction"] = overhead / per_series
        table_rows.append(
            [
                name,
                f"{r['wall_s']:.1f}",
                f"{60 * subjects / r['wall_s']:.1f}",
                f"{r['median_series_s']:.2f}",
                "–" if name == "in process" else f"{r['startup_s']:.1f}",
                "–" if name == "in process" else f"{overhead:+.2f} ({100 * r['overhead_fraction']:+.1f} %)",
            ]
        )
    series4d = _series_4d(series_size, volumes, repeats, log)
    table = markdown_table(
        [
            "engine",
            "wall (s)",
            "subjects / min",
            "median series (s)",
            "cluster start-up (s)",
            "overhead per series, start-up excluded (s)",
        ],
        table_rows,
    )
    table4d = markdown_table(
        [
            "4-D series",
            "total (s)",
            "per volume (ms)",
            "single volume, warm (ms)",
            "single, cold (ms)",
            "ratio",
        ],
        [
            [
                f"{series_size}³ × {volumes}",
                f"{min(series4d['series_s']):.2f}",
                f"{1e3 * series4d['per_volume_s']:.1f}",
                f"{1e3 * series4d['single_volume_s']:.1f}",
                f"{1e3 * series4d['single_volume_cold_s']:.0f}",
                f"{series4d['ratio']:.2f}",
            ]
        ],
    )
    text = (
        f"**{subjects} subjects, {size}³, 3 echoes, the pipeline's defaults**\n\n{table}\n\n"
        f"**4-D local-field series, closed-form L2 (λ 0.01), one call**\n\n{table4d}\n"
    )
    log("\n" + text)
    doc = {"machine": info, "size": size, "subjects": subjects, "engines": rows, "series_4d": series4d}
    if out is not None:
        out = write_results(out, "cohort_results", doc, text)
    return doc


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench cohort`` and ``scripts/bench_cohort.py``)."""
    p.add_argument("--size", type=int, default=192, help="grid edge of each subject (default 192: 1 mm)")
    p.add_argument("--subjects", type=int, default=8, help="subjects in the cohort (default 8)")
    p.add_argument("--volumes", type=int, default=100, help="volumes of the 4-D series (default 100)")
    p.add_argument(
        "--series-size", type=int, default=96, help="grid edge of the 4-D series (default 96: 2 mm)"
    )
    p.add_argument("--repeats", type=int, default=5, help="timed single-volume calls (median)")
    p.add_argument("--out", default="bench_out/cohort", help="output directory")


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    from ..errors import InvalidParameterError

    if args.subjects < 1 or args.volumes < 1 or args.size < 16 or args.series_size < 16:
        raise InvalidParameterError("--subjects and --volumes must be >= 1, --size/--series-size >= 16")
    run(
        size=args.size,
        subjects=args.subjects,
        volumes=args.volumes,
        series_size=args.series_size,
        repeats=args.repeats,
        out=args.out,
    )
    return 0
