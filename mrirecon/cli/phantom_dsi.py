"""``mrirecon phantom dsi``: a DSI slice, fully sampled and undersampled, with its truth."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError

NAME = "dsi"
HELP = "a DSI slice: multi-tensor signals on the 515-point q-lattice, Rician noise, an R≈3 sampling"
DESCRIPTION = """\
A DSI phantom slice (crossing bundles at about 90, 60 and 45 degrees, a
curved bundle, a through-plane bundle, single-fibre white matter, grey
matter, CSF; partial volume at every edge; diffusivity and orientation
texture), multi-tensor signals on the q-lattice within radius 5 (515 points),
Rician noise (SNR on b = 0 over the mask), and a variable-density q-space
undersampling at --accel.

Writes into DIR: dwi_full.nii.gz/.bval/.bvec (every lattice point, noisy),
dwi_R<accel>.nii.gz/.bval/.bvec (the undersampled acquisition, noisy),
truth.nii.gz (noise-free signal, full lattice) with truth.bval/.bvec,
mask.nii.gz, labels.nii.gz and phantom.json.

example:
  mrirecon phantom dsi -o ph/ --snr 30 --accel 3
  mrirecon dsi ph/dwi_R3.nii.gz --bvals ph/dwi_R3.bval --bvecs ph/dwi_R3.bvec -m ph/mask.nii.gz -o ph/full.nii.gz
"""


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", required=True, help="directory to write into (created)"
    )
    p.add_argument(
        "--shape", type=int, nargs=2, default=(40, 40), metavar=("X", "Y"), help="grid (default 40 40)"
    )
    p.add_argument("--b-max", type=float, default=4000.0, help="outer-shell b-value, s/mm² (default 4000)")
    p.add_argument("--snr", type=float, default=30.0, help="b = 0 SNR in the mask (default 30)")
    p.add_argument("--accel", type=float, default=3.0, help="q-space undersampling factor (default 3)")
    p.add_argument("--seed", type=int, default=0, help="texture, geometry jitter and noise seed (default 0)")
    p.add_argument("--mask-seed", type=int, default=0, help="undersampling seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _tag(accel):
    return f"R{accel:g}".replace(".", "p")


def run(args) -> int:
    from .. import __version__, io
    from ..io.bvals import bval_bvec_paths, write_bvals_bvecs
    from ..phantoms.dsi import LABELS, dsi_phantom, undersampling_mask

    t0 = time.perf_counter()
    if args.seed < 0 or args.mask_seed < 0:
        raise InvalidParameterError("--seed and --mask-seed must be >= 0")
    if not (args.accel >= 1):
        raise InvalidParameterError(f"--accel must be >= 1, got {args.accel}")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"{out} exists and is not a directory")
    tag = _tag(args.accel)
    vols = {"dwi_full": None, f"dwi_{tag}": None, "truth": None}
    paths = []
    for name in vols:
        nii = out / f"{name}.nii.gz"
        paths += [nii, *bval_bvec_paths(nii)]
    paths += [out / "mask.nii.gz", out / "labels.nii.gz", out / "phantom.json"]
    if out.is_dir():
        for p in paths:
            io.check_writable(p, force=args.force)
    ph = dsi_phantom(tuple(args.shape), b_max_s_mm2=args.b_max, snr=args.snr, seed=args.seed)
    idx = undersampling_mask(ph.lattice, accel=args.accel, seed=args.mask_seed)
    bvals, bvecs = ph.bvals, ph.bvecs
    vols = {
        "dwi_full": (ph.noisy, bvals, bvecs),
        f"dwi_{tag}": (ph.noisy[..., idx], bvals[idx], bvecs[idx]),
        "truth": (ph.signal, bvals, bvecs),
    }
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "Description": "mrirecon DSI phantom slice (multi-tensor signals on the q-lattice)",
        "Shape": list(ph.signal.shape),
        "BMax_s_mm2": args.b_max,
        "LatticePoints": ph.lattice.size,
        "SNR_b0": args.snr,
        "NoiseSD": ph.sigma,
        "Noise": "Rician",
        "Accel": args.accel,
        "AcquiredPoints": int(idx.size),
        "Seed": args.seed,
        "MaskSeed": args.mask_seed,
        "Labels": {str(k): v for k, v in LABELS.items()},
        "Software": {"name": "mrirecon", "version": __version__},
    }
    with contextlib.ExitStack() as stack:
        tmp = {p: stack.enter_context(io.atomic_path(p, force=args.force)) for p in paths}
        for name, (data, b, g) in vols.items():
            nii = out / f"{name}.nii.gz"
            io.save_nifti(tmp[nii], data, affine, force=True)
            bp, gp = bval_bvec_paths(nii)
            write_bvals_bvecs(tmp[bp], tmp[gp], b, g, force=True)
        io.save_nifti(tmp[out / "mask.nii.gz"], ph.mask, affine, force=True)
        io.save_nifti(tmp[out / "labels.nii.gz"], ph.labels.astype(np.float32), affine, force=True)
        io.write_json(tmp[out / "phantom.json"], meta, force=True)
    print(f"wrote {len(paths)} files into {out} ({time.perf_counter() - t0:.2f} s)")
    return 0
