"""Phase to field: units of raw phase, Laplacian unwrapping, multi-echo fit.

Multi-echo arrays put the echo axis first, ``(echo, x, y, z)``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from .._xp import common_module, on_module
from ..device import get_array_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import real_filter
from ..kspace import frequency_grid, normalize_voxel_size, xp_name
from .units import field_to_ppm

__all__ = [
    "EchoFit",
    "PhaseRescaledWarning",
    "fit_echoes",
    "field_hz_to_ppm",
    "laplacian_kernels",
    "laplacian_unwrap",
    "phase_to_radians",
]

#: Tolerance on ±π for phase that is already in radians (rounding in the scanner's export).
_RAD_TOL = 1e-3

_RADIAN_UNITS = ("rad", "radian", "radians")
_ARBITRARY_UNITS = ("arbitrary", "a.u.")


class PhaseRescaledWarning(UserWarning):
    """Phase in integer units was rescaled linearly to radians."""


def _float_dtype(x) -> np.dtype:
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _check_real(name, x):
    xp = get_array_module(x)
    x = xp.asarray(x)
    if xp.iscomplexobj(x):
        raise InvalidParameterError(
            f"{name} must be real (an angle), got a complex array; pass np.angle(z) for complex data"
        )
    if x.dtype == bool or not np.issubdtype(x.dtype, np.number):
        raise InvalidParameterError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    return x


def _check_finite(name, x) -> None:
    xp = get_array_module(x)
    if np.issubdtype(x.dtype, np.floating) and not bool(xp.isfinite(x).all()):
        bad = int(xp.count_nonzero(~xp.isfinite(x)))
        raise InvalidParameterError(f"{name} has {bad} NaN/Inf values; it must be finite everywhere")


def _wrap(out):
    """Wrap values within ±(π + tol) into [-π, π) (one period at most); in place for NumPy.

    Use the returned array (on CuPy it is a new one).
    """
    xp = get_array_module(out)
    if xp is np:
        from .._parallel import fused

        fused(_wrap_block, out)  # block by block: no boolean-mask gathers and scatters
        return out
    # the same values without boolean-mask indexing (which synchronises the device)
    pi, two_pi = out.dtype.type(np.pi), out.dtype.type(2 * np.pi)
    out = xp.where(out >= pi, out - two_pi, out)
    return xp.where(out < -pi, out + two_pi, out)


def _wrap_block(b):
    """:func:`_wrap` of one NumPy block, in place (also for use inside other fused blocks); returns it."""
    pi, two_pi = b.dtype.type(np.pi), b.dtype.type(2 * np.pi)
    np.subtract(b, two_pi, out=b, where=b >= pi)
    np.add(b, two_pi, out=b, where=b < -pi)
    return b


def _integer_range(lo: float, hi: float) -> tuple[int, int]:
    """The power-of-two range ``[a, b)`` that holds ``lo..hi`` (see :func:`phase_to_radians`)."""
    if lo >= 0:
        k = 8
        while hi >= 2.0**k:
            k += 1
        return 0, 2**k
    k = 1
    while -(2.0**k) > lo or hi >= 2.0**k:
        k += 1
    return -(2**k), 2**k


def phase_to_radians(phase, *, units=None):
    """Phase in radians, wrapped to [-π, π).

    Parameters
    ----------
    phase : array_like, real
        Raw phase of any shape: radians, or integers as scanners store them
        (e.g. -4096..4095 or 0..4095).
    units : None, ``"rad"`` (``"radian"``, ``"radians"``), ``"arbitrary"`` or ``"a.u."``
        ``"rad"``: the values must lie within [-π - 1e-3, π + 1e-3] and are
        only wrapped. None (default) or ``"arbitrary"``/``"a.u."``: values within
        that interval are taken as radians; anything else is taken as
        integer-scaled phase and rescaled (with a :class:`PhaseRescaledWarning`
        that names the range it detected).

    Returns
    -------
    ndarray, same shape
        Radians in [-π, π) (the bound being π rounded to the output's float
        type); float64 input stays float64, anything else comes out float32.
        Always a new array.

    Raises
    ------
    InvalidParameterError
        Non-finite or complex values; ``units="rad"`` with values outside
        ±(π + 1e-3); an unknown ``units``.

    Notes
    -----
    Radians are wrapped by adding or subtracting 2π once. Integer-scaled phase
    is mapped linearly, ``rad = (v - a) / (b - a) · 2π - π``, from a range
    ``[a, b)`` detected from the data:

    * min ≥ 0: ``[0, 2^k)`` with the smallest k ≥ 8 such that max < 2^k
      (0..4095 → [0, 4096): 0 → -π, 2048 → 0);
    * min < 0: ``[-2^k, 2^k)`` with the smallest k such that -2^k ≤ min and
      max < 2^k (-4096..4095 → [-4096, 4096): -4096 → -π, 0 → 0).

    The range is a guess from the extreme values, so a volume that does not
    reach the top of its stored range (e.g. 0..1800 of 0..4095) is scaled
    wrongly: check the warning, or convert to radians before calling.
    """
    x = _check_real("phase", phase)
    _check_finite("phase", x)
    u = None if units is None else str(units).lower()
    if u is not None and u not in _RADIAN_UNITS + _ARBITRARY_UNITS:
        raise InvalidParameterError(
            f"units must be None, 'rad' (radians) or 'arbitrary'/'a.u.' (integer-scaled), got {units!r}"
        )
    dtype = _float_dtype(x)
    if x.size == 0:
        return get_array_module(x).empty(x.shape, dtype=dtype)
    lo, hi = float(x.min()), float(x.max())
    bound = np.pi + _RAD_TOL
    in_radians = -bound <= lo and hi <= bound
    if u in _RADIAN_UNITS:
        if not in_radians:
            raise InvalidParameterError(
                f"phase with units='rad' must lie within [-π, π] (±1e-3), got values in [{lo:g}, {hi:g}]; "
                "they look like integer-scaled phase: pass units=None or 'arbitrary' to rescale"
            )
        return _wrap(x.astype(dtype, copy=True))
    if in_radians:
        return _wrap(x.astype(dtype, copy=True))
    a, b = _integer_range(lo, hi)
    warnings.warn(
        f"phase values in [{lo:g}, {hi:g}] are not radians; rescaled linearly from the integer range "
        f"[{a}, {b}) to [-π, π). Pass radians (or units='rad') to skip this "
        "(phase in degrees: np.deg2rad first)",
        PhaseRescaledWarning,
        stacklevel=2,
    )
    out = x.astype(dtype, copy=True)
    scale = dtype.type(2.0 * np.pi / (b - a))
    if a == 0:
        out *= scale
        out -= dtype.type(np.pi)
    else:  # symmetric range [-2^k, 2^k): rad = v * π / 2^k
        out *= scale
    return _wrap(out)


def laplacian_kernels(shape, *, voxel_size_mm=(1.0, 1.0, 1.0), dtype=np.float32, xp="numpy"):
    """Half-spectrum Laplacian symbol and its inverse, ``(L, L⁻¹)`` (cached, read-only).

    ``L(k) = -4π² |k|²`` with k in cycles/mm (so ``L`` is in 1/mm²);
    ``L⁻¹ = 1/L`` with ``L⁻¹(0) = 0``. ``xp`` (``"numpy"`` or ``"cupy"``, or
    the module) is the array module of the returned kernels.
    """
    shape = tuple(int(n) for n in shape)
    vox = normalize_voxel_size(voxel_size_mm, len(shape))
    dtype = np.dtype(dtype).name
    name = xp_name(xp)
    if name == "numpy":
        return _laplacian_kernels(shape, vox, dtype)
    return _laplacian_kernels_on(shape, vox, dtype, name)


@functools.lru_cache(maxsize=4)
def _laplacian_kernels_on(shape, vox, dtype, name):
    """The kernels copied once to another array module (built on the host: a few planes of work)."""
    import importlib

    m = importlib.import_module(name)
    return tuple(m.asarray(k) for k in _laplacian_kernels(shape, vox, dtype))


@functools.lru_cache(maxsize=4)
def _laplacian_kernels(shape, vox, dtype):
    # -4π²|k|² summed from the axes' squared frequencies (scaled in float64, on small arrays),
    # so that the full-size work is one sum and one division in the kernels' own dtype
    # (0.6 s of float64 passes at 1 mm before; the values agree to float32 rounding)
    terms = [
        ((-4.0 * np.pi**2) * (f * f)).astype(dtype)
        for f in frequency_grid(shape, voxel_size_mm=vox, half=True)
    ]
    lap = functools.reduce(np.add, terms)  # a new array (astype copies), summed in the kernels' dtype
    zero = (0,) * len(shape)
    lap[zero] = 1.0
    inv = np.empty_like(lap)
    np.divide(1.0, lap, out=inv)
    lap[zero] = 0.0
    inv[zero] = 0.0
    lap.setflags(write=False)
    inv.setflags(write=False)
    return lap, inv


def laplacian_unwrap(phase, *, voxel_size_mm=(1.0, 1.0, 1.0)):
    """Unwrap phase by the FFT-based Laplacian closed form.

    Parameters
    ----------
    phase : ndarray, real, shape (x, y, z) or (echo, x, y, z)
        Wrapped phase in radians (any range: only sin φ and cos φ are used).
        A 4-D array is unwrapped echo by echo.
    voxel_size_mm : float or 3 floats
        Voxel size in mm along x, y, z.

    Returns
    -------
    ndarray, same shape
        Unwrapped phase in radians with zero mean over the grid (per echo);
        float64 input stays float64, anything else comes out float32.

    Notes
    -----
    Uses the identity :math:`\\nabla^2\\phi = \\cos\\phi\\,\\nabla^2\\sin\\phi
    - \\sin\\phi\\,\\nabla^2\\cos\\phi`, whose right-hand side does not change
    when φ is wrapped, and inverts the Laplacian in k-space:

    .. math:: \\phi_u = F^{-1}\\left[\\frac{1}{L}\\, F\\left(\\cos\\phi\\,
              F^{-1}[L\\,F\\sin\\phi] - \\sin\\phi\\, F^{-1}[L\\,F\\cos\\phi]\\right)\\right]

    with the continuous (spectral) symbol :math:`L(k) = -4\\pi^2|k|^2`, k in
    cycles/mm, and :math:`1/L := 0` at k = 0. The spectral symbol differentiates
    band-limited periodic functions exactly, so a phase whose wrapped exponential
    is band-limited and periodic on the grid comes back exactly (up to a constant),
    even with phase differences near π per voxel. (The discrete symbol
    :math:`\\sum_i (2\\cos(2\\pi m_i/n_i) - 2)/\\Delta_i^2` would give
    :math:`\\sum_i \\sin(\\phi(r \\pm e_i) - \\phi(r))` instead of the second
    difference of φ, which underestimates steep phase.) Costs six real FFTs:
    two filters for ∇² sin φ and ∇² cos φ, one for the inverse Laplacian.

    The result has the same Laplacian as the true phase wherever that is
    smooth, so it equals the true phase up to a harmonic function (∇²h = 0),
    which includes its mean (set to zero here). On a real volume, which is not
    periodic, the wrap-around at the grid edges makes that difference a smooth,
    non-constant component; background-field removal (SHARP, PDF), which removes
    harmonic fields, removes it too, so apply one after this unwrapping.

    References
    ----------
    Schofield MA, Zhu Y. Fast phase unwrapping algorithm for interferometric
    applications. Opt Lett 2003;28:1194-1196.

    Li W, Wu B, Liu C. Quantitative susceptibility mapping of human brain
    reflects spatial variation in tissue composition. NeuroImage
    2011;55:1645-1656.
    """
    x = _check_real("phase", phase)
    if x.ndim not in (3, 4):
        raise ShapeMismatchError(f"phase must be 3-D (x, y, z) or 4-D (echo, x, y, z), got shape {x.shape}")
    _check_finite("phase", x)
    dtype = _float_dtype(x)
    vox = normalize_voxel_size(voxel_size_mm, 3)
    if x.ndim == 4:
        out = get_array_module(x).empty(x.shape, dtype=dtype)
        for e in range(x.shape[0]):
            out[e] = _unwrap3(x[e].astype(dtype, copy=False), vox)
        return out
    return _unwrap3(x.astype(dtype, copy=False), vox)


def _unwrap3(phi, vox):
    xp = get_array_module(phi)
    lap, inv = laplacian_kernels(phi.shape, voxel_size_mm=vox, dtype=phi.dtype, xp=xp)
    s = xp.sin(phi)
    c = xp.cos(phi)
    lap_s = real_filter(s, lap)
    lap_c = real_filter(c, lap)
    lap_s *= c  # cos φ ∇² sin φ
    lap_c *= s  # sin φ ∇² cos φ
    lap_s -= lap_c
    del lap_c, s, c
    return real_filter(lap_s, inv)


@dataclass(frozen=True)
class EchoFit:
    """Result of :func:`fit_echoes`: arrays of shape (x, y, z).

    Attributes
    ----------
    field_hz : ndarray
        Frequency offset in Hz (the slope of phase over time divided by 2π).
    offset_rad : ndarray
        Phase at TE = 0 in radians (the intercept).
    residual_rad : ndarray
        Weighted RMS residual of the fit in radians,
        ``sqrt(Σ w_n r_n² / Σ w_n)``.
    """

    field_hz: object
    offset_rad: object
    residual_rad: object


def _check_te(te_s, n_echoes) -> np.ndarray:
    try:
        te = np.asarray(te_s, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidParameterError(
            f"te_s must be a sequence of echo times in seconds, got {te_s!r}"
        ) from None
    te = np.atleast_1d(te)
    if te.ndim != 1:
        raise InvalidParameterError(
            f"te_s must be a 1-D sequence of echo times in seconds, got shape {te.shape}"
        )
    if te.size < 2 or n_echoes < 2:
        raise InvalidParameterError(
            "fit_echoes needs at least 2 echoes; a single echo needs a phase difference "
            "(field_to_ppm(..., units='rad', te_s=ΔTE)) or a second echo"
        )
    if te.size != n_echoes:
        raise ShapeMismatchError(
            f"te_s has {te.size} echo times but phase has {n_echoes} echoes (axis 0 of (echo, x, y, z))"
        )
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InvalidParameterError(f"te_s must be positive finite echo times in seconds, got {te_s!r}")
    if np.unique(te).size < 2:
        raise InvalidParameterError(f"te_s must hold at least 2 distinct echo times, got {te_s!r}")
    return te


def fit_echoes(phase, te_s, *, magnitude=None, mask=None):
    """Field map from multi-echo unwrapped phase by weighted linear least squares.

    Parameters
    ----------
    phase : ndarray, real, shape (echo, x, y, z)
        Unwrapped phase in radians, spatially and across echoes (e.g. from
        :func:`laplacian_unwrap`).
    te_s : sequence of float
        Echo times in seconds, one per echo (uneven spacing allowed; at least
        two distinct values).
    magnitude : ndarray, shape (echo, x, y, z), optional
        Magnitude per echo; the weights are ``w_n = magnitude_n²``
        (default: all 1).
    mask : ndarray of bool, shape (x, y, z), optional
        Voxels to fit; the outputs are 0 elsewhere.

    Returns
    -------
    EchoFit
        ``field_hz``, ``offset_rad``, ``residual_rad``, each (x, y, z); float64
        phase stays float64, anything else comes out float32. Convert the field
        to ppm with :func:`field_hz_to_ppm`.

    Notes
    -----
    Per voxel, minimises :math:`\\sum_n w_n (\\phi_n - \\phi_0 - 2\\pi f\\,TE_n)^2`.
    With the weighted mean echo time :math:`\\bar t = \\sum w_n TE_n / \\sum w_n`,

    .. math:: 2\\pi f = \\frac{\\sum_n w_n (TE_n - \\bar t)\\,\\phi_n}
                              {\\sum_n w_n (TE_n - \\bar t)^2}, \\qquad
              \\phi_0 = \\frac{\\sum_n w_n \\phi_n}{\\sum_n w_n} - 2\\pi f\\,\\bar t,

    computed as sums over echoes for all voxels at once (centring the times
    per voxel avoids the cancellation of the normal-equation determinant).
    Magnitude-squared weights make the fit the maximum-likelihood estimate
    when the phase noise of echo n has variance ∝ 1/magnitude_n² (Gaussian
    noise of equal level in the complex signal). Degenerate voxels, whose
    weights do not see two distinct echo times (zero total weight, or a
    weighted standard deviation of the echo times below 1e-3 of their range), get
    ``field_hz = 0``; ``offset_rad`` is then the weighted mean phase (0 with
    zero total weight) and ``residual_rad`` the RMS about it.

    References
    ----------
    Kressler B, et al. Nonlinear regularization for per voxel estimation of
    magnetic susceptibility distributions from MRI field maps. IEEE Trans Med
    Imaging 2010;29:273-281 (the magnitude-weighted multi-echo field fit).
    """
    p = _check_real("phase", phase)
    if p.ndim != 4:
        raise ShapeMismatchError(f"phase must be 4-D (echo, x, y, z), got shape {p.shape}")
    te = _check_te(te_s, p.shape[0])
    _check_finite("phase", p)
    dtype = _float_dtype(p)
    spatial = p.shape[1:]
    xp = get_array_module(p)
    mag = inv_top = None
    if magnitude is not None:
        common_module(phase=p, magnitude=magnitude)
        mag = _check_real("magnitude", magnitude)
        if mag.shape != p.shape:
            raise ShapeMismatchError(
                f"magnitude shape {mag.shape} does not match phase shape {p.shape} (echo, x, y, z)"
            )
        _check_finite("magnitude", mag)
        if float(mag.min()) < 0:
            raise InvalidParameterError("magnitude must be non-negative")
        top = float(mag.max())
        inv_top = dtype.type(1.0 / top) if top > 0 else dtype.type(1.0)
    if mask is not None:
        mask = on_module(xp, mask, "mask")
        if mask.shape != spatial:
            raise ShapeMismatchError(f"mask shape {mask.shape} does not match the spatial shape {spatial}")
        mask = mask.astype(bool, copy=False)

    # times relative to their mean and in units of their range: O(1) numbers in float32
    t0 = float(te.mean())
    span = float(te.max() - te.min())
    # (Python floats holding values of the working precision: weak scalars keep the
    # arrays' dtype on NumPy and CuPy, on either side of an operator)
    tn = [float(dtype.type((t - t0) / span)) for t in te]
    scale = (dtype.type(1.0 / (2.0 * np.pi * span)), dtype.type(t0 / span))
    if xp is np:
        # blocks of a few planes, threads taking runs of them: every pass over the echoes
        # stays in cache, no volume-sized temporaries (_parallel.fused)
        from .._parallel import fused

        field_hz = np.empty(spatial, dtype)
        offset = np.empty(spatial, dtype)
        residual = np.empty(spatial, dtype)
        pt = np.moveaxis(p, 0, 1)  # (x, echo, y, z) views: blocks along x
        mt = np.moveaxis(mag, 0, 1) if mag is not None else np.zeros((1,), dtype)
        mk = mask if mask is not None else np.ones((1,), bool)

        def block(f_b, o_b, r_b, p_b, m_b, k_b):
            f, o, r = _fit_core(
                [p_b[:, n] for n in range(p_b.shape[1])],
                None if mag is None else [m_b[:, n] for n in range(m_b.shape[1])],
                None if mask is None else k_b,
                tn,
                inv_top,
                dtype,
                np,
                scale,
            )
            f_b[...], o_b[...], r_b[...] = f, o, r

        fused(block, field_hz, offset, residual, pt, mt, mk)
    else:
        field_hz, offset, residual = _fit_core(
            [p[n] for n in range(p.shape[0])],
            None if mag is None else [mag[n] for n in range(mag.shape[0])],
            mask,
            tn,
            inv_top,
            dtype,
            xp,
            scale,
        )
    return EchoFit(field_hz=field_hz, offset_rad=offset, residual_rad=residual)


def _fit_core(phs, mags, mask, tn, inv_top, dtype, xp, scale):
    """The three passes of :func:`fit_echoes` over echo planes ``phs`` (and ``mags``) of one block or volume."""
    shape = phs[0].shape

    def weight(n):
        if mags is None:
            return None
        w = mags[n].astype(dtype, copy=True)
        w *= inv_top  # magnitude scaled to ≤ 1: weights cannot overflow
        w *= w
        return w

    # pass 1: total weight and weighted mean time
    s_w = xp.zeros(shape, dtype=dtype)
    s_t = xp.zeros(shape, dtype=dtype)
    for n in range(len(phs)):
        w = weight(n)
        if w is None:
            s_w += dtype.type(1)
            s_t += tn[n]
        else:
            s_w += w
            s_t += w * tn[n]
    good_w = s_w > 0
    if mask is not None:
        good_w &= mask
    safe_w = xp.where(good_w, s_w, 1).astype(dtype, copy=False)
    t_bar = s_t / safe_w
    del s_t

    # pass 2: weighted centred sums
    s_tt = xp.zeros(shape, dtype=dtype)
    s_tp = xp.zeros(shape, dtype=dtype)
    s_p = xp.zeros(shape, dtype=dtype)
    for n in range(len(phs)):
        w = weight(n)
        phi = phs[n].astype(dtype, copy=False)
        dt = tn[n] - t_bar
        if w is not None:
            wdt = w * dt
            s_p += w * phi
        else:
            wdt = dt
            s_p += phi
        s_tp += wdt * phi
        wdt *= dt
        s_tt += wdt
        del wdt, dt
    good = good_w & (s_tt > safe_w * dtype.type(1e-6))
    slope = xp.where(good, s_tp / xp.where(good, s_tt, 1).astype(dtype, copy=False), 0)  # rad per span
    slope = slope.astype(dtype, copy=False)
    mean_p = xp.where(good_w, s_p / safe_w, 0).astype(dtype, copy=False)
    del s_tt, s_tp, s_p
    # φ_n ≈ mean_p + slope (tn_n - t_bar)
    offset_c = mean_p - slope * t_bar  # phase at the mean TE (tn = 0)

    # pass 3: weighted RMS residual
    s_r = xp.zeros(shape, dtype=dtype)
    for n in range(len(phs)):
        w = weight(n)
        r = phs[n].astype(dtype, copy=True)
        r -= offset_c
        r -= slope * tn[n]
        r *= r
        if w is not None:
            r *= w
        s_r += r
        del r
    residual = xp.sqrt(s_r / safe_w)
    residual = xp.where(good_w, residual, 0).astype(dtype, copy=False)

    field_hz = slope * scale[0]
    offset = offset_c - slope * scale[1]  # phase at TE = 0
    offset = xp.where(good_w, offset, 0).astype(dtype, copy=False)
    return field_hz, offset, residual


def field_hz_to_ppm(field_hz, *, b0_tesla):
    """Field in Hz to ppm of B0: ``field_hz / (γ̄ · B0)``, γ̄ = 42.577478 MHz/T.

    The same as ``mrirecon.qsm.units.field_to_ppm(field_hz, units="hz", b0_tesla=b0_tesla)``.
    """
    return field_to_ppm(field_hz, units="hz", b0_tesla=b0_tesla)


def unwrap_echoes(phase, *, voxel_size_mm=(1.0, 1.0, 1.0), temporal=True, unwrap_first=True):
    """Laplacian unwrapping of multi-echo phase, optionally through echo differences.

    Parameters
    ----------
    phase : ndarray, (echo, x, y, z)
        Wrapped phase in radians.
    voxel_size_mm : float or 3 floats
    temporal : bool
        True (default): unwrap the first echo and the wrapped differences
        between consecutive echoes, then add them up (echo n = φ₁ + Σ Δφ).
        The differences accumulate phase over a shorter time, so they wrap
        less, and the phase offset at TE = 0 cancels in them. False: unwrap
        each echo on its own (:func:`laplacian_unwrap`).
    unwrap_first : bool
        With ``temporal``: False leaves the first echo wrapped (echo n =
        wrapped φ₁ + Σ unwrapped Δφ). Every echo then differs from the
        default's by the same per-voxel amount, the default's unwrapped φ₁
        minus the wrapped one, so a fit of a line through the echoes
        (:func:`fit_echoes`) gives the same field and residual and only its
        intercept changes (then defined modulo 2π). That saves one unwrap in
        three with three echoes; :func:`mrirecon.qsm.pipeline` uses it.

    Returns
    -------
    ndarray, (echo, x, y, z)

    Notes
    -----
    Same cost as unwrapping every echo (six real FFTs per echo; one echo
    fewer with ``unwrap_first=False``). On the
    simulated head (64³, 3 mm voxels, TEs 4/9.5/17 ms at 3 T with air
    cavities near the brain), the χ NRMSE after V-SHARP and closed-form L2
    measured 44.6 % per echo and 34.1 % through differences (``tests/test_pipeline.py``
    and ``scripts/bench_pipeline.py`` give the current figures).
    """
    x = _check_real("phase", phase)
    if x.ndim != 4:
        raise ShapeMismatchError(f"phase must be 4-D (echo, x, y, z), got shape {x.shape}")
    if not temporal or x.shape[0] == 1:
        return laplacian_unwrap(x, voxel_size_mm=voxel_size_mm)
    _check_finite("phase", x)
    dtype = _float_dtype(x)
    vox = normalize_voxel_size(voxel_size_mm, 3)
    out = get_array_module(x).empty(x.shape, dtype=dtype)
    if unwrap_first:
        out[0] = _unwrap3(x[0].astype(dtype, copy=False), vox)
    else:
        two_pi = dtype.type(2 * np.pi)
        first = x[0].astype(dtype, copy=False)
        out[0] = first - two_pi * get_array_module(x).round(first / two_pi)  # any range into [-π, π]
    for e in range(1, x.shape[0]):
        diff = _wrap((x[e] - x[e - 1]).astype(dtype, copy=False))
        out[e] = out[e - 1] + _unwrap3(diff, vox)
    return out


# odd minimax polynomial of arctan on [0, 1] (max error 2e-6 rad in float32 with the octant reduction)
_ATAN_COEFFS = (0.99997726, -0.33262347, 0.19354346, -0.11643287, 0.05265332, -0.01172120)


def _atan2_fast(y, x):
    """``arctan2(y, x)`` of float32 NumPy blocks to 2e-6 rad, in SIMD ufuncs (NumPy's float32 arctan2 is scalar: 0.4 s at 1 mm)."""
    t = x.dtype.type
    ax, ay = np.abs(x), np.abs(y)
    big = np.maximum(ax, ay)
    a = np.minimum(ax, ay)
    a /= np.where(big > 0, big, t(1))
    s = a * a
    r = np.full_like(a, t(_ATAN_COEFFS[-1]))
    for c in _ATAN_COEFFS[-2::-1]:
        r *= s
        r += t(c)
    r *= a
    np.subtract(t(np.pi / 2), r, out=r, where=ay > ax)
    np.subtract(t(np.pi), r, out=r, where=x < 0)
    np.negative(r, out=r, where=y < 0)
    return r


def equally_spaced(te_s, *, rtol=1e-3) -> bool:
    """Whether three or more echo times are equally spaced (to ``rtol`` of the spacing)."""
    te = np.asarray(te_s, dtype=np.float64)
    if te.size < 3:
        return False
    step = np.diff(te)
    return bool(np.all(step > 0) and np.ptp(step) <= rtol * step.mean())


def unwrap_mean_difference(phase, *, magnitude=None, voxel_size_mm=(1.0, 1.0, 1.0)):
    """Multi-echo phase with one Laplacian unwrap, of the mean difference between consecutive echoes.

    For equally spaced echoes, whose consecutive differences Δφₖ = φₖ₊₁ − φₖ
    all carry the same field: one spatial unwrap for any number of echoes
    (:func:`unwrap_echoes` needs one per difference).

    Parameters
    ----------
    phase : ndarray, (echo, x, y, z)
        Wrapped phase in radians, within [-π, π] (what
        :func:`phase_to_radians` gives), at least two echoes.
    magnitude : ndarray, (echo, x, y, z), optional
        Weights of the mean (default: all 1).
    voxel_size_mm : float or 3 floats

    Returns
    -------
    ndarray, (echo, x, y, z)
        Echo 1 wrapped; echo k+1 = echo k + Δ̄ᵤ + wrap(Δφₖ − Δ̄), like
        ``unwrap_echoes(..., unwrap_first=False)`` (fit a line through them:
        :func:`fit_echoes`).

    Notes
    -----
    :math:`\\bar\\Delta = \\arg \\sum_k m_k m_{k+1} e^{i\\Delta\\phi_k}` is
    the magnitude-weighted circular mean of the differences;
    :math:`\\bar\\Delta_u` its Laplacian unwrap (:func:`laplacian_unwrap`).
    Each difference is then :math:`\\bar\\Delta_u` plus its own deviation
    from the mean, wrapped voxel by voxel, which is exact wherever that
    deviation is within ±π (noise and field curvature over one echo
    spacing, not the field itself). On the realistic head (3 echoes, 1 mm and
    2 mm, with and without the true mask) the pipeline's χ NRMSE moved by
    0.02–0.2 points against unwrapping each difference; three unwraps become
    one for four echoes, seven for eight. With two echoes it is
    ``unwrap_echoes(..., unwrap_first=False)`` exactly.
    """
    x = _check_real("phase", phase)
    if x.ndim != 4 or x.shape[0] < 2:
        raise ShapeMismatchError(
            f"phase must be 4-D (echo, x, y, z) with 2 or more echoes, got shape {x.shape}"
        )
    _check_finite("phase", x)
    xp = get_array_module(x)
    dtype = _float_dtype(x)
    vox = normalize_voxel_size(voxel_size_mm, 3)
    n = x.shape[0]
    if magnitude is not None:
        mag = _check_real("magnitude", magnitude)
        if mag.shape != x.shape:
            raise ShapeMismatchError(f"magnitude shape {mag.shape} does not match phase shape {x.shape}")
    if xp is np:
        wrap = _wrap_block  # in place on the block's temporaries (inside fused: no nested pool)
        atan2 = _atan2_fast if dtype == np.float32 else np.arctan2
    else:
        wrap, atan2 = _wrap, xp.arctan2

    def difference(xs, k):  # Δφₖ of echo planes, into [-π, π)
        return wrap(xs[k + 1].astype(dtype) - xs[k].astype(dtype))

    def mean_difference(xs, ms):
        re = im = None
        for k in range(len(xs) - 1):
            d = difference(xs, k)
            w = 1 if ms is None else ms[k + 1].astype(dtype) * ms[k].astype(dtype)
            c, s_ = xp.cos(d) * w, xp.sin(d) * w
            re, im = (c, s_) if re is None else (re + c, im + s_)
        return atan2(im, re).astype(dtype, copy=False)

    def rebuild(outs, xs, mean, mean_u):  # echo k+1 = echo k + Δ̄ᵤ + wrap(Δφₖ − Δ̄)
        outs[0][...] = wrap(xs[0].astype(dtype, copy=True))
        for k in range(n - 1):
            outs[k + 1][...] = outs[k] + mean_u + wrap(difference(xs, k) - mean)

    out = xp.empty(x.shape, dtype=dtype)
    if xp is np:  # blocks of planes on the threads: no echo-sized temporaries
        from .._parallel import fused

        def planes(b):
            return [b[:, k] for k in range(n)]

        mean = np.empty(x.shape[1:], dtype)
        xt = np.moveaxis(x, 0, 1)
        if magnitude is None:
            fused(lambda o, xb: o.__setitem__(..., mean_difference(planes(xb), None)), mean, xt)
        else:
            fused(
                lambda o, xb, mb: o.__setitem__(..., mean_difference(planes(xb), planes(mb))),
                mean,
                xt,
                np.moveaxis(mag, 0, 1),
            )
        mean_u = _unwrap3(mean, vox)
        fused(
            lambda o, xb, mb, ub: rebuild(planes(o), planes(xb), mb, ub),
            np.moveaxis(out, 0, 1),
            xt,
            mean,
            mean_u,
        )
    else:
        mean = mean_difference(list(x), None if magnitude is None else list(mag))
        rebuild(list(out), list(x), mean, _unwrap3(mean, vox))
    return out


def _slope_variance_ratio(mags, te, xp):
    """``Σw / Σ w (TE − t̄)²`` with ``w = magnitude²``, over echo planes of a block or volume."""
    ws = [m * m for m in mags]
    sw = ws[0].copy()
    st = ws[0] * te[0]
    for w, t in zip(ws[1:], te[1:], strict=True):
        sw += w
        st += w * t
    tb = st / xp.maximum(sw, np.float32(1e-30))
    stt = xp.zeros_like(sw)
    for w, t in zip(ws, te, strict=True):
        d = t - tb
        d *= d
        d *= w
        stt += d
    return sw / xp.maximum(stt, np.float32(1e-30))


def field_noise_ppm(fit, te_s, *, b0_tesla, magnitude=None):
    """Per-voxel standard deviation of the fitted field (ppm) from the echo fit's residual.

    Parameters
    ----------
    fit : EchoFit
    te_s : sequence of float
    b0_tesla : float
    magnitude : ndarray (echo, x, y, z), optional
        The fit's weights (magnitude²) if it used them.

    Returns
    -------
    ndarray (x, y, z)

    Notes
    -----
    With N echoes and two parameters per voxel, the weighted residual RMS r
    estimates the phase noise of unit weight as ``σ² = r² N/(N - 2)``; the slope's
    variance is ``σ² Σw / Σ w (TE - t̄)²`` (weights normalised as in the fit), so
    ``SD(f) = σ sqrt(Σw / Σ w(TE - t̄)²) / (2π)`` in Hz, divided by γ̄ B0 for ppm.
    With two echoes the residual is zero: the SD then comes from the magnitude
    alone, ``1/(2π Δ TE · SNR)``, which is not known here, so a constant 1 is
    returned (only relative weights are meaningful then).
    """
    te = np.asarray(te_s, dtype=np.float64)
    r = fit.residual_rad
    xp = get_array_module(r)
    n = te.size
    if n < 3:
        return xp.ones_like(r)
    # SD(f) in ppm = r · sqrt(N/(N-2)) · sqrt(ratio) / (2π) / (γ̄ B0): one scale factor
    scale = float(np.sqrt(n / (n - 2.0)) / (2 * np.pi)) * float(
        field_to_ppm(1.0, units="hz", b0_tesla=b0_tesla)
    )
    if magnitude is None:
        s_w = float(n)
        s_tt = float(((te - te.mean()) ** 2).sum())
        return (r * np.float32(scale * np.sqrt(s_w / s_tt))).astype(np.float32)
    mag = xp.asarray(magnitude, dtype=np.float32)
    te32 = [np.float32(t) for t in te]
    if xp is np:  # block by block on the threads (echo sums in cache, no full-size temporaries)
        from .._parallel import fused

        out = np.empty(mag.shape[1:], np.float32)
        k = np.float32(scale)

        def block(o_b, m_b, r_b):
            ratio = _slope_variance_ratio([m_b[:, i] for i in range(n)], te32, np)
            np.sqrt(ratio, out=ratio)
            np.multiply(ratio, r_b, out=o_b)
            o_b *= k

        fused(block, out, np.moveaxis(mag, 0, 1), r)
        return out
    ratio = _slope_variance_ratio([mag[i] for i in range(n)], te32, xp)
    return (r * xp.sqrt(ratio).astype(np.float32) * np.float32(scale)).astype(np.float32)
