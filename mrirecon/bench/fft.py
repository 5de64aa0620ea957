"""Closed-form L2 QSM against its FFT pair, its floors, scipy.fft and naive NumPy, in one run.

For each grid (float32): median wall times of ``mrirecon.qsm.closed_form_l2``
(no mask with ``reference=None``, and the realistic call with an ellipsoid mask
over about half the volume and ``reference="mask_mean"``), of the bare r2c+c2r
pair on the same cached FFTW plan and its own buffers, of the same closed form
written with scipy.fft (all workers) and of a naive NumPy version (complex128,
full spectrum); two floors and the lower bound (below); the peak memory above
the inputs, measured with tracemalloc in a fresh process. Then the first-call
cost in a fresh process with and without FFTW wisdom on disk (one grid). With
``--device gpu``: the same on the GPU against the bare cuFFT pair, on device
and host-to-host (pinned and pageable host memory).

Floors (printed next to the tables, so they can be checked):

* memory: bytes moved / B, B = bytes read + written by a copy of the input
  volume (the faster of ``np.copyto`` and a copy split over the FFT threads),
  bytes moved from the pass model: one 3-D FFT (r2c or c2r) is one pass between
  the real array and the half spectrum plus ``P - 1`` in-place passes over the
  spectrum (``--fft-passes P``, default 2: a volume larger than the caches
  needs at least two); the closed form adds copy-in (x mask), the kernel
  multiply, copy-out (x mask), and with ``mask_mean`` a mean and a
  subtract-and-mask pass.
* arithmetic: 2.5 n log2(n) flops per real transform of length n (half of a
  complex FFT's 5 n log2 n), so a 3-D r2c or c2r of N voxels is 2.5 N log2(N)
  = sum over axes of 2.5 N log2(n_axis); each axis's share is divided by the
  backend's rate on an in-cache batch of 1-D r2c+c2r transforms of that
  length (<= 256 KB of data, FFTW_MEASURE): the larger of one batch on one
  thread and one batch per FFT thread run at once (single-threaded plans; a
  multi-threaded plan on 256 KB times thread synchronisation, not arithmetic).
* lower bound = max(memory floor, arithmetic floor).
* GPU: memory floor only, B from a device-to-device copy (``cupy.copyto``) of
  the input's bytes, the same pass model.

What to read off (nothing is asserted; the machine may be shared and noisy):
at 256^3 on the CPU, closed form / bare pair, closed form / lower bound, and
the peak memory above the inputs in multiples of the input bytes; on the GPU,
the closed form on device in ms and / bare cuFFT pair.

    python scripts/bench_fft.py                       # 128^3, 200x240x200, 256^3, 384^3 on the CPU
    python scripts/bench_fft.py --sizes 256 --repeats 7 --json bench_out/bench_fft_256.json
    python scripts/bench_fft.py --device gpu --sizes 256 --no-fresh
    python scripts/bench_fft.py --sizes 64,96 --repeats 3 --no-fresh

``200x240x200`` is the head grid (1 mm isotropic over 20 x 24 x 20 cm, every
axis 2-3-5-smooth). Naive NumPy at 384^3 needs ~3.5 GB and minutes, so by
default it runs only up to 256^3 voxels (``--naive-max``; ``--skip-naive``
turns it off). The fresh-process table runs at the grid nearest 256^3 voxels
(``--no-fresh`` skips it); ``--no-memory`` skips the peak-memory processes.
The full default CPU run takes roughly 2 minutes on 2 cores once FFTW wisdom
for these grids is on disk (an estimate from the per-grid timings: about 20 s
at 256^3 with naive NumPy, 40 s at 384^3); the first run adds FFTW_MEASURE
planning, about 7 s at 256^3 and up to a minute or more at 384^3
(``mrirecon fft-wisdom --shape ...`` does it ahead of time).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import mrirecon

from .. import fft, qsm
from ..errors import InvalidParameterError
from ..kspace import dipole_kernel, gradient_sq_kernel
from .common import interleaved_times, machine_info, median_time

LAM = 0.01
HEAD_GRID = (200, 240, 200)
DEFAULT_SIZES = "128,200x240x200,256,384"
DEFAULT_PASSES = 2
CACHE_BYTES = 256 * 1024  # data of one in-cache batch for the arithmetic rate
MASK_FRACTION = 0.5
PKG_ROOT = str(Path(mrirecon.__file__).resolve().parents[1])

TARGETS = (
    "targets (256^3): CPU closed form / bare pair <= 1.10, closed form / lower bound <= 1.3, "
    "peak memory above the inputs / input bytes <= 2.5; GPU closed form on device <= 0.6 ms "
    "and / bare cuFFT pair <= 1.15"
)

ROWS = {
    "closed_form": "mrirecon closed_form_l2 (no mask, reference=None)",
    "closed_form_masked": "mrirecon closed_form_l2 (ellipsoid mask, reference='mask_mean')",
    "bare_pair": "bare r2c+c2r pair ({pair})",
    "scipy": "scipy.fft closed form ({threads} workers)",
    "naive": "naive numpy (complex128 fftn/ifftn)",
}

FRESH = """
import sys, time, numpy as np
t0 = time.perf_counter()
from mrirecon import qsm
if {preimport}:
    import pyfftw  # the FFT library's own import (0.3-0.4 s: it loads scipy.fft)
t_import = time.perf_counter() - t0
x = np.random.default_rng(0).standard_normal({shape}, dtype=np.float32)
t0 = time.perf_counter(); qsm.closed_form_l2(x, lam={lam}, reference=None); first = time.perf_counter() - t0
warm = []
for _ in range(3):
    t0 = time.perf_counter(); qsm.closed_form_l2(x, lam={lam}, reference=None); warm.append(time.perf_counter() - t0)
