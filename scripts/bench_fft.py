#!/usr/bin/env python
"""Closed-form L2 QSM against its FFT pair, naive NumPy and scipy.fft, in one run.

Prints a Markdown table of median wall times (and ratios to the bare FFT
pair measured in the same run), then the first-call cost in a fresh process
with and without FFTW wisdom on disk. Nothing here is asserted: the machine is
shared and noisy; read the ratios.

    python scripts/bench_fft.py               # 256^3, float32
    python scripts/bench_fft.py --size 128 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mrirecon import fft, qsm
from mrirecon.kspace import dipole_kernel, gradient_sq_kernel

LAM = 0.01

FRESH = """
import time, numpy as np
t0 = time.perf_counter()
from mrirecon import qsm
if {preimport}:
    import pyfftw  # the FFT library's own import (0.3-0.4 s: it loads scipy.fft)
t_import = time.perf_counter() - t0
x = np.random.default_rng(0).standard_normal(({n}, {n}, {n}), dtype=np.float32)
t0 = time.perf_counter(); qsm.closed_form_l2(x, lam={lam}, reference=None); first = time.perf_counter() - t0
warm = []
for _ in range(3):
    t0 = time.perf_counter(); qsm.closed_form_l2(x, lam={lam}, reference=None); warm.append(time.perf_counter() - t0)
print(t_import, first, sorted(warm)[1])
"""


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def naive_numpy(field, d_full, g_full, lam):
    """The same closed form as a first implementation would write it: complex128, full spectrum."""
    return np.real(np.fft.ifftn(d_full * np.fft.fftn(field) / (d_full**2 + lam * g_full + (d_full == 0))))


def scipy_closed_form(field, kernel, workers):
    import scipy.fft

    spec = scipy.fft.rfftn(field, workers=workers)
    spec *= kernel
    return scipy.fft.irfftn(spec, s=field.shape, workers=workers, overwrite_x=True)


def fresh_process(n, cache_dir, preimport=False):
    env = dict(os.environ, MRIRECON_CACHE_DIR=str(cache_dir))
    env.pop("MRIRECON_FFTW_PLANNER", None)
    code = FRESH.format(n=n, lam=LAM, preimport=preimport)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256, help="grid edge N (N^3 voxels), default 256")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per method (median reported)")
    p.add_argument("--naive-repeats", type=int, default=3, help="repeats for the slow naive NumPy version")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)

    n = args.size
    shape = (n, n, n)
    threads = fft.n_threads()
    field = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    print(f"# closed-form L2 QSM, {n}^3 float32, backend {fft.backend()}, {threads} threads")
    print(
        f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible", flush=True
    )

    # warm-up: plans (FFTW_MEASURE, or wisdom) and kernels are built here, not timed
    t0 = time.perf_counter()
    qsm.closed_form_l2(field, lam=LAM, reference=None)
    setup = time.perf_counter() - t0
    print(f"# first call in this process (planning + kernel): {setup:.2f} s", flush=True)

    results = {}
    results["mrirecon closed_form_l2"] = median_time(
        lambda: qsm.closed_form_l2(field, lam=LAM, reference=None), args.repeats
    )
    plan = fft._get_plan("real", shape, np.dtype(np.float32), (0, 1, 2))
    plan.real[...] = field
    out_buf = np.empty_like(plan.real)
    plan.inverse.update_arrays(plan.spec, out_buf)

    def bare_pair():
        plan.forward.execute()
        plan.inverse.execute()

    results["bare r2c+c2r pair (same plans)"] = median_time(bare_pair, args.repeats)
    kernel = qsm.l2_kernel(shape, voxel_size_mm=(1, 1, 1), b0_dir=(0, 0, 1), lam=LAM)
    results[f"scipy.fft closed form ({threads} workers)"] = median_time(
        lambda: scipy_closed_form(field, kernel, threads), args.repeats
    )
    kernels = (dipole_kernel(shape, dtype=np.float64), gradient_sq_kernel(shape, dtype=np.float64))
    results["naive numpy (complex128 fftn/ifftn)"] = median_time(
        lambda: naive_numpy(field, *kernels, LAM), args.naive_repeats
    )
    # they compute the same thing
    ref = naive_numpy(field, *kernels, LAM)
    err = np.linalg.norm(qsm.closed_form_l2(field, lam=LAM, reference=None) - ref) / np.linalg.norm(ref)
    kernels = ref = None

    base = results["bare r2c+c2r pair (same plans)"][0]
    cf = results["mrirecon closed_form_l2"][0]
    print()
    print("| method | median time (s) | / bare FFT pair | closed form speed-up |")
    print("|---|---:|---:|---:|")
    for name, (t, _) in results.items():
        print(f"| {name} | {t:.3f} | {t / base:.2f} | {t / cf:.1f}x |")
    print(f"\nrelative difference closed form vs naive numpy: {err:.1e}")

    with tempfile.TemporaryDirectory() as tmp:
        cold = fresh_process(n, tmp)  # no wisdom on disk: FFTW_MEASURE planning
        hot = fresh_process(n, tmp)  # wisdom written by the run before
        hot_pre = fresh_process(n, tmp, preimport=True)
    print("\n| fresh process | import (s) | first call (s) | warm call (s) | first / warm |")
    print("|---|---:|---:|---:|---:|")
    rows = (
        ("no wisdom on disk", cold),
        ("wisdom on disk", hot),
        ("wisdom on disk, pyfftw imported before the call", hot_pre),
    )
    for name, (ti, first, warm) in rows:
        print(f"| {name} | {ti:.2f} | {first:.3f} | {warm:.3f} | {first / warm:.2f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "size": n,
                    "threads": threads,
                    "backend": fft.backend(),
                    "times_s": {k: v[1] for k, v in results.items()},
                    "fresh_no_wisdom": cold,
                    "fresh_wisdom": hot,
                    "fresh_wisdom_preimported": hot_pre,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
