"""The SENSE benchmark: closed-form unfolding against CG-SENSE, L1-wavelet, SigPy and BART.

On a brain-like slice (:func:`mrirecon.phantoms.brain_slice`) with simulated
coils, uniform undersampling plus a calibration block and complex noise, every
method at its best λ from a sweep (NRMSE of the complex image inside the head);
times in one process: one slice with maps not seen before, a cache hit, and a
multi-slice volume (BART as one ``pics`` command on the whole volume, so its
start-up is amortised). ``scripts/bench_sense.py`` calls :func:`run`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import io
from ..fft import fftc
from ..phantoms import brain_slice
from ..sense import coils, iterative, recon, sampling
from ..sense.unfold import SenseUnfolder, gfactor
from .common import machine_info, machine_line, median_time

__all__ = ["run"]

L2_LAMS = (0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
L1_LAMS = (1e-4, 3e-4, 1e-3, 3e-3)


def _sigpy_recon(y, sens, mask, lam, max_iter):
    import sigpy.mri

    return sigpy.mri.app.SenseRecon(
        y, sens, lamda=lam, weights=mask.astype(np.float32), max_iter=max_iter, show_pbar=False
    ).run()


def _bart_volume(ys, sens, lam, max_iter, workdir):
    """BART ``pics -l2`` on a stack of slices in one command (slices decoupled through an FFT along PHS2)."""
    # ours (slice, coil, phs1, read) -> BART (read, phs1, slice→phs2, coil); the stack is put in
    # k-space along PHS2 by a unitary centred FFT, so BART's 3-D FFT leaves the slices decoupled
    k = np.transpose(np.asarray(ys), (3, 2, 0, 1))
    k = fftc(k, axes=(2,))
    s = np.transpose(np.broadcast_to(sens, (len(ys), *sens.shape)), (3, 2, 0, 1))
    io.write_cfl(workdir / "k", k, force=True)
    io.write_cfl(workdir / "s", np.ascontiguousarray(s), force=True)
    cmd = ["bart", "pics", "-d0", "-w", "1", "-l2", "-r", f"{lam:g}", "-i", str(max_iter)]
    cmd += [str(workdir / "k"), str(workdir / "s"), str(workdir / "x")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    t = time.perf_counter() - t0
    x = io.read_cfl(workdir / "x")
    x = x.reshape(x.shape[:3])  # (read, phs1, slice)
    return t, np.transpose(x, (2, 1, 0))  # (slice, phs1, read)


def _one_coil_count(
    nc, *, img, obj, size, accel, acs, noise, slices, repeats, have_sigpy, have_bart, err, log
):
    """All methods for one coil count; returns (results, images for the figure)."""
    figures = {}
    sens = coils.simulate_coil_maps((size, size), nc).astype(np.complex64)
    mask = sampling.uniform_mask((size, size), accel, acs=acs)
    rng = np.random.default_rng(0)

    def acquire(seed_rng, sens=sens, mask=mask):
        k = fftc(sens * img, axes=(-2, -1))
        sigma = noise * np.abs(k).max()
        k = k + sigma / np.sqrt(2) * (
            seed_rng.standard_normal(k.shape) + 1j * seed_rng.standard_normal(k.shape)
        )
        return (k * mask).astype(np.complex64)

    y = acquire(rng)
    r = {"methods": {}}
    log(f"\n## {nc} coils")

    def sweep(name, fn, lams):
        errs = [err(fn(lam)) for lam in lams]
        best = lams[int(np.argmin(errs))]
        r.setdefault("sweeps", {})[name] = {"lams": list(lams), "nrmse": errs, "best": best}
        return best

    lam_unfold = sweep("unfold+ACS", lambda lam: recon.sense(y, sens, lam=lam, accel=accel), L2_LAMS)
    lam_lattice = sweep("unfold", lambda lam: recon.sense(y, sens, lam=lam, accel=accel, acs_iter=0), L2_LAMS)
    lam_cg = sweep("CG-SENSE", lambda lam: iterative.cg_sense(y, sens, lam=lam, max_iter=30), L2_LAMS)
    acs_study = {
        it: err(recon.sense(y, sens, lam=lam_unfold, accel=accel, acs_iter=it))
        for it in (0, 1, 2, 3, 5, 10, 30)
    }
    r["acs_iterations_nrmse"] = acs_study
    log(
        "unfold + n CG iterations on all lines: " + ", ".join(f"{k}: {v:.2f} %" for k, v in acs_study.items())
    )

    def new_maps(s=sens):
        return s.copy()  # a writable copy: the unfolder cache does not apply (maps not seen before)

    def record(name, t, x, lam, **extra):
        r["methods"][name] = {"time_s": t, "nrmse": err(x), "lam": lam, **extra}
        figures.setdefault(nc, {})[name] = x
        log(f"{name}: {t:.4f} s per slice, NRMSE {err(x):.2f} % (λ {lam:g})")

    t, _, x = median_time(
        lambda: recon.sense(y, new_maps(), lam=lam_lattice, accel=accel, acs_iter=0), repeats
    )
    record("closed-form unfold (lattice lines only)", t, x, lam_lattice)
    t, _, x = median_time(lambda: recon.sense(y, new_maps(), lam=lam_unfold, accel=accel), repeats)
    record("closed-form unfold + ACS (5 PCG it.), new maps", t, x, lam_unfold)
    unf = SenseUnfolder(sens, accel, lam=lam_unfold)
    t, _, _ = median_time(lambda: unf(y), repeats)
    r["methods"]["closed-form unfold, cached unfolder (lattice only)"] = {
        "time_s": t,
        "nrmse": err(unf(y)),
        "lam": lam_unfold,
    }
    log(f"cached unfolder: {t:.4f} s per slice")
    t, _, x = median_time(lambda: iterative.cg_sense(y, sens, lam=lam_cg, max_iter=30), repeats)
    record("CG-SENSE (mrirecon, 30 it.)", t, x, lam_cg)
    lam_l1 = sweep("L1-wavelet", lambda lam: iterative.l1_wavelet(y, sens, lam=lam, max_iter=100), L1_LAMS)
    t, _, x = median_time(lambda: iterative.l1_wavelet(y, sens, lam=lam_l1, max_iter=100), 1)
    record("L1-wavelet (FISTA, 100 it.)", t, x, lam_l1)
    if have_sigpy:
        lam_sp = sweep("SigPy SenseRecon", lambda lam: _sigpy_recon(y, sens, mask, lam, 30), L2_LAMS)
        t, _, x = median_time(lambda: _sigpy_recon(y, sens, mask, lam_sp, 30), repeats)
        record("SigPy SenseRecon (30 it.)", t, x, lam_sp)

    # a multi-slice volume: every slice with its own noise, maps new to every method
    ys = [acquire(np.random.default_rng(100 + s)) for s in range(slices)]
    vol = {}
    t0 = time.perf_counter()
    for ys_ in ys:
        recon.sense(ys_, new_maps(), lam=lam_unfold, accel=accel)
    vol["closed-form unfold + ACS"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ys_ in ys:
        iterative.cg_sense(ys_, sens, lam=lam_cg, max_iter=30)
    vol["CG-SENSE (mrirecon, 30 it.)"] = time.perf_counter() - t0
    if have_sigpy:
        t0 = time.perf_counter()
        for ys_ in ys:
            _sigpy_recon(ys_, sens, mask, r["sweeps"]["SigPy SenseRecon"]["best"], 30)
        vol["SigPy SenseRecon (30 it.)"] = time.perf_counter() - t0
    if have_bart:
        with tempfile.TemporaryDirectory() as tmp:
            tmpd = Path(tmp)
            bart_errs = []
            for lam in L2_LAMS:
                _, xb = _bart_volume(ys[:1], sens, lam, 30, tmpd)
                bart_errs.append(err(xb[0]))
            lam_b = L2_LAMS[int(np.argmin(bart_errs))]
            r["sweeps"]["BART pics -l2"] = {"lams": list(L2_LAMS), "nrmse": bart_errs, "best": lam_b}
            tb, xb = _bart_volume(ys, sens, lam_b, 30, tmpd)
            vol["BART pics -l2 (30 it., one command)"] = tb
            x1 = _bart_volume([y], sens, lam_b, 30, tmpd)[1][0]
            record("BART pics -l2 (30 it.)", tb / slices, x1, lam_b, note="volume time / slices")
    r["volume_s"] = vol
    base = vol["closed-form unfold + ACS"]
    for name, t in vol.items():
        log(f"volume of {slices} slices, {name}: {t:.2f} s ({t / base:.1f}× the closed form)")
    r["gfactor"] = {"mean": float(gfactor(sens, accel)[obj].mean())}
    figures[nc]["g-factor"] = gfactor(sens, accel)
    return r, figures[nc]


def run(*, size=256, n_coils=(16, 32), accel=4, acs=24, noise=1e-3, slices=8, repeats=3, out=None, log=print):
    """Run the benchmark; returns a dict of results (and writes JSON/Markdown/PNG into ``out``)."""
    img = brain_slice((size, size))
    obj = np.abs(img) > 0.05
    info = machine_info()
    have_sigpy = _has_module("sigpy")
    have_bart = shutil.which("bart") is not None
    log(
        f"# SENSE benchmark: {size}x{size} brain-like slice, R={accel} + {acs} ACS lines, noise {noise:g} of max|k|; "
        f"SigPy {'yes' if have_sigpy else 'absent'}, BART {'yes' if have_bart else 'absent'}\n# {machine_line(info)}"
    )
    results = {"size": size, "accel": accel, "acs": acs, "noise": noise, "machine": info, "coils": {}}

    def err(x):
        return float(100 * np.linalg.norm((x - img)[obj]) / np.linalg.norm(img[obj]))

    figures = {}
    for nc in n_coils:
        r, figs = _one_coil_count(
            nc,
            img=img,
            obj=obj,
            size=size,
            accel=accel,
            acs=acs,
            noise=noise,
            slices=slices,
            repeats=repeats,
            have_sigpy=have_sigpy,
            have_bart=have_bart,
            err=err,
            log=log,
        )
        results["coils"][nc] = r
        figures[nc] = figs
    table = _table(results, slices)
    log(table)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sense_results.json").write_text(json.dumps(results, indent=1, default=float))
        (out / "sense_results.md").write_text(table)
        _figures(out, img, figures)
    return results


def _has_module(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _table(results, slices):
    lines = []
    for nc, r in results["coils"].items():
        lines += [
            f"\n**{nc} coils, R = {results['accel']} + {results['acs']} ACS lines, {results['size']}², "
            f"mean g-factor {r['gfactor']['mean']:.2f}**\n",
            "| method | λ | time per slice (s) | NRMSE (%) | NRMSE / CG-SENSE |",
            "|---|---:|---:|---:|---:|",
        ]
        cg = r["methods"]["CG-SENSE (mrirecon, 30 it.)"]["nrmse"]
        for name, m in r["methods"].items():
            lines.append(
                f"| {name} | {m['lam']:g} | {m['time_s']:.4f} | {m['nrmse']:.2f} | {m['nrmse'] / cg:.3f} |"
            )
        lines += ["", f"| volume of {slices} slices | time (s) | / closed form |", "|---|---:|---:|"]
        base = r["volume_s"]["closed-form unfold + ACS"]
        for name, t in r["volume_s"].items():
            lines.append(f"| {name} | {t:.2f} | {t / base:.1f}× |")
        lines.append(
            "\nNRMSE after n CG iterations on all lines from the unfold: "
            + ", ".join(f"{k}: {v:.2f} %" for k, v in r["acs_iterations_nrmse"].items())
        )
    return "\n".join(lines) + "\n"


def _figures(out, img, figures):
    from matplotlib.figure import Figure

    from ..plot import save_figure

    for nc, imgs in figures.items():
        names = [k for k in imgs if k != "g-factor"]
        fig = Figure(figsize=(3 * (len(names) + 1), 6.4), layout="constrained")
        axes = fig.subplots(2, len(names) + 1, squeeze=False)
        axes[0, 0].imshow(np.abs(img), cmap="gray", vmin=0, vmax=1, origin="lower")
        axes[0, 0].set_title("truth", fontsize=8)
        im = axes[1, 0].imshow(imgs["g-factor"], cmap="magma", vmin=1, origin="lower")
        axes[1, 0].set_title("g-factor (closed form)", fontsize=8)
        fig.colorbar(im, ax=axes[1, 0], shrink=0.7)
        for j, name in enumerate(names, start=1):
            axes[0, j].imshow(np.abs(imgs[name]), cmap="gray", vmin=0, vmax=1, origin="lower")
            axes[0, j].set_title(name, fontsize=7)
            axes[1, j].imshow(np.abs(imgs[name] - img), cmap="gray", vmin=0, vmax=0.1, origin="lower")
            axes[1, j].set_title("|error| (×10)", fontsize=7)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        save_figure(fig, out / f"sense_{nc}coils.png", force=True, dpi=90)


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench sense`` and ``scripts/bench_sense.py``)."""
    p.add_argument("--size", type=int, default=256, help="image edge (default 256)")
    p.add_argument("--coils", type=int, nargs="+", default=[16, 32], help="coil counts (default 16 32)")
    p.add_argument("--accel", type=int, default=4, help="acceleration R (default 4)")
    p.add_argument("--acs", type=int, default=24, help="calibration lines (default 24)")
    p.add_argument("--slices", type=int, default=8, help="slices of the multi-slice volume timing")
    p.add_argument("--out", default="bench_out/sense", help="output directory")


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    run(
        size=args.size,
        n_coils=tuple(args.coils),
        accel=args.accel,
        acs=args.acs,
        slices=args.slices,
        out=args.out,
    )
    return 0
