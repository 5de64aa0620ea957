"""Closed-form dipole inversions: gradient-regularised L2 (two FFTs) and TKD."""

from __future__ import annotations

import functools

import numpy as np

from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import get_array_module
from ..kspace import dipole_kernel, gradient_sq_kernel, normalize_direction, normalize_voxel_size, xp_name
from ._prepare import check_lam, check_reference, filter_checked, finish, prepare

__all__ = ["closed_form_l2", "l2_kernel", "tkd", "tkd_kernel"]


def _key(shape, voxel_size_mm, b0_dir, dtype, xp):
    return (
        tuple(int(n) for n in shape),
        normalize_voxel_size(voxel_size_mm),
        normalize_direction(b0_dir),
        np.dtype(dtype).name,
        xp_name(xp),
    )


def _readonly(k):
    if isinstance(k, np.ndarray):
        k.setflags(write=False)
    return k


def l2_kernel(shape, *, voxel_size_mm, b0_dir, lam, dtype=np.float32, xp="numpy"):
    """Half-spectrum kernel ``D / (D^2 + lam * G)`` of the closed-form L2 solution.

    Built once per (shape, voxel size, B0 direction, λ, dtype, array module)
    and cached (read-only). The value at ``k = 0`` is 0. See
    :func:`closed_form_l2` for the objective.
    """
    return _l2_kernel(*_key(shape, voxel_size_mm, b0_dir, dtype, xp), float(lam))


@functools.lru_cache(maxsize=4)
def _l2_kernel(shape, vox, b, dtype, xpname, lam):
    # D and G are built uncached and reused in place: only the result stays in memory
    kw = {"voxel_size_mm": vox, "b0_dir": b, "half": True, "dtype": dtype, "xp": xpname, "cache": False}
    d = dipole_kernel(shape, **kw)
    denom = gradient_sq_kernel(shape, half=True, dtype=dtype, xp=xpname, cache=False)
    denom *= np.dtype(dtype).type(lam)
    denom += d * d
    denom[(0, 0, 0)] = 1.0  # D = 0 there, so the kernel is 0
    xp = get_array_module(d)
    return _readonly(xp.divide(d, denom, out=d))


def tkd_kernel(shape, *, voxel_size_mm, b0_dir, threshold, dtype=np.float32, xp="numpy"):
    """Half-spectrum truncated inverse: ``1/D`` where ``|D| > t``, ``sign(D)/t`` elsewhere (cached)."""
    return _tkd_kernel(*_key(shape, voxel_size_mm, b0_dir, dtype, xp), float(threshold))


@functools.lru_cache(maxsize=2)
def _tkd_kernel(shape, vox, b, dtype, xpname, t):
    d = dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, half=True, dtype=dtype, xp=xpname, cache=False)
    xp = get_array_module(d)
    big = xp.abs(d) > t
    k = xp.where(big, 1.0 / xp.where(big, d, 1.0), xp.sign(d) / t)
    return _readonly(k.astype(dtype, copy=False))


