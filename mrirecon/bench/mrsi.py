"""The MRSI benchmark: closed-form L2 lipid suppression against FISTA-L1, and auto β against a sweep.

On the MRSI phantom (two geometries × three lipid strengths): the NAA-map
NRMSE of the closed-form L2 over a β sweep (the NRMSE-optimal β), where every
data-driven criterion lands, and the lipid energy left in the brain. On one
case (geometry 0, lipid strength 1) the L1 baseline: its β from a sweep on a
subset of brain voxels, then the whole slice run to its own convergence
(relative duality gap ≤ tol), timed against the L2 call (warm and cold).
``scripts/bench_mrsi.py`` and ``mrirecon bench mrsi`` call :func:`main`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import mrsi
from ..mrsi import lipid as _lipid
from ..phantoms.mrsi import mrsi_phantom
from .common import fmt, machine_info, machine_line, markdown_table, median_time

DESCRIPTION = """\
MRSI phantom (--shape N x N voxels, --points spectral points), geometries
--geometries, lipid strengths --strengths (x the 100-300x NAA default):
closed-form L2 NAA-map NRMSE over a beta sweep, each data-driven beta
criterion against the sweep's best, lipid energy left in the brain (dB);
on geometry 0 at strength 1: FISTA-L1 (beta from a sweep on every
--l1-subset-th brain voxel, then the whole slice to a relative duality gap
of --l1-tol) against the L2 call, warm (median of --repeats) and cold.
Writes OUT/results.json, OUT/results.md and figures OUT/mrsi_*.png.
The default run takes about 4-5 minutes on 2 cores.

example:
  mrirecon bench mrsi --out bench_out/mrsi
  mrirecon bench mrsi --quick --out /tmp/bm
