"""``mrirecon phantom mrsi``: write the MRSI brain slice (NIfTI-MRS) with its masks and truth."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError

NAME = "mrsi"
HELP = "the MRSI brain slice: FIDs with scalp lipids (NIfTI-MRS), truth, brain and lipid masks"
DESCRIPTION = """\
A 2-D 1H MRSI slice (phantoms/mrsi.json: NAA, Cr, Cho, mI, Glx with grey/
white-matter concentrations and T2s at 3 T, a scalp and marrow lipid ring
100-300x NAA, a smooth B0 map, one lesion), simulated on a fine grid and
acquired as the central k-space block (ringing), with complex noise.

Writes DIR/mrsi.nii.gz (the acquisition, NIfTI-MRS), DIR/truth.nii.gz
(metabolites only, no noise, NIfTI-MRS), DIR/brain_mask.nii.gz,
DIR/lipid_mask.nii.gz (from the geometry), DIR/b0_hz.nii.gz and
DIR/phantom.json (parameters and sources).

example:
  mrirecon phantom mrsi -o ph/
  mrirecon mrsi ph/mrsi.nii.gz --lipid-mask ph/lipid_mask.nii.gz --brain-mask ph/brain_mask.nii.gz -o ph/l2.nii.gz
"""

FILES = (
    "mrsi.nii.gz",
    "truth.nii.gz",
    "brain_mask.nii.gz",
    "lipid_mask.nii.gz",
    "b0_hz.nii.gz",
    "phantom.json",
)


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", required=True, help="directory to write into (created)"
    )
    p.add_argument("--shape", type=int, default=64, help="MRSI matrix N (N x N; default 64)")
    p.add_argument("--points", type=int, default=1024, help="spectral points (default 1024)")
    p.add_argument(
        "--lipid-scale", type=float, default=1.0, help="lipid strength factor (default 1: 100-300x NAA)"
    )
    p.add_argument("--naa-snr", type=float, default=20.0, help="NAA peak height / noise SD (default 20)")
    p.add_argument("--seed", type=int, default=0, help="texture and noise seed (default 0)")
    p.add_argument("--geometry-seed", type=int, default=0, help="head geometry and B0 seed (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args) -> int:
    from .. import __version__, io
    from ..io.nifti_mrs import save_nifti_mrs
    from ..phantoms.mrsi import load_mrsi_definition, mrsi_phantom

    t0 = time.perf_counter()
    if args.seed < 0 or args.geometry_seed < 0:
        raise InvalidParameterError("--seed and --geometry-seed must be >= 0")
    out = Path(args.output_dir)
    paths = io.check_output_dir(out, FILES, force=args.force)
    ph = mrsi_phantom(
        (args.shape, args.shape),
        n_points=args.points,
        lipid_scale=args.lipid_scale,
        naa_snr=args.naa_snr,
        seed=args.seed,
        geometry_seed=args.geometry_seed,
    )
    out.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*ph.voxel_size_mm, 1.0])
    affine[:3, 3] = -np.asarray(ph.voxel_size_mm) * (np.asarray(ph.data.shape[:3]) - 1) / 2.0
    definition = load_mrsi_definition()
    meta = {
        "Description": "mrirecon MRSI brain slice with scalp lipids",
        **ph.params,
        "VoxelSize_mm": list(ph.voxel_size_mm),
        "NoiseSD": ph.noise_sd,
        "SpectrometerFrequency_MHz": ph.spectrometer_frequency_mhz,
        "BrainVoxels": int(ph.brain_mask.sum()),
        "LipidVoxels": int(ph.lipid_mask.sum()),
        "Definition": definition,
        "Software": {"name": "mrirecon", "version": __version__},
    }
    prov = {"Method": "Simulation", "Details": "mrirecon MRSI phantom; see phantom.json"}
    kw = dict(
        dwell_time_s=ph.dwell_time_s, spectrometer_frequency_mhz=ph.spectrometer_frequency_mhz, affine=affine
    )
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(io.atomic_path(p, force=args.force)) for p in paths]
        save_nifti_mrs(tmps[0], ph.data, provenance=prov, force=True, **kw)
        save_nifti_mrs(
            tmps[1], ph.truth, provenance={**prov, "Details": "truth: no lipids, no noise"}, force=True, **kw
        )
        io.save_nifti(tmps[2], ph.brain_mask.astype(np.uint8), affine, force=True)
        io.save_nifti(tmps[3], ph.lipid_mask.astype(np.uint8), affine, force=True)
        io.save_nifti(tmps[4], ph.b0_hz, affine, force=True)
        io.write_json(tmps[5], meta, force=True)
    print(f"wrote {', '.join(str(p) for p in paths)} ({time.perf_counter() - t0:.2f} s)")
    return 0
