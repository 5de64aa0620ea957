"""``mrirecon run``: BIDS multi-echo GRE in, QSM derivatives out, subject by subject."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ..errors import InvalidParameterError, MriReconError
from ._device import add_device_argument, check_device, describe, to_device, to_numpy
from .qsm import _lam as parse_lam

NAME = "run"
HELP = "QSM for every subject of a BIDS dataset (multi-echo GRE magnitude + phase)"
DESCRIPTION = """\
Finds sub-*/[ses-*/]anat/*_echo-<N>_part-{mag,phase}_MEGRE.nii[.gz] with their
JSON sidecars (EchoTime required; MagneticFieldStrength required unless
--b0-tesla; the phase's Units honoured: 'rad', or integer-scaled phase is
rescaled with a warning), and a brain mask <entities>_desc-brain_mask.nii[.gz]
beside them if there is one, and, for each series:
  phase -> radians, brain mask (that file, or derived from the magnitude:
  threshold + hole filling + erosion, which keeps the scalp: give a mask from
  a brain extraction tool for good results),
  Laplacian unwrapping, magnitude-weighted echo fit (Hz -> ppm),
  background removal (--background vsharp|sharp|pdf), dipole inversion
  (--method l2|tkd|cg-l2|tv).
The B0 direction comes from each series' affine. Writes OUT_DIR as a BIDS
derivatives dataset: dataset_description.json, *_Chimap.nii.gz (ppm),
*_desc-brain_mask.nii.gz, *_desc-local_fieldmap.nii.gz (ppm), a provenance
JSON beside each, and *_Chimap.png. A series that fails is reported on one
line and skipped; the others finish. Nothing of a failed series is written.

exit codes: 0 all series done; 1 at least one series failed; 2 bad invocation.

example:
  mrirecon run /data/bids /data/derivatives/mrirecon --include sub-01 sub-02
  mrirecon run bids/ out/ --method tv --lam 3e-4 --background pdf
"""


def add_arguments(p) -> None:
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="BIDS dataset root")
    p.add_argument("out_dir", metavar="OUT_DIR", help="derivatives directory to write (created)")
    p.add_argument("--include", nargs="+", metavar="SUB", help="only these subjects (sub-01 or 01)")
    p.add_argument(
        "--method", choices=("l2", "tkd", "cg-l2", "tv"), default="l2", help="inversion (default l2)"
    )
    p.add_argument(
        "--background",
        choices=("vsharp", "sharp", "pdf"),
        default="vsharp",
        help="background removal (default vsharp)",
    )
    p.add_argument(
        "--lam",
        type=parse_lam,
        default="auto",
        metavar="VALUE|auto",
        help="lambda (l2/cg-l2: default auto = GCV; tv: required)",
    )
    p.add_argument(
        "--b0-tesla",
        type=float,
        metavar="T",
        help="field strength, overriding/replacing MagneticFieldStrength",
    )
    add_device_argument(p)
    p.add_argument("--force", action="store_true", help="overwrite existing derivatives")


def run(args) -> int:
    from tqdm.auto import tqdm

    from .. import io, qsm
    from ..io import bids

    check_device(args.device)
    if args.method == "tv" and args.lam == "auto":
        raise InvalidParameterError("--method tv needs a numeric --lam")
    if args.b0_tesla is not None and (not math.isfinite(args.b0_tesla) or args.b0_tesla <= 0):
        raise InvalidParameterError(f"--b0-tesla must be positive, got {args.b0_tesla}")
    out = Path(args.out_dir)
    if out.resolve() == Path(args.bids_dir).resolve():
        raise InvalidParameterError("OUT_DIR must not be the BIDS dataset itself")
    series = bids.find_series(args.bids_dir, include=args.include)
    bids.write_dataset_description(out, source=args.bids_dir)
    failed = []
    steps = (
        "load",
        "phase scaling",
        "mask",
        "unwrapping",
        "echo fit",
        "background removal",
        "dipole inversion",
        "write",
    )
    outer = tqdm(series, desc="series", unit="series", leave=True)
    for s in outer:
        outer.set_postfix_str(s.stem)
        inner = tqdm(total=len(steps), desc=s.stem, leave=False)
        t0 = time.perf_counter()
        try:
            loaded = bids.load_series(s, b0_tesla=args.b0_tesla)
            inner.update(1)
            dev = (
                (lambda a: a)
                if args.device == "cpu"
                else (lambda a: None if a is None else to_device(a, "gpu"))
            )
            result = qsm.pipeline(
                dev(loaded["magnitude"]),
                dev(loaded["phase"]),
                loaded["te_s"],
                b0_tesla=loaded["b0_tesla"],
                voxel_size_mm=loaded["voxel_size_mm"],
                b0_dir=io.b0_direction_from_affine(loaded["affine"]),
                phase_units=loaded["phase_units"],
                mask=dev(loaded["mask"]),
                background=args.background,
                method=args.method,
                lam=args.lam,
                step_callback=lambda name, bar=inner: bar.update(1),
            )
            for name in ("chi", "local_field_ppm", "total_field_hz", "mask", "brain_mask"):
                setattr(result, name, to_numpy(getattr(result, name)))  # one copy out
            result.params["Device"] = describe(args.device)
            paths = bids.write_outputs(
                out,
                s,
                result,
                loaded,
                force=args.force,
                extra={
                    "Command": " ".join(["mrirecon", *args._argv]),
                    "MaskFile": str(s.mask) if s.mask else None,
                },
            )
            inner.update(1)
            tqdm.write(f"{s.stem}: wrote {paths['chi']} ({time.perf_counter() - t0:.1f} s)", file=sys.stdout)
        except MriReconError as exc:
            failed.append(s.stem)
            tqdm.write(f"{s.stem}: error: {exc}", file=sys.stderr)
        finally:
            inner.close()
    outer.close()
    if failed:
        print(
            f"mrirecon run: {len(failed)} of {len(series)} series failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0
