"""Iterative dipole inversions: weighted L2 by CG, TV by ADMM and by nonlinear CG.

These are the baselines the closed forms are measured against, written to be
fair: the same objective as the closed form where they share one, kernels
built once, products updated instead of recomputed, no Python loop over voxels.
"""

from __future__ import annotations

import functools

import numpy as np

from .._xp import common_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import get_array_module, real_filter
from ..kspace import dipole_kernel, gradient_sq_kernel, normalize_direction, normalize_voxel_size, xp_name
from ..operators import Diagonal, Dipole, Gradient
from ..solvers import ProgressBar, SolverResult, cg, chain, dot_real, nlcg, norm
from ._prepare import check_lam, check_reference, finish, prepare
from .inversion import closed_form_l2

__all__ = ["cg_l2", "tv_admm", "tv_nlcg"]


def _check_iter(max_iter, tol):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise InvalidParameterError(f"max_iter must be a positive integer, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not np.isfinite(tol) or tol < 0:
        raise InvalidParameterError(f"tol must be a non-negative number, got {tol!r}")


def _weights(prep, weights):
    """Squared data weights W² on the prepared grid (None for W = 1)."""
    if weights is None:
        return None
    xp = common_module(field=prep.field, weights=weights)
    w = xp.asarray(weights)
    if w.shape != prep.shape:
        raise InvalidParameterError(f"weights shape {w.shape} does not match field shape {prep.shape}")
    if xp.iscomplexobj(w) or not bool(xp.all(xp.isfinite(w))) or bool(xp.any(w < 0)):
        raise InvalidParameterError("weights must be real, finite and non-negative")
    w = w.astype(prep.field.dtype, copy=False)
    if prep.mask is not None:
        w = w * prep.user_mask
    if not bool(w.any()):
        raise InvalidParameterError("weights are zero everywhere (inside the mask)")
    return w * w


def _gradient_weights(prep, gradient_weights):
    """Per-axis gradient weights on the prepared grid, (3, x, y, z) (None for 1)."""
    if gradient_weights is None:
        return None
    xp = common_module(field=prep.field, gradient_weights=gradient_weights)
    g = xp.asarray(gradient_weights)
    if g.shape == prep.shape:
        g = xp.broadcast_to(g, (len(prep.shape), *prep.shape))
    if g.shape != (len(prep.shape), *prep.shape):
        raise InvalidParameterError(
            f"gradient_weights shape {g.shape} does not match the field's {prep.shape} "
            f"(expected (x, y, z) or (3, x, y, z))"
        )
    if xp.iscomplexobj(g) or not bool(xp.all(xp.isfinite(g))) or bool(xp.any(g < 0)):
        raise InvalidParameterError("gradient_weights must be real, finite and non-negative")
    return g.astype(prep.field.dtype, copy=False)


def _setup(field, mask, weights, voxel_size_mm, b0_dir, reference, max_iter, tol):
    """Checks and the pieces every iterative method needs: masked field, operators, W²."""
    check_reference(reference)
    _check_iter(max_iter, tol)
    prep = prepare(field, mask, voxel_size_mm=voxel_size_mm, b0_dir=b0_dir, pad=0)
    xp = get_array_module(prep.field)
    phi = prep.field if prep.mask is None else xp.where(prep.mask, prep.field, 0)
    if not bool(xp.all(xp.isfinite(phi))):
        raise InvalidParameterError("field has NaN/Inf voxels inside the mask")
    dtype = phi.dtype
    dip = Dipole(
        prep.shape, voxel_size_mm=prep.voxel_size_mm, b0_dir=prep.b0_dir, dtype=dtype, xp=xp_name(xp)
    )
    return prep, xp, phi, dip, Gradient(prep.shape, dtype), _weights(prep, weights)


def _start(xp, x0, shape, dtype):
    """The warm start ``x0`` in the field's module and precision (a mixed NumPy/CuPy pair raises)."""
    common_module(field=xp.empty(0), x0=x0)
    x0 = xp.asarray(x0, dtype=dtype)
    if tuple(x0.shape) != tuple(shape):
        raise ShapeMismatchError(f"x0 shape {tuple(x0.shape)} does not match field shape {tuple(shape)}")
    return x0


def _masked(prep, chi):
    """Zero outside the mask (what :func:`finish` expects), in place."""
    if prep.user_mask is not None:
        chi *= prep.user_mask
    return chi


def _progress(progress, max_iter, desc):
    return ProgressBar(max_iter, desc=desc) if progress else None


def _run(solver, bar, callback, **kw):
    try:
        return solver(callback=chain(callback, bar), **kw)
    finally:
        if bar is not None:
            bar.close()


def cg_l2(
    field,
    mask=None,
    *,
    weights=None,
    lam,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    gradient_weights=None,
    tol=1e-6,
    max_iter=500,
    x0=None,
    reference="mask_mean",
    callback=None,
    progress=False,
    return_result=False,
):
    """Weighted L2 dipole inversion by conjugate gradients on the normal equations.

    Parameters
    ----------
    field, mask, voxel_size_mm, b0_dir, reference
        As in :func:`mrirecon.qsm.closed_form_l2` (no padding).
    weights : ndarray (x, y, z), optional
        Data weights W ≥ 0 (magnitude, inverse noise SD, or a mask); None: W = 1.
    lam : float
        λ > 0, the same λ as :func:`~mrirecon.qsm.closed_form_l2`.
    gradient_weights : ndarray, (x, y, z) or (3, x, y, z), optional
        Weights ``G_i ≥ 0`` of the gradient penalty, per voxel (and per axis):
        e.g. :func:`mrirecon.qsm.masking.edge_weights`, 0 across the
        magnitude's edges (MEDI's prior, in L2). None: 1 everywhere.
    tol : float
        Relative residual of the normal equations at which CG stops.
    max_iter : int
    x0 : ndarray, optional
        Warm start (e.g. the closed-form solution).
    callback : callable, optional
        ``callback(k, chi, info)`` after every iteration (see :mod:`mrirecon.solvers`);
        ``chi`` is the raw iterate (before masking and referencing).
    progress : bool
        Show a progress bar.
    return_result : bool
        Return the :class:`~mrirecon.solvers.SolverResult` (with ``x`` the
        final map) instead of the map alone.

    Returns
    -------
    ndarray, or SolverResult with ``return_result=True``.

    Notes
    -----
    Solves :math:`\\min_\\chi \\|W(F^{-1}DF\\chi - \\phi)\\|_2^2 + \\lambda\\sum_i\\|G_i\\nabla_i\\chi\\|_2^2`
    through :math:`(D W^2 D + \\lambda \\sum_i\\nabla_i^T G_i^2\\nabla_i)\\chi = D W^2 \\phi`, with the
    dipole operator applied by FFT (its normal ``D²`` in one filter) and the
    gradient by circular differences in image space (unitless, as in the closed
    form, so λ means the same). With W = 1 and G = 1 the minimiser
    is the closed form's; CG started from zero converges to the same
    minimum-norm solution (zero mean). ``gradient_weights`` are the ``G_i``
    (not squared).
    """
    check_lam(lam)
    prep, xp, phi, dip, grad, w2 = _setup(
        field, mask, weights, voxel_size_mm, b0_dir, reference, max_iter, tol
    )
    g2 = _gradient_weights(prep, gradient_weights)
    dtype = phi.dtype
    lam_t = dtype.type(lam)
    if g2 is not None:
        g2 = g2 * g2

    def penalty(x):  # λ Σ_i ∇_i^T G_i² ∇_i x
        if g2 is None:
            return grad.normal(x) * lam_t
        gx = grad.forward(x)
        gx *= g2
        out = grad.adjoint(gx)
        out *= lam_t
        return out

    if w2 is None:
        rhs = dip.forward(phi)

        def normal(x):
            out = dip.normal(x)
            out += penalty(x)
            return out
    else:
        wop = Diagonal(w2, dtype)
        rhs = dip.forward(wop.forward(phi))

        def normal(x):
            out = dip.forward(wop.forward(dip.forward(x)))
            out += penalty(x)
            return out

    bar = _progress(progress, max_iter, "CG-L2")
    x_start = None if x0 is None else _start(xp, x0, prep.shape, dtype)
    res = _run(cg, bar, callback, normal=normal, rhs=rhs, x0=x_start, max_iter=max_iter, tol=tol)
    chi = finish(prep, _masked(prep, res.x), reference)
    if return_result:
        return SolverResult(chi, res.iterations, res.converged, res.info)
    return chi


def _soft(v, t, out):
    """Soft threshold ``sign(v) max(|v| - t, 0) = v - clip(v, -t, t)``, into ``out``."""
    xp = get_array_module(v)
    xp.clip(v, -t, t, out=out)
    xp.subtract(v, out, out=out)
    return out


def _tv_objective(dip, grad, phi, w2, lam, x, dx=None):
    xp = get_array_module(x)
    r = (dip.forward(x) if dx is None else dx) - phi
    data = dot_real(r, r if w2 is None else w2 * r)
    return 0.5 * data + lam * float(xp.abs(grad.forward(x)).sum(dtype=xp.float64))


@functools.lru_cache(maxsize=2)
def _admm_kernel(shape, vox, b, dtype, xpname, mu):
    """``mu / (D² + mu G)`` (0 at k = 0), the ADMM χ-update filter."""
    d = dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, half=True, dtype=dtype, xp=xpname)
    g = gradient_sq_kernel(shape, half=True, dtype=dtype, xp=xpname)
    mu_t = np.dtype(dtype).type(mu)
    denom = d * d
    denom += g * mu_t
    denom[(0, 0, 0)] = 1.0
    k = get_array_module(d).divide(mu_t, denom, out=denom)
    k[(0, 0, 0)] = 0.0
    if isinstance(k, np.ndarray):
        k.setflags(write=False)
    return k


