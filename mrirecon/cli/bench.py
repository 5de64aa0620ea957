"""``mrirecon bench qsm``: the closed form against the iterative methods, timed side by side."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidParameterError

NAME = "bench"
HELP = "benchmark the closed forms against iterative L2/TV on the head phantom"
DESCRIPTION = """\
qsm   On the head phantom at each --sizes (N^3 voxels over 192 mm) with field
      noise --noise-ppm: closed-form L2 (λ from a sweep against the truth, and
      the GCV λ), TKD, CG-L2 (at the L2 λ), TV-ADMM (λ from a sweep) and
      TV-NLCG (the same TV λ), all in one process. Iterative methods are timed
      to the iteration at which their NRMSE comes within 1 % of its final value
      (the per-iteration NRMSE is not counted in their time). Reports wall time,
      iterations, NRMSE, HFEN, SSIM, λ, and the speed-up of the closed form;
      writes OUT/results.json, OUT/results.md and figures (slices, error maps,
      NRMSE against time, L-curve). The full run takes many minutes on 2 cores.

example:
  mrirecon bench qsm --sizes 128 192 --out bench_out/qsm
  mrirecon bench qsm --sizes 48 --quick --out /tmp/bq
"""


def add_arguments(p) -> None:
    p.add_argument("kind", choices=("qsm",), help="which benchmark")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=[128, 192], metavar="N", help="grid edges (default 128 192)"
    )
    p.add_argument("--noise-ppm", type=float, default=0.003, help="field noise SD in ppm (default 0.003)")
    p.add_argument(
        "--out", default="bench_out/qsm", metavar="DIR", help="output directory (default bench_out/qsm)"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=["closed-form", "tkd", "cg-l2", "tv-admm", "tv-nlcg"],
        choices=["closed-form", "tkd", "cg-l2", "tv-admm", "tv-nlcg"],
        help="methods to run (default all)",
    )
    p.add_argument(
        "--quick", action="store_true", help="short sweeps and iteration limits (a smoke test, not a result)"
    )


def run(args) -> int:
    import numpy as np

    from ..bench_qsm import BenchConfig
    from ..bench_qsm import run as run_bench

    if any(n < 16 for n in args.sizes):
        raise InvalidParameterError(f"--sizes must be at least 16, got {args.sizes}")
    if not np.isfinite(args.noise_ppm) or args.noise_ppm < 0:
        raise InvalidParameterError(f"--noise-ppm must be >= 0, got {args.noise_ppm}")
    cfg = BenchConfig(sizes=tuple(args.sizes), noise_ppm=args.noise_ppm, methods=tuple(args.methods))
    if args.quick:
        cfg.l2_lams = tuple(np.logspace(-3, -1, 5))
        cfg.tv_lams = tuple(np.logspace(-4, -3, 3))
        cfg.repeats, cfg.cg_max_iter, cfg.admm_max_iter, cfg.nlcg_max_iter = 1, 30, 20, 20
    run_bench(cfg, Path(args.out))
    return 0
