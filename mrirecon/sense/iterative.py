"""Iterative SENSE reconstructions: CG-SENSE (Tikhonov), L1-wavelet (FISTA) and TV (PDHG).

CG-SENSE solves the same objective as the closed form :func:`mrirecon.sense.unfold`,

    min_x ‖A x − y‖² + λ‖x‖²,            A = M F S (SenseOp),

for any sampling pattern; on uniform Cartesian sampling it converges to the
closed form. The compressed-sensing baselines use the usual ½ on the data term:

    l1_wavelet:  min_x ½‖A x − y‖² + λ‖Ψ x‖₁
    tv:          min_x ½‖A x − y‖² + λ‖∇ x‖₁

so their λ is not on the scale of the L2 methods' λ (for the L2 objective
with a ½, the equivalent Tikhonov weight would be λ/2).

Devices: k-space and coil maps are both NumPy (CPU) or both CuPy (GPU); every
iteration then runs on that device and the result comes back there. On the
GPU, :func:`l1_wavelet` applies the wavelet transform as one small matrix per
axis and level (the matrices of PyWavelets' periodized transform, built once
on the host), since PyWavelets itself runs on the CPU only.
"""

from __future__ import annotations

import numpy as np

from ..device import get_array_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..operators import Gradient
from ..solvers import ProgressBar, SolverResult, cg, chain, dot_real, norm
from .operator import SenseOp, check_kspace_values, check_mask, check_sens, common_module

__all__ = ["cg_sense", "l1_wavelet", "power_iteration", "tv"]


def _check_iter(max_iter, tol):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidParameterError(f"max_iter must be a positive integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol < 0:
        raise InvalidParameterError(f"tol must be a non-negative number, got {tol!r}")


def _check_lam(lam, *, positive=False):
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"lam must be a number, got {lam!r}")
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0 or (positive and lam == 0):
        raise InvalidParameterError(f"lam must be a finite number {'>' if positive else '>='} 0, got {lam!r}")
    return lam


def _setup(kspace, sens, mask):
    """Validate inputs; return (SenseOp, masked k-space in the operator's dtype)."""
    xp = common_module(kspace=kspace, sens=sens)
    sens = check_sens(sens)
    kspace = xp.asarray(kspace)
    if tuple(kspace.shape) != tuple(sens.shape):
        raise ShapeMismatchError(
            f"k-space must have the coil maps' shape (coil, *spatial) = {tuple(sens.shape)}, "
            f"got {tuple(kspace.shape)}"
        )
    check_kspace_values(kspace, xp)
    if mask is None:
        mask = xp.any(kspace != 0, axis=0)
        if not bool(mask.any()):
            raise InvalidParameterError("k-space is all zero: no sampled k-space sample")
    else:
        mask = check_mask(mask, sens.shape[1:], xp)
    dtype = np.result_type(sens.dtype, kspace.dtype, np.complex64)
    op = SenseOp(sens.astype(dtype, copy=False), mask)
    y = kspace.astype(dtype, copy=True)
    y *= op.mask
    return op, y


def _progress(progress, max_iter, desc):
    return ProgressBar(max_iter, desc=desc) if progress else None


def _x0(x0, op, xp):
    if x0 is None:
        return xp.zeros(op.shape_in, dtype=op.dtype)
    common_module(x0=x0, sens=op.sens)
    x0 = xp.asarray(x0)
    if tuple(x0.shape) != op.shape_in:
        raise ShapeMismatchError(f"x0 must have the spatial shape {op.shape_in}, got {tuple(x0.shape)}")
    return x0.astype(op.dtype, copy=True)


def power_iteration(op, *, n_iter=15, seed=0):
    """Estimate the largest eigenvalue of ``op.normal`` (``‖A‖²``) by power iteration.

    Returns the Rayleigh quotient after ``n_iter`` iterations from a seeded
    random start: a lower bound that approaches ``‖A‖²`` from below. The start
    is drawn on the host (the same on every device) and, for an operator on
    the GPU (``op.xp`` is CuPy), copied there once.
    """
    rng = np.random.default_rng(seed)
    xp = getattr(op, "xp", None) or get_array_module(getattr(op, "sens", np.zeros(1)))
    x = rng.standard_normal(op.shape_in) + 1j * rng.standard_normal(op.shape_in)
    x = xp.asarray(x.astype(op.dtype))
    x /= norm(x)
    lam_max = 0.0
    for _ in range(int(n_iter)):
        y = op.normal(x)
        lam_max = dot_real(x, y)
        ny = norm(y)
        if ny == 0:
            return 0.0
        x = y / ny
    return float(lam_max)


