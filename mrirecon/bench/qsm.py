"""The QSM benchmark: closed forms against iterative L2 and TV on the head phantom.

For each grid size: simulate the phantom's field with noise; pick every
method's λ by a sweep against the truth (NRMSE); time every method at its λ
in the same process; record each iterative method's NRMSE after every
iteration (the metric's own time is not counted) and report the time it
takes to come within 1 % of its final NRMSE; write a JSON of everything, a
Markdown table and figures. ``scripts/bench_qsm.py`` and ``mrirecon bench qsm``
call :func:`run`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import metrics, qsm
from ..phantoms import head_phantom, simulate_field
from ..solvers import History
from .common import fmt, machine_info, machine_line, median_time, time_to_within

DESCRIPTION = """\
On the head phantom at each --sizes (N^3 voxels over 192 mm) with field
noise --noise-ppm: closed-form L2 (λ from a sweep against the truth, and
the GCV λ), TKD, CG-L2 (at the L2 λ), TV-ADMM (λ from a sweep) and
TV-NLCG (the same TV λ), all in one process. Iterative methods are timed
to the iteration at which their NRMSE comes within 1 % of its final value
(the per-iteration NRMSE is not counted in their time). Reports wall time,
iterations, NRMSE, HFEN, SSIM, λ, and the speed-up of the closed form;
writes OUT/results.json, OUT/results.md and figures (slices, error maps,
NRMSE against time, L-curve). The full run takes many minutes on 2 cores.

example:
  mrirecon bench qsm --sizes 128 192 --out bench_out/qsm
  mrirecon bench qsm --sizes 48 --quick --out /tmp/bq
