"""Where the pipeline's figures stop holding: the realistic head under acquisition variants.

One table, one row per variant of :func:`mrirecon.phantoms.realistic_head.realistic_head`
(B0 oblique to the grid, anisotropic voxels, 7 T, low SNR, more and unequally spaced
echoes, a stronger shim, another anatomy): the oracle (closed-form L2 on the true local
field at its NRMSE-optimal λ), then :func:`mrirecon.qsm.pipeline` with its defaults
(λ automatic) for each background removal asked for, and the default background removal
followed by the edge-weighted inversion (``method="edge-l2"``), each with the echo mask and
with the true mask: χ NRMSE, its ratio to the oracle, wall time; and the echo mask's Dice
and share of voxels outside the brain. 2 mm by default (about a minute a variant).

``scripts/bench_pipeline_variants.py`` and ``mrirecon bench pipeline-variants`` call :func:`main`.
"""

from __future__ import annotations

import time

import numpy as np

from .. import metrics, qsm
from ..qsm.pipeline import BACKGROUND_METHODS, DEFAULT_BACKGROUND
from .common import machine_line, write_results
from .pipeline import _best

__all__ = ["DESCRIPTION", "VARIANTS", "add_arguments", "main", "run"]

DESCRIPTION = """\
The realistic head (2 mm by default) under acquisition variants (oblique B0,
anisotropic voxels, 7 T, SNR 20, five unequal echoes, stronger shim, another
seed): oracle, and the pipeline's chi NRMSE and ratio to the oracle per
background removal with the echo mask and the true mask.
"""

#: key → (description, keyword arguments of realistic_head, grid factor per axis on --shape)
VARIANTS = {
    "reference": ("reference (B0 along z)", {}, (1, 1, 1)),
    "oblique-yz": ("B0 tilted 25° (y-z plane)", {"b0_dir": (0.0, 0.4226, 0.9063)}, (1, 1, 1)),
    "oblique-xy": ("B0 tilted 20° (toward x and y)", {"b0_dir": (0.2418, 0.2418, 0.9397)}, (1, 1, 1)),
    "anisotropic": ("voxels 1.5× longer in z", {}, (1, 1, 2 / 3)),
    "7t": ("7 T, TE 3/8/13 ms", {"b0_tesla": 7.0, "te_s": (0.003, 0.008, 0.013)}, (1, 1, 1)),
    "snr20": ("SNR 20 (default 50)", {"snr": 20.0}, (1, 1, 1)),
    "echoes5": (
        "5 unequally spaced echoes, 3/7/12/18/25 ms",
        {"te_s": (0.003, 0.007, 0.012, 0.018, 0.025)},
        (1, 1, 1),
    ),
    "shim": ("shim 0.5 ppm (default 0.15)", {"shim_ppm": 0.5}, (1, 1, 1)),
    "anatomy": ("another anatomy (seed + 2)", {"seed_offset": 2}, (1, 1, 1)),
}