def tv_admm(
    field,
    mask=None,
    *,
    weights=None,
    lam,
    mu=None,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    max_iter=300,
    tol=1e-3,
    x0=None,
    reference="mask_mean",
    callback=None,
    track_objective=False,
    inner_iter=10,
    progress=False,
    return_result=False,
):
    """Total-variation dipole inversion by ADMM (split Bregman).

    Parameters
    ----------
    field, mask, voxel_size_mm, b0_dir, reference, weights, x0, callback, progress, return_result
        As in :func:`cg_l2`.
    lam : float
        λ > 0 of the TV term (see Notes for the scale).
    mu : float, optional
        ADMM penalty μ > 0 (default ``10 * lam``).
    max_iter : int
    tol : float
        Stop when ``||χ_k − χ_{k−1}|| / ||χ_k|| < tol``.
    track_objective : bool
        Put the objective in the callback's info every iteration (costs one
        more dipole convolution per iteration; off for timing).
    inner_iter : int
        With weights: CG iterations of each χ-update (warm-started).

    Returns
    -------
    ndarray, or SolverResult with ``return_result=True``.

    Notes
    -----
    Solves :math:`\\min_\\chi \\tfrac12\\|W(F^{-1}DF\\chi - \\phi)\\|_2^2 + \\lambda\\sum_i\\|\\nabla_i\\chi\\|_1`
    (anisotropic TV, unitless differences, field in ppm) with the split
    :math:`z = \\nabla\\chi`:

    * χ-update: :math:`(D W^2 D + \\mu\\nabla^T\\nabla)\\chi = D W^2\\phi + \\mu\\nabla^T(z - u)`;
      with W = 1 a closed form in k-space,
      :math:`\\chi = F^{-1}[D F\\phi/(D^2+\\mu G)] + F^{-1}[\\mu F\\nabla^T(z-u)/(D^2+\\mu G)]`
      (the first term is computed once: two FFTs per iteration); with weights, CG;
    * z-update: soft thresholding of :math:`\\nabla\\chi + u` at :math:`\\lambda/\\mu`;
    * :math:`u \\leftarrow u + \\nabla\\chi - z`.

    Note the ½ on the data term: this λ is not the L2 methods' λ.

    References
    ----------
    Bilgic B, et al. Fast quantitative susceptibility mapping with L1-regularization and
    automatic parameter selection. Magn Reson Med 2014;72:1444-1459.
    """
    check_lam(lam)
    mu = 10.0 * float(lam) if mu is None else check_lam(mu)
    if isinstance(inner_iter, bool) or not isinstance(inner_iter, (int, np.integer)) or inner_iter < 1:
        raise InvalidParameterError(f"inner_iter must be a positive integer, got {inner_iter!r}")
    prep, xp, phi, dip, grad, w2 = _setup(
        field, mask, weights, voxel_size_mm, b0_dir, reference, max_iter, tol
    )
    dtype = phi.dtype
    mu_t, thresh = dtype.type(mu), dtype.type(lam / mu)

    if w2 is None:
        # χ = χ_data + filter(∇ᵀ(z − u)): χ_data is the closed form with λ = μ
        chi_data = closed_form_l2(
            phi, voxel_size_mm=prep.voxel_size_mm, b0_dir=prep.b0_dir, lam=float(mu), reference=None
        )
        kern = _admm_kernel(
            prep.shape,
            normalize_voxel_size(prep.voxel_size_mm),
            normalize_direction(prep.b0_dir),
            dtype.name,
            xp_name(xp),
            float(mu),
        )

        def chi_update(zu, chi_prev):
            out = real_filter(grad.adjoint(zu), kern)
            out += chi_data
            return out
    else:
        rhs_data = dip.forward(w2 * phi)

        def normal(x):
            out = dip.forward(w2 * dip.forward(x))
            out += grad.normal(x) * mu_t
            return out

        def chi_update(zu, chi_prev):
            rhs = rhs_data + grad.adjoint(zu) * mu_t
            return cg(normal, rhs, x0=chi_prev, max_iter=inner_iter, tol=1e-4).x

    chi = xp.zeros(prep.shape, dtype) if x0 is None else _start(xp, x0, prep.shape, dtype).copy()
    gx = grad.forward(chi)
    z = gx.copy()
    u = xp.zeros_like(z)
    bar = _progress(progress, max_iter, "TV-ADMM")
    cbs = chain(callback, bar)
    converged = False
    info = {}
    k = 0
    try:
        for k in range(1, max_iter + 1):  # noqa: B007 - k is returned
            zu = z - u
            chi_new = chi_update(zu, chi)
            diff = chi_new - chi
            change = norm(diff) / max(norm(chi_new), np.finfo(float).tiny)
            chi = chi_new
            gx = grad.forward(chi)
            gx += u  # ∇χ + u
            _soft(gx, thresh, z)
            u = gx - z  # u + ∇χ − z
            info = {"change": change}
            if track_objective:
                info["objective"] = _tv_objective(dip, grad, phi, w2, lam, chi)
            stop = cbs(k, chi, info) if cbs is not None else False
            if change < tol:
                converged = True
                break
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    out = finish(prep, _masked(prep, chi), reference)
    if return_result:
        return SolverResult(out, k, converged, info)
    return out


