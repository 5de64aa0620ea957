"""Generic iterative solvers: conjugate gradients, nonlinear CG, and the callbacks they share.

Every solver takes its problem as callables on arrays (NumPy or CuPy, the
solver never looks inside: the iterates live in the module of ``rhs`` or
``x0``, and only scalars such as inner products come back to the host),
keyword-only ``x0``, ``max_iter``, ``tol`` and ``callback``, and returns a
:class:`SolverResult`. A callback is called after every iteration as
``callback(iteration, x, info)`` with ``info`` a dict of what the solver knows
(``residual``, ``objective`` where it has one); it may return True to stop
early. :class:`History` records objective, error against a reference and wall
time per iteration (for convergence plots); :class:`ProgressBar` drives a tqdm
bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .device import get_array_module
from .errors import InvalidParameterError

__all__ = ["History", "ProgressBar", "SolverResult", "cg", "chain", "dot_real", "nlcg", "norm"]


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes
    ----------
    x : array
        The solution.
    iterations : int
        Iterations run.
    converged : bool
        Whether the tolerance was met (False: stopped at ``max_iter`` or by a callback).
    info : dict
        The last iteration's info (residual, objective, ...).
    """

    x: object
    iterations: int
    converged: bool
    info: dict = field(default_factory=dict)


