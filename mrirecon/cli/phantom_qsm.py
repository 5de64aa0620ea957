"""``mrirecon phantom qsm``: write the head phantom's field, mask and truth as NIfTI."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError

NAME = "qsm"
HELP = "the QSM head phantom: local field, brain mask and true χ as NIfTI"
DESCRIPTION = """\
The head susceptibility phantom (phantoms/head.json: white/grey matter,
deep-grey nuclei, veins, a calcification; chi in ppm relative to CSF,
literature values with their sources in the JSON), its local field in ppm
(forward dipole convolution on a zero-padded grid, Gaussian noise of
--noise-ppm inside the brain), and the brain mask.

Writes DIR/field.nii.gz, DIR/mask.nii.gz, DIR/chi.nii.gz (the truth),
DIR/labels.nii.gz and DIR/phantom.json (parameters). With --b0-direction the
affine is rotated so that 'mrirecon qsm' recovers that direction from it.

example:
  mrirecon phantom qsm -o phantom/ --shape 128 128 128 --noise-ppm 0.003
  mrirecon qsm phantom/field.nii.gz -m phantom/mask.nii.gz -o phantom/chi_l2.nii.gz
"""

FILES = ("field.nii.gz", "mask.nii.gz", "chi.nii.gz", "labels.nii.gz", "phantom.json")


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", required=True, help="directory to write into (created)"
    )
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(128, 128, 128),
        metavar=("X", "Y", "Z"),
        help="grid (default 128 128 128)",
    )
    p.add_argument(
        "--voxel-size-mm",
        type=float,
        nargs=3,
        metavar=("DX", "DY", "DZ"),
        help="voxel size in mm (default: the 192 mm field of view over --shape)",
    )
    p.add_argument("--noise-ppm", type=float, default=0.003, help="field noise SD in ppm (default 0.003)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument(
        "--b0-direction",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="B0 direction in voxel axes (default 0 0 1)",
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _rotation_to_z(b) -> np.ndarray:
    """Rotation R with R b = z (so that the affine gives b = Rᵀ z)."""
    b = np.asarray(b, dtype=float)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(b, z)
    c = float(b @ z)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def run(args) -> int:
    from .. import __version__, io
    from ..kspace import normalize_direction
    from ..phantoms import head_phantom, load_definition, simulate_field

    t0 = time.perf_counter()
    if any(n < 8 for n in args.shape):
        raise InvalidParameterError(f"--shape must be at least 8 voxels per axis, got {args.shape}")
    if not np.isfinite(args.noise_ppm) or args.noise_ppm < 0:
        raise InvalidParameterError(f"--noise-ppm must be >= 0, got {args.noise_ppm}")
    if args.seed < 0:
        raise InvalidParameterError(f"--seed must be >= 0, got {args.seed}")
    b0 = normalize_direction(args.b0_direction if args.b0_direction is not None else (0, 0, 1))
    out = Path(args.output_dir)
    paths = io.check_output_dir(out, FILES, force=args.force)

    ph = head_phantom(tuple(args.shape), voxel_size_mm=args.voxel_size_mm)  # validates the geometry
    out.mkdir(parents=True, exist_ok=True)
    field = simulate_field(
        ph.chi,
        voxel_size_mm=ph.voxel_size_mm,
        b0_dir=b0,
        mask=ph.mask,
        noise_ppm=args.noise_ppm,
        seed=args.seed,
    )
    affine = np.eye(4)
    affine[:3, :3] = _rotation_to_z(b0) @ np.diag(ph.voxel_size_mm)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(ph.chi.shape) - 1) / 2.0)
    definition = load_definition("head")
    meta = {
        "Description": "mrirecon head susceptibility phantom",
        "Shape": list(ph.chi.shape),
        "VoxelSize_mm": list(ph.voxel_size_mm),
        "B0Direction": list(b0),
        "NoiseSD_ppm": args.noise_ppm,
        "Seed": args.seed,
        "Units": "ppm",
        "Reference": definition.get("reference", "CSF"),
        "Tissues": {
            t["name"]: {"chi_ppm": t["chi_ppm"], "source": t.get("source")} for t in definition["tissues"]
        },
        "Software": {"name": "mrirecon", "version": __version__},
    }
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(io.atomic_path(p, force=args.force)) for p in paths]
        for tmp, data in zip(tmps, (field, ph.mask, ph.chi, ph.labels), strict=False):
            io.save_nifti(tmp, data, affine, force=True)
        io.write_json(tmps[-1], meta, force=True)
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.2f} s)")
    return 0
