"""The pipeline benchmark on the realistic head: multi-echo GRE to χ, against the oracle.

Measures, in one run on :func:`mrirecon.phantoms.realistic_head.realistic_head`:

* the oracle: closed-form L2 on the true local field (NRMSE-optimal λ of a sweep);
* the whole :func:`mrirecon.qsm.pipeline` with defaults, cold (first call in the
  process, empty FFTW cache directory) and warm (median of ``repeats``), per step,
  with the process's peak memory;
* the brain mask from the echoes: Dice and the share of mask voxels outside the brain;
* every background removal (SHARP, V-SHARP, RESHARP, LBV, PDF) with the true mask and
  with the echo mask: local-field NRMSE, χ NRMSE after the same inversion (the
  pipeline's automatic λ and the sweep's best λ), time;
* the automatic λ against the NRMSE-optimal λ of the sweep;
* the edge-weighted L2 inversion (``method="edge-l2"``) after the default background
  removal, with and without the true mask;
* the ceilings of background removal (the default and RESHARP on the true local field
  alone) and the same head without noise (SNR 10⁵, true mask, defaults): what noise
  costs and what is left without it.

``scripts/bench_pipeline.py`` and ``mrirecon bench pipeline`` call :func:`main`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import metrics, qsm
from .common import machine_line, write_results

__all__ = ["DESCRIPTION", "add_arguments", "main", "run"]

DESCRIPTION = """\
Realistic simulated 3-echo head (1 mm, 225x261x217 by default): oracle, whole
pipeline cold and warm, mask Dice, every background removal with the true and
the echo mask, automatic lambda against the NRMSE-optimal one.
"""

BACKGROUNDS = ("vsharp", "sharp", "resharp", "lbv", "pdf")
SWEEP = np.logspace(-3.5, -0.5, 13)
NOISE_FREE_SNR = 1e5  # the noise-free repeat of the benchmark head


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ``mrirecon run`` that reports its own peak resident memory at exit (VmHWM of its address space:
# getrusage(RUSAGE_CHILDREN) would give the benchmark's own RSS, which a child holds between fork
# and exec)
_RUN_REPORTING_PEAK = """
import atexit, sys

def _peak():
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return
    sys.stderr.write(f"\\nmrirecon-peak-kB {kb}\\n")

atexit.register(_peak)
from mrirecon.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _run_peak_mb(stderr: str):
    """The peak that :data:`_RUN_REPORTING_PEAK` wrote (MB), or None where /proc is not there."""
    kb = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("mrirecon-peak-kB ")]
    return kb[-1] / 1024.0 if kb else None


def _time_cli_run(d, repeats, log):
    """``mrirecon run`` on the head written as BIDS: a cold process (empty cache directory), then warm ones.

    Returns (cold_s, warm_s median, peak MB of the run processes, χ NRMSE of the written map).
    """
    import subprocess
    import sys

    from ..io import nifti

    root = Path(tempfile.mkdtemp(prefix="mrirecon-bench-run-"))
    anat = root / "bids" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    nifti.write_json(root / "bids" / "dataset_description.json", {"Name": "bench", "BIDSVersion": "1.9.0"})
    affine = np.diag([*d.voxel_size_mm, 1.0])
    for n, te in enumerate(d.te_s, start=1):
        for part, arr in (("mag", d.magnitude), ("phase", d.phase)):
            stem = anat / f"sub-01_echo-{n}_part-{part}_MEGRE"
            nifti.save_nifti(stem.with_suffix(".nii.gz"), arr[n - 1], affine)
            meta = {"EchoTime": float(te), "MagneticFieldStrength": float(d.b0_tesla)}
            nifti.write_json(
                stem.with_suffix(".json"), {**meta, **({"Units": "rad"} if part == "phase" else {})}
            )
    env = {**os.environ, "MRIRECON_CACHE_DIR": str(root / "cache")}
    cmd = [sys.executable, "-c", _RUN_REPORTING_PEAK, "run", str(root / "bids"), str(root / "out")]
    times, peaks = [], []
    for i in range(1 + repeats):
        t0 = time.perf_counter()
        done = subprocess.run(
            cmd + (["--force"] if i else []), env=env, check=True, capture_output=True, text=True
        )
        times.append(time.perf_counter() - t0)
        peaks.append(_run_peak_mb(done.stderr))
        log(f"mrirecon run ({'cold' if i == 0 else 'warm'}): {times[-1]:.1f} s")
    peak = max((v for v in peaks if v is not None), default=float("nan"))
    chi = nifti.load_nifti(root / "out" / "sub-01" / "anat" / "sub-01_Chimap.nii.gz").data
    err = metrics.nrmse(chi, d.chi, mask=d.mask)
    shutil.rmtree(root, ignore_errors=True)
    return times[0], statistics.median(times[1:]), peak, err


