"""The pipeline benchmark: per-step times of the closed-form QSM pipeline, and NRMSE of every
background-removal × inversion pair, on simulated multi-echo GRE data of the head phantom.

``scripts/bench_pipeline.py`` calls :func:`run`.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from .. import metrics, qsm
from ..phantoms import simulate_megre
from ..qsm import background as bg
from .common import machine_line

__all__ = ["run"]

TV_LAM = 3.16e-4  # the TV-ADMM sweep's best λ on the head phantom (scripts/bench_qsm.py)


def run(*, size=192, repeats=3, out=None, tv_lam=TV_LAM, log=print) -> dict:
    """Time the closed-form pipeline and score every background × inversion pair.

    Parameters
    ----------
    size : int
        Grid edge (size³ voxels over the phantom's 192 mm field of view).
    repeats : int
        Timed runs of the closed-form pipeline (median reported per step).
    out : path, optional
        Directory for ``pipeline_results.json`` and ``pipeline_results.md``.
    tv_lam : float
        λ of the TV inversion.
    """
    d = simulate_megre((size, size, size), seed=0)
    vox = d.voxel_size_mm
    log(
        f"# pipeline benchmark: {size}^3, {vox[0]:.2f} mm, {len(d.te_s)} echoes (TE {d.te_s} s), "
        f"{d.b0_tesla} T\n# {machine_line()}"
    )
    kw = {"b0_tesla": d.b0_tesla, "voxel_size_mm": vox, "b0_dir": d.b0_dir, "mask": d.mask}
    qsm.pipeline(d.magnitude, d.phase, d.te_s, **kw)  # warm-up: plans, wisdom, kernels
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = qsm.pipeline(d.magnitude, d.phase, d.te_s, **kw)
        runs.append((time.perf_counter() - t0, res.timings_s))
    steps = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    total = statistics.median(r[0] for r in runs)
    lines = [
        f"\n**Closed-form pipeline (V-SHARP + closed-form L2, λ by GCV), {size}³, {len(d.te_s)} echoes, median of {repeats}**\n",
        "| step | time (s) |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in steps.items()]
    lines.append(f"| **total** | **{total:.3f}** |")

    # what the inversion alone does with the true local field (no unwrapping, fit or background removal)
    oracle = qsm.closed_form_l2(d.local_field_ppm, d.mask, voxel_size_mm=vox, b0_dir=d.b0_dir, lam="auto")
    oracle_err = metrics.nrmse(oracle, d.chi, mask=d.mask)
    log(f"closed-form L2 (GCV) on the true local field, brain mask: NRMSE {oracle_err:.1f} %")

    # every background × inversion pair, from one echo fit
    rad = qsm.phase.phase_to_radians(d.phase)
    unwrapped = qsm.phase.laplacian_unwrap(rad, voxel_size_mm=vox)
    fit = qsm.phase.fit_echoes(unwrapped, d.te_s, magnitude=d.magnitude, mask=d.mask)
    total_ppm = qsm.field_to_ppm(fit.field_hz, units="hz", b0_tesla=d.b0_tesla).astype(np.float32)
    bgs = {
        "V-SHARP": lambda: bg.vsharp(total_ppm, d.mask, voxel_size_mm=vox),
        "SHARP": lambda: bg.sharp(total_ppm, d.mask, voxel_size_mm=vox),
        "PDF": lambda: bg.pdf(total_ppm, d.mask, voxel_size_mm=vox, b0_dir=d.b0_dir),
    }
    table = {}
    ikw = {"voxel_size_mm": vox, "b0_dir": d.b0_dir}
    for bname, fn in bgs.items():
        t0 = time.perf_counter()
        r = fn()
        t_bg = time.perf_counter() - t0
        local_err = metrics.nrmse(r.local_field, d.local_field_ppm, mask=r.mask)
        invs = {
            "closed-form L2 (GCV)": lambda r=r: qsm.closed_form_l2(r.local_field, r.mask, lam="auto", **ikw),
            "TKD": lambda r=r: qsm.tkd(r.local_field, r.mask, **ikw),
            "CG-L2 (GCV λ)": lambda r=r: qsm.cg_l2(
                r.local_field, r.mask, lam=qsm.lcurve(r.local_field, r.mask, **ikw).lam, **ikw
            ),
            f"TV-ADMM (λ {tv_lam:g})": lambda r=r: qsm.tv_admm(r.local_field, r.mask, lam=tv_lam, **ikw),
        }
        for iname, inv in invs.items():
            t0 = time.perf_counter()
            chi = inv()
            t_inv = time.perf_counter() - t0
            e = metrics.nrmse(chi, d.chi, mask=r.mask)
            table[(bname, iname)] = {
                "nrmse": e,
                "local_field_nrmse": local_err,
                "mask_voxels": int(r.mask.sum()),
                "background_s": t_bg,
                "inversion_s": t_inv,
            }
            log(
                f"{bname} + {iname}: NRMSE {e:.1f} % (local field {local_err:.1f} %), "
                f"{t_bg:.2f} s + {t_inv:.2f} s"
            )
    invs_names = list(dict.fromkeys(k[1] for k in table))
    lines += [
        "",
        f"**NRMSE (%) of χ against the truth, inside each method's mask, {size}³**",
        "",
        "| background removal | local-field NRMSE | mask voxels | " + " | ".join(invs_names) + " |",
        "|---|---:|---:|" + "---:|" * len(invs_names),
    ]
    for bname in bgs:
        first = table[(bname, invs_names[0])]
        lines.append(
            f"| {bname} ({first['background_s']:.1f} s) | {first['local_field_nrmse']:.1f} | {first['mask_voxels']} | "
            + " | ".join(f"{table[(bname, i)]['nrmse']:.1f}" for i in invs_names)
            + " |"
        )
    lines.append(
        f"\nFor reference: closed-form L2 (GCV λ) on the true local field, over the whole brain mask: "
        f"NRMSE {oracle_err:.1f} %."
    )
    text = "\n".join(lines) + "\n"
    log(text)
    doc = {
        "size": size,
        "voxel_size_mm": vox,
        "te_s": d.te_s,
        "steps_s": steps,
        "total_s": total,
        "pairs": {f"{b} + {i}": v for (b, i), v in table.items()},
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline_results.json").write_text(json.dumps(doc, indent=1, default=float))
        (out / "pipeline_results.md").write_text(text)
    return doc


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench pipeline`` and ``scripts/bench_pipeline.py``)."""
    p.add_argument("--size", type=int, default=192, help="grid edge (default 192: 1 mm voxels)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of the closed-form pipeline")
    p.add_argument("--out", default="bench_out/pipeline", help="output directory")


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    run(size=args.size, repeats=args.repeats, out=args.out)
    return 0