# --------------------------------------------------------------------------
# CG-SENSE
# --------------------------------------------------------------------------
def cg_sense(
    kspace,
    sens,
    *,
    lam=0.0,
    mask=None,
    max_iter=30,
    tol=1e-6,
    x0=None,
    callback=None,
    progress=False,
    return_result=False,
):
    """CG-SENSE: Tikhonov-regularised SENSE by conjugate gradients on the normal equations.

    Parameters
    ----------
    kspace : ndarray, complex, shape (coil, *spatial)
        Zero-filled centred k-space.
    sens : ndarray, complex, shape (coil, *spatial)
        Coil maps.
    lam : float
        λ ≥ 0 (see Notes; the same λ as :func:`mrirecon.sense.unfold`).
    mask : ndarray of bool, spatial shape, optional
        Sampling mask; default: the k-space positions where any coil's sample is non-zero.
    max_iter : int
    tol : float
        Stop when the relative residual of the normal equations is below ``tol``.
    x0 : ndarray, spatial shape, optional
        Warm start (default zeros).
    callback : callable, optional
        ``callback(k, x, {"residual": ...})`` after every iteration (see :mod:`mrirecon.solvers`).
    progress : bool
        Show a progress bar.
    return_result : bool
        Return the :class:`~mrirecon.solvers.SolverResult` instead of the image.

    Returns
    -------
    ndarray, spatial shape (complex64; complex128 for double-precision input), or SolverResult.

    Notes
    -----
    Solves :math:`(A^H A + \\lambda I) x = A^H y`, the normal equations of

    .. math:: \\min_x \\|M F S x - y\\|_2^2 + \\lambda \\|x\\|_2^2,

    with :class:`~mrirecon.sense.operator.SenseOp` as A (F the centred
    orthonormal FFT): the λ scale of BART ``pics -l2`` and SigPy
    ``SenseRecon``. From x0 = 0 with λ = 0, CG converges to the minimum-norm
    least-squares solution.
    """
    lam = _check_lam(lam)
    _check_iter(max_iter, tol)
    op, y = _setup(kspace, sens, mask)
    xp = get_array_module(y)
    rhs = op.adjoint(y)
    lam_t = (np.float64 if op.dtype == np.complex128 else np.float32)(lam)

    def normal(x):
        out = op.normal(x)
        if lam:
            out += lam_t * x
        return out

    start = None if x0 is None else _x0(x0, op, xp)
    bar = _progress(progress, max_iter, "CG-SENSE")
    try:
        res = cg(normal, rhs, x0=start, max_iter=max_iter, tol=tol, callback=chain(callback, bar))
    finally:
        if bar is not None:
            bar.close()
    return res if return_result else res.x


# --------------------------------------------------------------------------
# L1-wavelet by FISTA
# --------------------------------------------------------------------------
class _Wavelet:
    """Orthogonal n-D wavelet transform of a complex image as one flat coefficient array (PyWavelets)."""

    def __init__(self, shape, wavelet, level):
        try:
            import pywt
        except ImportError as exc:  # pragma: no cover - dependency
            raise ImportError("l1_wavelet needs PyWavelets: pip install PyWavelets") from exc
        self.pywt = pywt
        try:
            self.wavelet = pywt.Wavelet(wavelet) if isinstance(wavelet, str) else wavelet
        except ValueError as exc:
            raise InvalidParameterError(f"unknown wavelet {wavelet!r}") from exc
        max_level = pywt.dwtn_max_level(shape, self.wavelet)
        if level is None:
            level = max(max_level, 1)
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 1:
            raise InvalidParameterError(f"level must be a positive integer, got {level!r}")
        self.level = int(level)
        self.shape = tuple(shape)
        coeffs = pywt.wavedecn(np.zeros(shape), self.wavelet, mode="periodization", level=self.level)
        _, self.slices = pywt.coeffs_to_array(coeffs)

    def forward(self, x):
        c = self.pywt.wavedecn(x, self.wavelet, mode="periodization", level=self.level)
        arr, _ = self.pywt.coeffs_to_array(c)
        return arr.astype(x.dtype, copy=False)

    def inverse(self, arr):
        c = self.pywt.array_to_coeffs(arr, self.slices, output_format="wavedecn")
        x = self.pywt.waverecn(c, self.wavelet, mode="periodization")
        return x[tuple(slice(0, n) for n in self.shape)].astype(arr.dtype, copy=False)


