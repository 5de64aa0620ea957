"""``mrirecon qsm``: susceptibility map from a local-field NIfTI volume."""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError, ShapeMismatchError
from ._device import add_device_argument, check_device, describe, to_device, to_numpy

NAME = "qsm"
HELP = "susceptibility map (ppm) from a local field map by closed-form L2 or TKD"
DESCRIPTION = """\
Dipole inversion of a local (background-removed) field map.

  l2   closed-form L2 with gradient regularisation (Bilgic et al., JMRI 2014):
       argmin ||F^-1 D F chi - phi||^2 + lam * sum_i ||grad_i chi||^2, two FFTs.
       --lam auto (default) picks lam from the L-curve's k-space sums: the
       minimum of generalised cross-validation (--lam-criterion gcv, default)
       or the maximum-curvature corner (--lam-criterion corner).
  tkd  truncated k-space division, threshold --tkd-threshold (default 0.19).

Iterative baselines (progress bar on stderr; --max-iter, --tol):
  cg-l2    the L2 objective (optionally weighted by --weights: ||W(F^-1 D F chi
           - phi)||^2 + lam ||grad chi||^2) by conjugate gradients; with no
           weights it converges to l2. --lam auto uses the GCV lambda of l2.
  tv       1/2 ||W(F^-1 D F chi - phi)||^2 + lam ||grad chi||_1 by ADMM (split
           Bregman); --lam is required (a number: the TV lambda is on another
           scale than the L2 one), --mu sets the ADMM penalty (default 10 lam).
  tv-nlcg  the same TV objective (|.| smoothed) by nonlinear CG.

A 4-D field (x, y, z, t; fMRI-style QSM) is inverted volume by volume with one
kernel and one FFT plan (l2 or tkd); --lam auto picks one lambda on the first
volume for the whole series; the mask is 3-D (every volume) or of the series'
shape. The field is zeroed outside the mask before the inversion; chi is written in
ppm, zero outside the mask and relative to its mean inside the mask. The voxel
size comes from the header and the B0 direction from the affine (scanner z
expressed in voxel axes) unless --b0-direction is given. A JSON sidecar
(OUT.json) records the method, lam, B0 direction, voxel size, units, inputs and
version. Nothing is written if any input is bad; existing outputs are kept
unless --force.

example:
  mrirecon qsm field.nii.gz -m mask.nii.gz -o chi.nii.gz --figure chi.png
  mrirecon qsm phase_diff.nii.gz -m mask.nii.gz -o chi.nii.gz \\
      --field-units rad --b0-tesla 3 --te-s 0.02 --lam 0.02
  mrirecon qsm field_series.nii.gz -m mask.nii.gz -o chi_series.nii.gz   # 4-D (x, y, z, t)
"""


def _lam(text: str):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"lambda must be a positive number, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "field", metavar="FIELD.nii[.gz]", help="local field map, 3-D NIfTI (units: --field-units)"
    )
    p.add_argument(
        "-m",
        "--mask",
        metavar="MASK.nii[.gz]",
        required=True,
        help="brain mask, 3-D NIfTI (nonzero = inside)",
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.nii.gz", required=True, help="susceptibility map to write (ppm)"
    )
    p.add_argument(
        "--method",
        choices=("l2", "tkd", "cg-l2", "tv", "tv-nlcg"),
        default="l2",
        help="inversion method (default: l2)",
    )
    p.add_argument(
        "--lam",
        type=_lam,
        default="auto",
        metavar="VALUE|auto",
        help="L2 regularisation weight lambda > 0 (dimensionless: field in ppm, unitless "
        "finite differences), or 'auto' (default: auto)",
    )
    p.add_argument(
        "--lam-criterion",
        choices=("gcv", "corner"),
        default="gcv",
        help="with --lam auto: GCV minimum (default) or L-curve maximum-curvature corner",
    )
    p.add_argument(
        "--tkd-threshold",
        type=float,
        default=0.19,
        metavar="T",
        help="TKD truncation level in (0, 2/3) (default: 0.19)",
    )
    p.add_argument(
        "--b0-direction",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="B0 direction in voxel axes (normalised); default: from the NIfTI affine",
    )
    p.add_argument(
        "--field-units",
        choices=("ppm", "hz", "rad"),
        default="ppm",
        help="units of FIELD: ppm of B0 (default), hz (needs --b0-tesla), or rad of phase "
        "accumulated over --te-s (needs --b0-tesla and --te-s)",
    )
    p.add_argument("--b0-tesla", type=float, metavar="T", help="main field strength in tesla")
    p.add_argument("--te-s", type=float, metavar="S", help="echo time in seconds (for --field-units rad)")
    p.add_argument(
        "--pad",
        type=int,
        default=0,
        metavar="N",
        help="zero voxels added per axis before the FFT (default: 0)",
    )
    p.add_argument(
        "--weights",
        metavar="W.nii[.gz]",
        help="data weights W >= 0 for cg-l2, tv and tv-nlcg (e.g. normalised magnitude); default 1",
    )
    p.add_argument(
        "--max-iter", type=int, default=None, metavar="N", help="iterative methods: maximum iterations"
    )
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        metavar="T",
        help="iterative methods: stopping tolerance (cg-l2: relative residual, default 1e-6; "
        "tv, tv-nlcg: relative change of chi, default 1e-3 / 1e-4)",
    )
    p.add_argument("--mu", type=float, default=None, help="tv: ADMM penalty (default 10 * lam)")
    p.add_argument(
        "--figure", metavar="OUT.png", help="also write orthogonal slices of chi (window +-0.1 ppm)"
    )
    p.add_argument("--lcurve-figure", metavar="LC.png", help="with --lam auto: also write the L-curve")
    add_device_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite existing output files")


