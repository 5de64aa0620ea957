"""``mrirecon run``: BIDS multi-echo GRE in, QSM derivatives out, subject by subject."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from ..errors import InvalidParameterError
from ..qsm.pipeline import BACKGROUND_METHODS, DEFAULT_BACKGROUND, LAM_CRITERIA, MASK_METHODS
from ._device import add_device_argument, check_device, describe
from .qsm import _lam as parse_lam

NAME = "run"
HELP = "QSM for every subject of a BIDS dataset (multi-echo GRE magnitude + phase)"
DESCRIPTION = """\
Finds sub-*/[ses-*/]anat/*_echo-<N>_part-{mag,phase}_MEGRE.nii[.gz] with their
JSON sidecars (EchoTime required; MagneticFieldStrength required unless
--b0-tesla; the phase's Units honoured: 'rad', or integer-scaled phase is
rescaled with a warning), and a brain mask <entities>_desc-brain_mask.nii[.gz]
beside them if there is one, and, for each series:
  phase -> radians, brain mask (that file; otherwise --mask-method echoes:
  magnitude, echo-to-echo phase consistency and R2*, then morphology, which
  leaves the scalp out), Laplacian unwrapping, magnitude-weighted echo fit
  (Hz -> ppm, with the fit's noise per voxel), background removal
  (--background, default pdf: projection onto dipole fields in two levels,
  about 3 s per 1 mm head, the most accurate measured on the realistic test head;
  resharp is 1-2 s faster per 1 mm head and less accurate there;
  on the brain plus the voxels of reliable phase -- CSF -- within
  --background-margin-mm of it; a rim that sharp, vsharp or resharp erode is
  filled unless --no-fill-rim; see the README), dipole inversion
  (--method l2|tkd|cg-l2|edge-l2|tv; --lam auto by GCV, or --lam-criterion
  discrepancy|corner; edge-l2 switches the smoothness penalty off across the
  magnitude's edges, by CG: 2-6 points lower chi NRMSE on the realistic test
  head, 26-36 s of inversion at 1 mm instead of under 1 s).
The B0 direction comes from each series' affine. Writes OUT_DIR as a BIDS
derivatives dataset: dataset_description.json, *_Chimap.nii.gz (ppm),
*_desc-brain_mask.nii.gz, *_desc-local_fieldmap.nii.gz (ppm), a provenance
JSON beside each, and *_Chimap.png. A series that fails is reported on one
line naming the file at fault; the others finish. Nothing of a failed series
is written: a series' files appear together or not at all.

Reruns: a series whose outputs are all there and whose provenance records the
same input files (path, size, modification time), parameters and package
version is skipped; one whose outputs were made otherwise is reported as
failed unless --force, which recomputes everything. Temporary files that a
killed run left are removed. At the end: a table (series, status, time,
output) and a JSON report in OUT_DIR/logs/.

Parallel: --workers N starts a local Dask cluster (N processes on 127.0.0.1,
no dashboard unless --dashboard); --scheduler ADDRESS|FILE uses an existing
one (its workers need mrirecon and the data paths). A worker that dies fails
its series, the others go on. Needs: pip install 'mrirecon[cluster]'.

Stopping: SIGTERM (a batch scheduler's time limit) or SIGINT (Ctrl-C) cancel
what is running, remove its temporary files, list the completed series and
exit 143 / 130; a rerun continues where it stopped. When stderr is not a
terminal (a log file), progress is one line per finished series.

exit codes: 0 all series done or up to date; 1 at least one series failed;
2 bad invocation; 130 SIGINT; 143 SIGTERM.

example:
  mrirecon run /data/bids /data/derivatives/mrirecon --include sub-01 sub-02
  mrirecon run bids/ out/ --method tv --lam 3e-4 --background pdf
  mrirecon run bids/ out/ --workers 2
"""


def add_arguments(p) -> None:
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="BIDS dataset root")
    p.add_argument("out_dir", metavar="OUT_DIR", help="derivatives directory to write (created)")
    p.add_argument("--include", nargs="+", metavar="SUB", help="only these subjects (sub-01 or 01)")
    p.add_argument(
        "--method",
        choices=("l2", "tkd", "cg-l2", "edge-l2", "tv"),
        default="l2",
        help="inversion (default l2, closed form; edge-l2: L2 without the penalty across the magnitude's edges, by CG)",
    )
    p.add_argument(
        "--background",
        choices=BACKGROUND_METHODS,
        default=DEFAULT_BACKGROUND,
        help=f"background removal (default {DEFAULT_BACKGROUND})",
    )
    p.add_argument(
        "--mask-method",
        choices=MASK_METHODS,
        default="echoes",
        help="brain mask when none is beside the echoes: echoes (magnitude + multi-echo phase "
        "consistency + R2*, then morphology: no scalp; default) or magnitude (threshold + holes + "
        "erosion: keeps the scalp)",
    )
    p.add_argument(
        "--lam-criterion",
        choices=LAM_CRITERIA,
        default="gcv",
        help="how --lam auto is chosen: gcv (default), discrepancy (the echo fit's noise; GCV where it "
        "finds no crossing) or corner",
    )
    p.add_argument(
        "--no-fill-rim",
        dest="fill_rim",
        action="store_false",
        help="leave the rim that SHARP-type background removal erodes as zeros (default: filled)",
    )
    p.add_argument(
        "--no-trust-phase",
        dest="trust_phase",
        action="store_false",
        help="with a brain mask beside the echoes: remove the background on all of it (default: on the "
        "mask less its voxels of unreliable phase -- no signal, incoherent echoes, R2* of bone -- which "
        "are then filled like an eroded rim)",
    )
    p.add_argument(
        "--background-margin-mm",
        type=float,
        default=None,
        metavar="MM",
        help="remove the background also on the voxels of reliable phase (CSF: signal, coherent echoes, "
        "R2* below bone's) within MM outside the brain mask, so that the edge that SHARP-type methods "
        "lose lies outside the brain; χ still covers the brain mask only (default: the RESHARP radius, "
        "4 mm or one voxel if larger; 0 turns it off)",
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
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run series in parallel on a local Dask cluster of N worker processes (127.0.0.1); "
        "FFT threads per worker = usable cores // N",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS|FILE",
        help="submit to an existing Dask scheduler (tcp://host:8786, or a scheduler file), "
        "e.g. one started by dask-jobqueue on SLURM/PBS",
    )
    p.add_argument(
        "--dashboard", action="store_true", help="with --workers: start the Dask dashboard on 127.0.0.1"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="recompute every series and overwrite its derivatives (default: skip series that are up to date)",
    )


def run(args) -> int:
    from .. import cohort
    from ..io import bids
    from ..io.atomic import Terminated

    check_device(args.device)
    if args.method == "tv" and args.lam == "auto":
        raise InvalidParameterError("--method tv needs a numeric --lam")
    if args.b0_tesla is not None and (not math.isfinite(args.b0_tesla) or args.b0_tesla <= 0):
        raise InvalidParameterError(f"--b0-tesla must be positive, got {args.b0_tesla}")
    if args.background_margin_mm is not None and not (
        math.isfinite(args.background_margin_mm) and args.background_margin_mm >= 0
    ):
        raise InvalidParameterError(f"--background-margin-mm must be >= 0, got {args.background_margin_mm}")
    if args.workers is not None and args.workers < 1:
        raise InvalidParameterError(f"--workers must be at least 1, got {args.workers}")
    if args.device == "gpu" and (args.workers is not None or args.scheduler is not None):
        raise InvalidParameterError(
            "--device gpu runs in process (one GPU); --workers/--scheduler would share it between workers"
        )
    if args.dashboard and args.workers is None:
        raise InvalidParameterError(
            "--dashboard needs --workers (a local cluster); an existing scheduler has its own"
        )
    out = Path(args.out_dir)
    if out.resolve() == Path(args.bids_dir).resolve():
        raise InvalidParameterError("OUT_DIR must not be the BIDS dataset itself")
    series = bids.find_series(args.bids_dir, include=args.include)
    bids.write_dataset_description(out, source=args.bids_dir)
    parameters = {
        "b0_tesla": args.b0_tesla,
        "device": args.device,
        "device_name": describe(args.device),
        "pipeline": {
            "background": args.background,
            "method": args.method,
            "lam": args.lam,
            "mask_method": args.mask_method,
            "lam_criterion": args.lam_criterion,
            "fill_rim": args.fill_rim,
            "trust_phase": args.trust_phase,
            "background_margin_mm": args.background_margin_mm,
        },
    }
    command = " ".join(["mrirecon", *args._argv])
    engine = (
        f"dask LocalCluster, {args.workers} workers"
        if args.workers
        else (f"dask scheduler {args.scheduler}" if args.scheduler else "in process")
    )
    started = time.time()
    try:
        results = cohort.run_cohort(
            series,
            out,
            parameters,
            workers=args.workers,
            scheduler=args.scheduler,
            dashboard=args.dashboard,
            force=args.force,
            command=command,
            log=lambda line: print(line, flush=True),
        )
    except (KeyboardInterrupt, Terminated) as exc:
        results = getattr(exc, "results", None)
        if results is not None:
            report = cohort.write_report(out, results, command=command, engine=engine, started=started)
            done = [r.series for r in results if r.status in ("done", "skipped")]
            print(cohort.summary_table(results), file=sys.stderr)
            print(
                f"{args._prog}: stopped; completed series ({len(done)} of {len(results)}): "
                f"{', '.join(done) or 'none'}; report: {report}",
                file=sys.stderr,
            )
        raise
    report = cohort.write_report(out, results, command=command, engine=engine, started=started)
    print(cohort.summary_table(results))
    failed = [r.series for r in results if r.status == "failed"]
    print(f"report: {report}")
    if failed:
        print(
            f"{args._prog}: {len(failed)} of {len(series)} series failed: {', '.join(failed)}",
            file=sys.stderr,
        )
        return 1
    return 0