print(t_import, first, sorted(warm)[1])
"""

# Peak memory of closed_form_l2 in a fresh process: tracemalloc sees NumPy's
# data allocations (and so pyfftw.empty_aligned, which allocates through
# NumPy); the RSS high-water mark is measured beside it as a cross-check.
MEMORY_PROBE = r"""
import gc, json, os, resource, sys, tracemalloc
import numpy as np
from mrirecon import fft, qsm

shape = tuple(json.loads(sys.argv[1]))
lam = float(sys.argv[2])
fraction = float(sys.argv[3])


def ellipsoid(shape, fraction):
    r = (6 * fraction / np.pi) ** (1 / 3)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    acc = sum(((g - (n - 1) / 2) / (r * n / 2)) ** 2 for g, n in zip(grids, shape))
    return acc <= 1


from mrirecon.bench.fft import clear_caches as clear  # noqa: E402


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


field = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
mask = ellipsoid(shape, fraction)
qsm.closed_form_l2(np.ones((8, 8, 8), np.float32), lam=lam, reference=None)  # imports, not counted
clear()
rss0 = rss()
maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
chi = qsm.closed_form_l2(field, lam=lam, reference=None)
cold_peak = tracemalloc.get_traced_memory()[1] - base
del chi
gc.collect()
caches = tracemalloc.get_traced_memory()[0] - base
maxrss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def warm_peak_of(*args, **kw):
    # tracemalloc's peak above the current allocations during one call (result dropped)
    tracemalloc.reset_peak()
    b = tracemalloc.get_traced_memory()[0]
    qsm.closed_form_l2(*args, **kw)
    peak = tracemalloc.get_traced_memory()[1] - b
    gc.collect()
    return peak


warm_peak = warm_peak_of(field, lam=lam, reference=None)
masked_peak = warm_peak_of(field, mask, lam=lam, reference="mask_mean")
# does tracemalloc see the FFTW buffers? what clearing the plan cache frees
buffer_bytes = None
freed = None
if fft.backend() == "pyfftw":
    plan = fft._get_plan("real", shape, np.dtype(np.float32), (0, 1, 2))
    real, spec = plan.real, plan.spec
    buffer_bytes = real.nbytes + spec.nbytes
    if np.shares_memory(real, spec):  # one padded buffer, two views
        buffer_bytes = max(real.nbytes, spec.nbytes)
    buffer_bytes = getattr(plan, "nbytes", buffer_bytes)
    del plan, real, spec
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    fft.clear_plan_cache()
    gc.collect()
    freed = before - tracemalloc.get_traced_memory()[0]