class _MatrixWavelet:
    """PyWavelets' periodized n-D transform as one analysis matrix per axis and level, for any module.

    The same linear maps as :class:`_Wavelet` (``pywt.dwt``/``pywt.idwt`` along
    each axis, level after level on the approximation, with ``waverecn``'s
    cropping), but applied as dense matrix products, so that they run on the
    GPU (cuBLAS) without PyWavelets there. The matrices are built on the host
    by transforming identity matrices with PyWavelets, then copied to ``xp``
    once. Coefficients are one flat array: the levels' blocks one after the
    other (the approximation corner of every level but the last is zero,
    being carried to the next level), so soft thresholding and the L1 norm
    see each coefficient once.
    """

    def __init__(self, shape, wavelet, level, dtype, xp):
        ref = _Wavelet(shape, wavelet, level)  # validates wavelet and level
        pywt = ref.pywt
        self.wavelet, self.level, self.shape, self.xp = ref.wavelet, ref.level, tuple(shape), xp
        self.analysis, self.synthesis, self.block_shapes, self.corners = [], [], [], []
        cur = self.shape
        for _ in range(self.level):
            ana, syn, half = [], [], []
            for n in cur:
                eye = np.eye(n)
                lo, hi = pywt.dwt(eye, self.wavelet, mode="periodization", axis=0)  # (m, n) each
                m = lo.shape[0]
                coeff_eye = np.eye(2 * m)
                rec = pywt.idwt(coeff_eye[:m], coeff_eye[m:], self.wavelet, mode="periodization", axis=0)
                ana.append(xp.asarray(np.vstack([lo, hi]).astype(dtype)))  # (2m, n)
                syn.append(xp.asarray(rec[:n].astype(dtype)))  # (n, 2m), cropped as waverecn does
                half.append(m)
            self.analysis.append(ana)
            self.synthesis.append(syn)
            self.block_shapes.append(tuple(2 * m for m in half))
            self.corners.append(tuple(slice(0, m) for m in half))
            cur = tuple(half)
        self.sizes = [int(np.prod(b)) for b in self.block_shapes]

    def _apply(self, mats, x):
        xp = self.xp
        for axis, mat in enumerate(mats):
            moved = xp.moveaxis(x, axis, 0)
            rest = moved.shape[1:]
            out = mat @ moved.reshape(moved.shape[0], -1)
            x = xp.moveaxis(out.reshape((mat.shape[0],) + rest), 0, axis)
        return x

    def forward(self, x):
        xp = self.xp
        blocks = []
        approx = x
        for lev in range(self.level):
            block = xp.ascontiguousarray(self._apply(self.analysis[lev], approx))
            if lev + 1 < self.level:
                approx = block[self.corners[lev]].copy()
                block[self.corners[lev]] = 0
            blocks.append(block.reshape(-1))
        return xp.concatenate(blocks)

    def inverse(self, arr):
        xp = self.xp
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        approx = None
        for lev in reversed(range(self.level)):
            block = arr[starts[lev] : starts[lev + 1]].reshape(self.block_shapes[lev])
            if approx is not None:
                block = block.copy()
                block[self.corners[lev]] = approx
            approx = self._apply(self.synthesis[lev], block)
        return xp.ascontiguousarray(approx)