"""

__all__ = ["BenchConfig", "run"]


@dataclass
class BenchConfig:
    """What to run. The defaults are the full benchmark (minutes on 2 cores)."""

    sizes: tuple = (128, 192)
    noise_ppm: float = 0.003
    seed: int = 0
    l2_lams: tuple = tuple(np.logspace(-4, 0, 25))
    tv_lams: tuple = tuple(np.logspace(-4.5, -2.5, 7))
    repeats: int = 5
    cg_max_iter: int = 500
    cg_tol: float = 1e-6
    admm_max_iter: int = 300
    admm_tol: float = 1e-4
    admm_sweep_tol: float = 1e-3
    nlcg_max_iter: int = 600
    nlcg_tol: float = 1e-6
    methods: tuple = ("closed-form", "tkd", "cg-l2", "tv-admm", "tv-nlcg")
    extra: dict = field(default_factory=dict)


def _scores(chi, truth, mask):
    return {
        "nrmse": metrics.nrmse(chi, truth, mask=mask),
        "hfen": metrics.hfen(chi, truth, mask=mask),
        "ssim": metrics.ssim(chi, truth, mask=mask),
    }


def _one_size(n, cfg: BenchConfig, log):
    ph = head_phantom((n, n, n))
    vox = ph.voxel_size_mm
    mask, truth = ph.mask, ph.chi
    f = simulate_field(truth, voxel_size_mm=vox, mask=mask, noise_ppm=cfg.noise_ppm, seed=cfg.seed)
    kw = {"voxel_size_mm": vox}

    def err(chi):
        return metrics.nrmse(chi, truth, mask=mask)

    res = {"size": n, "voxel_size_mm": vox[0], "methods": {}, "sweeps": {}}
    log(f"\n## {n}^3 head phantom, {vox[0]:.2f} mm voxels, noise {cfg.noise_ppm} ppm")

    # warm-up (FFTW plans/wisdom and kernels) is not timed
    qsm.closed_form_l2(f, mask, lam=0.01, **kw)

    # λ sweeps against the truth
    l2_errs = [err(qsm.closed_form_l2(f, mask, lam=lam, **kw)) for lam in cfg.l2_lams]
    lam_l2 = float(cfg.l2_lams[int(np.argmin(l2_errs))])
    res["sweeps"]["l2"] = {"lams": list(map(float, cfg.l2_lams)), "nrmse": l2_errs, "best": lam_l2}
    curve = qsm.lcurve(f, mask, **kw)
    log(f"L2 sweep: best λ {lam_l2:.3g} (NRMSE {min(l2_errs):.1f} %); GCV λ {curve.lam_gcv:.3g}")

    images = {"truth": truth}
    hists = {}

    def record(name, chi, t, lam, **extra):
        s = _scores(chi, truth, mask)
        res["methods"][name] = {"time_s": t, "lam": lam, **s, **extra}
        images[name] = chi
        log(f"{name}: {t:.3f} s, NRMSE {s['nrmse']:.1f} %, HFEN {s['hfen']:.1f} %, SSIM {s['ssim']:.3f}")

    if "closed-form" in cfg.methods:
        t, _, chi = median_time(lambda: qsm.closed_form_l2(f, mask, lam=lam_l2, **kw), cfg.repeats)
        record("closed-form L2 (sweep λ)", chi, t, lam_l2)
        t, _, chi = median_time(lambda: qsm.closed_form_l2(f, mask, lam="auto", **kw), cfg.repeats)
        record("closed-form L2 (GCV λ)", chi, t, curve.lam_gcv)
    if "tkd" in cfg.methods:
        t, _, chi = median_time(lambda: qsm.tkd(f, mask, **kw), cfg.repeats)
        record("TKD (t = 0.19)", chi, t, None)

    def iterative(name, fn, lam):
        # NRMSE over the mask, demeaned: the raw iterate needs no masking or referencing first
        hist = History(truth, lambda x, r: metrics.nrmse(x, r, mask=mask))
        t0 = time.perf_counter()
        r = fn(hist)
        total = time.perf_counter() - t0
        final = err(r.x)
        t_1pc, it_1pc = time_to_within(hist, final)
        hists[name] = hist
        record(
            name,
            r.x,
            t_1pc,
            lam,
            iterations_to_1pc=it_1pc,
            iterations=r.iterations,
            converged=bool(r.converged),
            time_to_converge_s=hist.times[-1] if hist.times else total,
        )

    if "cg-l2" in cfg.methods:
        iterative(
            "CG-L2",
            lambda h: qsm.cg_l2(
                f,
                mask,
                lam=lam_l2,
                tol=cfg.cg_tol,
                max_iter=cfg.cg_max_iter,
                callback=h,
                return_result=True,
                **kw,
            ),
            lam_l2,
        )
    lam_tv = None
    if "tv-admm" in cfg.methods or "tv-nlcg" in cfg.methods:
        tv_errs = [
            err(qsm.tv_admm(f, mask, lam=lam, tol=cfg.admm_sweep_tol, max_iter=cfg.admm_max_iter, **kw))
            for lam in cfg.tv_lams
        ]
        lam_tv = float(cfg.tv_lams[int(np.argmin(tv_errs))])
        res["sweeps"]["tv"] = {"lams": list(map(float, cfg.tv_lams)), "nrmse": tv_errs, "best": lam_tv}
        log(f"TV sweep (ADMM, tol {cfg.admm_sweep_tol}): best λ {lam_tv:.3g} (NRMSE {min(tv_errs):.1f} %)")
    if "tv-admm" in cfg.methods:
        iterative(
            "TV-ADMM",
            lambda h: qsm.tv_admm(
                f,
                mask,
                lam=lam_tv,
                tol=cfg.admm_tol,
                max_iter=cfg.admm_max_iter,
                callback=h,
                return_result=True,
                **kw,
            ),
            lam_tv,
        )
    if "tv-nlcg" in cfg.methods:
        iterative(
            "TV-NLCG",
            lambda h: qsm.tv_nlcg(
                f,
                mask,
                lam=lam_tv,
                tol=cfg.nlcg_tol,
                max_iter=cfg.nlcg_max_iter,
                callback=h,
                return_result=True,
                **kw,
            ),
            lam_tv,
        )
    res["curves"] = {
        name: {"times": h.times, "nrmse": h.errors, "iterations": h.iterations} for name, h in hists.items()
    }
    add_matched_quality(res)
    return res, images, curve, vox


def add_matched_quality(res, rel=0.01):
    """Speed-ups of the closed form, and each iterative method's time to match its NRMSE.

    ``time_to_match_s``: the first time an iterative method's NRMSE comes
    within ``rel`` of the closed form's (sweep λ) NRMSE, or None if it never
    does; ``matched_speedup`` is that time over the closed form's.
    """
    cf = res["methods"].get("closed-form L2 (sweep λ)")
    if not cf:
        return res
    target = cf["nrmse"] * (1 + rel)
    for name, m in res["methods"].items():
        m["closed_form_speedup"] = m["time_s"] / cf["time_s"]
        c = res.get("curves", {}).get(name)
        if c is None:
            continue
        hit = next(
            (t for t, e in zip(c["times"], c["nrmse"], strict=True) if e is not None and e <= target), None
        )
        m["time_to_match_s"] = hit
        m["matched_speedup"] = None if hit is None else hit / cf["time_s"]
    return res


def _table(results) -> str:
    lines = []
    for r in results:
        lines.append(f"\n**{r['size']}³ head phantom ({r['voxel_size_mm']:.2f} mm)**\n")
        lines.append(
            "| method | λ | time (s) | iterations | NRMSE (%) | HFEN (%) | SSIM | closed-form speed-up "
            "| time to the closed form's NRMSE (s) | speed-up at matched NRMSE |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, m in r["methods"].items():
            lam = "–" if m["lam"] is None else f"{m['lam']:.3g}"
            its = str(m.get("iterations_to_1pc", "–"))
            lines.append(
                f"| {name} | {lam} | {m['time_s']:.3f} | {its} | {m['nrmse']:.1f} | {m['hfen']:.1f} | "
                f"{m['ssim']:.3f} | {m.get('closed_form_speedup', float('nan')):.0f}× | "
                f"{fmt(m.get('time_to_match_s'), '.2f')} | {fmt(m.get('matched_speedup'), '.0f', '×')} |"
            )
    lines.append(
        "\nTime of an iterative method: until its NRMSE comes within 1 % of its own final value (the "
        "per-iteration NRMSE itself not counted). Closed-form speed-up: that time over the closed form's "
        "(sweep λ). Time to the closed form's NRMSE: until the method's NRMSE is within 1 % of the closed "
        "form's (or below it); – if it never gets there."
    )
    return "\n".join(lines) + "\n"


def _figures(out, r, images, curve, vox):
    from ..plot import lcurve_figure, orthoslices, save_figure

    n = r["size"]
    names = [k for k in images if k != "truth"]
    truth = images["truth"]
    fig = orthoslices(
        [truth, *[images[k] for k in names]],
        titles=["truth", *names],
        voxel_size_mm=vox,
        suptitle=f"{n}³ head phantom: susceptibility (ppm)",
    )
    save_figure(fig, out / f"qsm_slices_{n}.png", force=True, dpi=80)
    fig = orthoslices(
        [images[k] - truth for k in names],
        titles=[f"{k} − truth" for k in names],
        voxel_size_mm=vox,
        suptitle=f"{n}³: error maps (ppm)",
    )
    save_figure(fig, out / f"qsm_errors_{n}.png", force=True, dpi=80)
    save_figure(
        lcurve_figure(curve, lam_optimal=r["sweeps"]["l2"]["best"]), out / f"qsm_lcurve_{n}.png", force=True
    )

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (name, c) in enumerate(r.get("curves", {}).items()):
        pts = [(t, e) for t, e in zip(c["times"], c["nrmse"], strict=True) if e is not None and t > 0]
        if pts:
            ax.semilogx(*zip(*pts, strict=True), "-", color=f"C{i}", label=name)
    n_curves = len(r.get("curves", {}))
    points = [(name, m) for name, m in r["methods"].items() if "iterations" not in m]
    for j, (name, m) in enumerate(points):
        ax.semilogx(m["time_s"], m["nrmse"], "os^vD"[j % 5], ms=9, color=f"C{n_curves + j}", label=name)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("NRMSE (%)")
    ax.set_title(f"{n}³: NRMSE against time (iterative: after each iteration)")
    ax.set_ylim(top=min(150, ax.get_ylim()[1]))
    ax.legend(fontsize=8)
    save_figure(fig, out / f"qsm_convergence_{n}.png", force=True)


def run(cfg: BenchConfig, out: Path, *, log=print) -> dict:
    """Run the benchmark; writes ``results.json``, ``results.md`` and PNGs into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": machine_info(),
        "noise_ppm": cfg.noise_ppm,
        "seed": cfg.seed,
    }
    log(f"# QSM benchmark: noise {cfg.noise_ppm} ppm, seed {cfg.seed}\n# {machine_line(meta['machine'])}")
    results = []
    for n in cfg.sizes:
        r, images, curve, vox = _one_size(n, cfg, log)
        results.append(r)
        _figures(out, r, images, curve, vox)
    table = _table(results)
    log(table)
    doc = {
        "meta": meta,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "extra"},
        "results": results,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=float))
    (out / "results.md").write_text(table)
    return doc


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench qsm`` and ``scripts/bench_qsm.py``)."""
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 192], metavar="N", help="grid edges (default 128 192)"
    )
    p.add_argument("--noise-ppm", type=float, default=0.003, help="field noise SD in ppm (default 0.003)")
    p.add_argument(
        "--out", default="bench_out/qsm", metavar="DIR", help="output directory (default bench_out/qsm)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["closed-form", "tkd", "cg-l2", "tv-admm", "tv-nlcg"],
        choices=["closed-form", "tkd", "cg-l2", "tv-admm", "tv-nlcg"],
        help="methods to run (default all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="short sweeps and iteration limits (a smoke test, not a result)"
    )


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    from ..errors import InvalidParameterError

    if any(n < 16 for n in args.sizes):
        raise InvalidParameterError(f"--sizes must be at least 16, got {args.sizes}")
    if not np.isfinite(args.noise_ppm) or args.noise_ppm < 0:
        raise InvalidParameterError(f"--noise-ppm must be >= 0, got {args.noise_ppm}")
    cfg = BenchConfig(sizes=tuple(args.sizes), noise_ppm=args.noise_ppm, methods=tuple(args.methods))
    if args.quick:
        cfg.l2_lams = tuple(np.logspace(-3, -1, 5))
        cfg.tv_lams = tuple(np.logspace(-4, -3, 3))
        cfg.repeats, cfg.cg_max_iter, cfg.admm_max_iter, cfg.nlcg_max_iter = 1, 30, 20, 20
    run(cfg, Path(args.out))
    return 0
