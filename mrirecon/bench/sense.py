"""The SENSE benchmark: sense() against CG-SENSE, L1-wavelet, SigPy and BART; automatic λ; ISMRMRD.

On a slice the package does not tune on (the real T1 slice that ships with dipy,
smooth phase added; the package's brain_slice where dipy is absent) with
Biot–Savart coils, R = 4 + 24 ACS lines and complex noise of 0.1 % of max|k|,
every method at its best λ from a sweep (NRMSE of the complex image inside the
head); times in one process: one slice with maps not seen before, and a
multi-slice volume (BART as one ``pics`` command on the whole volume, so its
start-up is amortised). Then: the automatic λ against the sweep's optimum
(2 slices × Biot–Savart / SigPy birdcage maps × coil counts × 2 noise levels),
SVD coil compression of 32 coils, and the ISMRMRD round trip through the CLI.
``scripts/bench_sense.py`` calls :func:`run`.
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
from .common import machine_info, machine_line, median_time, write_results

__all__ = ["DESCRIPTION", "run"]

DESCRIPTION = (
    "sense() on a new slice against CG-SENSE, L1-wavelet, SigPy SenseRecon and BART pics -l2 "
    "(16/32 coils, R=4+24 ACS, best λ of each), the automatic λ against the sweep optimum, "
    "coil compression and the ISMRMRD round trip"
)

L2_LAMS = (1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 1e-3, 3e-3)
L1_LAMS = (1e-4, 3e-4, 1e-3, 3e-3)
#: the automatic-λ study's sweep (wide: birdcage maps want λ up to 0.1)
AUTO_LAMS = tuple(float(v) for v in np.logspace(-5, -1, 13))


def new_slice(size):
    """The real T1 slice that ships with dipy (normalised, smooth phase added), or None without dipy."""
    try:
        import dipy
    except ImportError:
        return None
    path = Path(dipy.__file__).parent / "data" / "files" / "t1_coronal_slice.npy"
    if not path.exists():
        return None
    a = np.load(path).astype(np.float32)
    if a.shape != (size, size):
        from scipy.ndimage import zoom

        a = zoom(a, (size / a.shape[0], size / a.shape[1]), order=1)
    a = a / a.max()
    u, v = np.mgrid[0:size, 0:size] / size - 0.5
    phase = 0.8 * np.pi * (0.7 * u + 0.4 * v + 0.8 * (u**2 - u * v))
    return (a * np.exp(1j * phase)).astype(np.complex64)


def coil_maps(kind, shape, nc):
    """'biot-savart' (mrirecon) or 'birdcage' (SigPy, normalised to a root-sum-of-squares maximum of 1)."""
    if kind == "biot-savart":
        return coils.simulate_coil_maps(shape, nc).astype(np.complex64)
    import sigpy.mri

    m = sigpy.mri.birdcage_maps((nc, *shape))
    return (m / np.sqrt((np.abs(m) ** 2).sum(0)).max()).astype(np.complex64)


def acquire(img, sens, mask, noise, rng):
    """Noisy undersampled k-space (σ = noise · max|k|, E|n|² = σ²) and σ."""
    k = fftc(sens * img, axes=(-2, -1))
    sigma = float(noise * np.abs(k).max())
    k = k + sigma / np.sqrt(2) * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return (k * mask).astype(np.complex64), sigma


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
    sens = coil_maps("biot-savart", (size, size), nc)
    mask = sampling.uniform_mask((size, size), accel, acs=acs)

    def acq(seed_rng):
        return acquire(img, sens, mask, noise, seed_rng)[0]

    y = acq(np.random.default_rng(0))
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
    t, times, x = median_time(lambda: recon.sense(y, new_maps(), lam=lam_unfold, accel=accel), repeats)
    record("sense() (unfold + 4 PCG it.), new maps", t, x, lam_unfold, cold_s=times[0])
    out = {}
    t, _, x = median_time(
        lambda: out.update(r=recon.sense(y, new_maps(), return_info=True)) or out["r"][0], 1
    )
    record("sense(lam='auto'), new maps", t, x, out["r"][1]["lam"], solves=out["r"][1]["lam_solves"])
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
    ys = [acq(np.random.default_rng(100 + s)) for s in range(slices)]
    vol = {}
    t0 = time.perf_counter()
    for ys_ in ys:
        recon.sense(ys_, new_maps(), lam=lam_unfold, accel=accel)
    vol["sense()"] = time.perf_counter() - t0
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
    base = vol["sense()"]
    ours = r["methods"]["sense() (unfold + 4 PCG it.), new maps"]
    for peer, vname in (
        ("SigPy SenseRecon (30 it.)", "SigPy SenseRecon (30 it.)"),
        ("BART pics -l2 (30 it.)", "BART pics -l2 (30 it., one command)"),
    ):
        if peer in r["methods"]:
            r.setdefault("vs", {})[peer] = {
                "speedup_slice": r["methods"][peer]["time_s"] / ours["time_s"],
                "speedup_volume": vol[vname] / base,
                "nrmse_ratio": ours["nrmse"] / r["methods"][peer]["nrmse"],
            }
            v = r["vs"][peer]
            log(
                f"vs {peer}: {v['speedup_slice']:.1f}× faster per slice, {v['speedup_volume']:.1f}× on the volume, NRMSE ratio {v['nrmse_ratio']:.3f}"
            )
    for name, t in vol.items():
        log(f"volume of {slices} slices, {name}: {t:.2f} s ({t / base:.1f}× the closed form)")
    r["gfactor"] = {"mean": float(gfactor(sens, accel)[obj].mean())}
    figures[nc]["g-factor"] = gfactor(sens, accel)
    return r, figures[nc]


def auto_lam_study(slices_, kinds, n_coils, noises, *, accel, acs, log):
    """The automatic λ (and the lattice criteria) against the NRMSE-optimal λ of a sweep of sense()."""
    rows = []
    for sname, img in slices_.items():
        obj = np.abs(img) > 0.05
        shape = img.shape
        mask = sampling.uniform_mask(shape, accel, acs=acs)
        for kind in kinds:
            for nc in n_coils:
                sens = coil_maps(kind, shape, nc)
                for noise in noises:
                    y, sigma = acquire(img, sens, mask, noise, np.random.default_rng(1))

                    def err(x, img=img, obj=obj):
                        return float(100 * np.linalg.norm((x - img)[obj]) / np.linalg.norm(img[obj]))

                    errs = [err(recon.sense(y, sens, lam=lam)) for lam in AUTO_LAMS]
                    ib = int(np.argmin(errs))
                    row = {
                        "slice": sname,
                        "maps": kind,
                        "coils": nc,
                        "noise": noise,
                        "best_lam": AUTO_LAMS[ib],
                        "best_nrmse": errs[ib],
                    }
                    t_fixed, _, _ = median_time(
                        lambda y=y, s=sens, lam=AUTO_LAMS[ib]: recon.sense(y, s, lam=lam), 3
                    )
                    for name, kw in (
                        ("auto", {}),
                        ("auto, noise_sd given", {"noise_sd": sigma}),
                        ("gcv (lattice)", {"lam": "gcv"}),
                        ("sure (lattice)", {"lam": "sure"}),
                    ):
                        t0 = time.perf_counter()
                        x, info = recon.sense(y, sens, return_info=True, **kw)
                        t = time.perf_counter() - t0
                        row[name] = {
                            "lam": info["lam"],
                            "nrmse": err(x),
                            "ratio": err(x) / errs[ib],
                            "time_s": t,
                            "solves": info.get("lam_solves", 0),
                        }
                    row["fixed_time_s"] = t_fixed
                    rows.append(row)
                    log(
                        f"auto λ: {sname} {kind} {nc} coils noise {noise:g}: best λ {AUTO_LAMS[ib]:.2g} "
                        f"{errs[ib]:.2f} %; auto λ {row['auto']['lam']:.2g} {row['auto']['nrmse']:.2f} % "
                        f"({row['auto']['ratio']:.3f}×, {row['auto']['solves']} solves, "
                        f"{row['auto']['time_s'] / t_fixed:.1f}× the fixed-λ time); lattice GCV {row['gcv (lattice)']['ratio']:.2f}×"
                    )
    return rows


def compression_study(img, *, nc, virtual, accel, acs, noise, lam, log):
    """SVD coil compression of ``nc`` coils to each of ``virtual`` before sense(): NRMSE and time."""
    obj = np.abs(img) > 0.05
    shape = img.shape
    sens = coil_maps("biot-savart", shape, nc)
    mask = sampling.uniform_mask(shape, accel, acs=acs)
    y, _ = acquire(img, sens, mask, noise, np.random.default_rng(2))
    c0 = shape[0] // 2 - acs // 2
    calib = y[:, c0 : c0 + acs]

    def err(x):
        return float(100 * np.linalg.norm((x - img)[obj]) / np.linalg.norm(img[obj]))

    def compressed(nv):
        yc, m = coils.coil_compress(y, nv, calib=calib)
        return recon.sense(yc, coils.apply_coil_matrix(m, sens), lam=lam)

    out = {}
    t, _, x = median_time(lambda: recon.sense(y, sens.copy(), lam=lam), 3)
    out[nc] = {"time_s": t, "nrmse": err(x)}
    for nv in virtual:
        t, _, x = median_time(lambda nv=nv: compressed(nv), 3)
        out[nv] = {"time_s": t, "nrmse": err(x)}
    for nv, v in out.items():
        log(
            f"coil compression {nc} → {nv}: {v['time_s']:.3f} s ({out[nc]['time_s'] / v['time_s']:.2f}× faster), "
            f"NRMSE {v['nrmse']:.2f} % ({v['nrmse'] / out[nc]['nrmse']:.3f}×)"
        )
    return out


def ismrmrd_check(img, *, nc, accel, acs, noise, log):
    """The slice as ISMRMRD (2× readout oversampling, noise scan, flagged ACS) through ``mrirecon sense --espirit``."""
    from ..cli import main as cli_main
    from ..io.kspace import write_ismrmrd

    obj = np.abs(img) > 0.05
    shape = img.shape
    sens = coil_maps("biot-savart", shape, nc)
    mask = sampling.uniform_mask(shape, accel, acs=acs)
    rng = np.random.default_rng(3)
    y, sigma = acquire(img, sens, mask, noise, rng)
    scan = (
        sigma / np.sqrt(2) * (rng.standard_normal((nc, 4096)) + 1j * rng.standard_normal((nc, 4096)))
    ).astype(np.complex64)
    c0 = shape[0] // 2 - acs // 2

    # ESPIRiT's maps are unit-norm where they are defined: the image they give is the object
    # weighted by the coils' root-sum-of-squares, and the CLI's is in units of the noise SD
    # (prewhitened by the noise scan). Compare magnitudes (the CLI writes |x|) to that
    # weighted object after a least-squares scale.
    ref = np.abs(img) * np.sqrt(np.sum(np.abs(sens) ** 2, axis=0))

    def err_mag(x):
        a = np.abs(x)[obj]
        r = ref[obj]
        scale = float(np.vdot(a, r).real / max(np.vdot(a, a).real, 1e-30))
        return float(100 * np.linalg.norm(scale * a - r) / np.linalg.norm(r))

    t0 = time.perf_counter()
    maps, _ = coils.espirit_maps(y, acs=acs)
    t_esp = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_np = recon.sense(y, maps, noise_sd=sigma)
    t_np = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "scan.h5"
        write_ismrmrd(h5, y, accel=accel, acs_rows=list(range(c0, c0 + acs)), noise=scan, force=True)
        out = Path(tmp) / "img.nii.gz"
        t0 = time.perf_counter()
        rc = cli_main(["sense", str(h5), "--espirit", "-o", str(out)])
        t_cli = time.perf_counter() - t0
        x_cli = (
            np.asarray(io.load_nifti(out, ndim=None).data).reshape(shape)
            if rc == 0
            else np.full(shape, np.nan)
        )
        side = json.loads((Path(tmp) / "img.json").read_text()) if rc == 0 else {}
    r = {
        "nrmse_numpy": err_mag(x_np),
        "nrmse_ismrmrd_cli": err_mag(x_cli),
        "espirit_s": t_esp,
        "sense_s": t_np,
        "cli_s": t_cli,
        "cli_lambda": side.get("Lambda"),
        "cli_lambda_selection": side.get("LambdaSelection"),
    }
    log(
        f"ISMRMRD (2x readout oversampling): mrirecon sense scan.h5 --espirit: NRMSE |x| "
        f"{r['nrmse_ismrmrd_cli']:.2f} % ({t_cli:.1f} s); "
        f"NumPy arrays + espirit_maps + sense(): {r['nrmse_numpy']:.2f} % (ESPIRiT {t_esp:.1f} s, sense {t_np:.2f} s)"
    )
    return r


def run(
    *,
    size=256,
    n_coils=(16, 32),
    accel=4,
    acs=24,
    noise=1e-3,
    noise2=3e-3,
    slices=8,
    repeats=3,
    studies=True,
    out=None,
    log=print,
):
    """Run the benchmark; returns a dict of results (and writes JSON/Markdown/PNG into ``out``)."""
    own = brain_slice((size, size))
    new = new_slice(size)
    img = own if new is None else new
    slice_name = "brain_slice (mrirecon)" if new is None else "dipy T1 slice (not tuned on)"
    obj = np.abs(img) > 0.05
    info = machine_info()
    have_sigpy = _has_module("sigpy")
    have_bart = shutil.which("bart") is not None
    log(
        f"# SENSE benchmark: {size}x{size} {slice_name}, R={accel} + {acs} ACS lines, noise {noise:g} of max|k|; "
        f"SigPy {'yes' if have_sigpy else 'absent'}, BART {'yes' if have_bart else 'absent'}\n# {machine_line(info)}"
    )
    results = {
        "size": size,
        "slice": slice_name,
        "accel": accel,
        "acs": acs,
        "noise": noise,
        "machine": info,
        "coils": {},
    }

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
    if studies:
        sl = {slice_name: img} if new is None else {"dipy T1": new, "brain_slice": own}
        kinds = ("biot-savart", "birdcage") if have_sigpy else ("biot-savart",)
        results["auto_lam"] = auto_lam_study(
            sl, kinds, n_coils, (noise, noise2), accel=accel, acs=acs, log=log
        )
        nc_max = max(n_coils)
        lam_c = results["coils"][nc_max]["sweeps"]["unfold+ACS"]["best"]
        results["compression"] = compression_study(
            img,
            nc=nc_max,
            virtual=tuple(v for v in sorted({nc_max // 4, nc_max // 2, 3 * nc_max // 4}) if v > accel),
            accel=accel,
            acs=acs,
            noise=noise,
            lam=lam_c,
            log=log,
        )
        results["ismrmrd"] = ismrmrd_check(img, nc=min(n_coils), accel=accel, acs=acs, noise=noise, log=log)
    table = _table(results, slices)
    log(table)
    if out is not None:
        out = write_results(out, "sense_results", results, table)
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
        base = r["volume_s"]["sense()"]
        for name, t in r["volume_s"].items():
            lines.append(f"| {name} | {t:.2f} | {t / base:.1f}× |")
        lines.append(
            "\nNRMSE after n CG iterations on all lines from the unfold: "
            + ", ".join(f"{k}: {v:.2f} %" for k, v in r["acs_iterations_nrmse"].items())
        )
        for peer, v in r.get("vs", {}).items():
            lines.append(
                f"\nsense() vs {peer}: {v['speedup_slice']:.1f}× faster per slice, {v['speedup_volume']:.1f}× on the "
                f"{slices}-slice volume, NRMSE ratio {v['nrmse_ratio']:.3f}"
            )
    if results.get("auto_lam"):
        lines += [
            "\n**Automatic λ against the best λ of a sweep of sense() (13 λ, 1e-5 to 0.1)**\n",
            "| slice | maps | coils | noise | best λ | best NRMSE (%) | auto λ | auto NRMSE (%) | auto / best "
            "| solves | auto time / fixed | auto, σ given / best | lattice GCV / best | lattice SURE / best |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for w in results["auto_lam"]:
            a = w["auto"]
            lines.append(
                f"| {w['slice']} | {w['maps']} | {w['coils']} | {w['noise']:g} | {w['best_lam']:.2g} | "
                f"{w['best_nrmse']:.2f} | {a['lam']:.2g} | {a['nrmse']:.2f} | {a['ratio']:.3f} | {a['solves']} | "
                f"{a['time_s'] / w['fixed_time_s']:.1f}× | {w['auto, noise_sd given']['ratio']:.3f} | "
                f"{w['gcv (lattice)']['ratio']:.2f} | {w['sure (lattice)']['ratio']:.2f} |"
            )
        ratios = [w["auto"]["ratio"] for w in results["auto_lam"]]
        lines.append(f"\nauto / best: median {np.median(ratios):.3f}, worst {max(ratios):.3f}")
    if results.get("compression"):
        c = results["compression"]
        full = max(c)
        lines += [
            "\n**SVD coil compression before sense() (calibration block)**\n",
            "| virtual coils | time (s) | speed-up | NRMSE (%) | NRMSE ratio |",
            "|---:|---:|---:|---:|---:|",
        ]
        for nv, v in c.items():
            lines.append(
                f"| {nv} | {v['time_s']:.3f} | {c[full]['time_s'] / v['time_s']:.2f}× | {v['nrmse']:.2f} | "
                f"{v['nrmse'] / c[full]['nrmse']:.3f} |"
            )
    if results.get("ismrmrd"):
        m = results["ismrmrd"]
        lines.append(
            f"\n**ISMRMRD** (2× readout oversampling, noise scan, flagged ACS; ESPIRiT maps): "
            f"`mrirecon sense scan.h5 --espirit` NRMSE |x| {m['nrmse_ismrmrd_cli']:.2f} % in {m['cli_s']:.1f} s; "
            f"NumPy arrays + `espirit_maps` + `sense()` {m['nrmse_numpy']:.2f} % (ESPIRiT {m['espirit_s']:.1f} s, "
            f"sense {m['sense_s']:.2f} s)"
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
    p.add_argument(
        "--noise", type=float, default=1e-3, help="noise SD as a fraction of max|k| (default 1e-3)"
    )
    p.add_argument(
        "--noise2", type=float, default=3e-3, help="second noise level of the λ study (default 3e-3)"
    )
    p.add_argument("--no-studies", action="store_true", help="skip the λ, compression and ISMRMRD studies")
    p.add_argument("--out", default="bench_out/sense", help="output directory")


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    run(
        size=args.size,
        n_coils=tuple(args.coils),
        accel=args.accel,
        acs=args.acs,
        slices=args.slices,
        noise=args.noise,
        noise2=args.noise2,
        studies=not args.no_studies,
        out=args.out,
    )
    return 0
