"""k-space grids and the kernels shared by every method.

Frequencies are in cycles/mm, ``k_i = fftfreq(n_i, d=voxel_size_mm[i])``, in
the un-shifted FFT order. Every kernel comes in two layouts:

* full: shape ``shape`` (for :func:`mrirecon.fft.fftn`);
* half (``half=True``): the real-FFT half spectrum of :func:`mrirecon.fft.rfftn`,
  the last axis holding ``n // 2 + 1`` frequencies.

Kernels are built once per (shape, voxel size, direction, dtype, layout, array
module) and cached; the returned arrays are read-only (NumPy) and shared, so
never modify them in place.
"""

from __future__ import annotations

import functools

import numpy as np

from .errors import InvalidParameterError

__all__ = [
    "dipole_kernel",
    "frequency_grid",
    "gradient_kernels",
    "gradient_sq_kernel",
    "half_spectrum_weights",
    "normalize_direction",
    "normalize_voxel_size",
]

_CACHE_SIZE = 8


def _hashable(value):
    """``value`` if it is a number or a flat tuple/list of numbers (a cache key), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, (tuple, list)) and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) for a in value
    ):
        return tuple(value)
    return None


def normalize_voxel_size(voxel_size_mm, ndim: int = 3) -> tuple[float, ...]:
    """Voxel size as a tuple of ``ndim`` positive floats (a scalar is repeated)."""
    key = _hashable(voxel_size_mm)
    if key is not None:
        return _normalize_voxel_size(key, ndim)
    return _normalize_voxel_size.__wrapped__(voxel_size_mm, ndim)


@functools.lru_cache(maxsize=64)
def _normalize_voxel_size(voxel_size_mm, ndim):
    v = np.atleast_1d(np.asarray(voxel_size_mm, dtype=float))
    if v.size == 1:
        v = np.repeat(v, ndim)
    if v.shape != (ndim,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise InvalidParameterError(
            f"voxel_size_mm must be {ndim} positive finite numbers (mm), got {voxel_size_mm!r}"
        )
    return tuple(float(a) for a in v)


def normalize_direction(b0_dir) -> tuple[float, float, float]:
    """B0 direction as a unit 3-vector in voxel axes."""
    key = _hashable(b0_dir)
    if key is not None:
        return _normalize_direction(key)
    return _normalize_direction.__wrapped__(b0_dir)


@functools.lru_cache(maxsize=64)
def _normalize_direction(b0_dir):
    b = np.asarray(b0_dir, dtype=float).reshape(-1)
    norm = float(np.linalg.norm(b)) if b.shape == (3,) else 0.0
    if b.shape != (3,) or not np.isfinite(norm) or norm < 1e-12:
        raise InvalidParameterError(
            f"b0_dir must be a nonzero 3-vector (x, y, z) in voxel axes, got {b0_dir!r}"
        )
    b = b / norm
    return (float(b[0]), float(b[1]), float(b[2]))


def xp_name(xp) -> str:
    """``"numpy"`` or ``"cupy"``, from a module or its name (the cache key of kernels)."""
    return xp if isinstance(xp, str) else xp.__name__


def _xp(name: str):
    if name == "numpy":
        return np
    import cupy

    return cupy


def _freeze(a):
    if isinstance(a, np.ndarray):
        a.setflags(write=False)
    return a


def _axis_freqs(n: int, d: float, half: bool):
    return np.fft.rfftfreq(n, d=d) if half else np.fft.fftfreq(n, d=d)


def frequency_grid(shape, *, voxel_size_mm=(1.0, 1.0, 1.0), half=False):
    """Open (broadcastable) frequency grid in cycles/mm.

    Returns a list of float64 NumPy arrays, one per axis, each of shape
    ``(1, ..., n_i, ..., 1)``; with ``half=True`` the last axis holds the
    non-negative frequencies of the real FFT.
    """
    shape = tuple(int(n) for n in shape)
    vox = normalize_voxel_size(voxel_size_mm, len(shape))
    grid = []
    for i, (n, d) in enumerate(zip(shape, vox, strict=True)):
        f = _axis_freqs(n, d, half and i == len(shape) - 1)
        view = [1] * len(shape)
        view[i] = f.size
        grid.append(f.reshape(view))
    return grid


def dipole_kernel(
    shape,
    *,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    half=False,
    dtype=np.float32,
    xp="numpy",
    cache=True,
):
    """Unit dipole kernel ``D(k) = 1/3 - (k.b)^2 / |k|^2`` with ``D(0) = 0``.

    Parameters
    ----------
    shape : tuple of 3 int
    voxel_size_mm : float or 3 floats
    b0_dir : 3 floats
        B0 direction in the array's voxel axes (normalised here).
    half : bool
        Half-spectrum (rfft) layout instead of the full one.
    dtype : float32 or float64
    xp : ``"numpy"`` or ``"cupy"``
        Array module to build the kernel with (on the device for CuPy).
    cache : bool
        True (default): a read-only array kept for the next call with the same
        arguments. False: a new writable array that is not kept (for building
        another kernel from it without holding both in memory).

    Returns
    -------
    ndarray (read-only and cached, unless ``cache=False``).

    Notes
    -----
    On the Nyquist plane of an even-sized axis, where +k and -k are the same
    sample, D is averaged over both signs of that frequency (the cross terms
    of ``(k.b)^2`` that involve it drop out). The kernel is then even,
    ``D(k) = D(-k)``, so the dipole convolution maps real volumes to real
    volumes and the full and half layouts agree. For B0 along an array axis
    this changes nothing.
    """
    args = (
        tuple(int(n) for n in shape),
        normalize_voxel_size(voxel_size_mm),
        normalize_direction(b0_dir),
        bool(half),
        np.dtype(dtype).name,
        xp_name(xp),
    )
    return _dipole(*args) if cache else _thaw(_dipole.__wrapped__(*args))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _dipole(shape, vox, b, half, dtype, xpname):
    if len(shape) != 3:
        raise InvalidParameterError(f"the dipole kernel needs a 3-D shape, got {shape}")
    m = _xp(xpname)
    grid = frequency_grid(shape, voxel_size_mm=vox, half=half)
    # k.b = sum_i a_i with a_i = k_i b_i; on a Nyquist plane the a_i term is
    # left out of the sum and a_i^2 added instead (the average over +-k_i)
    k2 = kb = None
    nyquist = []
    for axis, (n, bi, f) in enumerate(zip(shape, b, grid, strict=True)):
        a = f * bi
        if n % 2 == 0:
            nyq = int(np.argmax(np.abs(f.reshape(-1))))
            nyquist.append((axis, nyq, float(a.reshape(-1)[nyq]) ** 2))
            a.reshape(-1)[nyq] = 0.0
        f2 = m.asarray(f * f, dtype=dtype)
        a = m.asarray(a, dtype=dtype)
        k2 = f2 if k2 is None else k2 + f2
        kb = a if kb is None else kb + a
    kb *= kb
    for axis, index, r2 in nyquist:
        if r2:
            sl = [slice(None)] * 3
            sl[axis] = index
            kb[tuple(sl)] += dtype_scalar(dtype, r2)
    k2[(0,) * 3] = 1.0
    kb /= k2
    del k2
    d = m.subtract(dtype_scalar(dtype, 1.0 / 3.0), kb, out=kb)
    d[(0,) * 3] = 0.0
    return _freeze(d)


def dtype_scalar(dtype, value):
    return np.dtype(dtype).type(value)


def gradient_sq_kernel(shape, *, half=False, dtype=np.float32, xp="numpy", cache=True):
    """Squared magnitude of the forward-difference gradient, summed over axes.

    ``G(k) = sum_i |E_i(k)|^2 = sum_i (2 - 2 cos(2 pi m_i / n_i))`` with
    ``m_i`` the frequency index: the differences are unitless (one voxel), so
    the voxel size does not enter. ``G(0) = 0``. Read-only and cached, or a
    new writable array with ``cache=False`` (see :func:`dipole_kernel`).
    """
    args = (tuple(int(n) for n in shape), bool(half), np.dtype(dtype).name, xp_name(xp))
    return _gradient_sq(*args) if cache else _thaw(_gradient_sq.__wrapped__(*args))


def _thaw(a):
    """A freshly built (unshared) kernel made writable again."""
    if isinstance(a, np.ndarray):
        a.setflags(write=True)
    return a


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _gradient_sq(shape, half, dtype, xpname):
    m = _xp(xpname)
    g = None
    for f in frequency_grid(shape, voxel_size_mm=(1.0,) * len(shape), half=half):
        term = m.asarray(2.0 - 2.0 * np.cos(2.0 * np.pi * f), dtype=dtype)
        g = term if g is None else g + term
    return _freeze(g)


def gradient_kernels(shape, *, half=False, dtype=np.complex64, xp="numpy"):
    """Forward-difference kernels ``E_i(k) = exp(2 pi i m_i / n_i) - 1``, one per axis.

    ``F (x[r + e_i] - x[r]) = E_i * F x`` for circular forward differences.
    Each is returned in a broadcastable shape (only axis ``i`` is not 1); their
    squared magnitudes sum to :func:`gradient_sq_kernel`.
    """
    return _gradient(
        tuple(int(n) for n in shape),
        bool(half),
        np.dtype(dtype).name,
        xp_name(xp),
    )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _gradient(shape, half, dtype, xpname):
    m = _xp(xpname)
    grid = frequency_grid(shape, voxel_size_mm=(1.0,) * len(shape), half=half)
    return tuple(_freeze(m.asarray(np.exp(2j * np.pi * f) - 1.0, dtype=dtype)) for f in grid)


def half_spectrum_weights(shape, *, dtype=np.float32, xp="numpy"):
    """Multiplicity of each half-spectrum column along the last axis.

    With ``X = rfftn(x)`` and ``w`` these weights (shape ``(1, ..., n//2+1)``),
    ``sum(w * |X|**2) / N == sum(x**2)`` (Parseval); likewise for any real
    kernel applied to ``X``. Columns 0 and ``n/2`` (even ``n``) count once, the
    others twice.
    """
    return _weights(tuple(int(n) for n in shape), np.dtype(dtype).name, xp_name(xp))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _weights(shape, dtype, xpname):
    n = shape[-1]
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return _freeze(_xp(xpname).asarray(w.reshape((1,) * (len(shape) - 1) + (-1,)), dtype=dtype))