class _TVLine:
    """f(χ + t d) from the cached ``Dχ`` and ``∇χ`` and this direction's ``Dd``, ``∇d``."""

    def __init__(self, problem, d):
        self.p = problem
        self.dd = problem.dip.forward(d)
        self.gd = problem.grad.forward(d)

    def __call__(self, t):
        return self.p.value(self.p.dx + t * self.dd, self.p.gx + t * self.gd)

    def accept(self, t):
        """χ ← χ + t d: update the cached products instead of recomputing them."""
        t = self.p.dtype.type(t)
        self.p.dx += self.dd * t
        self.p.gx += self.gd * t


class _TVProblem:
    """Smoothed-TV objective with ``Dχ`` and ``∇χ`` cached for the current iterate.

    :func:`mrirecon.solvers.nlcg` evaluates ``objective``/``gradient`` at the
    current iterate only and moves it through ``_TVLine.accept``, so the cache
    is always that of the current χ.
    """

    def __init__(self, dip, grad, phi, w2, lam, eps, x0):
        self.dip, self.grad, self.phi, self.w2 = dip, grad, phi, w2
        self.lam, self.eps, self.dtype = lam, phi.dtype.type(eps), phi.dtype
        self.dx = dip.forward(x0)
        self.gx = grad.forward(x0)

    def value(self, dx, gx):
        xp = get_array_module(dx)
        r = dx - self.phi
        data = dot_real(r, r if self.w2 is None else self.w2 * r)
        gx = gx * gx
        gx += self.eps
        xp.sqrt(gx, out=gx)
        return 0.5 * data + self.lam * float(gx.sum(dtype=xp.float64))

    def objective(self, x):
        return self.value(self.dx, self.gx)

    def gradient(self, x):
        xp = get_array_module(x)
        r = self.dx - self.phi
        if self.w2 is not None:
            r *= self.w2
        g = self.dip.adjoint(r)
        s = self.gx * self.gx
        s += self.eps
        xp.sqrt(s, out=s)
        xp.divide(self.gx, s, out=s)
        g += self.grad.adjoint(s) * self.dtype.type(self.lam)
        return g

    def line(self, x, d):
        return _TVLine(self, d)


