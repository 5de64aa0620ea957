"""The FFT core: every Fourier transform in mrirecon goes through this module.

Backends, chosen once per process:

* ``pyfftw`` (default when installed): FFTW plans cached per
  (shape, dtype, axes, threads), aligned buffers reused across calls, FFTW
  wisdom loaded from and saved to a user cache directory so that a new process
  does not pay ``FFTW_MEASURE`` planning again.
* ``scipy``: :mod:`scipy.fft` with all usable cores as workers (the fallback
  when pyfftw is missing, or when ``MRIRECON_FFT_BACKEND=scipy``).
* CuPy arrays always go to cuFFT through :mod:`cupy.fft` (CuPy caches its
  plans); the array decides, there are no host/device copies here.

Conventions: :func:`rfftn`, :func:`irfftn`, :func:`fftn` and :func:`ifftn` use
the NumPy normalisation (forward unnormalised, inverse scaled by 1/N) and the
NumPy half-spectrum layout (the last transformed axis holds ``n // 2 + 1``
frequencies). :func:`fftc` and :func:`ifftc` are centred and orthonormal, for
k-space work. :func:`real_filter` is the two-FFT path of the closed-form
reconstructions: ``irfftn(rfftn(x) * kernel)`` with the multiply done in place
on the half spectrum.

Environment variables (read when first needed):

``MRIRECON_FFT_THREADS``
    Threads/workers for CPU transforms (default: the cores this process may use).
``MRIRECON_FFT_BACKEND``
    ``pyfftw`` or ``scipy`` (default: pyfftw if importable).
``MRIRECON_FFTW_PLANNER``
    FFTW planner effort: ``auto`` (default: FFTW_MEASURE plans from wisdom,
    FFTW_ESTIMATE for a shape without wisdom, measured at exit and saved for
    the next run), ``FFTW_ESTIMATE``, ``FFTW_MEASURE``, ``FFTW_PATIENT`` or
    ``FFTW_EXHAUSTIVE``.
``MRIRECON_FFTW_EXIT_BUDGET_S``
    Seconds the ``auto`` planner may spend at exit measuring the shapes it
    planned cheaply (default 0: never; use ``mrirecon fft-wisdom`` instead).
``MRIRECON_FFTW_WISDOM``
    Set to ``0`` to neither read nor write the wisdom file.
``MRIRECON_CACHE_DIR``
    Where the wisdom file lives (default ``$XDG_CACHE_HOME/mrirecon`` or
    ``~/.cache/mrirecon``).

Plans measured while the machine is busy can be slower than plans measured on
an idle machine; wisdom keeps whatever was measured first. Delete the wisdom
file (see :func:`wisdom_path`) to measure again.
"""

from __future__ import annotations

import collections
import os
import pickle
import platform
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from ._parallel import elementwise, fused
from .device import get_array_module
from .threads import n_threads

__all__ = [
    "backend",
    "fftc",
    "fftn",
    "get_array_module",
    "half_shape",
    "ifftc",
    "ifftn",
    "irfftn",
    "n_threads",
    "next_fast_len",
    "planning",
    "real_filter",
    "rfftn",
    "wisdom_path",
]

_PLANNERS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE")
_MAX_CACHED_PLANS = 6

_lock = threading.Lock()
_local = threading.local()
_state: dict = {}
_plans: collections.OrderedDict = collections.OrderedDict()


# --------------------------------------------------------------------------
# array modules and configuration
# --------------------------------------------------------------------------
def backend() -> str:
    """Name of the CPU backend in use: ``"pyfftw"`` or ``"scipy"``."""
    if "backend" not in _state:
        wanted = os.environ.get("MRIRECON_FFT_BACKEND", "").strip().lower()
        if wanted not in ("", "pyfftw", "scipy"):
            warnings.warn(
                f"MRIRECON_FFT_BACKEND={wanted!r} is not 'pyfftw' or 'scipy'; using the default",
                stacklevel=2,
            )
            wanted = ""
        name = "scipy"
        if wanted in ("", "pyfftw"):
            try:
                import pyfftw  # noqa: F401

                name = "pyfftw"
            except ImportError:
                if wanted == "pyfftw":
                    warnings.warn("pyfftw is not installed; using scipy.fft", stacklevel=2)
        _state["backend"] = name
    return _state["backend"]