def _best(local, mask, d, ikw):
    errs = [
        metrics.nrmse(qsm.closed_form_l2(local, mask, lam=float(v), **ikw), d.chi, mask=d.mask) for v in SWEEP
    ]
    i = int(np.argmin(errs))
    return float(SWEEP[i]), float(errs[i])


def mask_figure(magnitude, brain_mask, true_mask, *, voxel_size_mm, title=None):
    """The echo-derived mask (red) and the true brain (cyan) over the first echo's magnitude.

    Axial, coronal and sagittal slices through the centre; returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    from ..device import to_numpy

    mag, m, t = (to_numpy(a) for a in (magnitude, brain_mask, true_mask))
    c = [n // 2 for n in mag.shape]
    cuts = [
        (mag[:, :, c[2]], m[:, :, c[2]], t[:, :, c[2]], (0, 1)),
        (mag[:, c[1], :], m[:, c[1], :], t[:, c[1], :], (0, 2)),
        (mag[c[0], :, :], m[c[0], :, :], t[c[0], :, :], (1, 2)),
    ]
    fig = Figure(figsize=(12, 4.4))
    vmax = float(np.percentile(mag, 99.5))
    for i, (img, mk, tr, (a, b)) in enumerate(cuts):
        ax = fig.add_subplot(1, 3, i + 1)
        # first index horizontal, second vertical (x-y, x-z, y-z), in mm proportions
        aspect = voxel_size_mm[b] / voxel_size_mm[a]
        ax.imshow(img.T, cmap="gray", vmin=0, vmax=vmax, origin="lower", aspect=aspect)
        ax.contour(tr.T.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.contour(mk.T.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_axis_off()
        ax.set_title(("axial", "coronal", "sagittal")[i])
    fig.suptitle(title or "brain mask from the echoes (red) and the true brain (cyan) over the magnitude")
    return fig


def chi_figure(truth, oracle, chi, mask, *, voxel_size_mm, title=None):
    """Truth, oracle, pipeline χ and its error (ppm) on one row of slices each."""
    from ..plot import orthoslices

    return orthoslices(
        [truth * mask, oracle * mask, chi * mask, (chi - truth) * mask],
        titles=["truth", "oracle", "pipeline", "pipeline − truth"],
        voxel_size_mm=voxel_size_mm,
        window=(-0.1, 0.1),
        suptitle=title,
    )


def run(*, shape=(225, 261, 217), seed=0, repeats=2, out=None, backgrounds=BACKGROUNDS, log=print) -> dict:
    """Run the benchmark; returns a JSON-able dict (also written to ``out``).

    Unless ``MRIRECON_CACHE_DIR`` is set, the run uses a new, empty cache directory (a cold
    start: no FFTW wisdom on disk), removed afterwards with the variable.
    """
    with _cold_cache():
        return _run(shape=shape, seed=seed, repeats=repeats, out=out, backgrounds=backgrounds, log=log)


@contextlib.contextmanager
def _cold_cache():
    """An empty ``MRIRECON_CACHE_DIR`` for the block (unless the caller set one); removed after it."""
    if os.environ.get("MRIRECON_CACHE_DIR"):
        yield
        return
    cache = tempfile.mkdtemp(prefix="mrirecon-cold-")
    os.environ["MRIRECON_CACHE_DIR"] = cache
    try:
        yield
    finally:
        os.environ.pop("MRIRECON_CACHE_DIR", None)
        shutil.rmtree(cache, ignore_errors=True)


def _run(*, shape, seed, repeats, out, backgrounds, log) -> dict:
    from ..phantoms.realistic_head import realistic_head

    t0 = time.perf_counter()
    d = realistic_head(tuple(shape), seed=seed)
    t_sim = time.perf_counter() - t0
    vox = d.voxel_size_mm
    log(
        f"# pipeline benchmark: realistic head {tuple(shape)}, {vox[0]:.2f} mm, seed {seed}, "
        f"TE {d.te_s} s, {d.b0_tesla} T (simulated in {t_sim:.1f} s)\n# {machine_line()}"
    )
    kw = {"b0_tesla": d.b0_tesla, "voxel_size_mm": vox, "b0_dir": d.b0_dir}
    ikw = {"voxel_size_mm": vox, "b0_dir": d.b0_dir}

    # whole pipeline with defaults, no mask: cold then warm
    t0 = time.perf_counter()
    res = qsm.pipeline(d.magnitude, d.phase, d.te_s, **kw)
    cold = time.perf_counter() - t0
    cold_steps = dict(res.timings_s)
    warm_runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = qsm.pipeline(d.magnitude, d.phase, d.te_s, **kw)
        warm_runs.append((time.perf_counter() - t0, res.timings_s))
    warm = statistics.median(r[0] for r in warm_runs)
    warm_steps = {k: statistics.median(r[1][k] for r in warm_runs) for k in warm_runs[0][1]}
    peak = _peak_mb()
    m, t = res.brain_mask, d.mask
    dice = float(2 * (m & t).sum() / (m.sum() + t.sum()))
    outside = float(100 * (m & ~t).sum() / m.sum())

    oracle_lam, oracle = _best(d.local_field_ppm, d.mask, d, ikw)
    chi_default = res.chi
    log(f"oracle (closed form on the true local field): NRMSE {oracle:.1f} % at λ {oracle_lam:.3g}")
    # the ceiling of background removal: the default method on the true local field alone (no
    # background, no noise, true mask, rim filled as the pipeline does), best λ
    bg_mod = qsm.background
    radius = bg_mod.default_resharp_radius_mm(vox)
    r0 = bg_mod.resharp(d.local_field_ppm, d.mask, voxel_size_mm=vox, radius_mm=radius)
    own = bg_mod.fill_rim(r0.local_field, r0.mask, d.mask, voxel_size_mm=vox)
    ceiling_mask_lam, ceiling_mask = _best(own, d.mask, d, ikw)
    # as the pipeline does it: on the mask plus the reliable voxels within the margin (the RESHARP
    # radius) outside it, where the true local field is the brain's field there (not masked)
    from ..phantoms.head import simulate_field
    from ..qsm import masking
    from ..qsm.pipeline import _ERODING, background_defaults

    reliable = masking.reliable_phase(d.magnitude, d.phase, d.te_s)
    shell = masking.reliable_shell(d.mask, reliable, margin_mm=radius, voxel_size_mm=vox)
    brain_chi = np.where(d.mask, d.chi - np.float32(d.chi[d.mask].mean()), 0).astype(np.float32)
    field = simulate_field(brain_chi, voxel_size_mm=vox, b0_dir=d.b0_dir, supersample=2)
    del r0

    def on_true_field(method, field):  # the pipeline's options, on the mask and shell (no noise: W = 1)
        opts = background_defaults(method, voxel_size_mm=vox, b0_dir=d.b0_dir)
        r = getattr(bg_mod, method)(field, d.mask | shell, voxel_size_mm=vox, **opts)
        if method in _ERODING:  # the rim filled as the pipeline does
            return bg_mod.fill_rim(r.local_field, r.mask, d.mask, voxel_size_mm=vox)
        return r.local_field * d.mask

    ceiling_resharp_lam, ceiling_resharp = _best(on_true_field("resharp", field), d.mask, d, ikw)
    log(
        f"RESHARP on the true local field alone: χ NRMSE {ceiling_resharp:.1f} % = "
        f"{ceiling_resharp / oracle:.2f}× the oracle (on the mask alone, without the margin: "
        f"{ceiling_mask:.1f} % = {ceiling_mask / oracle:.2f}×)"
    )
    default_bg = qsm.DEFAULT_BACKGROUND
    if default_bg == "resharp":
        ceiling_lam, ceiling = ceiling_resharp_lam, ceiling_resharp
    else:
        ceiling_lam, ceiling = _best(on_true_field(default_bg, field), d.mask, d, ikw)
        log(
            f"{default_bg} (the default) on the true local field alone: χ NRMSE {ceiling:.1f} % = "
            f"{ceiling / oracle:.2f}× the oracle"
        )
    del field, own
    # the noise's share of the gap: the same head and echoes without noise (SNR 10⁵), true mask
    quiet = realistic_head(tuple(shape), seed=seed, snr=NOISE_FREE_SNR)
    rq = qsm.pipeline(quiet.magnitude, quiet.phase, quiet.te_s, mask=quiet.mask, **kw)
    noise_free = metrics.nrmse(rq.chi, d.chi, mask=d.mask)
    noise_free_lam, noise_free_best = _best(rq.local_field_ppm, rq.mask, d, ikw)
    del quiet, rq
    log(
        f"noise-free echoes (SNR {NOISE_FREE_SNR:g}), true mask, defaults: χ NRMSE {noise_free:.1f} % = "
        f"{noise_free / oracle:.2f}× the oracle (best λ {noise_free_lam:.3g}: {noise_free_best:.1f} %)"
    )
    run_cold, run_warm, run_peak, run_err = _time_cli_run(d, repeats, log)
    rows = []
    if default_bg not in backgrounds:  # the ratios below are the default's
        backgrounds = (*backgrounds, default_bg)
    for mask_case in ("true", "echoes"):
        for b in backgrounds:
            t0 = time.perf_counter()
            r = qsm.pipeline(
                d.magnitude, d.phase, d.te_s, mask=d.mask if mask_case == "true" else None, background=b, **kw
            )
            total_s = time.perf_counter() - t0
            chi_err = metrics.nrmse(r.chi, d.chi, mask=d.mask)
            local_err = metrics.nrmse(r.local_field_ppm * d.mask, d.local_field_ppm, mask=d.mask)
            best_lam, best_err = _best(r.local_field_ppm, r.mask, d, ikw)
            row = {
                "mask": mask_case,
                "background": b,
                "local_nrmse": local_err,
                "chi_nrmse": chi_err,
                "ratio_to_oracle": chi_err / oracle,
                "lam": r.params["Inversion"]["lam"],
                "lam_selection": r.params["Inversion"]["lam_selection"],
                "best_lam": best_lam,
                "best_chi_nrmse": best_err,
                "background_s": r.timings_s["background removal"],
                "total_s": total_s,
            }
            rows.append(row)
            log(
                f"{mask_case:6s} {b:8s} local {local_err:6.1f} %  χ {chi_err:6.1f} % ({chi_err / oracle:.2f}× oracle)"
                f"  λ {row['lam']:.3g} (best {best_lam:.3g}: {best_err:.1f} %)  bg {row['background_s']:.2f} s"
            )
    ratio_no_mask = next(
        r["ratio_to_oracle"] for r in rows if r["mask"] == "echoes" and r["background"] == default_bg
    )
    ratio_true = next(
        r["ratio_to_oracle"] for r in rows if r["mask"] == "true" and r["background"] == default_bg
    )
    # the edge-weighted L2 inversion (CG) after the default background removal, at the same GCV λ
    edge = {}
    for mask_case in ("echoes", "true"):
        t0 = time.perf_counter()
        r = qsm.pipeline(
            d.magnitude, d.phase, d.te_s, mask=d.mask if mask_case == "true" else None, method="edge-l2", **kw
        )
        err = metrics.nrmse(r.chi, d.chi, mask=d.mask)
        edge[mask_case] = {
            "chi_nrmse": err,
            "ratio_to_oracle": err / oracle,
            "lam": r.params["Inversion"]["lam"],
            "iterations": r.params["Inversion"]["iterations"],
            "inversion_s": r.timings_s["dipole inversion"],
            "total_s": time.perf_counter() - t0,
        }
        log(
            f"{mask_case:6s} {default_bg} + edge-l2: χ {err:6.1f} % ({err / oracle:.2f}× oracle), "
            f"{edge[mask_case]['iterations']} CG iterations, inversion {edge[mask_case]['inversion_s']:.1f} s"
        )
    lines = [
        f"**Realistic head {tuple(shape)} ({vox[0]:.2f} mm), seed {seed}: defaults ({default_bg}, λ auto)**",
        "",
        f"- oracle (closed form on the true local field, best λ {oracle_lam:.3g}): χ NRMSE {oracle:.1f} %",
        f"- no mask supplied: χ NRMSE / oracle = **{ratio_no_mask:.2f}** (target ≤ 1.6)",
        f"- true mask supplied: χ NRMSE / oracle = **{ratio_true:.2f}** (target ≤ 1.5)",
        f"- mask from the echoes: Dice {dice:.3f} (target ≥ 0.95), {outside:.1f} % of mask voxels outside the brain (target ≤ 3 %)",
        f"- ceiling of background removal: the default ({default_bg}) on the true local field alone (no "
        f"background, no noise, true mask plus its reliable voxels within {radius:g} mm, best λ): χ NRMSE "
        f"{ceiling:.1f} % = {ceiling / oracle:.2f}× the oracle; RESHARP's (rim filled): {ceiling_resharp:.1f} % = "
        f"{ceiling_resharp / oracle:.2f}× (on the mask alone: {ceiling_mask:.1f} % = {ceiling_mask / oracle:.2f}×)",
        f"- the same head without noise (SNR {NOISE_FREE_SNR:g}), true mask, defaults: χ NRMSE {noise_free:.1f} % = "
        f"{noise_free / oracle:.2f}× the oracle (λ auto; best λ {noise_free_best:.1f} %): what is left of the gap "
        "without noise",
        f"- `--method edge-l2` (no penalty across the magnitude's edges, CG; same λ): χ NRMSE / oracle "
        f"{edge['echoes']['ratio_to_oracle']:.2f} (no mask) and {edge['true']['ratio_to_oracle']:.2f} (true mask), "
        f"{edge['echoes']['chi_nrmse']:.1f} / {edge['true']['chi_nrmse']:.1f} %; its inversion "
        f"{edge['echoes']['inversion_s']:.1f} s ({edge['echoes']['iterations']} iterations)",
        f"- whole `qsm.pipeline` in process: {cold:.1f} s cold (first call, empty wisdom cache), {warm:.1f} s warm "
        f"(median of {repeats}); peak memory {peak:.0f} MB",
        f"- whole `mrirecon run` (new process, reading and writing NIfTI): {run_cold:.1f} s cold (empty cache "
        f"directory; target ≤ 15), {run_warm:.1f} s warm (median of {repeats}; target ≤ 8); peak {run_peak:.0f} MB; "
        f"its χ NRMSE {run_err:.1f} %",
        "",
        "| step | cold (s) | warm (s) |",
        "|---|---:|---:|",
        *[f"| {k} | {cold_steps[k]:.2f} | {warm_steps[k]:.2f} |" for k in warm_steps],
        "",
        "| mask | background | local-field NRMSE (%) | χ NRMSE (%) | × oracle | λ auto | best λ (χ NRMSE) | background (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {r['mask']} | {r['background']} | {r['local_nrmse']:.1f} | {r['chi_nrmse']:.1f} | {r['ratio_to_oracle']:.2f} | "
            f"{r['lam']:.3g} | {r['best_lam']:.3g} ({r['best_chi_nrmse']:.1f}) | {r['background_s']:.2f} |"
            for r in rows
        ],
    ]
    text = "\n".join(lines) + "\n"
    log(text)
    doc = {
        "shape": list(shape),
        "seed": seed,
        "voxel_size_mm": list(vox),
        "oracle_nrmse": oracle,
        "oracle_lam": oracle_lam,
        "ceiling_nrmse": ceiling,
        "ceiling_lam": ceiling_lam,
        "ceiling_method": default_bg,
        "ceiling_resharp_nrmse": ceiling_resharp,
        "ceiling_resharp_lam": ceiling_resharp_lam,
        "ceiling_mask_only_nrmse": ceiling_mask,
        "ceiling_mask_only_lam": ceiling_mask_lam,
        "edge_l2": edge,
        "noise_free_nrmse": noise_free,
        "noise_free_best_nrmse": noise_free_best,
        "noise_free_best_lam": noise_free_lam,
        "run_cold_s": run_cold,
        "run_warm_s": run_warm,
        "run_peak_mb": run_peak,
        "run_chi_nrmse": run_err,
        "ratio_no_mask": ratio_no_mask,
        "ratio_true_mask": ratio_true,
        "dice": dice,
        "outside_percent": outside,
        "cold_s": cold,
        "warm_s": warm,
        "cold_steps_s": cold_steps,
        "steps_s": warm_steps,
        "peak_mb": peak,
        "rows": rows,
    }
    if out is not None:
        from ..plot import save_figure

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        save_figure(
            mask_figure(
                d.magnitude[0],
                m,
                t,
                voxel_size_mm=vox,
                title=f"mask from the echoes (red; Dice {dice:.3f}, {outside:.1f} % outside) and the true brain (cyan)",
            ),
            out / "qsm_mask.png",
            force=True,
        )
        chi_oracle = qsm.closed_form_l2(d.local_field_ppm, d.mask, lam=oracle_lam, **ikw)
        save_figure(
            chi_figure(
                d.chi,
                chi_oracle,
                chi_default,
                d.mask,
                voxel_size_mm=vox,
                title=f"defaults, no mask given: χ NRMSE {ratio_no_mask * oracle:.1f} % (oracle {oracle:.1f} %)",
            ),
            out / "pipeline_chi.png",
            force=True,
        )
        write_results(out, "pipeline_results", doc, text)
    return doc


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench pipeline`` and ``scripts/bench_pipeline.py``)."""
    p.add_argument(
        "--shape", type=int, nargs=3, default=(225, 261, 217), help="grid (default 225 261 217: 1 mm)"
    )
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise of the simulated head")
    p.add_argument("--repeats", type=int, default=2, help="warm runs of the whole pipeline (median)")
    p.add_argument("--out", default="bench_out/pipeline", help="output directory")
    p.add_argument(
        "--backgrounds",
        nargs="+",
        choices=BACKGROUNDS,
        default=BACKGROUNDS,
        help="background removals of the per-method table (default: all; PDF is the slow one)",
    )


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    run(
        shape=tuple(args.shape),
        seed=args.seed,
        repeats=args.repeats,
        out=args.out,
        backgrounds=tuple(args.backgrounds),
    )
    return 0