tracemalloc.stop()
print(json.dumps({
    "input_bytes": field.nbytes,
    "cold_peak": cold_peak,
    "warm_peak": warm_peak,
    "masked_warm_peak": masked_peak,
    "caches": caches,
    "rss_before": rss0,
    "rss_peak_above_before_cold": maxrss1 - max(rss0, 0),
    "maxrss_before": maxrss0,
    "fftw_buffer_bytes": buffer_bytes,
    "freed_by_clear_plan_cache": freed,
}))
"""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def parse_sizes(text):
    """``"128,200x240x200"`` -> ``[(128, 128, 128), (200, 240, 200)]``."""
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = [int(v) for v in item.replace("*", "x").split("x")]
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3 or min(parts) < 4:
            raise ValueError(f"a size is N or AxBxC with every edge >= 4, got {item!r}")
        shapes.append(tuple(parts))
    if not shapes:
        raise ValueError("no sizes given")
    return shapes


def label(shape):
    return f"{shape[0]}^3" if len(set(shape)) == 1 else "x".join(str(n) for n in shape)


def ellipsoid_mask(shape, fraction=MASK_FRACTION):
    """Boolean ellipsoid centred in the grid covering about ``fraction`` of the volume."""
    r = (6 * fraction / np.pi) ** (1 / 3)  # semi-axes r * n / 2: volume fraction pi r^3 / 6
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    acc = sum(((g - (n - 1) / 2) / (r * n / 2)) ** 2 for g, n in zip(grids, shape))
    return acc <= 1


def clear_caches():
    """Drop cached FFT plans and kernels (wisdom stays loaded)."""
    getattr(fft, "clear_plan_cache", lambda: None)()
    try:
        from mrirecon.qsm import inversion

        inversion._l2_kernel.cache_clear()
    except AttributeError:
        pass
    gc.collect()


def subprocess_env(**extra):
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------
# floors: pass model, copy bandwidth, in-cache FFT rate
# --------------------------------------------------------------------------
def traffic(shape, passes=DEFAULT_PASSES):
    """Bytes read + written by each row, from the pass model (see the module docstring)."""
    n = math.prod(shape)
    nh = math.prod(fft.half_shape(shape))
    R, C, K, M = 4 * n, 8 * nh, 4 * nh, n
    one = R + C + (passes - 1) * 2 * C
    pair = 2 * one
    multiply = 2 * C + K
    own = 2 * R + multiply + 2 * R  # copy-in, kernel multiply, copy-out
    own_masked = (2 * R + M) + multiply + (2 * R + M) + R + (2 * R + M)  # + mean, subtract-and-mask
    return {
        "voxels": n,
        "R": R,
        "C": C,
        "K": K,
        "M": M,
        "passes": passes,
        "fft": one,
        "bare_pair": pair,
        "closed_form": pair + own,
        "closed_form_masked": pair + own_masked,
    }


MODEL_TEXT = """\
memory model (bytes read + written; N voxels, R = 4N float32 volume, C = 8*Nh half spectrum with
Nh = n0*n1*(n2//2+1), K = 4*Nh float32 kernel, M = N bool mask; P = {passes} passes per 3-D FFT):
  one 3-D FFT (r2c or c2r) = R + C + (P-1)*2C   (real <-> spectrum once, P-1 in-place passes over the spectrum)
  bare pair                = 2 FFTs
  closed form, no mask     = pair + copy-in 2R + kernel multiply (2C + K) + copy-out 2R
  closed form, mask_mean   = pair + copy-in x mask (2R + M) + kernel multiply (2C + K)
                             + copy-out x mask (2R + M) + mean R + subtract-and-mask (2R + M)
  memory floor = bytes / B; B = 2R / (median time to copy the input volume), the faster of
  np.copyto (1 thread) and the same copy split over {threads} threads
arithmetic model: 2.5*n*log2(n) flops per real transform of length n (half a complex FFT's 5*n*log2(n));
  a 3-D r2c or c2r of N voxels = 2.5*N*log2(N) = sum over axes of 2.5*N*log2(n_axis); rate R(n) from
  r2c+c2r of `howmany` rows of length n (<= {cache} KB of data: in cache), {backend};
  R(n) = the larger of 1 thread and {threads} such batches run at once on {threads} threads;
  arithmetic floor (pair and closed form alike; the kernel multiply's flops are not counted)
  = sum over axes of 2 * 2.5*N*log2(n_axis) / R(n_axis)
lower bound = max(memory floor, arithmetic floor)"""


def copy_bandwidth(shape, repeats, threads):
    """Bytes read + written per second when copying a float32 volume of ``shape``."""
    src = np.random.default_rng(1).standard_normal(shape, dtype=np.float32)
    dst = np.empty_like(src)
    dst[...] = 0  # touch the pages before timing
    np.copyto(dst, src)
    single = median_time(lambda: np.copyto(dst, src), repeats)[0]
    out = {"bytes": 2 * src.nbytes, "copyto_s": single}
    if threads > 1 and shape[0] >= threads:
        edges = np.linspace(0, shape[0], threads + 1).astype(int)
        slabs = [slice(edges[i], edges[i + 1]) for i in range(threads)]
        with ThreadPoolExecutor(max_workers=threads) as pool:

            def threaded():
                list(pool.map(lambda s: np.copyto(dst[s], src[s]), slabs))

            threaded()
            out["threaded_s"] = median_time(threaded, repeats)[0]
    best = min(out["copyto_s"], out.get("threaded_s", math.inf))
    out["copyto_GBps"] = out["bytes"] / out["copyto_s"] / 1e9
    if "threaded_s" in out:
        out["threaded_GBps"] = out["bytes"] / out["threaded_s"] / 1e9
    out["B_GBps"] = out["bytes"] / best / 1e9
    return out


def _in_cache_pair(n, howmany, seed):
    """One single-threaded r2c+c2r pair on its own in-cache batch (returns the callable)."""
    a = np.random.default_rng(seed).standard_normal((howmany, n), dtype=np.float32)
    if fft.backend() == "pyfftw":
        import pyfftw

        x = pyfftw.empty_aligned((howmany, n), dtype=np.float32)
        s = pyfftw.empty_aligned((howmany, n // 2 + 1), dtype=np.complex64)
        y = pyfftw.empty_aligned((howmany, n), dtype=np.float32)
        flags = ("FFTW_MEASURE",)
        f = pyfftw.FFTW(x, s, axes=(1,), direction="FFTW_FORWARD", flags=flags, threads=1)
        i = pyfftw.FFTW(
            s, y, axes=(1,), direction="FFTW_BACKWARD", flags=flags + ("FFTW_DESTROY_INPUT",), threads=1
        )
        x[...] = a  # planning overwrote it; the forward transform preserves it from here on

        def pair():
            f.execute()  # releases the GIL
            i.execute()

        return pair
    import scipy.fft

    def pair():
        scipy.fft.irfft(scipy.fft.rfft(a, axis=1, workers=1), n=n, axis=1, workers=1, overwrite_x=True)

    return pair


def fft_rate(n, threads, repeats=7, min_sample_s=0.02):
    """Flop rate of r2c+c2r on in-cache batches of 1-D transforms of length n.

    ``1 thread``: one batch on one thread. ``aggregate``: ``threads`` independent
    batches, one per thread, run at once (single-threaded plans: a multi-threaded
    plan on 256 KB measures thread synchronisation, not arithmetic, and on a busy
    machine mostly the scheduler). The rate used is the larger of the two.
    """
    row = 4 * n + 8 * (n // 2 + 1) + 4 * n  # input, spectrum, output
    howmany = max(1, CACHE_BYTES // row)
    pairs = [_in_cache_pair(n, howmany, seed) for seed in range(max(1, threads))]
    for pr in pairs:
        pr()
    once = []
    for _ in range(3):
        t0 = time.perf_counter()
        pairs[0]()
        once.append(time.perf_counter() - t0)
    inner = max(1, math.ceil(min_sample_s / max(min(once), 1e-7)))

    def loop(pr):
        for _ in range(inner):
            pr()

    flops = 2 * howmany * 2.5 * n * math.log2(n)
    single = median_time(lambda: loop(pairs[0]), repeats)[0] / inner
    out = {"n": n, "howmany": howmany, "bytes": howmany * row, "GFlops_1thread": flops / single / 1e9}
    out["GFlops_aggregate"] = out["GFlops_1thread"]
    if threads > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(loop, pairs))
            agg = median_time(lambda: list(pool.map(loop, pairs)), repeats)[0] / inner
        out["GFlops_aggregate"] = threads * flops / agg / 1e9
    out["GFlops"] = max(out["GFlops_1thread"], out["GFlops_aggregate"])
    return out


def floors(shape, model, bandwidth_Bps, rates):
    """Memory, arithmetic floors and the lower bound (seconds) for the pair and the closed forms."""
    n = math.prod(shape)
    arith = sum(2 * 2.5 * n * math.log2(na) / (rates[na]["GFlops"] * 1e9) for na in shape)
    out = {}
    for key in ("bare_pair", "closed_form", "closed_form_masked"):
        mem = model[key] / bandwidth_Bps
        out[key] = {
            "bytes": model[key],
            "memory_s": mem,
            "arithmetic_s": arith,
            "lower_bound_s": max(mem, arith),
            "bound_by": "memory" if mem >= arith else "arithmetic",
        }
    return out


# --------------------------------------------------------------------------
# the comparisons
# --------------------------------------------------------------------------
def naive_numpy(field, d_full, g_full, lam):
    """The same closed form as a first implementation would write it: complex128, full spectrum."""
    return np.real(np.fft.ifftn(d_full * np.fft.fftn(field) / (d_full**2 + lam * g_full + (d_full == 0))))


def scipy_closed_form(field, kernel, workers):
    import scipy.fft

    spec = scipy.fft.rfftn(field, workers=workers)
    spec *= kernel
    return scipy.fft.irfftn(spec, s=field.shape, workers=workers, overwrite_x=True)


def pair_label(threads):
    if fft.backend() == "pyfftw":
        return "same FFTW plan as the closed form, its own buffers"
    return f"scipy.fft, {threads} workers: the scipy backend's pair"


def bare_pair_fn(field, threads):
    """(setup, pair): the r2c+c2r pair the closed form runs, on the same backend and plan."""
    shape = field.shape
    if fft.backend() == "pyfftw":
        # the plan object the closed form itself uses (its 3-D plans on its own buffer)
        fused = getattr(fft, "_use_fused", lambda *a: False)(shape, np.float32)
        plan = fft._get_plan("fused" if fused else "real", shape, np.dtype(np.float32), (0, 1, 2))

        def setup():  # unnormalised round trips grow by N: refill (untimed)
            plan.real[...] = field

        def pair():
            plan.forward.execute()
            plan.inverse.execute()

        return setup, pair
    import scipy.fft

    def pair():
        spec = scipy.fft.rfftn(field, workers=threads)
        scipy.fft.irfftn(spec, s=shape, workers=threads, overwrite_x=True)

    return None, pair


def memory_probe(shape):
    """Peak memory of closed_form_l2 above its inputs, in a fresh process (FFTW_ESTIMATE)."""
    env = subprocess_env(MRIRECON_FFTW_PLANNER="FFTW_ESTIMATE", MRIRECON_FFTW_WISDOM="0")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_PROBE,
            json.dumps(list(shape)),
            str(LAM),
            str(MASK_FRACTION),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return {
            "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
        }
    r = json.loads(out.stdout.strip().splitlines()[-1])
    inp = r["input_bytes"]
    r["x_input"] = {
        k: r[k] / inp
        for k in ("cold_peak", "warm_peak", "masked_warm_peak", "caches", "rss_peak_above_before_cold")
    }
    r["x_input"]["caches_plus_warm_peak"] = (r["caches"] + r["warm_peak"]) / inp
    r["x_input"]["caches_plus_masked_warm_peak"] = (r["caches"] + r["masked_warm_peak"]) / inp
    if r.get("fftw_buffer_bytes"):
        r["tracemalloc_sees_fftw_buffers"] = r["freed_by_clear_plan_cache"] >= 0.9 * r["fftw_buffer_bytes"]
    else:
        r["tracemalloc_sees_fftw_buffers"] = None
    return r


def fresh_process(shape, cache_dir, preimport=False):
    env = subprocess_env(MRIRECON_CACHE_DIR=str(cache_dir))
    env.pop("MRIRECON_FFTW_PLANNER", None)
    code = FRESH.format(shape=tuple(shape), lam=LAM, preimport=preimport)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return [float(v) for v in out.stdout.split()]


def run_cpu_size(shape, args, rates):
    threads = fft.n_threads()
    rng = np.random.default_rng(0)
    field = rng.standard_normal(shape, dtype=np.float32)
    mask = ellipsoid_mask(shape)
    n = field.size
    res = {"shape": list(shape), "label": label(shape), "voxels": n, "input_bytes": field.nbytes}
    res["mask_fraction"] = float(mask.mean())
    clear_caches()

    # first call: plans (FFTW_MEASURE, or wisdom) and kernels are built here, not timed below
    t0 = time.perf_counter()
    qsm.closed_form_l2(field, lam=LAM, reference=None)
    res["first_call_s"] = time.perf_counter() - t0
    qsm.closed_form_l2(field, mask, lam=LAM, reference="mask_mean")

    setup, pair = bare_pair_fn(field, threads)
    if setup:
        setup()
    pair()  # warm-up
    # round-robin, so that a machine that speeds up or slows down during the run biases no method
    times = interleaved_times(
        {
            "closed_form": (lambda: qsm.closed_form_l2(field, lam=LAM, reference=None), None),
            "closed_form_masked": (
                lambda: qsm.closed_form_l2(field, mask, lam=LAM, reference="mask_mean"),
                None,
            ),
            "bare_pair": (pair, setup),
        },
        args.repeats,
    )
    setup = pair = None
    kernel = qsm.l2_kernel(shape, voxel_size_mm=(1, 1, 1), b0_dir=(0, 0, 1), lam=LAM)
    scipy_closed_form(field, kernel, threads)  # warm-up
    times["scipy"] = median_time(lambda: scipy_closed_form(field, kernel, threads), args.repeats)[:2]
    res["naive_rel_diff"] = None
    if not args.skip_naive and n <= args.naive_max**3:
        kernels = (dipole_kernel(shape, dtype=np.float64), gradient_sq_kernel(shape, dtype=np.float64))
        times["naive"] = median_time(lambda: naive_numpy(field, *kernels, LAM), args.naive_repeats)[:2]
        ref = naive_numpy(field, *kernels, LAM)
        chi = qsm.closed_form_l2(field, lam=LAM, reference=None)
        res["naive_rel_diff"] = float(np.linalg.norm(chi - ref) / np.linalg.norm(ref))
        kernels = ref = chi = None
    res["median_s"] = {k: v[0] for k, v in times.items()}
    res["times_s"] = {k: v[1] for k, v in times.items()}

    # floors
    bw = copy_bandwidth(shape, args.repeats, threads)
    for na in sorted(set(shape)):
        if na not in rates:
            rates[na] = fft_rate(na, threads, repeats=max(3, args.repeats))
    model = traffic(shape, args.fft_passes)
    fl = floors(shape, model, bw["B_GBps"] * 1e9, rates)
    res["bandwidth"] = bw
    res["fft_rates"] = {str(na): rates[na] for na in sorted(set(shape))}
    res["bytes_model"] = model
    res["floors_s"] = fl

    med = res["median_s"]
    pair_t = med["bare_pair"]
    ratios = {}
    for k in ("closed_form", "closed_form_masked", "scipy", "naive"):
        if k in med:
            ratios[f"{k}/bare_pair"] = med[k] / pair_t
    for k in ("bare_pair", "closed_form", "closed_form_masked"):
        ratios[f"{k}/lower_bound"] = med[k] / fl[k]["lower_bound_s"]
    ratios["closed_form/pair_lower_bound"] = med["closed_form"] / fl["bare_pair"]["lower_bound_s"]
    for k in ("scipy", "naive"):
        if k in med:
            ratios[f"{k}/closed_form"] = med[k] / med["closed_form"]
    res["ratios"] = ratios
    clear_caches()
    field = mask = kernel = None
    gc.collect()
    res["memory"] = memory_probe(shape) if not args.no_memory else None
    return res


# --------------------------------------------------------------------------
# printing
# --------------------------------------------------------------------------
def _ms(t):
    return f"{t * 1e3:.1f}" if t >= 0.01 else f"{t * 1e3:.3f}"


def print_cpu_size(r, threads):
    med, fl = r["median_s"], r["floors_s"]
    print(
        f"\n## CPU, {r['label']} ({r['voxels'] / 1e6:.2f} M voxels, {r['input_bytes'] / 2**20:.0f} MiB in)\n"
    )
    print(f"first call in this process (planning + kernel): {r['first_call_s']:.2f} s\n")
    print("| method | median (ms) | / bare pair | lower bound (ms) | / lower bound |")
    print("|---|---:|---:|---:|---:|")
    for key, name in ROWS.items():
        if key not in med:
            continue
        lb = fl.get(key)
        lb_txt = f"{_ms(lb['lower_bound_s'])} ({lb['bound_by']})" if lb else ""
        over = f"{med[key] / lb['lower_bound_s']:.2f}" if lb else ""
        print(
            f"| {name.format(threads=threads, pair=pair_label(threads))} | {_ms(med[key])} | {med[key] / med['bare_pair']:.2f} | {lb_txt} | {over} |"
        )
    if "naive" not in med:
        print("| naive numpy (complex128 fftn/ifftn) | skipped (--naive-max / --skip-naive) | | | |")
    bw = r["bandwidth"]
    thr = f", {threads}-thread copy {bw['threaded_GBps']:.1f}" if "threaded_GBps" in bw else ""
    rates = ", ".join(
        f"n={v['n']}: {v['GFlops']:.1f} GFlop/s (1 thread {v['GFlops_1thread']:.1f}, {threads} at once "
        f"{v['GFlops_aggregate']:.1f}; {v['howmany']} rows, {v['bytes'] / 1024:.0f} KB)"
        for v in r["fft_rates"].values()
    )
    print(
        f"\ncopy bandwidth B = {bw['B_GBps']:.1f} GB/s (np.copyto {bw['copyto_GBps']:.1f}{thr}); FFT rate {rates}\n"
    )
    print("| row | bytes moved (MB) | memory floor (ms) | arithmetic floor (ms) | lower bound (ms) |")
    print("|---|---:|---:|---:|---:|")
    for key in ("bare_pair", "closed_form", "closed_form_masked"):
        f = fl[key]
        print(
            f"| {key} | {f['bytes'] / 1e6:.0f} | {_ms(f['memory_s'])} | {_ms(f['arithmetic_s'])} | {_ms(f['lower_bound_s'])} |"
        )
    if r["naive_rel_diff"] is not None:
        print(f"\nrelative difference closed form vs naive numpy: {r['naive_rel_diff']:.1e}")
    sys.stdout.flush()


def print_cpu_summary(results):
    print("\n## CPU summary (medians; ratios from the same run)\n")
    print(
        "| grid | closed form (ms) | bare pair (ms) | closed form / pair | lower bound (ms) | closed form / lower bound "
        "| masked (ms) | masked / pair | masked / its lower bound | scipy / closed form | naive / closed form |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        m, q, fl = r["median_s"], r["ratios"], r["floors_s"]
        naive = f"{q['naive/closed_form']:.1f}" if "naive/closed_form" in q else "-"
        print(
            f"| {r['label']} | {_ms(m['closed_form'])} | {_ms(m['bare_pair'])} | {q['closed_form/bare_pair']:.2f} "
            f"| {_ms(fl['closed_form']['lower_bound_s'])} ({fl['closed_form']['bound_by']}) "
            f"| {q['closed_form/lower_bound']:.2f} | {_ms(m['closed_form_masked'])} "
            f"| {q['closed_form_masked/bare_pair']:.2f} | {q['closed_form_masked/lower_bound']:.2f} "
            f"| {q['scipy/closed_form']:.2f} | {naive} |"
        )
    mem = [r for r in results if r.get("memory")]
    if not mem:
        return
    print(
        "\n## Peak memory above the inputs (tracemalloc, fresh process, FFTW_ESTIMATE; multiples of the "
        "float32 input's bytes)\n"
    )
    print(
        "cold = first call (plans, kernel, output, temporaries); caches = what stays allocated after it "
        "(plan buffers, kernels); warm = a later call above the caches; RSS = high-water RSS above the "
        "RSS before the cold call.\n"
    )
    print(
        "| grid | input (MiB) | cold call peak | caches after | warm call peak | caches + warm | masked warm "
        "| caches + masked warm | RSS cold peak | tracemalloc sees FFTW buffers |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in mem:
        p = r["memory"]
        if "error" in p:
            print(f"| {r['label']} | probe failed: {p['error']} |")
            continue
        x = p["x_input"]
        print(
            f"| {r['label']} | {p['input_bytes'] / 2**20:.0f} | {x['cold_peak']:.2f} | {x['caches']:.2f} "
            f"| {x['warm_peak']:.2f} | {x['caches_plus_warm_peak']:.2f} | {x['masked_warm_peak']:.2f} "
            f"| {x['caches_plus_masked_warm_peak']:.2f} | {x['rss_peak_above_before_cold']:.2f} "
            f"| {p['tracemalloc_sees_fftw_buffers']} |"
        )


# --------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------
def gpu_check():
    """None when CuPy and a CUDA device are usable, else why not."""
    try:
        import cupy
    except ImportError:
        return "--device gpu needs CuPy (pip install 'mrirecon[gpu]'); it is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "--device gpu needs a CUDA device; CuPy sees none"
    except Exception as exc:  # no driver, no device
        return f"--device gpu needs a CUDA device; CuPy says: {exc}"
    try:
        from cupyx.profiler import benchmark  # noqa: F401
    except ImportError:
        return "--device gpu needs cupyx.profiler.benchmark (CuPy >= 10)"
    return None


def gpu_info():
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    info = {"gpu": name.decode() if isinstance(name, bytes) else str(name), "cupy": cupy.__version__}
    try:
        info["cufft"] = cupy.cuda.cufft.getVersion()
    except Exception:
        info["cufft"] = None
    info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
    return info


def run_gpu_size(shape, args):
    import cupy
    import cupyx
    import cupyx.scipy.fft as cfft
    from cupyx.profiler import benchmark

    dev = cupy.cuda.Device()
    nrep, nwarm = args.gpu_repeats, 5
    field = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    mask_h = ellipsoid_mask(shape)
    x = cupy.asarray(field)
    m = cupy.asarray(mask_h)
    res = {"shape": list(shape), "label": label(shape), "voxels": field.size, "input_bytes": field.nbytes}

    def gpu_ms(fn):
        b = benchmark(fn, n_repeat=nrep, n_warmup=nwarm)
        return {
            "gpu_ms": float(np.median(b.gpu_times[0])) * 1e3,
            "cpu_ms": float(np.median(b.cpu_times)) * 1e3,
            "gpu_times_ms": [float(t) * 1e3 for t in b.gpu_times[0]],
        }

    rows = {}
    rows["closed_form"] = gpu_ms(lambda: qsm.closed_form_l2(x, lam=LAM, reference=None))
    rows["closed_form_masked"] = gpu_ms(lambda: qsm.closed_form_l2(x, m, lam=LAM, reference="mask_mean"))
    rows["pair_cupyx"] = gpu_ms(lambda: cfft.irfftn(cfft.rfftn(x), s=shape, overwrite_x=True))
    try:  # cuFFT plans used directly, preallocated arrays (semi-private API)
        spec = cupy.empty(fft.half_shape(shape), dtype=cupy.complex64)
        out = cupy.empty(shape, dtype=cupy.float32)
        plan_f = cfft.get_fft_plan(x, value_type="R2C")
        plan_i = cfft.get_fft_plan(spec, shape=shape, value_type="C2R")

        def raw_pair():
            plan_f.fft(x, spec, cupy.cuda.cufft.CUFFT_FORWARD)
            plan_i.fft(spec, out, cupy.cuda.cufft.CUFFT_INVERSE)

        raw_pair()
        ref = cfft.irfftn(cfft.rfftn(x), s=shape) * math.prod(shape)  # cuFFT's c2r is unnormalised
        res["raw_pair_rel_diff"] = float(cupy.linalg.norm(out - ref) / cupy.linalg.norm(ref))
        rows["pair_raw"] = gpu_ms(raw_pair)
        ref = None
    except Exception as exc:
        res["raw_pair_error"] = f"{type(exc).__name__}: {exc}"
    pair_key = min((k for k in ("pair_cupyx", "pair_raw") if k in rows), key=lambda k: rows[k]["gpu_ms"])
    res["bare_pair_from"] = pair_key
    pair_ms = rows[pair_key]["gpu_ms"]

    # the closed form computes what it should (against cupyx on the same kernel)
    kernel = qsm.l2_kernel(shape, voxel_size_mm=(1, 1, 1), b0_dir=(0, 0, 1), lam=LAM, xp="cupy")
    ref = cfft.irfftn(cfft.rfftn(x) * kernel, s=shape)
    chi = qsm.closed_form_l2(x, lam=LAM, reference=None)
    res["closed_form_rel_diff"] = float(cupy.linalg.norm(chi - ref) / cupy.linalg.norm(ref))
    chi = ref = kernel = None

    # device memory floor: a device-to-device copy of the same bytes
    dst = cupy.empty_like(x)
    copy = gpu_ms(lambda: cupy.copyto(dst, x))
    dst = None
    bw = 2 * field.nbytes / (copy["gpu_ms"] * 1e-3)
    model = traffic(shape, args.fft_passes)
    res["bandwidth"] = {"copy_ms": copy["gpu_ms"], "B_GBps": bw / 1e9}
    res["bytes_model"] = model
    res["memory_floor_ms"] = {
        k: model[k] / bw * 1e3 for k in ("bare_pair", "closed_form", "closed_form_masked")
    }

    # host to host: pageable (a NumPy array) and pinned (cupyx.empty_pinned), wall clock
    def sync_wall(fn):
        def run():
            fn()
            dev.synchronize()

        for _ in range(2):
            run()
        med, times, _ = median_time(run, args.h2h_repeats)
        return {"wall_ms": med * 1e3, "times_ms": [t * 1e3 for t in times]}

    pin_in = cupyx.empty_pinned(shape, dtype=np.float32)
    pin_in[...] = field
    pin_out = cupyx.empty_pinned(shape, dtype=np.float32)
    x_dev = cupy.empty(shape, dtype=cupy.float32)

    def pinned():
        x_dev.set(pin_in)
        qsm.closed_form_l2(x_dev, lam=LAM, reference=None).get(out=pin_out)

    def pinned_transfer():
        x_dev.set(pin_in)
        x_dev.get(out=pin_out)

    h2h = {
        "pageable": sync_wall(lambda: qsm.closed_form_l2(cupy.asarray(field), lam=LAM, reference=None).get()),
        "pinned": sync_wall(pinned),
        "pageable_transfer_only": sync_wall(lambda: cupy.asarray(field).get()),
        "pinned_transfer_only": sync_wall(pinned_transfer),
    }
    res["on_device"] = rows
    res["host_to_host"] = h2h
    cf = rows["closed_form"]["gpu_ms"]
    res["ratios"] = {
        "closed_form/bare_pair": cf / pair_ms,
        "closed_form_masked/bare_pair": rows["closed_form_masked"]["gpu_ms"] / pair_ms,
        "closed_form/memory_floor": cf / res["memory_floor_ms"]["closed_form"],
        "bare_pair/memory_floor": pair_ms / res["memory_floor_ms"]["bare_pair"],
        "pinned/on_device": h2h["pinned"]["wall_ms"] / cf,
        "pageable/on_device": h2h["pageable"]["wall_ms"] / cf,
    }
    x = m = x_dev = pin_in = pin_out = None
    cupy.get_default_memory_pool().free_all_blocks()
    cupy.fft.config.get_plan_cache().clear()
    return res


def print_gpu(results, info):
    print(f"\n## GPU: {info['gpu']} (CuPy {info['cupy']}, cuFFT {info['cufft']})\n")
    print(
        "on device: median GPU time (cupyx.profiler.benchmark, CUDA events) and median CPU-side time; "
        "bare pair = the faster of cupyx.scipy.fft rfftn+irfftn and the raw cuFFT plans; memory floor = "
        "the pass model / B, B from a device-to-device copy of the input's bytes\n"
    )
    print(
        "| grid | closed form (ms) | CPU side (ms) | masked (ms) | bare pair (ms) | closed form / pair "
        "| masked / pair | B (GB/s) | memory floor (ms) | closed form / floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d, q = r["on_device"], r["ratios"]
        pair = d[r["bare_pair_from"]]["gpu_ms"]
        print(
            f"| {r['label']} | {d['closed_form']['gpu_ms']:.3f} | {d['closed_form']['cpu_ms']:.3f} "
            f"| {d['closed_form_masked']['gpu_ms']:.3f} | {pair:.3f} ({r['bare_pair_from'][5:]}) "
            f"| {q['closed_form/bare_pair']:.2f} | {q['closed_form_masked/bare_pair']:.2f} "
            f"| {r['bandwidth']['B_GBps']:.0f} | {r['memory_floor_ms']['closed_form']:.3f} "
            f"| {q['closed_form/memory_floor']:.2f} |"
        )
    print("\n| grid | pair cupyx (ms) | pair raw plans (ms) | closed form vs cupyx rel. diff |")
    print("|---|---:|---:|---:|")
    for r in results:
        d = r["on_device"]
        raw = f"{d['pair_raw']['gpu_ms']:.3f}" if "pair_raw" in d else r.get("raw_pair_error", "-")
        print(f"| {r['label']} | {d['pair_cupyx']['gpu_ms']:.3f} | {raw} | {r['closed_form_rel_diff']:.1e} |")
    print(
        "\nhost to host (no mask, reference=None; wall clock, median, synchronised): NumPy in, NumPy out; "
        "transfer only = the same copies without the reconstruction\n"
    )
    print(
        "| grid | pageable (ms) | pinned (ms) | pageable transfer only (ms) | pinned transfer only (ms) "
        "| pageable / on device | pinned / on device |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        h, q = r["host_to_host"], r["ratios"]
        print(
            f"| {r['label']} | {h['pageable']['wall_ms']:.2f} | {h['pinned']['wall_ms']:.2f} "
            f"| {h['pageable_transfer_only']['wall_ms']:.2f} | {h['pinned_transfer_only']['wall_ms']:.2f} "
            f"| {q['pageable/on_device']:.1f} | {q['pinned/on_device']:.1f} |"
        )
    sys.stdout.flush()


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def fresh_shape(shapes):
    """The grid for the fresh-process table: the one nearest 256^3 voxels."""
    return min(shapes, key=lambda s: abs(math.log(math.prod(s) / 256**3)))


def run_fresh(shape):
    with tempfile.TemporaryDirectory() as tmp:
        cold = fresh_process(shape, tmp)  # no wisdom on disk: FFTW_MEASURE planning
        hot = fresh_process(shape, tmp)  # wisdom written by the run before
        hot_pre = fresh_process(shape, tmp, preimport=True)
    print(f"\n## Fresh process, {label(shape)}\n")
    print("| fresh process | import (s) | first call (s) | warm call (s) | first / warm |")
    print("|---|---:|---:|---:|---:|")
    rows = (
        ("no wisdom on disk", cold),
        ("wisdom on disk", hot),
        ("wisdom on disk, pyfftw imported before the call", hot_pre),
    )
    for name, (ti, first, warm) in rows:
        print(f"| {name} | {ti:.2f} | {first:.3f} | {warm:.3f} | {first / warm:.2f} |")
    return {
        "shape": list(shape),
        "fresh_no_wisdom": cold,
        "fresh_wisdom": hot,
        "fresh_wisdom_preimported": hot_pre,
    }


def add_arguments(p) -> None:
    """The benchmark's options (``mrirecon bench fft`` and ``scripts/bench_fft.py``)."""
    p.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"comma-separated grids, N (N^3) or AxBxC (default {DEFAULT_SIZES})",
    )
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)  # the old single-size flag
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per CPU method (median reported)")
    p.add_argument("--naive-repeats", type=int, default=3, help="repeats for the slow naive NumPy version")
    p.add_argument(
        "--naive-max",
        type=int,
        default=256,
        help="naive NumPy only for grids of at most this^3 voxels (default 256; 384^3 needs ~3.5 GB and minutes)",
    )
    p.add_argument("--skip-naive", action="store_true", help="no naive NumPy rows at all")
    p.add_argument(
        "--device", choices=("cpu", "gpu", "both"), default="cpu", help="where to run (default cpu)"
    )
    p.add_argument("--gpu-repeats", type=int, default=50, help="GPU timed repeats (cupyx.profiler.benchmark)")
    p.add_argument("--h2h-repeats", type=int, default=10, help="host-to-host timed repeats on the GPU")
    p.add_argument(
        "--fft-passes",
        type=int,
        default=DEFAULT_PASSES,
        help=f"memory passes per 3-D FFT in the floor's model (default {DEFAULT_PASSES})",
    )
    p.add_argument("--no-fresh", action="store_true", help="skip the fresh-process first-call table")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def main(args) -> int:
    """Run the benchmark with parsed ``args``; prints the tables, writes ``--json``."""
    doc = run_benchmark(args)
    return 0 if doc is not None else 2


def run_benchmark(args):
    """The benchmark itself: returns the results document."""
    try:
        shapes = parse_sizes(str(args.size) if args.size else args.sizes)
    except ValueError as exc:
        raise InvalidParameterError(f"--sizes: {exc}") from None
    if args.repeats < 1 or args.naive_repeats < 1 or args.gpu_repeats < 1 or args.h2h_repeats < 1:
        raise InvalidParameterError("repeat counts must be >= 1")
    if args.fft_passes < 1:
        raise InvalidParameterError("--fft-passes must be >= 1")
    want_cpu = args.device in ("cpu", "both")
    want_gpu = args.device in ("gpu", "both")
    if want_gpu:
        why = gpu_check()
        if why:
            raise InvalidParameterError(why)

    threads = fft.n_threads()
    info = machine_info()
    if want_gpu:
        info.update(gpu_info())
    doc = {
        "machine": info,
        "lam": LAM,
        "dtype": "float32",
        "sizes": [list(s) for s in shapes],
        "model": {
            "fft_passes": args.fft_passes,
            "flops_per_real_transform": "2.5*n*log2(n)",
            "in_cache_bytes": CACHE_BYTES,
            "mask_fraction": MASK_FRACTION,
        },
        "targets": TARGETS,
        "cpu": None,
        "fresh": None,
        "gpu": None,
    }
    print("# closed-form L2 QSM benchmark, float32, lam = 0.01")
    print(
        f"# machine: {info['cpu']}, {info['cpus_visible']} CPUs visible, {threads} FFT threads; "
        f"backend {info['backend']} (pyfftw {info['pyfftw']}, numpy {info['numpy']}, scipy {info['scipy']})"
    )
    if want_gpu:
        print(f"# GPU: {info['gpu']}, CuPy {info['cupy']}, cuFFT {info['cufft']}")
    print(f"# {TARGETS}")
    print(
        "\n"
        + MODEL_TEXT.format(
            passes=args.fft_passes,
            threads=threads,
            cache=CACHE_BYTES // 1024,
            backend="pyfftw, FFTW_MEASURE" if info["backend"] == "pyfftw" else "scipy.fft",
        ),
        flush=True,
    )

    if want_cpu:
        rates = {}
        results = []
        for shape in shapes:
            r = run_cpu_size(shape, args, rates)
            print_cpu_size(r, threads)
            results.append(r)
        print_cpu_summary(results)
        doc["cpu"] = {"threads": threads, "backend": fft.backend(), "results": results}
        if not args.no_fresh:
            doc["fresh"] = run_fresh(fresh_shape(shapes))
    if want_gpu:
        gres = [run_gpu_size(shape, args) for shape in shapes]
        print_gpu(gres, info)
        doc["gpu"] = {"results": gres}
    sys.stdout.flush()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2))
    return doc