def _soft_complex(c, t):
    """Complex soft threshold: ``c · max(|c| − t, 0) / |c|``."""
    xp = get_array_module(c)
    mag = xp.abs(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = xp.where(mag > t, 1.0 - t / mag, 0.0).astype(mag.dtype)
    return c * scale


def l1_wavelet(
    kspace,
    sens,
    *,
    lam,
    mask=None,
    wavelet="db4",
    level=None,
    max_iter=100,
    tol=1e-4,
    x0=None,
    callback=None,
    progress=False,
    return_result=False,
    power_iter=15,
):
    """L1-wavelet compressed-sensing SENSE by FISTA.

    Parameters
    ----------
    kspace : ndarray, complex, shape (coil, *spatial)
        Zero-filled centred k-space.
    sens : ndarray, complex, shape (coil, *spatial)
    lam : float
        λ > 0 of the objective (see Notes).
    mask : ndarray of bool, optional
        Sampling mask (default: non-zero pattern of ``kspace``).
    wavelet : str
        PyWavelets wavelet name (default ``"db4"``).
    level : int, optional
        Decomposition levels (default :func:`pywt.dwtn_max_level`, at least 1).
    max_iter : int
    tol : float
        Stop when ``‖x_k − x_{k−1}‖ / ‖x_k‖ < tol``.
    x0 : ndarray, optional
        Start (default zeros).
    callback : callable, optional
        ``callback(k, x, {"objective": ..., "change": ...})`` after every iteration.
    progress, return_result
        As in :func:`cg_sense`.
    power_iter : int
        Power iterations for the Lipschitz constant.

    Returns
    -------
    ndarray, spatial shape, or SolverResult.

    Notes
    -----
    Minimises

    .. math:: \\min_x \\tfrac12\\|M F S x - y\\|_2^2 + \\lambda \\|\\Psi x\\|_1

    (note the ½, unlike the L2 methods' objective) with Ψ the orthogonal
    wavelet transform (``pywt.wavedecn``, mode ``"periodization"``) of the
    complex image, all coefficients (approximation included) thresholded by
    complex magnitude. FISTA step ``1/L`` with ``L = 1.05 ×`` the power-iteration
    estimate of the largest eigenvalue of AᴴA. The proximal step
    ``Ψᴴ soft(Ψ v, λ/L)`` is exact when Ψ is orthogonal (sizes divisible by
    ``2**level``); the objective reported uses ``‖soft(Ψ v)‖₁``, exact under
    the same condition. ``A x`` is kept from iteration to iteration, so each
    iteration costs one forward and one adjoint SENSE operator and two wavelet
    transforms, and the objective comes for free.
    """
    lam = _check_lam(lam, positive=True)
    _check_iter(max_iter, tol)
    op, y = _setup(kspace, sens, mask)
    xp = get_array_module(y)
    if xp is np:
        psi = _Wavelet(op.shape_in, wavelet, level)
    else:
        psi = _MatrixWavelet(op.shape_in, wavelet, level, op.dtype, xp)
    lip = 1.05 * power_iteration(op, n_iter=power_iter)
    if lip <= 0:
        raise InvalidParameterError("the SENSE operator is zero (coil maps or mask are all zero)")
    step = 1.0 / float(lip)
    thresh = lam * step
    x = _x0(x0, op, xp)
    x_prev = x.copy()
    ax = op.forward(x)
    ax_prev = ax
    t = 1.0
    bar = _progress(progress, max_iter, "L1-wavelet")
    cb = chain(callback, bar)
    info = {}
    converged = False
    k = 0
    try:
        for k in range(1, max_iter + 1):  # noqa: B007 - k is returned
            t_new = 0.5 * (1.0 + float(np.sqrt(1.0 + 4.0 * t * t)))
            beta = (t - 1.0) / t_new
            z = x + beta * (x - x_prev) if beta else x
            az = ax + beta * (ax - ax_prev) if beta else ax
            v = z - step * op.adjoint(az - y)
            coef = _soft_complex(psi.forward(v), thresh)
            x_new = psi.inverse(coef)
            ax_new = op.forward(x_new)
            r = ax_new - y
            obj = 0.5 * dot_real(r, r) + lam * float(xp.abs(coef).sum())
            change = norm(x_new - x) / max(norm(x_new), np.finfo(float).tiny)
            x_prev, x, ax_prev, ax, t = x, x_new, ax, ax_new, t_new
            info = {"objective": obj, "change": change}
            stop = cb(k, x, info) if cb is not None else False
            if change < tol:
                converged = True
                break
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    if return_result:
        return SolverResult(x, k, converged, info)
    return x


# --------------------------------------------------------------------------
# TV by PDHG
# --------------------------------------------------------------------------
def _project_ball(q, lam, isotropic):
    """Project the dual gradient variable onto ``{‖q_r‖ ≤ λ}`` (per pixel, or per component)."""
    xp = get_array_module(q)
    mag = xp.sqrt((q.real**2 + q.imag**2).sum(axis=0, keepdims=True)) if isotropic else xp.abs(q)
    scale = xp.maximum(mag / lam, 1.0)
    return q / scale


def _tv_norm(g, isotropic):
    xp = get_array_module(g)
    if isotropic:
        return float(xp.sqrt((g.real**2 + g.imag**2).sum(axis=0)).sum())
    return float(xp.abs(g).sum())


def tv(
    kspace,
    sens,
    *,
    lam,
    mask=None,
    max_iter=100,
    tol=1e-4,
    isotropic=True,
    x0=None,
    callback=None,
    progress=False,
    return_result=False,
    power_iter=15,
):
    """Total-variation compressed-sensing SENSE by primal-dual hybrid gradient (Chambolle–Pock).

    Parameters
    ----------
    kspace : ndarray, complex, shape (coil, *spatial)
        Zero-filled centred k-space.
    sens : ndarray, complex, shape (coil, *spatial)
    lam : float
        λ > 0 (see Notes).
    mask : ndarray of bool, optional
        Sampling mask (default: non-zero pattern of ``kspace``).
    max_iter : int
    tol : float
        Stop when ``‖x_k − x_{k−1}‖ / ‖x_k‖ < tol``.
    isotropic : bool
        Isotropic TV (default: per-pixel Euclidean norm of the complex gradient
        over the spatial directions) or anisotropic (sum of component magnitudes).
    x0 : ndarray, optional
        Start (default zeros).
    callback : callable, optional
        ``callback(k, x, {"objective": ..., "change": ...})`` after every iteration.
    progress, return_result
        As in :func:`cg_sense`.
    power_iter : int
        Power iterations for ‖A‖².

    Returns
    -------
    ndarray, spatial shape, or SolverResult.

    Notes
    -----
    Minimises

    .. math:: \\min_x \\tfrac12\\|M F S x - y\\|_2^2 + \\lambda \\|\\nabla x\\|_1

    (note the ½) with ∇ the circular forward differences of
    :class:`mrirecon.operators.Gradient` (unitless) applied to the complex
    image. PDHG on ``K = [A; ∇]`` with one dual variable per term: the data
    term's dual prox is ``(p − σy)/(1 + σ)``, the TV term's a projection onto
    the λ-ball; steps ``τ = σ = 1/sqrt(1.05·‖A‖² + 4·ndim)`` (‖∇‖² ≤ 4·ndim),
    over-relaxation θ = 1. Chosen over ADMM because it needs no inner solves
    and no penalty parameter; ``A x`` and ``∇x`` are kept between iterations,
    so each iteration costs one forward and one adjoint SENSE operator and the
    objective comes for free.
    """
    lam = _check_lam(lam, positive=True)
    _check_iter(max_iter, tol)
    op, y = _setup(kspace, sens, mask)
    xp = get_array_module(y)
    grad = Gradient(op.shape_in, op.dtype)
    ndim = len(op.shape_in)
    lip = 1.05 * power_iteration(op, n_iter=power_iter) + 4.0 * ndim
    tau = sigma = 1.0 / float(np.sqrt(lip))
    x = _x0(x0, op, xp)
    ax = op.forward(x)
    gx = grad.forward(x)
    ax_bar, gx_bar = ax, gx
    p = xp.zeros_like(y)
    q = xp.zeros_like(gx)
    bar = _progress(progress, max_iter, "TV-PDHG")
    cb = chain(callback, bar)
    info = {}
    converged = False
    k = 0
    try:
        for k in range(1, max_iter + 1):  # noqa: B007 - k is returned
            p = (p + sigma * (ax_bar - y)) / (1.0 + sigma)
            q = _project_ball(q + sigma * gx_bar, lam, isotropic)
            x_new = x - tau * (op.adjoint(p) + grad.adjoint(q))
            ax_new = op.forward(x_new)
            gx_new = grad.forward(x_new)
            ax_bar = 2.0 * ax_new - ax
            gx_bar = 2.0 * gx_new - gx
            r = ax_new - y
            obj = 0.5 * dot_real(r, r) + lam * _tv_norm(gx_new, isotropic)
            change = norm(x_new - x) / max(norm(x_new), np.finfo(float).tiny)
            x, ax, gx = x_new, ax_new, gx_new
            info = {"objective": obj, "change": change}
            stop = cb(k, x, info) if cb is not None else False
            if change < tol:
                converged = True
                break
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    if return_result:
        return SolverResult(x, k, converged, info)
    return x