METHODS = {
    "l2": "closed-form L2 (gradient regularisation)",
    "tkd": "TKD",
    "cg-l2": "weighted L2 (gradient regularisation) by conjugate gradients",
    "tv": "TV by ADMM (split Bregman)",
    "tv-nlcg": "TV (smoothed) by nonlinear CG",
}


def _iterative(args, qsm, field, mask, weights, kw):
    """Run cg-l2, tv or tv-nlcg; returns chi and the sidecar parameters."""
    lam = args.lam
    params = {}
    if args.method == "cg-l2" and lam == "auto":
        lam = qsm.lcurve(field, mask, **kw).lam
        params["LambdaSelection"] = "GCV minimum of the closed-form L2"
    opts = {"weights": weights, "lam": lam, "progress": True, "return_result": True, **kw}
    if args.max_iter is not None:
        opts["max_iter"] = args.max_iter
    if args.tol is not None:
        opts["tol"] = args.tol
    if args.method == "cg-l2":
        res = qsm.cg_l2(field, mask, **opts)
    elif args.method == "tv":
        res = qsm.tv_admm(field, mask, mu=args.mu, **opts)
        params["Mu"] = args.mu if args.mu is not None else 10 * lam
    else:
        res = qsm.tv_nlcg(field, mask, **opts)
    params.update(
        {
            "Lambda": lam,
            "Iterations": res.iterations,
            "Converged": bool(res.converged),
            "Weights": str(Path(args.weights).resolve()) if args.weights else None,
        }
    )
    if not res.converged:
        print(
            f"warning: {args.method} stopped after {res.iterations} iterations without meeting the tolerance"
        )
    return res.x, params


def _check_figure_format(flag, path) -> None:
    from matplotlib.figure import Figure

    suffix = Path(path).suffix.lstrip(".").lower()
    supported = Figure().canvas.get_supported_filetypes()
    if suffix not in supported:
        raise InvalidParameterError(
            f"{flag} {path}: unsupported figure format {suffix!r}; use one of {', '.join(sorted(supported))}"
        )


def _warn_implausible(args, field, mask) -> None:
    """One 'warning:' line each for TE > 0.2 s, B0 > 12 T and a field above 10 ppm; stop on an all-zero field."""
    import warnings

    from ..qsm.pipeline import warn_implausible

    peak = float(np.abs(field[mask]).max()) if mask.any() else 0.0
    if peak == 0.0:
        raise InvalidParameterError(f"{args.field}: the field is zero everywhere inside the mask")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_implausible(te_s=args.te_s, b0_tesla=args.b0_tesla, field_ppm_max=peak)
    for w in caught:
        print(f"warning: {w.message}")