"""

__all__ = ["add_arguments", "main"]


def add_arguments(p) -> None:
    p.add_argument("--out", default="bench_out/mrsi", help="output directory (default bench_out/mrsi)")
    p.add_argument("--shape", type=int, default=64, help="MRSI matrix N (default 64)")
    p.add_argument("--points", type=int, default=1024, help="spectral points (default 1024)")
    p.add_argument("--geometries", type=int, nargs="+", default=[0, 1], help="geometry seeds (default 0 1)")
    p.add_argument("--strengths", type=float, nargs="+", default=[1 / 3, 1.0, 3.0], help="lipid strengths")
    p.add_argument("--repeats", type=int, default=5, help="warm L2 timings (median; default 5)")
    p.add_argument(
        "--l1-betas",
        type=float,
        nargs="+",
        default=[100.0, 300.0, 1000.0],
        help="L1 sweep, as beta * sigma_max (default 100 300 1000)",
    )
    p.add_argument("--l1-subset", type=int, default=6, help="L1 sweep on every K-th brain voxel (default 6)")
    p.add_argument("--l1-tol", type=float, default=1e-4, help="L1 relative duality gap (default 1e-4)")
    p.add_argument("--l1-max-iter", type=int, default=3000, help="L1 iterations at most (default 3000)")
    p.add_argument("--quick", action="store_true", help="32 x 32 x 512, one geometry (a smoke run)")


def _nrmse(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _case(ph, s, kw, naa_band):
    data = ph.truth + np.float32(s) * ph.lipids + ph.noise
    brain, lip = ph.brain_mask, ph.lipid_mask
    _lipid._CACHE.clear()
    t0 = time.perf_counter()
    basis = mrsi.lipid_basis(data, lip)
    t_basis = time.perf_counter() - t0
    x0 = data[brain]
    c = x0 @ np.conj(basis.u)
    curve = mrsi.beta_curve(data, lip, brain_mask=brain, basis=basis, coefficients=c, **kw)
    ref = mrsi.metabolite_map(ph.truth, naa_band, **kw)[brain]
    naa_of = lambda x: mrsi.metabolite_map(x, naa_band, **kw)  # noqa: E731
    errs = np.array(
        [_nrmse(naa_of(mrsi.l2_closed_form(x0, basis, b, coefficients=c)), ref) for b in curve.betas]
    )
    best = int(np.argmin(errs))
    n2 = basis.sigma[0] ** 2
    crit = {}
    for name, b in curve.selected.items():
        x = mrsi.l2_closed_form(x0, basis, b, coefficients=c)
        crit[name] = {"beta_norm": b * n2, "nrmse": _nrmse(naa_of(x), ref)}
    auto = curve.selected["naa-tradeoff"]
    x_auto = data.copy()
    x_auto[brain] = mrsi.l2_closed_form(x0, basis, auto, coefficients=c)
    db = mrsi.lipid_energy_db(x_auto, data, mask=brain, reference=ph.truth + ph.noise, **kw)
    db_naa = mrsi.lipid_energy_db(
        x_auto, data, mask=brain, reference=ph.truth + ph.noise, band_ppm=(1.8, 4.2), **kw
    )
    return {
        "data": data,
        "basis_s": t_basis,
        "betas_norm": (curve.betas * n2).tolist(),
        "nrmse_curve": errs.tolist(),
        "best_beta_norm": float(curve.betas[best] * n2),
        "best_nrmse": float(errs[best]),
        "input_nrmse": _nrmse(naa_of(x0), ref),
        "criteria": crit,
        "auto_beta": float(auto),
        "lipid_db": db,
        "lipid_db_metabolite_band": db_naa,
        "x_auto": x_auto,
        "sigma_max": float(basis.sigma[0]),
        "rank_auto": int(np.count_nonzero(basis.weights(auto) >= _lipid.W_TOL)),
        "n_lipid": basis.n_lipid_voxels,
        "n_brain": int(brain.sum()),
    }


def main(args) -> int:
    if args.quick:
        args.shape, args.points, args.geometries = 32, 512, [0]
        args.l1_betas, args.repeats, args.l1_max_iter = [100.0, 1000.0], 3, 500
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    print(machine_line(info))
    naa_band = mrsi.METABOLITE_BANDS_PPM["NAA"]
    results = {"machine": info, "config": vars(args).copy(), "cases": []}
    keep = {}
    for g in args.geometries:
        t0 = time.perf_counter()
        ph = mrsi_phantom((args.shape, args.shape), n_points=args.points, geometry_seed=g, seed=g)
        print(
            f"geometry {g}: phantom {time.perf_counter() - t0:.1f} s, {int(ph.brain_mask.sum())} brain voxels, "
            f"{int(ph.lipid_mask.sum())} lipid voxels"
        )
        kw = dict(dwell_time_s=ph.dwell_time_s, spectrometer_frequency_mhz=ph.spectrometer_frequency_mhz)
        for s in args.strengths:
            r = _case(ph, s, kw, naa_band)
            row = {k: v for k, v in r.items() if k not in ("data", "x_auto")}
            row.update(geometry=g, strength=s)
            results["cases"].append(row)
            a = r["criteria"]["naa-tradeoff"]
            print(
                f"  strength {s:.3g}: best beta~ {r['best_beta_norm']:.3g} (NRMSE {r['best_nrmse']:.4f}), "
                f"auto {a['beta_norm']:.3g} ({a['nrmse']:.4f}, x{a['nrmse'] / r['best_nrmse']:.3f}), "
                f"lipid {r['lipid_db']:.1f} dB"
            )
            if g == args.geometries[0] and abs(s - 1.0) < 1e-9:
                keep = {"ph": ph, "kw": kw, **r}
    if not keep:
        raise SystemExit("the L1 comparison needs strength 1 in --strengths")
    # ---- L1 against L2 on geometry 0, strength 1
    ph, kw, data = keep["ph"], keep["kw"], keep["data"]
    brain, lip = ph.brain_mask, ph.lipid_mask
    ref_map = mrsi.metabolite_map(ph.truth, naa_band, **kw)
    naa_err = lambda x, m=brain: _nrmse(mrsi.metabolite_map(x, naa_band, **kw)[m], ref_map[m])  # noqa: E731
    idx = np.flatnonzero(brain.ravel())[:: max(1, args.l1_subset)]
    sub = np.zeros(brain.size, bool)
    sub[idx] = True
    sub = sub.reshape(brain.shape)
    sigma = keep["sigma_max"]
    sweep = []
    for bt in args.l1_betas:
        t0 = time.perf_counter()
        x, inf = mrsi.lipid_suppress(
            data,
            lip,
            brain_mask=sub,
            method="l1",
            beta=bt / sigma,
            tol=args.l1_tol,
            max_iter=args.l1_max_iter,
            return_info=True,
            show_progress=False,
        )
        sweep.append(
            {
                "beta_norm": bt,
                "nrmse_subset": naa_err(x, sub),
                "iterations": inf.l1.iterations,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(
            f"  L1 sweep beta*sigma_max {bt:g}: NAA NRMSE (subset) {sweep[-1]['nrmse_subset']:.4f}, "
            f"{inf.l1.iterations} it, {sweep[-1]['seconds']:.1f} s"
        )
    b1 = min(sweep, key=lambda d: d["nrmse_subset"])["beta_norm"] / sigma
    t0 = time.perf_counter()
    x_l1, inf1 = mrsi.lipid_suppress(
        data,
        lip,
        brain_mask=brain,
        method="l1",
        beta=b1,
        tol=args.l1_tol,
        max_iter=args.l1_max_iter,
        return_info=True,
    )
    t_l1 = time.perf_counter() - t0
    # ---- L2 timings: cold (basis + auto β + solve), warm auto, warm fixed β
    l2_kw = dict(brain_mask=brain, **kw)
    _lipid._CACHE.clear()
    t0 = time.perf_counter()
    x_l2, inf2 = mrsi.lipid_suppress(data, lip, return_info=True, **l2_kw)
    t_cold = time.perf_counter() - t0
    warm_auto = median_time(lambda: mrsi.lipid_suppress(data, lip, **l2_kw), args.repeats)
    warm = median_time(lambda: mrsi.lipid_suppress(data, lip, beta=inf2.beta, **l2_kw), args.repeats)
    ref_noisy = ph.truth + ph.noise
    rows = []
    for name, x, t, extra in (
        ("input (no suppression)", data, None, "–"),
        ("L2 closed form, auto β, warm", x_l2, warm_auto.median_s, f"β·σ²max {inf2.beta_normalised:.3g}"),
        ("L2 closed form, same β, warm", x_l2, warm.median_s, f"rank used {inf2.rank_used}"),
        ("L2 closed form, auto β, cold", x_l2, t_cold, "basis + β + solve"),
        (f"L1 FISTA ({inf1.l1.iterations} it)", x_l1, t_l1, f"β·σmax {b1 * sigma:.3g}"),
    ):
        maps = {m: mrsi.metabolite_map(x, band, **kw)[brain] for m, band in mrsi.METABOLITE_BANDS_PPM.items()}
        truth_maps = {
            m: mrsi.metabolite_map(ph.truth, band, **kw)[brain]
            for m, band in mrsi.METABOLITE_BANDS_PPM.items()
        }
        db = 0.0 if x is data else mrsi.lipid_energy_db(x, data, mask=brain, reference=ref_noisy, **kw)
        rows.append(
            {
                "method": name,
                "seconds": t,
                "nrmse": {m: _nrmse(maps[m], truth_maps[m]) for m in maps},
                "lipid_db": db,
                "note": extra,
            }
        )
    results["l1_sweep"] = sweep
    results["timing"] = {
        "l1_s": t_l1,
        "l1_iterations": inf1.l1.iterations,
        "l1_converged": inf1.l1.converged,
        "l1_gap": inf1.l1.gaps[-1] if inf1.l1.gaps else None,
        "l2_warm_s": warm.median_s,
        "l2_warm_auto_s": warm_auto.median_s,
        "l2_cold_s": t_cold,
        "speedup_warm": t_l1 / warm.median_s,
        "speedup_warm_auto": t_l1 / warm_auto.median_s,
        "speedup_cold": t_l1 / t_cold,
    }
    results["methods"] = rows
    md = _report(results, args)
    (out / "results.md").write_text(md)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(md)
    _figures(out, ph, kw, data, x_l2, x_l1, results)
    print(f"wrote {out}/results.json, results.md, mrsi_spectra.png, mrsi_naa.png, mrsi_beta.png")
    return 0


def _report(res, args) -> str:
    tm = res["timing"]
    head = ["method", "time (s)", "× vs L1", "NAA NRMSE", "Cr NRMSE", "Cho NRMSE", "lipid left (dB)", "note"]
    rows = []
    for r in res["methods"]:
        t = r["seconds"]
        rows.append(
            [
                r["method"],
                fmt(t, ".3f"),
                fmt(None if t is None else tm["l1_s"] / t, ".0f"),
                f"{r['nrmse']['NAA']:.4f}",
                f"{r['nrmse']['Cr']:.4f}",
                f"{r['nrmse']['Cho']:.4f}",
                f"{r['lipid_db']:.1f}",
                r["note"],
            ]
        )
    t1 = markdown_table(head, rows, align="lrrrrrrl")
    crit_names = list(_lipid.BETA_CRITERIA)
    head2 = (
        ["geometry", "lipid ×", "input NRMSE", "best β·σ²max", "best NRMSE"]
        + [f"{c} (β, ×best)" for c in crit_names]
        + ["lipid dB (auto)"]
    )
    rows2 = []
    for c in res["cases"]:
        cells = [
            str(c["geometry"]),
            f"{c['strength']:.3g}",
            f"{c['input_nrmse']:.3f}",
            f"{c['best_beta_norm']:.3g}",
            f"{c['best_nrmse']:.4f}",
        ]
        for n in crit_names:
            v = c["criteria"].get(n)
            cells.append("–" if v is None else f"{v['beta_norm']:.3g}, ×{v['nrmse'] / c['best_nrmse']:.2f}")
        cells.append(f"{c['lipid_db']:.1f}")
        rows2.append(cells)
    t2 = markdown_table(head2, rows2)
    n = res["cases"][0]
    return (
        f"**MRSI lipid suppression, {args.shape}×{args.shape}×{args.points}, {n['n_brain']} brain voxels, "
        f"{n['n_lipid']} lipid voxels (geometry 0, lipid strength 1)**\n\n{t1}\n\n"
        f"L1: {tm['l1_iterations']} iterations, converged {tm['l1_converged']} (relative gap {tm['l1_gap']:.2g}); "
        f"L2 warm {tm['speedup_warm']:.0f}× faster (auto β included: {tm['speedup_warm_auto']:.0f}×; cold "
        f"{tm['speedup_cold']:.0f}×).\n\n**β criteria against the NAA-NRMSE-optimal β of a 49-point sweep "
        f"(closed-form L2)**\n\n{t2}\n"
    )


def _figures(out, ph, kw, data, x_l2, x_l1, res):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    brain = ph.brain_mask[:, :, 0]
    ppm = mrsi.ppm_axis(data.shape[-1], **kw)
    # spectra of three voxels: near the scalp, mid-way, centre
    depth = np.argwhere(brain)
    cx, cy = depth.mean(0)
    dist = np.hypot(depth[:, 0] - cx, depth[:, 1] - cy)
    picks = [depth[np.argmax(dist)], depth[np.argsort(dist)[len(dist) // 2]], depth[np.argmin(dist)]]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for a, (i, j) in zip(ax, picks):
        for x, lab, lw in (
            (data, "input", 0.7),
            (x_l2, "L2 (auto β)", 1.0),
            (x_l1, "L1", 0.8),
            (ph.truth, "truth", 1.0),
        ):
            a.plot(ppm, mrsi.spectrum(x[i, j, 0]).real, lw=lw, label=lab)
        a.set_xlim(4.2, 0.5)
        lo = mrsi.spectrum(ph.truth[i, j, 0]).real
        a.set_ylim(lo.min() - 0.5 * np.ptp(lo), lo.max() + 1.5 * np.ptp(lo))
        a.set_title(f"voxel ({i}, {j})")
        a.set_xlabel("ppm")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(out / "mrsi_spectra.png", dpi=110)
    plt.close(fig)
    band = mrsi.METABOLITE_BANDS_PPM["NAA"]
    maps = [
        (n, mrsi.metabolite_map(x, band, **kw)[:, :, 0])
        for n, x in (("truth", ph.truth), ("input", data), ("L2 closed form", x_l2), ("L1 FISTA", x_l1))
    ]
    vmax = np.percentile(maps[0][1][brain], 99.5)
    fig, ax = plt.subplots(1, 4, figsize=(16, 4))
    for a, (n, m) in zip(ax, maps):
        im = a.imshow(np.where(brain, m, 0).T, origin="lower", cmap="magma", vmin=0, vmax=vmax)
        e = _nrmse(m[brain], maps[0][1][brain])
        a.set_title(n if n == "truth" else f"{n} (NRMSE {e:.3f})")
        a.axis("off")
    fig.colorbar(im, ax=ax.tolist(), fraction=0.02)
    fig.savefig(out / "mrsi_naa.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(1, 1, figsize=(7, 4.5))
    for c in res["cases"]:
        (line,) = ax.loglog(
            c["betas_norm"],
            c["nrmse_curve"],
            lw=1,
            label=f"geometry {c['geometry']}, lipids ×{c['strength']:.2g}",
        )
        a = c["criteria"]["naa-tradeoff"]
        ax.plot(a["beta_norm"], a["nrmse"], "o", color=line.get_color())
    ax.set_xlabel("β·σ²max")
    ax.set_ylabel("NAA-map NRMSE")
    ax.set_title("closed-form L2: NAA NRMSE against β (dots: auto β)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "mrsi_beta.png", dpi=110)
    plt.close(fig)
