"""``mrirecon phantom sense``: a multi-coil Cartesian SENSE test case (k-space, maps, truth, ISMRMRD)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError

NAME = "sense"
HELP = "a SENSE test case: undersampled multi-coil k-space, coil maps, truth (npz, NIfTI, ISMRMRD)"
DESCRIPTION = """\
The brain-like slice (mrirecon.phantoms.brain_slice, textured, smooth phase),
loop-coil sensitivities (Biot-Savart), uniform undersampling by --accel with a
centred block of --acs calibration lines, and complex white noise of
--noise times max|k| (before undersampling), with a noise scan.

Writes DIR/kspace.npz ('kspace', 'sens', 'mask', 'noise'), DIR/scan.h5 (the same
slice as ISMRMRD: 2x readout oversampling, the noise scan, flagged calibration
lines), DIR/truth.nii.gz (magnitude), DIR/truth.npy (complex) and
DIR/phantom.json.

example:
  mrirecon phantom sense -o case/ --coils 16 --accel 4 --acs 24
  mrirecon sense case/kspace.npz -o case/img.nii.gz
  mrirecon sense case/scan.h5 --espirit -o case/img_ismrmrd.nii.gz
"""

FILES = ("kspace.npz", "scan.h5", "truth.nii.gz", "truth.npy", "phantom.json")


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", required=True, help="directory to write into (created)"
    )
    p.add_argument("--size", type=int, default=256, help="image edge (default 256)")
    p.add_argument("--coils", type=int, default=16, help="coils (default 16)")
    p.add_argument("--accel", type=int, default=4, help="acceleration R along the phase encoding (default 4)")
    p.add_argument("--acs", type=int, default=24, help="calibration lines (default 24)")
    p.add_argument(
        "--noise", type=float, default=1e-3, help="noise SD as a fraction of max|k| (default 1e-3)"
    )
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def make_case(size, n_coils, accel, acs, noise, seed):
    """(kspace, sens, mask, noise scan, truth, σ) of the phantom case (NumPy, complex64)."""
    from ..fft import fftc
    from ..phantoms import brain_slice
    from ..sense import coils, sampling

    img = brain_slice((size, size))
    sens = coils.simulate_coil_maps((size, size), n_coils)
    mask = sampling.uniform_mask((size, size), accel, acs=acs)
    k = fftc(sens * img, axes=(-2, -1))
    sigma = float(noise * np.abs(k).max())
    rng = np.random.default_rng(seed)

    def cnoise(shape):
        return (sigma / np.sqrt(2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))).astype(
            np.complex64
        )

    k = ((k + cnoise(k.shape)) * mask).astype(np.complex64)
    return k, sens, mask, cnoise((n_coils, 4096)), img, sigma


def run(args) -> int:
    from .. import __version__, io
    from ..io.kspace import write_ismrmrd

    t0 = time.perf_counter()
    if args.size < 16 or args.size % 2:
        raise InvalidParameterError(f"--size must be an even number >= 16, got {args.size}")
    if args.coils < 1:
        raise InvalidParameterError(f"--coils must be >= 1, got {args.coils}")
    if args.accel < 1 or args.size % args.accel:
        raise InvalidParameterError(f"--accel must be >= 1 and divide --size {args.size}, got {args.accel}")
    if not 0 <= args.acs <= args.size:
        raise InvalidParameterError(f"--acs must be in [0, {args.size}], got {args.acs}")
    if not np.isfinite(args.noise) or args.noise < 0:
        raise InvalidParameterError(f"--noise must be >= 0, got {args.noise}")
    out = Path(args.output_dir)
    paths = io.check_output_dir(out, FILES, force=args.force)
    k, sens, mask, noise, img, sigma = make_case(
        args.size, args.coils, args.accel, args.acs, args.noise, args.seed
    )
    out.mkdir(parents=True, exist_ok=True)
    fov = 192.0
    n = args.size
    acs_rows = list(range(n // 2 - args.acs // 2, n // 2 - args.acs // 2 + args.acs))
    meta = {
        "Description": "mrirecon SENSE phantom: brain-like slice, Biot-Savart loop coils",
        "Size": n,
        "Coils": args.coils,
        "Acceleration": args.accel,
        "ACSLines": args.acs,
        "NoiseSD": sigma,
        "NoiseFractionOfMaxK": args.noise,
        "Seed": args.seed,
        "FOV_mm": fov,
        "Layout": "(coil, phase encoding, readout); centred k-space, orthonormal FFT",
        "Software": {"name": "mrirecon", "version": __version__},
    }
    affine = np.diag([fov / n, fov / n, 1.0, 1.0])
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(io.atomic_path(p, force=args.force)) for p in paths]
        with open(tmps[0], "wb") as f:
            np.savez(f, kspace=k, sens=sens, mask=mask, noise=noise)
        write_ismrmrd(tmps[1], k, accel=args.accel, acs_rows=acs_rows, noise=noise, fov_mm=fov, force=True)
        io.save_nifti(tmps[2], np.abs(img)[..., None], affine, force=True)
        with open(tmps[3], "wb") as f:
            np.save(f, img)
        io.write_json(tmps[4], meta, force=True)
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.2f} s)")
    return 0
