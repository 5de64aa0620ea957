"""``mrirecon phantom megre``: write a simulated realistic-head multi-echo GRE BIDS dataset."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import InvalidParameterError, OutputExistsError

NAME = "megre"
HELP = "a BIDS dataset of simulated multi-echo GRE heads (realistic head), with the truths"
DESCRIPTION = """\
Simulated 3 T multi-echo GRE of the realistic head (mrirecon.phantoms.realistic_head:
textured brain, CSF, skull, scalp, air outside the head and in the sinuses,
phase offsets, shim fields, R2* decay, complex noise; the seed of subject i is
--seed + i - 1, so every subject has its own anatomy and noise), written as a
BIDS dataset that 'mrirecon run' reads:

  DIR/dataset_description.json
  DIR/sub-<NN>/anat/sub-<NN>_echo-<N>_part-{mag,phase}_MEGRE.nii.gz (+ .json: EchoTime,
      MagneticFieldStrength, Units)
  DIR/derivatives/truth/sub-<NN>/anat/sub-<NN>_Chimap.nii.gz (true χ, ppm against CSF),
      sub-<NN>_desc-brain_mask.nii.gz, sub-<NN>_desc-local_fieldmap.nii.gz (ppm)

With --brain-mask the true brain mask is also written beside the echoes, where
'mrirecon run' uses it instead of deriving one. The field of view is fixed
(225 x 261 x 217 mm): --shape sets the voxel size (the default is 1 mm).
All files are written as one group (nothing appears unless everything was
written); existing files are not overwritten without --force.

With --volumes T each echo is a 4-D (x, y, z, T) series of the same head with
its own noise per volume (functional-QSM style), which 'mrirecon run' processes
as one series.

example:
  mrirecon phantom megre -o bids/ --subjects 2 --shape 112 130 108
  mrirecon run bids/ out/
  mrirecon phantom megre -o bids4d/ --volumes 4 --shape 75 87 72