def closed_form_l2(
    field,
    mask=None,
    *,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    lam="auto",
    pad=0,
    reference="mask_mean",
):
    """Susceptibility from a local field by closed-form L2 (Tikhonov-gradient) inversion.

    Parameters
    ----------
    field : ndarray, shape (x, y, z) or (x, y, z, t), real
        Local field in ppm (of B0). float64 stays float64; anything else runs in float32.
        A 4-D series (time last, as NIfTI stores it) is inverted volume by
        volume with one kernel and one FFT plan (and one λ: with ``"auto"``,
        GCV on the first volume, so that every volume is regularised alike).
    mask : ndarray of bool, shape (x, y, z), optional
        Region of interest: the field is set to zero outside it before the
        inversion and the result is zero outside it. For a series, one mask
        for every volume, or a 4-D mask of the field's shape.
    voxel_size_mm : float or 3 floats
        Voxel size in mm along the array axes.
    b0_dir : 3 floats
        B0 direction in the array's voxel axes (normalised here); from a NIfTI
        affine use :func:`mrirecon.io.b0_direction_from_affine`.
    lam : float or ``"auto"``
        Regularisation weight λ > 0; ``"auto"`` (default) picks it by
        generalised cross-validation over the default λ grid
        (:func:`mrirecon.qsm.lcurve`), from the same FFT of the field.
    pad : int or 3 ints
        Zero voxels added per axis before the FFT (less wrap-around, more time);
        the padded size is rounded up to a 2·3·5-smooth length. 0 (default):
        the grid is used as it is.
    reference : ``"mask_mean"`` or None
        ``"mask_mean"`` (default): χ is reported relative to its mean inside the
        mask (the whole volume without one). None: the raw minimiser, whose mean
        over the (padded) grid is zero.

    Returns
    -------
    chi : ndarray, shape of ``field``
        Susceptibility in ppm, same array module and precision as ``field``.

    Notes
    -----
    Solves, on the periodic (padded) grid,

    .. math:: \\min_\\chi \\|F^{-1} D F \\chi - \\phi\\|_2^2
              + \\lambda \\sum_i \\|\\nabla_i \\chi\\|_2^2

    with :math:`D(k) = 1/3 - (k\\cdot\\hat b)^2/|k|^2` and :math:`\\nabla_i`
    the unitless circular forward difference along axis i. The solution is

    .. math:: \\chi = F^{-1}\\left[\\frac{D\\, F\\phi}{D^2 + \\lambda G}\\right],
              \\quad G(k) = \\sum_i 2 - 2\\cos(2\\pi m_i / n_i),

    set to 0 at k = 0 (the mean of χ is not determined by the data). The field
    is in ppm and the differences are unitless, so λ is dimensionless and
    does not depend on the voxel size; scaling the field by c scales χ by c
    for a fixed λ. Costs one real-to-complex and one complex-to-real FFT.

    References
    ----------
    Bilgic B, et al. Fast image reconstruction with L2-regularization.
    J Magn Reson Imaging 2014;40:181-191.
    """
    check_reference(reference)
    if not (isinstance(lam, str) and lam == "auto"):
        check_lam(lam)
    if getattr(field, "ndim", 0) == 4:
        kw = {"voxel_size_mm": voxel_size_mm, "b0_dir": b0_dir, "pad": pad, "reference": reference}
        if isinstance(lam, str) and lam == "auto":
            from .lcurve import lcurve

            first, first_mask = _volume(field, mask, 0)
            lam = lcurve(first, first_mask, voxel_size_mm=voxel_size_mm, b0_dir=b0_dir, pad=pad).lam
        return _over_volumes(closed_form_l2, field, mask, lam=lam, **kw)
    prep = prepare(field, mask, voxel_size_mm=voxel_size_mm, b0_dir=b0_dir, pad=pad)
    xp = get_array_module(prep.field)
    kw = {
        "voxel_size_mm": prep.voxel_size_mm,
        "b0_dir": prep.b0_dir,
        "dtype": prep.field.dtype,
        "xp": xp.__name__,
    }
    spectrum = None
    if isinstance(lam, str) and lam == "auto":
        from .lcurve import _lcurve_prepared

        curve, spectrum = _lcurve_prepared(prep, lams=None)
        lam = curve.lam
    lam = check_lam(lam)
    kernel = l2_kernel(prep.field.shape, lam=lam, **kw)
    return finish(prep, filter_checked(prep, kernel, spectrum=spectrum), reference)


