"""``mrirecon sense``: parallel-imaging reconstruction of multi-coil Cartesian k-space."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import numpy as np

from ..device import get_array_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ._device import add_device_argument, check_device, describe, to_device, to_numpy

NAME = "sense"
HELP = "SENSE reconstruction of multi-coil Cartesian k-space (closed-form unfold, CG, L1-wavelet, TV)"
DESCRIPTION = """\
Reads k-space (coil, *spatial) from .npy/.npz (arrays 'kspace', optional 'sens',
'mask', 'noise'), BART .cfl/.hdr (READ, PHS1, PHS2, COIL), fastMRI HDF5 ('kspace'
(slices, coil, H, W), phase encoding along W; --slice picks one) or ISMRMRD
HDF5 (Cartesian; readout oversampling cropped to the recon matrix, noise
scans used for prewhitening, calibration lines as the ACS block, slices and
repetitions reconstructed one by one), zero where not sampled. Phase encoding
is along the leading spatial axes, readout last.

methods (objective with the orthonormal centred FFT, the lambda scale of BART
pics -l2 and SigPy SenseRecon):
  unfold      ||M F S x - y||^2 + lam ||x||^2 in closed form: the uniform lattice
              unfolded pixel group by pixel group, then --acs-iter CG iterations
              preconditioned by the unfold
              on all acquired lines (so calibration lines are used); default
  cg          the same objective by CG (--max-iter, default 30)
  l1-wavelet  1/2 ||M F S x - y||^2 + lam ||W x||_1 (Daubechies-4) by FISTA
  tv          1/2 ||M F S x - y||^2 + lam TV(x) by PDHG
Coil maps: -s SENS (.npy/.npz 'sens'/.cfl, (coil, *spatial)) or --espirit
(from the calibration block of the data). Writes the magnitude as NIfTI (voxel
size --voxel-size-mm), --complex also writes OUT_real/OUT_imag, --gfactor a
g-factor map of the lattice (closed form). A JSON sidecar records everything.

example:
  mrirecon phantom sense -o case/
  mrirecon sense case/kspace.npz -o img.nii.gz --gfactor g.nii.gz      # lambda from the data
  mrirecon sense case/scan.h5 --espirit -o img_ismrmrd.nii.gz            # ISMRMRD
  mrirecon sense case/kspace.npz -o img_l1.nii.gz --method l1-wavelet --lam 1e-3