class planning:
    """Context manager: FFTW planner effort for plans made inside it (this thread).

    ``with planning("FFTW_ESTIMATE"): ...`` suits one-off transforms, where
    measuring a plan would cost more than it saves.
    """

    def __init__(self, effort: str):
        effort = effort.strip().upper()
        if effort not in _PLANNERS:
            raise ValueError(f"planner effort must be one of {_PLANNERS}, got {effort!r}")
        self.effort = effort

    def __enter__(self):
        self.previous = getattr(_local, "planner", None)
        _local.planner = self.effort
        return self

    def __exit__(self, *exc):
        _local.planner = self.previous
        return False


_WISDOM_ONLY = ":wisdom-only"


def _fl(planner: str) -> tuple:
    """FFTW flags of a planner name; ``"X:wisdom-only"`` plans X only from wisdom (else RuntimeError)."""
    if planner.endswith(_WISDOM_ONLY):
        return (planner[: -len(_WISDOM_ONLY)], "FFTW_WISDOM_ONLY")
    return (planner,)


def _planner() -> str:
    """The planner effort for a new plan: forced, from the environment, or ``"auto"``.

    ``"auto"`` (the default, ``MRIRECON_FFTW_PLANNER`` unset or ``auto``): a
    shape with FFTW_MEASURE wisdom is planned from it (instantly); a shape
    without is planned with FFTW_ESTIMATE (milliseconds, a first run does not
    pay seconds of measuring); with ``MRIRECON_FFTW_EXIT_BUDGET_S`` > 0 the
    process measures those shapes when it exits (starting no new shape after
    that many seconds) and stores the wisdom for the next run. Default 0:
    measuring a whole-head shape costs about a minute on 2 cores, so it is
    left to ``mrirecon fft-wisdom`` or an explicit budget.
    """
    forced = getattr(_local, "planner", None)
    if forced:
        return forced
    raw = os.environ.get("MRIRECON_FFTW_PLANNER", "auto").strip().upper()
    if raw in ("", "AUTO"):
        return "auto"
    value = raw
    if not value.startswith("FFTW_"):
        value = "FFTW_" + value
    if value not in _PLANNERS:
        warnings.warn(
            f"MRIRECON_FFTW_PLANNER={value!r} is not one of {_PLANNERS}; using FFTW_MEASURE",
            stacklevel=3,
        )
        value = "FFTW_MEASURE"
    return value


def half_shape(shape, axes=None) -> tuple[int, ...]:
    """Shape of the half spectrum of a real array of ``shape`` (NumPy layout)."""
    shape = tuple(int(n) for n in shape)
    last = (axes[-1] if axes is not None else -1) % len(shape)
    return shape[:last] + (shape[last] // 2 + 1,) + shape[last + 1 :]


def next_fast_len(n: int) -> int:
    """Smallest 2·3·5-smooth integer >= n (a length every FFT backend does fast)."""
    n = int(n)
    if n <= 1:
        return 1
    best = 2 ** int(np.ceil(np.log2(n)))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _norm_axes(ndim: int, axes) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(ndim))
    return tuple(int(a) % ndim for a in axes)


def _real_dtype(x) -> np.dtype:
    return np.dtype(np.float64) if x.dtype in (np.float64, np.complex128) else np.dtype(np.float32)