def tkd(
    field,
    mask=None,
    *,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    threshold=0.19,
    pad=0,
    reference="mask_mean",
):
    """Susceptibility from a local field by truncated k-space division (TKD).

    Parameters
    ----------
    field, mask, voxel_size_mm, b0_dir, pad, reference
        As in :func:`closed_form_l2` (a 4-D series too).
    threshold : float
        Truncation level t, 0 < t < 2/3 (default 0.19).

    Returns
    -------
    chi : ndarray, shape (x, y, z), ppm.

    Notes
    -----
    :math:`\\chi = F^{-1}[F\\phi \\cdot \\tilde D^{-1}]` with
    :math:`\\tilde D^{-1} = 1/D` where :math:`|D| > t` and
    :math:`\\mathrm{sign}(D)/t` elsewhere (0 at k = 0). No correction factor
    for the underestimation caused by the truncation is applied. Linear in the
    field.

    References
    ----------
    Shmueli K, et al. Magnetic susceptibility mapping of brain tissue in vivo
    using MRI phase data. Magn Reson Med 2009;62:1510-1522.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 2 / 3:
        raise InvalidParameterError(f"threshold must be a number in (0, 2/3), got {threshold!r}")
    check_reference(reference)
    if getattr(field, "ndim", 0) == 4:
        kw = {"voxel_size_mm": voxel_size_mm, "b0_dir": b0_dir, "pad": pad, "reference": reference}
        return _over_volumes(tkd, field, mask, threshold=threshold, **kw)
    prep = prepare(field, mask, voxel_size_mm=voxel_size_mm, b0_dir=b0_dir, pad=pad)
    xp = get_array_module(prep.field)
    kernel = tkd_kernel(
        prep.field.shape,
        voxel_size_mm=prep.voxel_size_mm,
        b0_dir=prep.b0_dir,
        threshold=threshold,
        dtype=prep.field.dtype,
        xp=xp.__name__,
    )
    return finish(prep, filter_checked(prep, kernel), reference)


def _volume(field, mask, t):
    """Volume ``t`` of a series (contiguous) and its mask."""
    xp = get_array_module(field)
    vol = xp.ascontiguousarray(field[..., t])
    if mask is not None and getattr(mask, "ndim", 0) == 4:
        mask = mask[..., t]
    return vol, mask


_CHUNK_VOLUMES = 16  # volumes gathered at once: runs of 64 bytes along t
_BLOCK_ROWS = 8192  # voxels per transposed block (stays in cache)


def _blocked(copy_block, n_rows):
    """Run ``copy_block(lo, hi)`` over row blocks, split between the element-wise pool's threads."""
    from .._parallel import _pool
    from ..threads import n_threads

    starts = list(range(0, n_rows, _BLOCK_ROWS))
    threads = min(n_threads(), len(starts))
    if threads <= 1:
        for r in starts:
            copy_block(r, min(r + _BLOCK_ROWS, n_rows))
        return
    parts = np.array_split(np.asarray(starts), threads)

    def run(part):
        for r in part:
            copy_block(int(r), min(int(r) + _BLOCK_ROWS, n_rows))

    list(_pool().map(run, parts))


def _gather(rows, t0, t1, buf):
    """``buf[j] = volume t0 + j`` of an (voxels, t) view, transposed block by block in cache."""

    def block(lo, hi):
        buf[: t1 - t0, lo:hi] = rows[lo:hi, t0:t1].T

    _blocked(block, rows.shape[0])


def _scatter(buf, rows, t0, t1):
    def block(lo, hi):
        rows[lo:hi, t0:t1] = buf[: t1 - t0, lo:hi].T

    _blocked(block, rows.shape[0])


def _over_volumes(invert, field, mask, **kw):
    """Apply a 3-D inversion to every volume of an (x, y, z, t) series.

    The kernel and the FFT plan are cached per grid, so only the first volume
    builds them; each further volume costs what a single 3-D call costs. On
    the CPU, volumes are moved between the time-last series and contiguous
    volumes 16 at a time by cache-blocked transposes (a volume-by-volume
    strided copy costs a third of the inversion itself at 96³).
    """
    xp = get_array_module(field)
    if field.shape[3] < 1:
        raise ShapeMismatchError(f"field series has no volumes: shape {field.shape}")
    if mask is not None and getattr(mask, "ndim", 0) not in (3, 4):
        raise ShapeMismatchError(f"mask must be (x, y, z) or (x, y, z, t), got shape {mask.shape}")
    if mask is not None and mask.ndim == 4 and mask.shape != field.shape:
        raise ShapeMismatchError(f"4-D mask shape {mask.shape} does not match the field's {field.shape}")
    nt = field.shape[3]
    if xp is not np or not field.flags.c_contiguous:
        out = None
        for t in range(nt):
            vol, m = _volume(field, mask, t)
            chi = invert(vol, m, **kw)
            if out is None:
                out = xp.empty(field.shape, dtype=chi.dtype)
            out[..., t] = chi
        return out
    shape3 = field.shape[:3]
    rows = field.reshape(-1, nt)
    k = min(_CHUNK_VOLUMES, nt)
    buf = np.empty((k, rows.shape[0]), dtype=field.dtype)
    out = res = out_rows = None
    for t0 in range(0, nt, k):
        t1 = min(t0 + k, nt)
        _gather(rows, t0, t1, buf)
        for j in range(t1 - t0):
            m = mask[..., t0 + j] if mask is not None and mask.ndim == 4 else mask
            chi = invert(buf[j].reshape(shape3), m, **kw)
            if out is None:
                out = np.empty(field.shape, dtype=chi.dtype)
                out_rows = out.reshape(-1, nt)
                res = np.empty((k, rows.shape[0]), dtype=chi.dtype)
            res[j] = chi.reshape(-1)
        _scatter(res, out_rows, t0, t1)
    return out