"""


def add_arguments(p) -> None:
    p.add_argument("kspace", metavar="KSPACE", help="k-space file (.npy, .npz, .cfl/.hdr, .h5)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz", help="image to write (magnitude)")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "-s", "--sens", metavar="SENS", help="coil sensitivities file (default: 'sens' in the .npz)"
    )
    src.add_argument(
        "--espirit", action="store_true", help="estimate the maps with ESPIRiT from the ACS block"
    )
    p.add_argument(
        "--method", choices=("unfold", "cg", "l1-wavelet", "tv"), default="unfold", help="default unfold"
    )
    p.add_argument(
        "--lam",
        default=None,
        help="lambda >= 0, or 'auto' (default for unfold: the discrepancy principle on the full problem, "
        "lattice + ACS lines, with sigma from the noise scan or estimated) or the lattice-only "
        "'gcv'/'sure'/'upre'; "
        "cg: default 0, l1-wavelet/tv: default 1e-3",
    )
    p.add_argument(
        "--accel", type=int, nargs="+", metavar="R", help="acceleration R (or Ry Rz); default: detected"
    )
    p.add_argument(
        "--acs-iter",
        type=int,
        default=4,
        help="unfold: most PCG iterations with the ACS lines, from the unfold and preconditioned by it (default 4)",
    )
    p.add_argument(
        "--virtual-coils",
        type=int,
        default=None,
        metavar="N",
        help="SVD coil compression to N virtual coils from the calibration block, after prewhitening "
        "(k-space and maps alike; the benchmark measures its cost: 32 -> 16 about 1.003x the NRMSE)",
    )
    p.add_argument("--max-iter", type=int, default=None, help="cg/l1-wavelet/tv iterations")
    p.add_argument("--slice", type=int, default=None, help="fastMRI files: the slice to reconstruct")
    p.add_argument(
        "--voxel-size-mm", type=float, nargs="+", default=[1.0], help="voxel size for the NIfTI (mm)"
    )
    p.add_argument("--complex", action="store_true", help="also write the real and imaginary parts")
    p.add_argument("--gfactor", metavar="G.nii.gz", help="also write the g-factor map of the lattice")
    add_device_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")


def _compress(k, n_virtual, sampled):
    """SVD compression of (whitened) k-space from its calibration block (the whole data without one)."""
    from ..sense import coils, sampling

    pat = sampling.detect_pattern(sampled)
    calib = None
    if isinstance(pat.acs_lines, int) and pat.acs_lines >= 2 and pat.acs_start is not None:
        calib = k[:, pat.acs_start : pat.acs_start + pat.acs_lines]
    kc, cmat, energy = coils.coil_compress(k, n_virtual, calib=calib, return_energy=True)
    info = {
        "from": int(k.shape[0]),
        "to": int(n_virtual),
        "method": "SVD of the " + ("calibration block" if calib is not None else "whole k-space"),
        "EnergyKept": round(float(energy), 6),
    }
    return kc, cmat, info


def _outputs(args):
    from ..io import sidecar_path

    out = Path(args.output)
    if not str(out).lower().endswith((".nii", ".nii.gz")):
        raise InvalidParameterError(f"{out}: output must end in .nii or .nii.gz")
    stem = str(out)[: -len(".nii.gz")] if str(out).endswith(".nii.gz") else str(out)[: -len(".nii")]
    paths = {"mag": out, "json": sidecar_path(out)}
    if args.complex:
        paths["real"] = Path(stem + "_real.nii.gz")
        paths["imag"] = Path(stem + "_imag.nii.gz")
    if args.gfactor:
        paths["g"] = Path(args.gfactor)
    return paths


def _norm(a):
    t = tuple(int(v) for v in a) if np.ndim(a) else (int(a),)
    while len(t) > 1 and t[-1] == 1:
        t = t[:-1]
    return t


def _jsonable(v):
    return [int(a) for a in v] if np.ndim(v) else (int(v) if isinstance(v, (int, np.integer)) else v)


def _parse_lam(value, method):
    from ..sense.lam import CRITERIA

    if value is None:
        return "auto" if method == "unfold" else (0.0 if method == "cg" else 1e-3)
    if str(value).lower() in ("auto", *CRITERIA):
        if method != "unfold":
            raise InvalidParameterError(
                f"--lam {value} (from the data) is for --method unfold; give a number"
            )
        return str(value).lower()
    try:
        lam = float(value)
    except ValueError:
        raise InvalidParameterError(
            f"--lam must be a number >= 0 or one of auto, {', '.join(CRITERIA)}; got {value!r}"
        ) from None
    if not math.isfinite(lam) or lam < 0:
        raise InvalidParameterError(f"--lam must be >= 0, got {lam}")
    return lam


def run(args) -> int:
    import shlex
    import sys

    from .. import __version__, io
    from ..sense import coils, iterative, recon, sampling
    from ..sense.unfold import gfactor

    t0 = time.perf_counter()
    lam = _parse_lam(args.lam, args.method)
    if args.acs_iter < 0 or (args.max_iter is not None and args.max_iter < 1):
        raise InvalidParameterError("--acs-iter must be >= 0 and --max-iter >= 1")
    check_device(args.device)
    paths = _outputs(args)
    for p in paths.values():
        io.check_writable(p, force=args.force)

    data = io.load_kspace(args.kspace, slice_index=args.slice)
    k = data["kspace"]
    if data.get("format") == "ISMRMRD" and len(data.get("batch", [])) > 1:
        if args.slice is None:
            raise InvalidParameterError(
                f"{args.kspace}: {len(data['batch'])} slices/repetitions {data['batch']}; pick one with --slice I"
            )
        if not 0 <= args.slice < k.shape[0]:
            raise InvalidParameterError(f"--slice must be in [0, {k.shape[0]}), got {args.slice}")
        k = k[args.slice]
    whitened = False
    if data.get("noise") is not None:
        k, wmat = coils.prewhiten(k, noise=np.asarray(data["noise"]))
        whitened = True
    if k.ndim not in (3, 4):
        raise ShapeMismatchError(
            f"k-space must be (coil, *spatial) with 2 or 3 spatial axes, got {k.shape} (use --slice)"
        )
    if not np.all(np.isfinite(k)):
        raise InvalidParameterError(f"{args.kspace}: k-space has NaN/Inf values")
    sampled = np.any(k != 0, axis=0)
    if not sampled.any():
        raise InvalidParameterError(f"{args.kspace}: no sampled k-space point (all zero)")
    compression = None
    if args.virtual_coils is not None:
        nc = k.shape[0]
        if not 1 <= args.virtual_coils <= nc:
            raise InvalidParameterError(
                f"--virtual-coils must be in [1, {nc}] (the data's coils), got {args.virtual_coils}"
            )
        k, cmat, compression = _compress(k, args.virtual_coils, sampled)
    if args.device == "gpu":  # one copy in; everything below runs on the device
        k = to_device(k, "gpu")
    if args.espirit:
        pat = sampling.detect_pattern(sampled)
        acs = pat.acs_lines if isinstance(pat.acs_lines, int) else pat.acs_lines[0]
        if acs < 8:
            raise InvalidParameterError(
                f"--espirit needs a calibration block of at least 8 lines, found {acs}"
            )
        sens, _ = coils.espirit_maps(k, acs=acs)
        maps_from = "ESPIRiT"
    else:
        if args.sens:
            sdata = io.load_kspace(args.sens, key="sens")
            sens = sdata["kspace"]
            maps_from = str(Path(args.sens).resolve())
        elif "sens" in data:
            sens = np.asarray(data["sens"])
            maps_from = "the k-space file's 'sens'"
        else:
            raise InvalidParameterError("no coil sensitivities: give -s SENS or --espirit")
        if whitened:
            if np.shape(sens)[0] != wmat.shape[1]:
                raise ShapeMismatchError(
                    f"coil maps have shape {np.shape(sens)} but the k-space has {k.shape}"
                )
            sens = coils.apply_coil_matrix(wmat, np.asarray(sens))
    if compression is not None and not args.espirit:
        if np.shape(sens)[0] != compression["from"]:
            raise ShapeMismatchError(
                f"coil maps have {np.shape(sens)[0]} coils but the k-space had {compression['from']}"
            )
        sens = coils.apply_coil_matrix(cmat, np.asarray(sens))
    if args.device == "gpu":
        sens = to_device(sens, "gpu")
    xp = get_array_module(k)
    sens = xp.asarray(sens).astype(np.complex64, copy=False)
    if sens.shape != k.shape:
        raise ShapeMismatchError(f"coil maps have shape {sens.shape} but the k-space has {k.shape}")
    if not bool(xp.all(xp.isfinite(sens))):
        raise InvalidParameterError("coil sensitivities have NaN/Inf values")
    accel = None
    pattern = sampling.detect_pattern(sampled)
    detected = 1 if pattern.kind == "full" else pattern.accel
    if args.accel:
        accel = args.accel[0] if len(args.accel) == 1 else tuple(args.accel[:2])
        n0 = k.shape[1]
        if isinstance(accel, int) and (accel < 1 or n0 % accel):
            raise InvalidParameterError(f"R={accel} does not divide the {n0} phase-encoding lines")
        if pattern.kind != "irregular" and _norm(accel) != _norm(detected):
            raise InvalidParameterError(
                f"--accel {' '.join(map(str, args.accel))} contradicts the sampling detected in the data: "
                f"R={detected}, offset {pattern.offset}, ACS block of {pattern.acs_lines} lines"
            )
    header_accel = data.get("accel")
    if header_accel and header_accel > 1 and pattern.kind == "uniform" and header_accel != detected:
        raise InvalidParameterError(
            f"{args.kspace}: the header's acceleration {header_accel} contradicts the sampling detected "
            f"in the data (R={detected}, offset {pattern.offset})"
        )

    info = {}
    if args.method == "unfold":
        img, info = recon.sense(
            k,
            sens,
            lam=lam,
            accel=accel,
            acs_iter=args.acs_iter,
            noise_sd=1.0 if whitened else None,
            return_info=True,
        )
        lam = info["lam"]
    elif args.method == "cg":
        img = iterative.cg_sense(k, sens, lam=lam, max_iter=args.max_iter or 30)
    elif args.method == "l1-wavelet":
        img = iterative.l1_wavelet(k, sens, lam=lam, max_iter=args.max_iter or 100)
    else:
        img = iterative.tv(k, sens, lam=lam, max_iter=args.max_iter or 100)
    g = None
    if args.gfactor:
        pat = sampling.detect_pattern(sampled) if accel is None else None
        r = accel if accel is not None else pat.accel
        if pat is not None and pat.kind not in ("uniform", "caipi", "full"):
            raise InvalidParameterError("--gfactor needs uniform (or CAIPI) sampling")
        g = gfactor(sens, r if r else 1, lam=lam, offset=pat.offset if pat is not None else 0)
    img = to_numpy(img)  # one copy out (no-op on the CPU)
    g = None if g is None else to_numpy(g)
    elapsed = time.perf_counter() - t0

    nd = k.ndim - 1
    vox = list(args.voxel_size_mm) * (nd if len(args.voxel_size_mm) == 1 else 1)
    if data.get("fov_mm") and args.voxel_size_mm == [1.0]:
        fov = data["fov_mm"]  # ISMRMRD recon space: x is the readout (our last axis)
        vox = [fov[1] / k.shape[1], fov[0] / k.shape[-1]][:nd] + vox[2:nd]
    affine = np.diag([*vox[:nd], *([1.0] * (3 - nd)), 1.0])
    meta = {
        "Method": args.method,
        "Lambda": lam,
        "LambdaSelection": info.get("lam_selection", "given" if args.lam is not None else "default"),
        "DetectedAcceleration": _jsonable(detected),
        "DetectedOffset": _jsonable(pattern.offset),
        "DetectedShift": pattern.shift,
        "ACSBlock": {"lines": _jsonable(pattern.acs_lines), "start": _jsonable(pattern.acs_start)},
        "PatternKind": pattern.kind,
        "PCGIterations": info.get("pcg_iterations"),
        "CoilCompression": compression,
        "Prewhitened": "noise scan" if whitened else False,
        "Command": shlex.join(["mrirecon", *getattr(args, "_argv", sys.argv[1:])]),
        "Objective": "||M F S x - y||^2 + lam ||x||^2"
        if args.method in ("unfold", "cg")
        else "1/2 ||M F S x - y||^2 + lam R(x)",
        "Acceleration": _jsonable(accel) if accel is not None else "detected",
        "ACSIterations": args.acs_iter if args.method == "unfold" else None,
        "CoilMaps": maps_from,
        "Input": str(Path(args.kspace).resolve()),
        "Device": describe(args.device),
        "Software": {"name": "mrirecon", "version": __version__},
        "ElapsedSeconds": round(elapsed, 4),
    }

    def nifti(a):
        a = np.asarray(a)
        return a[..., None] if a.ndim == 2 else a

    with contextlib.ExitStack() as stack:
        for key, arr in (("mag", np.abs(img)), ("real", img.real), ("imag", img.imag), ("g", g)):
            if key in paths:
                tmp = stack.enter_context(io.atomic_path(paths[key], force=args.force))
                io.save_nifti(tmp, nifti(arr), affine, force=True)
        tmp = stack.enter_context(io.atomic_path(paths["json"], force=args.force))
        io.write_json(tmp, meta, force=True)
    print(f"wrote {paths['mag']} ({args.method}, lambda {lam:g}, {elapsed:.2f} s)")
    return 0