# --------------------------------------------------------------------------
# FFTW wisdom
# --------------------------------------------------------------------------
def wisdom_path() -> Path:
    """Path of the FFTW wisdom file used by this process."""
    root = os.environ.get("MRIRECON_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = os.path.join(xdg, "mrirecon")
    import hashlib

    import pyfftw

    version = getattr(pyfftw, "__version__", "unknown")
    # FFTW rejects wisdom from another FFTW build (e.g. a pyfftw rebuilt against a system or AVX2
    # FFTW, scripts/install_fftw_simd.sh): one file per pyfftw installation keeps them apart
    ext = getattr(getattr(pyfftw, "pyfftw", None), "__file__", None) or pyfftw.__file__
    build = hashlib.sha1(os.path.realpath(ext).encode()).hexdigest()[:8]
    return Path(root) / f"fftw-wisdom-pyfftw{version}-{build}-{platform.machine()}.pickle"


def _wisdom_enabled() -> bool:
    return os.environ.get("MRIRECON_FFTW_WISDOM", "1").strip() not in ("0", "false", "no")


def _load_wisdom() -> None:
    """Import wisdom from disk once per process (called under ``_lock``)."""
    if _state.get("wisdom_loaded"):
        return
    _state["wisdom_loaded"] = True
    _state["wisdom"] = None
    if not _wisdom_enabled():
        return
    import pyfftw

    path = wisdom_path()
    try:
        with open(path, "rb") as fh:
            wisdom = pickle.load(fh)
        pyfftw.import_wisdom(wisdom)
        _state["wisdom"] = pyfftw.export_wisdom()
    except FileNotFoundError:
        pass
    except Exception as exc:  # a damaged cache must not stop a reconstruction
        warnings.warn(f"ignoring unreadable FFTW wisdom file {path}: {exc}", stacklevel=4)


def preload() -> None:
    """Choose the backend and, for pyfftw, read the wisdom file now rather than at the first plan."""
    if backend() == "pyfftw":
        with _lock:
            _load_wisdom()


def _save_wisdom() -> None:
    """Write the process's wisdom to disk if it grew (called under ``_lock``)."""
    if not _wisdom_enabled():
        return
    import pyfftw

    wisdom = pyfftw.export_wisdom()
    if wisdom == _state.get("wisdom"):
        return
    path = wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".wisdom-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(wisdom, fh)
        os.replace(tmp, path)
        _state["wisdom"] = wisdom
    except OSError as exc:
        warnings.warn(f"could not save FFTW wisdom to {path}: {exc}", stacklevel=4)


# --------------------------------------------------------------------------
# cached FFTW plans with their own aligned buffers
# --------------------------------------------------------------------------
class _RealPlan:
    """r2c and c2r plans on one aligned buffer, in place where the layout allows.

    When the last transformed axis is the array's last axis (the usual case)
    the real data live in a buffer padded along that axis to
    ``2 * (n // 2 + 1)`` values, and the half spectrum overwrites them in place
    (FFTW's in-place real layout): one volume-sized buffer instead of two.
    ``real`` and ``spec`` are the two views of it; ``inverse`` leaves its
    (unnormalised) result in ``real``.
    """

    def __init__(self, shape, dtype, axes, threads, planner):
        import pyfftw

        cdtype = np.result_type(dtype, np.complex64)
        hshape = half_shape(shape, axes)
        if axes[-1] == len(shape) - 1:
            self.buf = pyfftw.empty_aligned(shape[:-1] + (2 * hshape[-1],), dtype=dtype)
            self.real = self.buf[..., : shape[-1]]
            self.spec = self.buf.view(cdtype)
        else:
            self.buf = None
            self.real = pyfftw.empty_aligned(shape, dtype=dtype)
            self.spec = pyfftw.empty_aligned(hshape, dtype=cdtype)
        self.forward = pyfftw.FFTW(
            self.real, self.spec, axes=axes, direction="FFTW_FORWARD", flags=_fl(planner), threads=threads
        )
        self.inverse = pyfftw.FFTW(
            self.spec,
            self.real,
            axes=axes,
            direction="FFTW_BACKWARD",
            flags=_fl(planner) + ("FFTW_DESTROY_INPUT",),
            threads=threads,
        )
        self.scale = 1.0 / float(np.prod([shape[a] for a in axes]))
        self.lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held by this plan's buffers."""
        if self.buf is not None:
            return self.buf.nbytes
        return self.real.nbytes + self.spec.nbytes

    def copy_out(self, mask=None):
        """A new contiguous array: the normalised inverse result, times ``mask`` if given.

        One pass over memory: scale (and mask) are applied block by block while
        the block is in cache.
        """
        out = np.empty(self.real.shape, dtype=self.real.dtype)
        scale = self.real.dtype.type(self.scale)
        if mask is None:
            elementwise(np.multiply, out, self.real, scale)
        else:

            def scaled_masked(o, r, m):
                np.multiply(r, m, out=o)
                o *= scale

            fused(scaled_masked, out, self.real, mask)
        return out


class _ComplexPlan:
    """In-place forward and backward c2c plans on one aligned buffer."""

    def __init__(self, shape, dtype, axes, threads, planner):
        import pyfftw

        self.buf = pyfftw.empty_aligned(shape, dtype=dtype)
        self.forward = pyfftw.FFTW(
            self.buf, self.buf, axes=axes, direction="FFTW_FORWARD", flags=_fl(planner), threads=threads
        )
        self.inverse = pyfftw.FFTW(
            self.buf, self.buf, axes=axes, direction="FFTW_BACKWARD", flags=_fl(planner), threads=threads
        )
        self.scale = 1.0 / float(np.prod([shape[a] for a in axes]))
        self.lock = threading.Lock()


class _FusedPlan:
    """The two-FFT filter of a large 3-D volume in three cache-blocked passes.

    A 3-D transform is a 2-D transform of every plane (axes 1, 2) and a 1-D
    transform of every column along axis 0. The filter runs as

    A. per block of planes: masked copy in, 2-D r2c in place;
    B. per block of columns: 1-D FFT along axis 0, multiply by the kernel,
       inverse 1-D FFT, while the block is in cache;
    C. per block of planes: 2-D c2r in place, copy out with 1/N and the mask.

    Each block (about ``_FUSED_BLOCK_BYTES``) stays in cache through its
    steps, so the whole filter reads and writes the volume three times: no
    more than the two bare 3-D transforms need, and the copy-in, the kernel
    multiply and the copy-out come for free. Blocks are split between the
    threads; each thread has its own single-threaded plans (FFTW releases the
    GIL). Block starts keep FFTW's SIMD alignment, so the plans made on one
    block run on every other.
    """

    def __init__(self, shape, dtype, threads, planner):
        import pyfftw

        self.shape = shape
        n0, n1, n2 = shape
        m = n2 // 2 + 1
        self.dtype = np.dtype(dtype)
        cdtype = np.result_type(dtype, np.complex64)
        self.buf = pyfftw.empty_aligned((n0, n1, 2 * m), dtype=dtype)
        self.real = self.buf[..., :n2]
        self.spec = self.buf.view(cdtype)
        self.scale = 1.0 / float(n0 * n1 * n2)
        self.lock = threading.Lock()
        align = max(int(pyfftw.simd_alignment), 16)
        plane = self.buf[0].nbytes
        column = n0 * m * cdtype.itemsize
        self.slabs = _fused_runs(n0, plane, align, threads)
        self.columns = _fused_runs(n1, m * cdtype.itemsize, align, threads, unit=column)
        flags = _fl(planner)
        self.plans = []  # per thread: {("A"|"C", length) or ("B", width): plans}
        for t in range(len(self.slabs)):
            p = {}
            for lo, hi in self.slabs[t]:
                key = hi - lo
                if ("A", key) in p:
                    continue
                r, c = self.real[lo:hi], self.spec[lo:hi]
                p[("A", key)] = pyfftw.FFTW(r, c, axes=(1, 2), direction="FFTW_FORWARD", flags=flags)
                p[("C", key)] = pyfftw.FFTW(
                    c, r, axes=(1, 2), direction="FFTW_BACKWARD", flags=_fl(planner) + ("FFTW_DESTROY_INPUT",)
                )
            for lo, hi in self.columns[t] if t < len(self.columns) else ():
                key = hi - lo
                if ("B", key) in p:
                    continue
                blk = self.spec[:, lo:hi]
                p[("B", key)] = (
                    pyfftw.FFTW(blk, blk, axes=(0,), direction="FFTW_FORWARD", flags=flags),
                    pyfftw.FFTW(blk, blk, axes=(0,), direction="FFTW_BACKWARD", flags=flags),
                )
            self.plans.append(p)
        # the plain 3-D plans on the same buffer: rfftn/irfftn and the bare-pair benchmark
        self.forward = pyfftw.FFTW(
            self.real, self.spec, axes=(0, 1, 2), direction="FFTW_FORWARD", flags=flags, threads=threads
        )
        self.inverse = pyfftw.FFTW(
            self.spec,
            self.real,
            axes=(0, 1, 2),
            direction="FFTW_BACKWARD",
            flags=_fl(planner) + ("FFTW_DESTROY_INPUT",),
            threads=threads,
        )

    nbytes = property(lambda self: self.buf.nbytes)
    copy_out = _RealPlan.copy_out

    def _parallel(self, fn, runs):
        if len(runs) == 1:
            fn(0)
        else:
            from ._parallel import _pool

            list(_pool().map(fn, range(len(runs))))

    def filter(self, x, kernel, mask):
        """``irfftn(rfftn(x * mask) * kernel) * mask`` into a new array (call under ``lock``)."""
        out = np.empty(self.shape, dtype=self.dtype)
        scale = self.dtype.type(self.scale)

        def stage_a(t):
            for lo, hi in self.slabs[t]:
                r = self.real[lo:hi]
                if mask is None:
                    np.copyto(r, x[lo:hi], casting="same_kind")
                else:
                    np.multiply(x[lo:hi], mask[lo:hi], out=r)
                plan = self.plans[t][("A", hi - lo)]
                plan.update_arrays(r, self.spec[lo:hi])
                plan.execute()

        def stage_b(t):
            for lo, hi in self.columns[t]:
                blk = self.spec[:, lo:hi]
                fwd, bwd = self.plans[t][("B", hi - lo)]
                fwd.update_arrays(blk, blk)
                fwd.execute()
                np.multiply(blk, kernel[:, lo:hi], out=blk)
                bwd.update_arrays(blk, blk)
                bwd.execute()

        def stage_c(t):
            for lo, hi in self.slabs[t]:
                r = self.real[lo:hi]
                plan = self.plans[t][("C", hi - lo)]
                plan.update_arrays(self.spec[lo:hi], r)
                plan.execute()
                o = out[lo:hi]
                if mask is None:
                    np.multiply(r, scale, out=o)
                else:
                    np.multiply(r, mask[lo:hi], out=o)
                    o *= scale

        self._parallel(stage_a, self.slabs)
        self._parallel(stage_b, self.columns)
        self._parallel(stage_c, self.slabs)
        return out


# The blocked filter pays where the volume is well beyond the last-level cache (so the passes
# it saves cost memory bandwidth) and a block of whole columns fits the per-core cache. Measured
# on a 2-core AMD EPYC (32 MiB L3, 512 KiB L2 per core), closed form / bare FFT pair, blocked vs
# plain: 128^3 1.89 vs 1.52, 200x240x200 1.21 vs 1.35, 256^3 1.15 vs 1.38, 384^3 1.52 vs 1.35
# (there the narrowest aligned column block is 2.4 MB).
_FUSED_MIN_BYTES = 16 << 20
_FUSED_MAX_COLUMN_BLOCK = 2 << 20


def _use_fused(shape, dtype) -> bool:
    """Whether :func:`real_filter` takes the cache-blocked path for this 3-D shape."""
    import math

    if len(shape) != 3 or math.prod(shape) * np.dtype(dtype).itemsize < _FUSED_MIN_BYTES:
        return False
    n0, n1, n2 = shape
    m = n2 // 2 + 1
    citem = 2 * np.dtype(dtype).itemsize
    g = 32 // math.gcd(m * citem, 32)  # the narrowest column block that keeps SIMD alignment
    return g * n0 * m * citem < _FUSED_MAX_COLUMN_BLOCK


_FUSED_BLOCK_BYTES = 1 << 20  # about the L2 cache of one core


def _fused_runs(n, step_bytes, align, threads, unit=None):
    """Split ``range(n)`` into per-thread lists of ``(lo, hi)`` blocks.

    Every block start is a multiple of ``g`` (so ``lo * step_bytes`` keeps the
    SIMD alignment) and each block holds about ``_FUSED_BLOCK_BYTES`` of data
    (``unit`` bytes per index, default ``step_bytes``).
    """
    import math

    unit = unit or step_bytes
    g = align // math.gcd(step_bytes, align)
    size = max(g, (_FUSED_BLOCK_BYTES // max(unit, 1)) // g * g)
    threads = max(1, min(threads, n // size or 1))
    # thread boundaries on multiples of g, as even as that allows
    edges = [0] + [min(n, round(n * i / threads / g) * g) for i in range(1, threads)] + [n]
    runs = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        runs.append([(a, min(a + size, hi)) for a in range(lo, hi, size)])
    return [r for r in runs if r]


_SMALL_VOXELS = 1 << 15  # below this, FFTW's thread start-up costs more than it saves


def _make_plan(kind, shape, dtype, axes, threads, planner):
    if kind == "fused":
        return _FusedPlan(tuple(shape), np.dtype(dtype), threads, planner)
    cls = _RealPlan if kind == "real" else _ComplexPlan
    return cls(tuple(shape), np.dtype(dtype), axes, threads, planner)


def _get_plan(kind, shape, dtype, axes):
    threads = n_threads() if int(np.prod(shape)) >= _SMALL_VOXELS else 1
    planner = _planner()
    base = (kind, tuple(shape), np.dtype(dtype).str, axes, threads)
    with _lock:
        keys = (
            [base + (p,) for p in ("FFTW_MEASURE", "FFTW_ESTIMATE")]
            if planner == "auto"
            else [base + (planner,)]
        )
        for key in keys:
            plan = _plans.get(key)
            if plan is not None:
                _plans.move_to_end(key)
                return plan
        _load_wisdom()
        if planner == "auto":
            try:  # FFTW_MEASURE quality at no cost when wisdom has it
                plan = _make_plan(kind, shape, dtype, axes, threads, "FFTW_MEASURE" + _WISDOM_ONLY)
                key = base + ("FFTW_MEASURE",)
            except RuntimeError:
                plan = _make_plan(kind, shape, dtype, axes, threads, "FFTW_ESTIMATE")
                key = base + ("FFTW_ESTIMATE",)
                _remember_pending(base)
        else:
            plan = _make_plan(kind, shape, dtype, axes, threads, planner)
            key = base + (planner,)
            if planner != "FFTW_ESTIMATE":
                _save_wisdom()
        _plans[key] = plan
        while len(_plans) > _MAX_CACHED_PLANS:
            _plans.popitem(last=False)
        return plan


def _remember_pending(base) -> None:
    """Queue a shape planned cheaply for FFTW_MEASURE planning at exit (called under ``_lock``)."""
    if not _wisdom_enabled():
        return
    pending = _state.setdefault("pending", [])
    if base not in pending:
        pending.append(base)
    if not _state.get("atexit"):
        import atexit

        atexit.register(measure_pending)
        _state["atexit"] = True


def pending_shapes() -> list:
    """Plans made with FFTW_ESTIMATE for want of wisdom, to be measured at exit: (kind, shape, dtype, axes, threads)."""
    return list(_state.get("pending", []))


def measure_pending(budget_s=None) -> int:
    """Make FFTW_MEASURE plans for the shapes that were planned cheaply, and save the wisdom.

    Runs at process exit (see :func:`_planner`); ``budget_s`` (default
    ``MRIRECON_FFTW_EXIT_BUDGET_S``, 0) stops it before starting a shape once
    that many seconds have passed. Returns the number of shapes measured.
    """
    import time

    if budget_s is None:
        try:
            budget_s = float(os.environ.get("MRIRECON_FFTW_EXIT_BUDGET_S", "0"))
        except ValueError:
            budget_s = 0.0
    done = 0
    t0 = time.perf_counter()
    with _lock:
        pending = _state.get("pending", [])
        while pending and budget_s > 0 and time.perf_counter() - t0 < budget_s:
            kind, shape, dtype, axes, threads = pending.pop(0)
            try:
                _make_plan(kind, shape, np.dtype(dtype), axes, threads, "FFTW_MEASURE")
            except (MemoryError, RuntimeError):
                continue
            done += 1
        if done:
            _save_wisdom()
    return done


def clear_plan_cache() -> None:
    """Drop every cached FFTW plan and its buffers (wisdom stays loaded)."""
    with _lock:
        _plans.clear()


# --------------------------------------------------------------------------
# public transforms
# --------------------------------------------------------------------------
def rfftn(x, axes=None):
    """N-D FFT of a real array, half spectrum (NumPy layout and normalisation).

    Parameters
    ----------
    x : array_like, real
        float64 stays float64; anything else is transformed in float32.
    axes : sequence of int, optional
        Axes to transform (default all); the last one is halved.

    Returns
    -------
    ndarray, complex64 or complex128 (a new array).
    """
    xp = get_array_module(x)
    if xp is not np:
        return xp.fft.rfftn(x, axes=axes)
    x = np.asarray(x)
    dtype = _real_dtype(x)
    ax = _norm_axes(x.ndim, axes)
    if backend() == "scipy":
        import scipy.fft

        return scipy.fft.rfftn(x.astype(dtype, copy=False), axes=ax, workers=n_threads())
    plan = _get_plan("real", x.shape, dtype, ax)
    with plan.lock:
        plan.real[...] = x
        plan.forward.execute()
        return plan.spec.copy()


def irfftn(spec, shape, axes=None):
    """Inverse of :func:`rfftn`: real array of ``shape`` from its half spectrum."""
    xp = get_array_module(spec)
    shape = tuple(int(n) for n in shape)
    ax = _norm_axes(len(shape), axes)
    if xp is not np:
        return xp.fft.irfftn(spec, s=[shape[a] for a in ax], axes=ax)
    spec = np.asarray(spec)
    dtype = np.dtype(np.float64) if spec.dtype == np.complex128 else np.dtype(np.float32)
    if backend() == "scipy":
        import scipy.fft

        cdtype = np.result_type(dtype, np.complex64)
        return scipy.fft.irfftn(
            spec.astype(cdtype, copy=False), s=[shape[a] for a in ax], axes=ax, workers=n_threads()
        )
    plan = _get_plan("real", shape, dtype, ax)
    if spec.shape != plan.spec.shape:
        raise ValueError(f"half spectrum of shape {spec.shape} does not fit shape {shape}")
    with plan.lock:
        elementwise(np.positive, plan.spec, spec)
        plan.inverse.execute()
        return plan.copy_out()


def _complex_dtype(x) -> np.dtype:
    return np.dtype(np.complex128) if x.dtype in (np.float64, np.complex128) else np.dtype(np.complex64)


def _c2c(x, axes, inverse: bool):
    xp = get_array_module(x)
    if xp is not np:
        f = xp.fft.ifftn if inverse else xp.fft.fftn
        return f(x, axes=axes)
    x = np.asarray(x)
    dtype = _complex_dtype(x)
    ax = _norm_axes(x.ndim, axes)
    if backend() == "scipy":
        import scipy.fft

        f = scipy.fft.ifftn if inverse else scipy.fft.fftn
        return f(x.astype(dtype, copy=False), axes=ax, workers=n_threads())
    plan = _get_plan("complex", x.shape, dtype, ax)
    with plan.lock:
        plan.buf[...] = x
        if inverse:
            plan.inverse.execute()
            return np.multiply(plan.buf, plan.scale, dtype=dtype)
        plan.forward.execute()
        return plan.buf.copy()


def fftn(x, axes=None):
    """N-D complex FFT (NumPy normalisation: forward unscaled); a new array."""
    return _c2c(x, axes, inverse=False)


def ifftn(x, axes=None):
    """N-D inverse complex FFT (scaled by 1/N); a new array."""
    return _c2c(x, axes, inverse=True)


def fftc(x, axes=None):
    """Centred, orthonormal N-D FFT: ``fftshift(fftn(ifftshift(x)))/sqrt(N)``."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    ax = _norm_axes(x.ndim, axes)
    n = float(np.prod([x.shape[a] for a in ax]))
    y = fftn(xp.fft.ifftshift(x, axes=ax), axes=ax)
    y *= 1.0 / np.sqrt(n)
    return xp.fft.fftshift(y, axes=ax)


def ifftc(x, axes=None):
    """Centred, orthonormal N-D inverse FFT (the adjoint and inverse of :func:`fftc`)."""
    xp = get_array_module(x)
    x = xp.asarray(x)
    ax = _norm_axes(x.ndim, axes)
    n = float(np.prod([x.shape[a] for a in ax]))
    y = ifftn(xp.fft.ifftshift(x, axes=ax), axes=ax)
    y *= np.sqrt(n)
    return xp.fft.fftshift(y, axes=ax)


def real_filter(x, kernel, *, mask=None, spectrum=None):
    """Filter a real volume by a real half-spectrum kernel: two FFTs.

    Computes ``irfftn(rfftn(x * mask) * kernel) * mask`` over all axes.

    Parameters
    ----------
    x : ndarray, real, shape ``s`` (NumPy or CuPy)
        float64 stays float64; anything else runs in float32.
    kernel : ndarray, real, shape ``half_shape(s)`` (or broadcastable to it)
        Kernel in the NumPy half-spectrum layout, e.g. from :mod:`mrirecon.kspace`,
        in the same array module as ``x``.
    mask : ndarray of bool, shape ``s``, optional
        Applied to the input before the forward FFT and to the output.
    spectrum : ndarray, complex, shape ``half_shape(s)``, optional
        ``rfftn(x * mask)`` when the caller already has it (``x`` then only
        gives the shape and dtype); it is not modified.

    Returns
    -------
    ndarray, same shape and array module as ``x``, float32 or float64 (a new array).

    Notes
    -----
    CPU (FFTW): the masked input is copied into the cached plan's padded
    buffer, transformed in place, multiplied in place by the kernel on the half
    spectrum, transformed back in place, and copied out with the 1/N scale and
    the mask in one blocked pass. Memory held beyond the input, kernel and
    result: the plan's one buffer (``x.nbytes`` plus the padding of the last
    axis). Three passes over memory besides the two transforms.

    GPU (cuFFT): cached cuFFT plans executed directly (no normalisation pass;
    1/N is folded into the kernel multiply, one fused kernel), the masked copy
    and the output mask one kernel each.
    """
    xp = get_array_module(x)
    shape = x.shape
    if xp is not np:
        return _cupy_real_filter(x, kernel, mask, spectrum)
    if backend() == "scipy":
        if spectrum is None:
            spectrum = rfftn(x if mask is None else x * mask)
        out = irfftn(spectrum * kernel, shape)
        if mask is not None:
            out *= mask
        return out
    dtype = _real_dtype(x)
    if x.dtype.kind != "f":
        x = x.astype(dtype)
    if spectrum is None and _use_fused(shape, dtype) and getattr(kernel, "shape", None) == half_shape(shape):
        plan = _get_plan("fused", shape, dtype, (0, 1, 2))
        with plan.lock:
            return plan.filter(x, kernel, mask)
    plan = _get_plan("real", shape, dtype, tuple(range(len(shape))))
    with plan.lock:
        if spectrum is None:
            if mask is None:
                elementwise(np.positive, plan.real, x)
            else:
                elementwise(np.multiply, plan.real, x, mask)
            plan.forward.execute()
            elementwise(np.multiply, plan.spec, plan.spec, kernel)
        else:
            elementwise(np.multiply, plan.spec, spectrum, kernel)
        plan.inverse.execute()
        return plan.copy_out(mask)


# --------------------------------------------------------------------------
# CuPy / cuFFT
# --------------------------------------------------------------------------
_cupy_plans: collections.OrderedDict = collections.OrderedDict()


def _cupy_kernels():
    """Fused element-wise CUDA kernels (compiled once per process)."""
    k = _state.get("cupy_kernels")
    if k is None:
        import cupy

        k = {
            "masked_copy": cupy.ElementwiseKernel(
                "T x, bool m", "T y", "y = m ? x : (T)0", "mrirecon_masked_copy"
            ),
            "mul_inplace": cupy.ElementwiseKernel("R k, R s", "C y", "y = y * (k * s)", "mrirecon_spec_mul"),
            "mul_new": cupy.ElementwiseKernel(
                "C a, R k, R s", "C y", "y = a * (k * s)", "mrirecon_spec_mul2"
            ),
            "centre": cupy.ElementwiseKernel(
                "T mean, bool m", "T y", "y = m ? y - mean : (T)0", "mrirecon_centre"
            ),
        }
        _state["cupy_kernels"] = k
    return k


def _cupy_real_plans(shape, dtype):
    """Cached (r2c, c2r) cuFFT plans for ``shape`` on the current device, or None.

    None means CuPy's plan objects could not be used directly (an API change);
    the caller then goes through :mod:`cupyx.scipy.fft`, which caches its own.
    """
    import cupy

    key = (tuple(shape), np.dtype(dtype).str, cupy.cuda.Device().id)
    with _lock:
        hit = _cupy_plans.get(key, False)
        if hit is not False:
            _cupy_plans.move_to_end(key)
            return hit
    try:
        import cupyx.scipy.fft as cfft

        real = cupy.empty(shape, dtype=dtype)
        spec = cupy.empty(half_shape(shape), dtype=np.result_type(dtype, np.complex64))
        plans = (
            cfft.get_fft_plan(real, value_type="R2C"),
            cfft.get_fft_plan(spec, shape=tuple(shape), value_type="C2R"),
        )
        del real, spec
    except Exception as exc:  # pragma: no cover - depends on the CuPy version
        warnings.warn(f"cuFFT plans not usable directly ({exc}); using cupyx.scipy.fft", stacklevel=3)
        plans = None
    with _lock:
        _cupy_plans[key] = plans
        while len(_cupy_plans) > _MAX_CACHED_PLANS:
            _cupy_plans.popitem(last=False)
    return plans


def _cupy_real_filter(x, kernel, mask, spectrum):
    import cupy
    from cupy.cuda import cufft

    shape = tuple(x.shape)
    dtype = _real_dtype(x)
    cdtype = np.result_type(dtype, np.complex64)
    x = x.astype(dtype, copy=False)
    kernel = kernel.astype(dtype, copy=False)
    k = _cupy_kernels()
    plans = _cupy_real_plans(shape, dtype)
    scale = dtype.type(1.0 / float(np.prod(shape))) if plans is not None else dtype.type(1.0)
    if spectrum is None:
        src = x if mask is None else k["masked_copy"](x, mask.astype(bool, copy=False))
        if plans is None:
            import cupyx.scipy.fft as cfft

            spec = cfft.rfftn(src)
        else:
            spec = cupy.empty(half_shape(shape), dtype=cdtype)
            plans[0].fft(cupy.ascontiguousarray(src), spec, cufft.CUFFT_FORWARD)
        del src
        k["mul_inplace"](kernel, scale, spec)
    else:
        spec = k["mul_new"](spectrum.astype(cdtype, copy=False), kernel, scale)
    if plans is None:
        import cupyx.scipy.fft as cfft

        out = cfft.irfftn(spec, s=shape, overwrite_x=True)
    else:
        out = cupy.empty(shape, dtype=dtype)
        plans[1].fft(spec, out, cufft.CUFFT_INVERSE)  # destroys spec, which is ours
    if mask is not None:
        out *= mask
    return out