def run(
    *,
    shape=(112, 130, 108),
    seed=0,
    backgrounds=("resharp", "pdf"),
    variants=None,
    edge_l2=True,
    out=None,
    log=print,
):
    """Run the benchmark; returns a JSON-able dict (also written to ``out``).

    ``edge_l2``: also the default background removal with ``method="edge-l2"``.
    """
    configs = [(bg, "l2") for bg in backgrounds] + ([(DEFAULT_BACKGROUND, "edge-l2")] if edge_l2 else [])
    from ..phantoms.realistic_head import realistic_head

    names = list(VARIANTS) if variants is None else list(variants)
    log(f"# pipeline variants: realistic head on {tuple(shape)}, seed {seed}\n# {machine_line()}")
    rows = []
    for key in names:
        name, opts, factor = VARIANTS[key]
        opts = dict(opts)
        grid = tuple(max(8, round(n * f)) for n, f in zip(shape, factor, strict=True))
        d = realistic_head(grid, seed=seed + opts.pop("seed_offset", 0), **opts)
        ikw = {"voxel_size_mm": d.voxel_size_mm, "b0_dir": d.b0_dir}
        _, oracle = _best(d.local_field_ppm, d.mask, d, ikw)
        row = {"variant": name, "voxel_size_mm": list(d.voxel_size_mm), "oracle": oracle, "runs": []}
        for bg, method in configs:
            for given in (False, True):
                t0 = time.perf_counter()
                r = qsm.pipeline(
                    d.magnitude,
                    d.phase,
                    d.te_s,
                    b0_tesla=d.b0_tesla,
                    mask=d.mask if given else None,
                    background=bg,
                    method=method,
                    **ikw,
                )
                wall = time.perf_counter() - t0
                err = metrics.nrmse(r.chi, d.chi, mask=d.mask)
                run_ = {"background": bg, "method": method, "mask": "true" if given else "echoes"}
                run_["chi_nrmse"] = err
                run_.update({"ratio_to_oracle": err / oracle, "wall_s": wall})
                if not given and method == "l2":
                    m, t = np.asarray(r.brain_mask), d.mask
                    row["dice"] = float(2 * (m & t).sum() / (m.sum() + t.sum()))
                    row["outside_percent"] = float(100 * (m & ~t).sum() / m.sum())
                row["runs"].append(run_)
        rows.append(row)
        cells = ", ".join(
            f"{_label(x['background'], x['method'])}/{x['mask']} {x['ratio_to_oracle']:.2f}×"
            for x in row["runs"]
        )
        log(
            f"{name}: oracle {oracle:.1f} %, {cells}, Dice {row['dice']:.3f}, {row['outside_percent']:.1f} % outside"
        )
    cols = [(bg, method, m) for bg, method in configs for m in ("echoes", "true")]
    head = "| variant | voxel (mm) | oracle (%) | " + " | ".join(
        f"{_label(bg, method)}, {m} mask" for bg, method, m in cols
    )
    lines = [
        f"**Realistic head {tuple(shape)}, seed {seed}: χ NRMSE (%) and × oracle, defaults (λ auto)**",
        "",
        head + " | echo mask Dice / % outside |",
        "|---|---|---:|" + "---:|" * len(cols) + "---:|",
    ]
    for row in rows:
        by = {(x["background"], x["method"], x["mask"]): x for x in row["runs"]}
        vox = "×".join(f"{v:.2f}" for v in row["voxel_size_mm"])
        cells = " | ".join(f"{by[c]['chi_nrmse']:.1f} ({by[c]['ratio_to_oracle']:.2f}×)" for c in cols)
        lines.append(
            f"| {row['variant']} | {vox} | {row['oracle']:.1f} | {cells} | "
            f"{row['dice']:.3f} / {row['outside_percent']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    log(text)
    doc = {"shape": list(shape), "seed": seed, "machine": machine_line(), "rows": rows}
    if out is not None:
        out = write_results(out, "pipeline_variants", doc, text)
    return doc


def _label(background, method):
    return background if method == "l2" else f"{background} + {method}"


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench pipeline-variants``, ``scripts/bench_pipeline_variants.py``)."""
    p.add_argument("--shape", type=int, nargs=3, default=(112, 130, 108), help="grid of the reference (2 mm)")
    p.add_argument("--seed", type=int, default=0, help="anatomy and noise of the simulated head")
    p.add_argument(
        "--backgrounds",
        nargs="+",
        choices=BACKGROUND_METHODS,
        default=("resharp", "pdf"),
        help="background removals to run (default: resharp pdf)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=None,
        help="variants to run (default: all): " + "; ".join(f"{k}: {v[0]}" for k, v in VARIANTS.items()),
    )
    p.add_argument(
        "--no-edge-l2",
        dest="edge_l2",
        action="store_false",
        help=f"skip the runs of {DEFAULT_BACKGROUND} followed by --method edge-l2 (about 3 s each at 2 mm)",
    )
    p.add_argument("--out", default="bench_out/pipeline-variants", help="output directory")


def main(args) -> int:
    """Run the benchmark with parsed ``args``."""
    run(
        shape=tuple(args.shape),
        seed=args.seed,
        backgrounds=tuple(args.backgrounds),
        variants=args.variants,
        edge_l2=args.edge_l2,
        out=args.out,
    )
    return 0
