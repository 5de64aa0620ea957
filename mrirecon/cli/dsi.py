"""``mrirecon dsi``: complete undersampled DSI q-space (NIfTI + FSL bval/bvec in, the same out)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from ..errors import InvalidParameterError, ShapeMismatchError

NAME = "dsi"
HELP = "DSI: complete undersampled q-space on the full lattice (closed-form PCA-L2, or L1)"
DESCRIPTION = """\
Diffusion spectrum imaging from undersampled q-space. DWI is a 4-D NIfTI
(volumes last) with FSL .bval/.bvec files whose q = sqrt(b/b_max)·r_max·g sit
on a Cartesian lattice (e.g. a subset of the 515-point grid). Writes OUT with
the signal on every lattice point and OUT.bval/OUT.bvec beside it (any DSI
tool, e.g. dipy's DiffusionSpectrumModel, takes it from there), a JSON
sidecar OUT.json with the parameters, and on request the PDF (--pdf, one
volume per PDF grid point, grid^3 volumes) and GFA (--gfa) maps.

methods: pca-l2 (default: closed form, lambda by GCV, basis from multi-tensor
simulations or --train data), l1 (wavelet sparsity of the PDF by FISTA),
zero-filled.

example:
  mrirecon phantom dsi -o ph/
  mrirecon dsi ph/dwi_R3.nii.gz --bvals ph/dwi_R3.bval --bvecs ph/dwi_R3.bvec \\
      -m ph/mask.nii.gz -o ph/full.nii.gz --gfa ph/gfa.nii.gz
"""


def _lam(text):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise InvalidParameterError(f"--lam must be a number or 'auto', got {text!r}") from None


def add_arguments(p) -> None:
    p.add_argument("dwi", metavar="DWI", help="4-D NIfTI, volumes last")
    p.add_argument("--bvals", required=True, metavar="BVAL", help="FSL .bval file")
    p.add_argument("--bvecs", required=True, metavar="BVEC", help="FSL .bvec file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output .nii.gz (full lattice)")
    p.add_argument("-m", "--mask", metavar="M", help="mask NIfTI (default: all voxels)")
    p.add_argument("--method", choices=("pca-l2", "l1", "zero-filled"), default="pca-l2")
    p.add_argument("--lam", type=_lam, default="auto", help="regularisation weight or 'auto' (GCV)")
    p.add_argument("--n-components", type=int, default=None, help="PCA components (default 100)")
    p.add_argument("--train", metavar="FULL", help="fully sampled 4-D NIfTI to learn the basis from")
    p.add_argument("--train-bvals", metavar="BVAL")
    p.add_argument("--train-bvecs", metavar="BVEC")
    p.add_argument("--train-mask", metavar="M", help="training voxels (default: b = 0 above 10 %% of max)")
    p.add_argument(
        "--lattice-radius-sq",
        type=int,
        default=None,
        help="r_max² of the output lattice (default: 25 for the 515 grid)",
    )
    p.add_argument("--max-iter", type=int, default=500, help="l1: iterations (default 500)")
    p.add_argument("--tol", type=float, default=1e-4, help="l1: relative change to stop (default 1e-4)")
    p.add_argument("--pdf", metavar="PDF", help="also write the PDF (grid^3 volumes)")
    p.add_argument("--pdf-grid-size", type=int, default=11, help="odd PDF grid edge (default 11)")
    p.add_argument("--gfa", metavar="GFA", help="also write the GFA map (dipy's DSI ODF)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _load_dwi(path, bval, bvec, what):
    from .. import io
    from ..io.bvals import read_bvals_bvecs

    vol = io.load_nifti(path, ndim=None)
    bvals, bvecs = read_bvals_bvecs(bval, bvec)
    data = vol.data
    if data.ndim != 4:
        raise ShapeMismatchError(f"{path}: expected a 4-D {what} NIfTI (x, y, z, volumes), got {data.shape}")
    if data.shape[-1] != bvals.size:
        raise ShapeMismatchError(
            f"{path} has {data.shape[-1]} volumes but {bval} has {bvals.size} b-values; expected one per volume"
        )
    return vol, data, bvals, bvecs


def run(args) -> int:
    from .. import __version__, dsi, io
    from ..io.atomic import NIFTI_SUFFIXES
    from ..io.bvals import bval_bvec_paths, write_bvals_bvecs

    t0 = time.perf_counter()
    out = Path(args.output)
    if not str(out).lower().endswith(NIFTI_SUFFIXES):
        raise InvalidParameterError(f"{out}: output must end in .nii or .nii.gz")
    bval_out, bvec_out = bval_bvec_paths(out)
    side = io.sidecar_path(out)
    outputs = [out, bval_out, bvec_out, side] + [Path(p) for p in (args.pdf, args.gfa) if p]
    if len({str(p.resolve()) for p in outputs}) != len(outputs):
        raise InvalidParameterError("output paths must differ from each other")
    for p in outputs:
        io.check_writable(p, force=args.force)
    if args.pdf and (args.pdf_grid_size < 11 or args.pdf_grid_size % 2 == 0):
        raise InvalidParameterError(f"--pdf-grid-size must be odd and >= 11, got {args.pdf_grid_size}")
    vol, data, bvals, bvecs = _load_dwi(args.dwi, args.bvals, args.bvecs, "DWI")
    mask = None
    if args.mask:
        mv = io.load_nifti(args.mask, ndim=3)
        if mv.data.shape != data.shape[:3]:
            raise ShapeMismatchError(f"{args.mask} has shape {mv.data.shape}, the DWI {data.shape[:3]}")
        mask = mv.data > 0.5
    train = None
    if args.train:
        if not (args.train_bvals and args.train_bvecs):
            raise InvalidParameterError("--train needs --train-bvals and --train-bvecs")
        _, tdata, tb, tg = _load_dwi(args.train, args.train_bvals, args.train_bvecs, "training")
        tmask = io.load_nifti(args.train_mask, ndim=3).data > 0.5 if args.train_mask else None
        kw = {} if args.n_components is None else {"n_components": args.n_components}
        train = dsi.basis_from_data(tdata, tb, tg, mask=tmask, **kw)
    res = dsi.reconstruct(
        data,
        bvals,
        bvecs,
        method=args.method,
        lam=args.lam,
        mask=mask,
        train=train,
        n_components=args.n_components,
        radius_sq=args.lattice_radius_sq,
        max_iter=args.max_iter,
        tol=args.tol,
        progress=args.method == "l1",
    )
    extra = {}
    if args.pdf:
        extra["pdf"] = dsi.pdf(res.signal, res.lattice, grid_size=args.pdf_grid_size).reshape(
            data.shape[:3] + (-1,)
        )
    if args.gfa:
        g = dsi.gfa(dsi.odf(res.signal, res.lattice))
        if mask is not None:
            g = g * mask
        extra["gfa"] = g
    meta = {
        "Description": "DSI q-space completed on the full lattice",
        "Method": res.method,
        "Lambda": res.lam,
        "LambdaSource": res.lam_source,
        "LatticeRadiusSquared": res.lattice.radius_sq,
        "LatticePoints": res.lattice.size,
        "BMax_s_mm2": res.lattice.b_max_s_mm2,
        "AcquiredVolumes": int(bvals.size),
        "Info": {k: v for k, v in res.info.items() if k != "gcv"},
        "PDF": {"grid_size": args.pdf_grid_size, "filter_width": 32.0} if args.pdf else None,
        "Inputs": {
            "dwi": str(args.dwi),
            "bvals": str(args.bvals),
            "bvecs": str(args.bvecs),
            "mask": args.mask,
        },
        "Command": "mrirecon " + " ".join(getattr(args, "_argv", [])),
        "Software": {"name": "mrirecon", "version": __version__},
    }
    with contextlib.ExitStack() as stack:
        tmp_out = stack.enter_context(io.atomic_path(out, force=args.force))
        tb = stack.enter_context(io.atomic_path(bval_out, force=args.force))
        tg = stack.enter_context(io.atomic_path(bvec_out, force=args.force))
        tj = stack.enter_context(io.atomic_path(side, force=args.force))
        io.save_nifti(tmp_out, res.signal, vol.affine, vol.header, force=True)
        write_bvals_bvecs(tb, tg, res.bvals, res.bvecs, force=True)
        if args.pdf:
            tp = stack.enter_context(io.atomic_path(args.pdf, force=args.force))
            io.save_nifti(tp, extra["pdf"], vol.affine, force=True)
        if args.gfa:
            tf = stack.enter_context(io.atomic_path(args.gfa, force=args.force))
            io.save_nifti(tf, extra["gfa"], vol.affine, force=True)
        io.write_json(tj, meta, force=True)
    lam = "–" if res.lam is None else f"{res.lam:.3g} ({res.lam_source})"
    print(
        f"wrote {out} ({res.lattice.size} lattice points from {bvals.size} volumes, {res.method}, λ {lam}) "
        f"and {bval_out.name}/{bvec_out.name} in {time.perf_counter() - t0:.2f} s"
    )
    return 0
