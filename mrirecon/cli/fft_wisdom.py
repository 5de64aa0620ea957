"""``mrirecon fft-wisdom``: measure FFTW plans for the sizes you use, once, and keep them."""

from __future__ import annotations

import time

import numpy as np

from ..errors import InvalidParameterError

NAME = "fft-wisdom"
HELP = "measure and store FFTW plans (wisdom) for given volume shapes"
DESCRIPTION = """\
Plans the real-to-complex and complex-to-real transforms the closed-form QSM
uses (and, with --complex, the complex transforms of SENSE) for each --shape,
with the planner effort --effort, and stores the FFTW wisdom in the user cache
(see 'mrirecon fft-wisdom --show'), so later processes do not pay the planning.

Plans measured while the machine is busy can be up to twice as slow: run this
on an idle machine. --remeasure forgets the stored wisdom first.

example:
  mrirecon fft-wisdom --shape 256 256 256 --shape 192 192 160
  mrirecon fft-wisdom --shape 256 256 --complex --coils 32 --effort patient
"""


def add_arguments(p) -> None:
    p.add_argument(
        "--shape", type=int, nargs="+", action="append", metavar="N", help="a volume shape (repeatable)"
    )
    p.add_argument(
        "--effort", choices=("measure", "patient", "exhaustive"), default="measure", help="default measure"
    )
    p.add_argument("--complex", action="store_true", help="also plan complex transforms (SENSE)")
    p.add_argument(
        "--coils", type=int, default=None, help="with --complex: plan the coil-batched transform too"
    )
    p.add_argument("--float64", action="store_true", help="also plan double precision")
    p.add_argument("--remeasure", action="store_true", help="forget stored wisdom and measure again")
    p.add_argument("--show", action="store_true", help="print where the wisdom is stored and exit")


def run(args) -> int:
    from .. import fft

    if fft.backend() != "pyfftw":
        raise InvalidParameterError("pyfftw is not available: there is no FFTW wisdom to build")
    path = fft.wisdom_path()
    if not fft._wisdom_enabled():
        raise InvalidParameterError("MRIRECON_FFTW_WISDOM=0 turns wisdom off: unset it to build wisdom")
    if args.show:
        print(f"{path} ({'exists' if path.exists() else 'not yet written'})")
        return 0
    if not args.shape:
        raise InvalidParameterError("give at least one --shape N [N ...]")
    for shape in args.shape:
        if not 1 <= len(shape) <= 4 or any(n < 1 for n in shape):
            raise InvalidParameterError(f"--shape must be 1 to 4 positive sizes, got {shape}")
    if args.coils is not None and (args.coils < 1 or not args.complex):
        raise InvalidParameterError("--coils must be >= 1 and goes with --complex")
    if args.remeasure:
        import pyfftw

        pyfftw.forget_wisdom()
        fft.clear_plan_cache()
        path.unlink(missing_ok=True)
    dtypes = [np.float32] + ([np.float64] if args.float64 else [])
    with fft.planning(f"FFTW_{args.effort.upper()}"):
        for shape in args.shape:
            shape = tuple(shape)
            for dtype in dtypes:
                t0 = time.perf_counter()
                fft.irfftn(fft.rfftn(np.zeros(shape, dtype)), shape)
                done = [f"r2c/c2r {np.dtype(dtype).name}"]
                if fft._use_fused(shape, dtype):  # the closed forms' cache-blocked filter plans too
                    fft.real_filter(np.zeros(shape, dtype), np.ones(fft.half_shape(shape), dtype))
                    done.append("blocked filter")
                if args.complex:
                    cdtype = np.result_type(dtype, np.complex64)
                    axes = tuple(range(-len(shape), 0))
                    fft.ifftn(fft.fftn(np.zeros(shape, cdtype), axes=axes), axes=axes)
                    done.append("c2c")
                    if args.coils:
                        z = np.zeros((args.coils, *shape), cdtype)
                        fft.ifftn(fft.fftn(z, axes=axes), axes=axes)
                        done.append(f"c2c x{args.coils} coils")
                print(
                    f"{'x'.join(map(str, shape))}: {', '.join(done)} planned in {time.perf_counter() - t0:.1f} s"
                )
                fft.clear_plan_cache()
    print(f"wisdom stored in {path}")
    return 0