def tv_nlcg(
    field,
    mask=None,
    *,
    weights=None,
    lam,
    eps=1e-6,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    max_iter=300,
    tol=1e-4,
    x0=None,
    reference="mask_mean",
    callback=None,
    progress=False,
    return_result=False,
):
    """Total-variation dipole inversion by nonlinear CG on a smoothed TV (the 2014 paper's L1 baseline).

    Parameters
    ----------
    field, mask, voxel_size_mm, b0_dir, reference, weights, x0, callback, progress, return_result
        As in :func:`cg_l2`.
    lam : float
        λ > 0 of the TV term, on the same scale as :func:`tv_admm`.
    eps : float
        Smoothing of |·| in ppm²: ``|v| ≈ sqrt(v² + eps)``.
    max_iter : int
    tol : float
        Stop when the relative change of χ falls below ``tol``.

    Returns
    -------
    ndarray, or SolverResult with ``return_result=True``.

    Notes
    -----
    Minimises :math:`\\tfrac12\\|W(F^{-1}DF\\chi-\\phi)\\|_2^2 + \\lambda\\sum_i\\sum_r\\sqrt{(\\nabla_i\\chi)_r^2+\\epsilon}`
    by Polak–Ribière+ nonlinear CG with a backtracking line search that
    reuses ``Dχ`` and ``∇χ`` (four FFTs per iteration).

    References
    ----------
    Lustig M, Donoho D, Pauly JM. Sparse MRI. Magn Reson Med 2007;58:1182-1195.
    """
    check_lam(lam)
    if not np.isfinite(eps) or eps <= 0:
        raise InvalidParameterError(f"eps must be a positive number, got {eps!r}")
    prep, xp, phi, dip, grad, w2 = _setup(
        field, mask, weights, voxel_size_mm, b0_dir, reference, max_iter, tol
    )
    start = xp.zeros(prep.shape, phi.dtype) if x0 is None else _start(xp, x0, prep.shape, phi.dtype)
    problem = _TVProblem(dip, grad, phi, w2, float(lam), eps, start)
    bar = _progress(progress, max_iter, "TV-NLCG")
    res = _run(
        nlcg,
        bar,
        callback,
        objective=problem.objective,
        gradient=problem.gradient,
        x0=start,
        line=problem.line,
        max_iter=max_iter,
        tol=tol,
    )
    out = finish(prep, _masked(prep, res.x), reference)
    if return_result:
        return SolverResult(out, res.iterations, res.converged, res.info)
    return out