"""


def add_arguments(p) -> None:
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", required=True, help="BIDS root to write into (created)"
    )
    p.add_argument("--subjects", type=int, default=1, help="number of subjects (default 1)")
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=(225, 261, 217),
        metavar=("X", "Y", "Z"),
        help="grid over the 225 x 261 x 217 mm field of view (default 225 261 217: 1 mm)",
    )
    p.add_argument(
        "--te-s",
        type=float,
        nargs="+",
        default=(0.004, 0.012, 0.020),
        metavar="TE",
        help="echo times in seconds (default 0.004 0.012 0.020)",
    )
    p.add_argument("--b0-tesla", type=float, default=3.0, help="field strength in tesla (default 3)")
    p.add_argument(
        "--snr", type=float, default=50.0, help="brain magnitude at TE = 0 over the noise SD (default 50)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first subject (default 0)")
    p.add_argument(
        "--volumes",
        type=int,
        default=1,
        metavar="T",
        help="more than 1: each echo an (x, y, z, T) series of the same head, its own noise per volume",
    )
    p.add_argument(
        "--brain-mask", action="store_true", help="also write the true brain mask beside the echoes"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _check(args):
    if args.subjects < 1 or args.subjects > 99:
        raise InvalidParameterError(f"--subjects must be 1..99, got {args.subjects}")
    if any(n < 16 for n in args.shape):
        raise InvalidParameterError(f"--shape must be at least 16 voxels per axis, got {args.shape}")
    te = np.asarray(args.te_s, dtype=float)
    if te.size < 2 or not np.all(np.isfinite(te)) or np.any(te <= 0) or len(np.unique(te)) < 2:
        raise InvalidParameterError(
            f"--te-s needs at least two distinct positive echo times (s), got {args.te_s}"
        )
    if not np.isfinite(args.b0_tesla) or args.b0_tesla <= 0:
        raise InvalidParameterError(f"--b0-tesla must be positive, got {args.b0_tesla}")
    if not np.isfinite(args.snr) or args.snr <= 0:
        raise InvalidParameterError(f"--snr must be positive, got {args.snr}")
    if not 1 <= args.volumes <= 1000:
        raise InvalidParameterError(f"--volumes must be 1..1000, got {args.volumes}")
    if args.seed < 0:
        raise InvalidParameterError(f"--seed must be >= 0, got {args.seed}")


def _subject_files(root: Path, sub: str, n_echoes: int, brain_mask: bool):
    """(path, what) for every file of one subject; ``what`` names the array or sidecar."""
    anat = root / sub / "anat"
    truth = root / "derivatives" / "truth" / sub / "anat"
    files = []
    for i in range(1, n_echoes + 1):
        for part in ("mag", "phase"):
            stem = f"{sub}_echo-{i}_part-{part}_MEGRE"
            files += [(anat / f"{stem}.nii.gz", (part, i)), (anat / f"{stem}.json", (part + "-json", i))]
    if brain_mask:
        files.append((anat / f"{sub}_desc-brain_mask.nii.gz", ("mask", 0)))
    files += [
        (truth / f"{sub}_Chimap.nii.gz", ("chi", 0)),
        (truth / f"{sub}_desc-brain_mask.nii.gz", ("mask", 0)),
        (truth / f"{sub}_desc-local_fieldmap.nii.gz", ("local", 0)),
    ]
    return files


def run(args) -> int:
    from .. import __version__, io
    from ..io.atomic import atomic_paths
    from ..phantoms.realistic_head import realistic_head
    from ..progress import progress

    t0 = time.perf_counter()
    _check(args)
    root = Path(args.output_dir)
    if root.exists() and not root.is_dir():
        raise InvalidParameterError(f"{root} exists and is not a directory")
    te = tuple(float(t) for t in args.te_s)
    subjects = [f"sub-{i:02d}" for i in range(1, args.subjects + 1)]
    per_subject = {s: _subject_files(root, s, len(te), args.brain_mask) for s in subjects}
    description = root / "dataset_description.json"
    targets = [description] + [p for s in subjects for p, _ in per_subject[s]]
    for path in targets:  # before any directory is made: nothing is touched on this error
        if path.exists() and not args.force:
            raise OutputExistsError(f"{path} exists; use --force to overwrite it")
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_paths(targets, force=args.force) as tmps:
        tmp_of = dict(zip(targets, tmps, strict=True))
        io.write_json(
            tmp_of[description],
            {
                "Name": "mrirecon simulated multi-echo GRE (realistic head)",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": "mrirecon phantom megre", "Version": __version__}],
            },
            force=True,
        )
        for k, sub in enumerate(progress(subjects, desc="phantom megre", unit="subject")):
            d = realistic_head(
                tuple(args.shape),
                te_s=te,
                b0_tesla=args.b0_tesla,
                snr=args.snr,
                seed=args.seed + k,
                volumes=args.volumes,
            )
            affine = np.diag([*d.voxel_size_mm, 1.0])
            affine[:3, 3] = -np.asarray(d.voxel_size_mm) * (np.asarray(d.chi.shape) - 1) / 2
            arrays = {"chi": d.chi, "mask": d.mask, "local": d.local_field_ppm}
            for path, (what, echo) in per_subject[sub]:
                tmp = tmp_of[path]
                if what in ("mag", "phase"):
                    img = (d.magnitude if what == "mag" else d.phase)[echo - 1]
                    io.save_nifti(tmp, img, affine, force=True)
                elif what.endswith("-json"):
                    meta = {"EchoTime": te[echo - 1], "MagneticFieldStrength": float(args.b0_tesla)}
                    if what.startswith("phase"):
                        meta["Units"] = "rad"
                    io.write_json(tmp, meta, force=True)
                else:
                    io.save_nifti(
                        tmp,
                        arrays[what].astype(np.uint8 if what == "mask" else np.float32),
                        affine,
                        force=True,
                    )
    vox = tuple(round(f / n, 3) for f, n in zip((225.0, 261.0, 217.0), args.shape, strict=True))
    print(
        f"wrote {len(subjects)} subject(s) of {len(te)} echoes, {tuple(args.shape)} at {vox} mm, into {root} "
        f"(truths under {root / 'derivatives' / 'truth'}; {time.perf_counter() - t0:.1f} s)"
    )
    return 0