def run(args) -> int:
    from .. import __version__, io, qsm

    t0 = time.perf_counter()
    out = Path(args.output)
    sidecar = io.sidecar_path(out)
    if args.method == "tkd" and not 0 < args.tkd_threshold < 2 / 3:
        raise InvalidParameterError(f"--tkd-threshold must be in (0, 2/3), got {args.tkd_threshold}")
    if args.pad < 0:
        raise InvalidParameterError(f"--pad must be >= 0, got {args.pad}")
    if args.field_units in ("hz", "rad") and args.b0_tesla is None:
        raise InvalidParameterError(f"--field-units {args.field_units} needs --b0-tesla")
    if args.field_units == "rad" and args.te_s is None:
        raise InvalidParameterError("--field-units rad needs --te-s (the echo time in seconds)")
    if args.lcurve_figure and not (args.method == "l2" and args.lam == "auto"):
        raise InvalidParameterError("--lcurve-figure needs --method l2 --lam auto")
    check_device(args.device)
    iterative = args.method in ("cg-l2", "tv", "tv-nlcg")
    if not iterative and (args.max_iter is not None or args.tol is not None or args.weights):
        raise InvalidParameterError("--max-iter, --tol and --weights are for --method cg-l2, tv or tv-nlcg")
    if args.method in ("tv", "tv-nlcg") and args.lam == "auto":
        raise InvalidParameterError(f"--method {args.method} needs a numeric --lam (no automatic TV lambda)")
    if args.mu is not None and (args.method != "tv" or not math.isfinite(args.mu) or args.mu <= 0):
        raise InvalidParameterError("--mu must be a positive number, and only goes with --method tv")
    if args.max_iter is not None and args.max_iter < 1:
        raise InvalidParameterError(f"--max-iter must be >= 1, got {args.max_iter}")
    if args.tol is not None and not (math.isfinite(args.tol) and args.tol >= 0):
        raise InvalidParameterError(f"--tol must be >= 0, got {args.tol}")
    if iterative and args.pad:
        raise InvalidParameterError("--pad is only for --method l2 and tkd")
    outputs = [out, sidecar] + [Path(f) for f in (args.figure, args.lcurve_figure) if f]
    if len({str(p.resolve()) for p in outputs}) != len(outputs):
        raise InvalidParameterError("output, sidecar and figure paths must all differ")
    for flag, fig_path in (("--figure", args.figure), ("--lcurve-figure", args.lcurve_figure)):
        if fig_path:
            _check_figure_format(flag, fig_path)
    if not str(out).lower().endswith((".nii", ".nii.gz")):
        raise InvalidParameterError(f"{out}: output must end in .nii or .nii.gz")
    for path in outputs:
        io.check_writable(path, force=args.force)
    inputs = {Path(p).resolve() for p in (args.field, args.mask, args.weights) if p}
    if any(p.resolve() in inputs for p in outputs):
        raise InvalidParameterError("an output path is one of the inputs")

    field_vol = io.load_nifti(args.field, ndim=None)
    if field_vol.data.ndim not in (3, 4):
        raise ShapeMismatchError(
            f"{field_vol.path.name}: expected a 3-D volume (x, y, z) or a 4-D series (x, y, z, t), "
            f"got shape {field_vol.data.shape}"
        )
    series = field_vol.data.ndim == 4
    if series and args.method not in ("l2", "tkd"):
        raise InvalidParameterError(
            f"{field_vol.path.name} is a 4-D series: --method l2 or tkd (one kernel for every volume)"
        )
    mask_vol = io.load_nifti(args.mask, ndim=None)
    io.check_same_grid(field_vol, mask_vol)
    if mask_vol.data.ndim != 3 and mask_vol.data.shape != field_vol.data.shape:
        raise ShapeMismatchError(
            f"{mask_vol.path.name}: expected a 3-D mask (x, y, z) or one of the series' shape "
            f"{field_vol.data.shape}, got shape {mask_vol.data.shape}"
        )
    mask = mask_vol.data != 0
    # a 3-D mask serves every volume of a series
    mask_b = mask[..., None] if series and mask.ndim == 3 else mask
    if not mask.any():
        raise InvalidParameterError(f"{mask_vol.path.name}: mask is empty (no nonzero voxel)")
    bad = int(np.count_nonzero(~np.isfinite(field_vol.data[mask])))
    if bad:
        raise InvalidParameterError(f"{field_vol.path.name}: {bad} NaN/Inf voxels inside the mask")
    if args.b0_direction is not None:
        b0 = args.b0_direction
        if not all(math.isfinite(v) for v in b0) or math.hypot(*b0) < 1e-12:
            raise InvalidParameterError(f"--b0-direction must be a nonzero finite vector, got {b0}")
        b0_source = "command line"
    else:
        b0 = io.b0_direction_from_affine(field_vol.affine)
        b0_source = "affine"
    from ..kspace import normalize_direction

    b0 = normalize_direction(b0)
    vox = field_vol.voxel_size_mm
    field = np.where(mask_b, field_vol.data, np.float32(0))
    field = qsm.field_to_ppm(field, units=args.field_units, b0_tesla=args.b0_tesla, te_s=args.te_s).astype(
        np.float32, copy=False
    )
    _warn_implausible(args, field, mask)
    weights = None
    if args.weights:
        weights_vol = io.load_nifti(args.weights)
        io.check_same_grid(field_vol, weights_vol)
        weights = weights_vol.data
    host_mask = mask
    if args.device == "gpu":  # one copy in; everything below runs on the device
        field, mask = to_device(field, "gpu"), to_device(mask, "gpu")
        weights = None if weights is None else to_device(weights, "gpu")
    kw = {"voxel_size_mm": vox, "b0_dir": b0, "pad": args.pad}
    curve = None
    if iterative:
        kw.pop("pad")
        chi, params = _iterative(args, qsm, field, mask, weights, kw)
    elif args.method == "l2":
        lam = args.lam
        if lam == "auto":  # a series: one λ for every volume, chosen on the first
            curve = qsm.lcurve(
                field[..., 0] if series else field,
                mask[..., 0] if series and mask.ndim == 4 else mask,
                criterion=args.lam_criterion,
                **kw,
            )
            lam = curve.lam
        chi = qsm.closed_form_l2(field, mask, lam=lam, **kw)
        params = {
            "Lambda": lam,
            "LambdaSelection": {"gcv": "GCV minimum", "corner": "L-curve corner"}[args.lam_criterion]
            if curve
            else "given",
        }
    else:
        chi = qsm.tkd(field, mask, threshold=args.tkd_threshold, **kw)
        params = {"TKDThreshold": args.tkd_threshold}
    chi = to_numpy(chi)  # one copy out (a no-op on the CPU)
    mask = host_mask
    elapsed = time.perf_counter() - t0

    meta = {
        "Description": "Magnetic susceptibility map",
        "Method": METHODS[args.method],
        **params,
        "Units": "ppm",
        "Reference": "mean inside the mask",
        "B0Direction": list(b0),
        "B0DirectionSource": b0_source,
        "VoxelSize_mm": list(vox),
        "FieldUnits": args.field_units,
        "MagneticFieldStrength_T": args.b0_tesla,
        "EchoTime_s": args.te_s,
        "Padding_voxels": args.pad,
        **({"Volumes": int(field_vol.data.shape[3])} if series else {}),
        **({"LambdaChosenOnVolume": 0} if series and curve is not None else {}),
        "Device": describe(args.device),
        "Inputs": {"field": str(field_vol.path.resolve()), "mask": str(mask_vol.path.resolve())},
        "Software": {"name": "mrirecon", "version": __version__},
        "Command": " ".join(["mrirecon", *args._argv]),
        "ElapsedSeconds": round(elapsed, 4),
    }
    if curve is not None:
        meta["LCurve"] = curve.as_dict()
    figs = []
    if args.figure:
        from ..plot import orthoslices

        lam_title = f", λ = {params['Lambda']:.3g}" if params.get("Lambda") is not None else ""
        figs.append(
            (
                orthoslices(
                    chi[..., 0] if series else chi,
                    voxel_size_mm=vox,
                    suptitle=f"{out.name}{' volume 0' if series else ''} ({meta['Method']}{lam_title})",
                ),
                args.figure,
            )
        )
    if args.lcurve_figure:
        from ..plot import lcurve_figure

        figs.append((lcurve_figure(curve), args.lcurve_figure))

    # write everything to temporary files first; rename only when all succeeded
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(io.atomic_path(out, force=args.force))
        io.save_nifti(
            tmp, chi, field_vol.affine, field_vol.header, force=True, description="chi ppm mrirecon"
        )
        tmp = stack.enter_context(io.atomic_path(sidecar, force=args.force))
        io.write_json(tmp, meta, force=True)
        for fig, path in figs:
            tmp = stack.enter_context(io.atomic_path(path, force=args.force))
            fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".").lower() or "png")
    lam_text = f", lambda {params['Lambda']:.4g}" if "Lambda" in params else ""
    vols = f", {field_vol.data.shape[3]} volumes" if series else ""
    print(f"wrote {out} ({args.method}{lam_text}{vols}, {elapsed:.2f} s)")
    return 0