def _check_common(max_iter, tol):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 0:
        raise InvalidParameterError(f"max_iter must be a non-negative integer, got {max_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise InvalidParameterError(f"tol must be a non-negative number, got {tol!r}")


def dot_real(a, b) -> float:
    """``Re <a, b>`` as a Python float.

    On the CPU this uses ``einsum`` rather than BLAS: OpenBLAS's worker threads
    keep spinning after a BLAS call and then compete with FFTW's threads for
    the cores (measured: a 32³ dipole convolution went from 0.4 ms to 13 ms
    when every call was followed by ``np.vdot`` on a 2-core machine).
    """
    xp = get_array_module(a)
    a, b = a.reshape(-1), b.reshape(-1)
    if xp is not np:
        # cuBLAS dot (conjugating a): one reduction on the device, one scalar back
        return float(xp.vdot(a, b).real)
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        return float(np.einsum("i,i->", np.conj(a), b).real)
    return float(np.einsum("i,i->", a, b))


def norm(a) -> float:
    """Euclidean norm as a Python float (see :func:`dot_real`)."""
    return float(np.sqrt(max(dot_real(a, a), 0.0)))


def cg(normal, rhs, *, x0=None, max_iter=100, tol=1e-6, callback=None) -> SolverResult:
    """Conjugate gradients for ``normal(x) = rhs`` with ``normal`` symmetric positive (semi)definite.

    Parameters
    ----------
    normal : callable
        ``x -> N x`` (e.g. ``Aᴴ W² A + λ ∇ᴴ∇``).
    rhs : array
    x0 : array, optional
        Warm start (default zeros).
    max_iter : int
    tol : float
        Stop when ``||rhs - N x|| <= tol * ||rhs||``.
    callback : callable, optional
        ``callback(k, x, {"residual": relative residual})``; return True to stop.

    Returns
    -------
    SolverResult
    """
    _check_common(max_iter, tol)
    xp = get_array_module(rhs)
    if x0 is not None and get_array_module(x0) is not xp:
        raise InvalidParameterError(
            f"x0 is a {get_array_module(x0).__name__} array but rhs is a {xp.__name__} array; "
            "move one with mrirecon.device.to_device"
        )
    x = xp.zeros_like(rhs) if x0 is None else x0.astype(rhs.dtype, copy=True)
    r = rhs - normal(x) if x0 is not None else rhs.copy()
    bnorm = norm(rhs)
    if bnorm == 0:
        return SolverResult(xp.zeros_like(rhs), 0, True, {"residual": 0.0})
    p = r.copy()
    rr = dot_real(r, r)
    info = {"residual": np.sqrt(rr) / bnorm}
    if info["residual"] <= tol:
        return SolverResult(x, 0, True, info)
    k = 0
    converged = False
    for k in range(1, max_iter + 1):  # noqa: B007 - k is returned
        q = normal(p)
        pq = dot_real(p, q)
        if pq <= 0:  # direction in the null space: nothing left to reduce
            converged = True
            break
        alpha = rr / pq
        x += alpha * p
        r -= alpha * q
        rr_new = dot_real(r, r)
        info = {"residual": np.sqrt(rr_new) / bnorm}
        stop = callback(k, x, info) if callback is not None else False
        if info["residual"] <= tol:
            converged = True
            break
        if stop:
            break
        p *= rr_new / rr
        p += r
        rr = rr_new
    return SolverResult(x, k, converged, info)


def nlcg(
    objective,
    gradient,
    x0,
    *,
    line=None,
    max_iter=100,
    tol=1e-4,
    callback=None,
    alpha=0.01,
    beta=0.6,
    max_backtrack=30,
) -> SolverResult:
    """Nonlinear conjugate gradients (Polak–Ribière+, backtracking Armijo line search).

    Parameters
    ----------
    objective : callable
        ``x -> f(x)`` (float).
    gradient : callable
        ``x -> ∇f(x)`` (array like ``x``).
    x0 : array
        Starting point (not modified).
    line : callable, optional
        ``line(x, d) -> phi`` with ``phi(t) = f(x + t d)``: a cheap evaluation
        of f along a direction (e.g. from precomputed ``A x`` and ``A d`` for a
        quadratic data term). It is called right after ``gradient(x)`` at the
        same ``x``. If ``phi`` has a method ``accept(t)``, it is called with
        the accepted step before ``gradient`` is evaluated at the new point
        (so a problem can update cached products instead of recomputing them).
        Default: ``objective(x + t d)``.
    max_iter : int
    tol : float
        Stop when the relative change ``||x_k - x_{k-1}|| / ||x_k||`` falls below ``tol``.
    callback : callable, optional
        ``callback(k, x, {"objective": f, "change": relative change, "step": t})``.
    alpha, beta, max_backtrack
        Armijo sufficient-decrease constant, step reduction factor, and the
        largest number of step reductions per iteration.

    Returns
    -------
    SolverResult

    Notes
    -----
    The first step of each line search is the previous accepted step divided
    by ``beta`` (so steps can grow again), starting from 1.
    """
    _check_common(max_iter, tol)
    x = x0.copy()
    g = gradient(x)
    d = -g
    f = float(objective(x))
    t = 1.0
    info = {"objective": f, "change": np.inf, "step": 0.0}
    converged = False
    k = 0
    for k in range(1, max_iter + 1):  # noqa: B007 - k is returned
        gd = dot_real(g, d)
        if gd >= 0:  # not a descent direction: restart along -g
            d = -g
            gd = dot_real(g, d)
        phi = line(x, d) if line is not None else (lambda s, x=x, d=d: float(objective(x + s * d)))
        t = min(t / beta, 1e12)
        f_new = phi(t)
        n_back = 0
        while f_new > f + alpha * t * gd and n_back < max_backtrack:
            t *= beta
            f_new = phi(t)
            n_back += 1
        if f_new > f:  # no decrease found along d
            converged = True
            info = {"objective": f, "change": 0.0, "step": 0.0}
            break
        if hasattr(phi, "accept"):
            phi.accept(t)
        step = t * d
        x += step
        change = norm(step) / max(norm(x), np.finfo(float).tiny)
        f = f_new
        g_new = gradient(x)
        # Polak–Ribière+, clipped at 0 (automatic restart)
        beta_pr = max(0.0, dot_real(g_new, g_new - g) / max(dot_real(g, g), np.finfo(float).tiny))
        d = -g_new + beta_pr * d
        g = g_new
        info = {"objective": f, "change": change, "step": t}
        stop = callback(k, x, info) if callback is not None else False
        if change <= tol:
            converged = True
            break
        if stop:
            break
    return SolverResult(x, k, converged, info)


class History:
    """Callback recording, per iteration: wall time, the solver's info, and an error against a reference.

    Parameters
    ----------
    reference : array, optional
        Ground truth; with ``metric`` gives the error curve.
    metric : callable, optional
        ``metric(x, reference) -> float`` (e.g. ``lambda x, r: nrmse(x, r, mask=m)``).
    every : int
        Evaluate the metric every this many iterations (it can cost more than an iteration).
    transform : callable, optional
        Applied to ``x`` before the metric (e.g. masking and referencing as the method's final step).

    Attributes
    ----------
    iterations, times, errors, infos : lists
        ``times`` are seconds since the History was created (or :meth:`start`).
    """

    def __init__(self, reference=None, metric=None, *, every=1, transform=None):
        self.reference, self.metric, self.every, self.transform = reference, metric, int(every), transform
        self.start()

    def start(self):
        self.t0 = time.perf_counter()
        self.iterations, self.times, self.errors, self.infos = [], [], [], []
        self._excluded = 0.0

    def __call__(self, k, x, info):
        t = time.perf_counter()
        self.iterations.append(k)
        self.infos.append(dict(info))
        err = None
        if self.metric is not None and self.reference is not None and k % self.every == 0:
            y = self.transform(x) if self.transform is not None else x
            err = float(self.metric(y, self.reference))
        self.errors.append(err)
        # the time spent on the metric is not the solver's
        self._excluded += time.perf_counter() - t
        self.times.append(time.perf_counter() - self.t0 - self._excluded)
        return False


class ProgressBar:
    """Callback showing progress (a tqdm bar on a terminal, plain lines in a log) with the latest residual.

    See :func:`mrirecon.progress.progress`.
    """

    def __init__(self, total, *, desc="iterations", disable=None):
        from .progress import progress

        self.bar = progress(total=total, desc=desc, unit="it", disable=bool(disable))

    def __call__(self, k, x, info):
        self.bar.update(1)
        shown = {key: f"{val:.3g}" for key, val in info.items() if isinstance(val, float)}
        if shown:
            self.bar.set_postfix(shown, refresh=False)
        return False

    def close(self):
        self.bar.close()


def chain(*callbacks):
    """Combine callbacks (None entries ignored); stops when any of them asks to."""
    callbacks = [c for c in callbacks if c is not None]
    if not callbacks:
        return None

    def run(k, x, info):
        stop = False
        for c in callbacks:
            stop = bool(c(k, x, info)) or stop
        return stop

    return run
