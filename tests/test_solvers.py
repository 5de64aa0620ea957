"""Generic solvers (CG, nonlinear CG) and their callbacks, against dense NumPy/SciPy references."""

import functools

import numpy as np
import pytest
from scipy.optimize import minimize

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError
from mrirecon.solvers import History, ProgressBar, SolverResult, cg, chain, nlcg


def _spd(n=30, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    return m @ m.T + n * np.eye(n), rng.standard_normal(n)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _on(xp, a, b):
    """The dense system ``x -> a @ x`` and ``b`` in module ``xp``."""
    ad = xp.asarray(a)
    return (lambda x: ad @ x), xp.asarray(b)


# ---------------------------------------------------------------- CG
def test_cg_solves_spd_system(xp, assert_on):
    a, b = _spd()
    matvec, bd = _on(xp, a, b)
    res = cg(matvec, bd, tol=1e-12, max_iter=200)
    assert isinstance(res, SolverResult)
    assert_on(res.x)
    assert res.converged
    assert 1 <= res.iterations <= 30  # n = 30: at most n steps in exact arithmetic
    x = to_numpy(res.x)
    assert _rel(x, np.linalg.solve(a, b)) < 1e-10
    # the reported residual is the true one
    assert isinstance(res.info["residual"], float)
    assert res.info["residual"] <= 1e-12
    assert res.info["residual"] == pytest.approx(np.linalg.norm(b - a @ x) / np.linalg.norm(b), abs=1e-13)


def test_cg_tolerance_bounds_the_true_residual(xp):
    a, b = _spd(seed=1)
    matvec, bd = _on(xp, a, b)
    for tol in (1e-2, 1e-5, 1e-8):
        res = cg(matvec, bd, tol=tol, max_iter=200)
        assert res.converged
        assert np.linalg.norm(b - a @ to_numpy(res.x)) <= tol * np.linalg.norm(b) * (1 + 1e-6)


def test_cg_float32_stays_float32(xp, assert_on):
    a, b = _spd(seed=2)
    matvec, b32 = _on(xp, a.astype(np.float32), b.astype(np.float32))
    res = cg(matvec, b32, tol=1e-5, max_iter=100)
    assert_on(res.x)
    assert res.x.dtype == np.float32
    assert _rel(to_numpy(res.x), np.linalg.solve(a, b)) < 1e-4


def test_cg_warm_start_from_solution_takes_no_iteration(xp, assert_on):
    a, b = _spd(seed=3)
    matvec, bd = _on(xp, a, b)
    x = xp.asarray(np.linalg.solve(a, b))
    calls = []
    res = cg(matvec, bd, x0=x, tol=1e-10, callback=lambda k, v, info: calls.append(k))
    assert res.iterations == 0
    assert res.converged
    assert calls == []
    assert_on(res.x)
    np.testing.assert_array_equal(to_numpy(res.x), to_numpy(x))
    assert res.x is not x  # x0 is not modified in place


def test_cg_warm_start_does_not_modify_x0(xp):
    a, b = _spd(seed=4)
    matvec, bd = _on(xp, a, b)
    x0 = xp.ones(30)
    res = cg(matvec, bd, x0=x0, tol=1e-12, max_iter=200)
    np.testing.assert_array_equal(to_numpy(x0), np.ones(30))
    assert _rel(to_numpy(res.x), np.linalg.solve(a, b)) < 1e-10


@pytest.mark.gpu
def test_cg_refuses_a_warm_start_on_another_device(xp):
    if xp is np:
        pytest.skip("needs two array modules")
    a, b = _spd(seed=4)
    matvec, bd = _on(xp, a, b)
    with pytest.raises(InvalidParameterError, match="x0 is a numpy array but rhs is a cupy array"):
        cg(matvec, bd, x0=np.ones(30))


def test_cg_singular_system_gives_minimum_norm_solution(xp):
    rng = np.random.default_rng(5)
    m = rng.standard_normal((30, 20))
    a = m @ m.T  # PSD, rank 20
    b = a @ rng.standard_normal(30)  # in the range
    matvec, bd = _on(xp, a, b)
    res = cg(matvec, bd, tol=1e-12, max_iter=200)
    x = to_numpy(res.x)
    ref = np.linalg.pinv(a, hermitian=True) @ b
    assert res.converged
    # measured: 22 iterations, relative difference 2e-13
    assert _rel(x, ref) < 1e-9
    # the minimum-norm solution is orthogonal to the null space
    null = np.linalg.svd(m.T)[2][20:]
    assert np.linalg.norm(null @ x) < 1e-9 * np.linalg.norm(x)


def test_cg_zero_rhs_returns_zero(xp, assert_on):
    a, _ = _spd(seed=6)
    matvec, zero = _on(xp, a, np.zeros(30))
    res = cg(matvec, zero)
    assert res.converged and res.iterations == 0
    assert_on(res.x)
    np.testing.assert_array_equal(to_numpy(res.x), 0)


def test_cg_callback_sees_increasing_k_and_falling_residual(xp):
    a, b = _spd(seed=7)
    matvec, bd = _on(xp, a, b)
    ks, residuals, iterates = [], [], []

    def record(k, x, info):
        ks.append(k)
        residuals.append(info["residual"])
        x = to_numpy(x).copy()
        iterates.append(x)
        # the residual passed is that of the iterate passed
        assert info["residual"] == pytest.approx(np.linalg.norm(b - a @ x) / np.linalg.norm(b), abs=1e-12)

    res = cg(matvec, bd, tol=1e-10, max_iter=200, callback=record)
    assert ks == list(range(1, res.iterations + 1))
    # CG minimises the A-norm of the error: that falls strictly; the residual (well-conditioned
    # system, cond(A) ~ 5) falls at every step here too
    x_true = np.linalg.solve(a, b)
    energy = [(x - x_true) @ a @ (x - x_true) for x in iterates]
    assert all(e2 < e1 for e1, e2 in zip(energy, energy[1:]))
    assert all(r2 < r1 for r1, r2 in zip(residuals, residuals[1:]))
    assert residuals[-1] <= 1e-10


@pytest.mark.parametrize("stop_at", [1, 3, 6])
def test_cg_callback_stops_early(stop_at, xp):
    a, b = _spd(seed=8)
    matvec, bd = _on(xp, a, b)
    ks = []

    def stop(k, x, info):
        ks.append(k)
        return k == stop_at

    res = cg(matvec, bd, tol=1e-14, max_iter=200, callback=stop)
    assert res.iterations == stop_at
    assert not res.converged
    assert ks == list(range(1, stop_at + 1))


@pytest.mark.parametrize("max_iter", [0, 1, 5])
def test_cg_respects_max_iter(max_iter, xp, assert_on):
    a, b = _spd(seed=9)
    matvec, bd = _on(xp, a, b)
    calls = []
    res = cg(matvec, bd, tol=0.0, max_iter=max_iter, callback=lambda k, x, i: calls.append(k))
    assert res.iterations == max_iter
    assert not res.converged
    assert len(calls) == max_iter
    assert_on(res.x)
    if max_iter == 0:
        np.testing.assert_array_equal(to_numpy(res.x), 0)


@pytest.mark.parametrize(("max_iter", "tol"), [(-1, 1e-6), (2.5, 1e-6), (True, 1e-6), ("10", 1e-6)])
def test_cg_bad_max_iter_raises(max_iter, tol):
    a, b = _spd(seed=10)
    with pytest.raises(InvalidParameterError, match="max_iter"):
        cg(lambda x: a @ x, b, max_iter=max_iter, tol=tol)


@pytest.mark.parametrize("tol", [-1e-6, np.nan, np.inf])
def test_cg_bad_tol_raises(tol):
    a, b = _spd(seed=10)
    with pytest.raises(InvalidParameterError, match="tol"):
        cg(lambda x: a @ x, b, tol=tol)


# ---------------------------------------------------------------- nonlinear CG
@functools.lru_cache
def _smooth_problem(n=8, seed=11, c=0.7, eps=1e-2):
    """f(x) = ½ xᵀQx − bᵀx + c Σ sqrt(x² + eps): smooth and strictly convex."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    q = m @ m.T / n + 0.5 * np.eye(n)
    b = 2 * rng.standard_normal(n)

    def f(x):
        return float(0.5 * x @ q @ x - b @ x + c * np.sum(np.sqrt(x * x + eps)))

    def grad(x):
        return q @ x - b + c * x / np.sqrt(x * x + eps)

    ref = minimize(
        f, np.zeros(n), jac=grad, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000}
    )
    assert ref.success
    return f, grad, q, b, c, eps, ref.x


class _QuadraticLine:
    """phi(t) = f(x + t d) from x and d directly (a cheap evaluation path, like the TV problem's)."""

    def __init__(self, q, b, c, eps, x, d, accepted, xp=np):
        self.qx, self.qd, self.x, self.d = q @ x, q @ d, x.copy(), d.copy()
        self.b, self.c, self.eps, self.accepted, self.xp = b, c, eps, accepted, xp

    def __call__(self, t):
        xp = self.xp
        y = self.x + t * self.d
        quad = 0.5 * (self.x @ self.qx + 2 * t * (self.d @ self.qx) + t * t * (self.d @ self.qd))
        return float(quad - self.b @ y + self.c * xp.sum(xp.sqrt(y * y + self.eps)))

    def accept(self, t):
        self.accepted.append(t)


def _smooth_problem_on(xp):
    """:func:`_smooth_problem`'s objective, gradient and data in module ``xp``."""
    f, grad, q, b, c, eps, x_ref = _smooth_problem()
    if xp is np:
        return f, grad, q, b
    qd, bd = xp.asarray(q), xp.asarray(b)

    def fd(x):
        return float(0.5 * x @ qd @ x - bd @ x + c * xp.sum(xp.sqrt(x * x + eps)))

    def gradd(x):
        return qd @ x - bd + c * x / xp.sqrt(x * x + eps)

    return fd, gradd, qd, bd


@pytest.mark.parametrize("with_line", [False, True])
def test_nlcg_finds_known_minimiser(with_line, xp, assert_on):
    f_host, _, _, _, c, eps, x_ref = _smooth_problem()
    f, grad, q, b = _smooth_problem_on(xp)
    accepted, objectives, steps, ks = [], [], [], []

    def line(x, d):
        return _QuadraticLine(q, b, c, eps, x, d, accepted, xp)

    def record(k, x, info):
        ks.append(k)
        objectives.append(info["objective"])
        steps.append(info["step"])
        assert info["objective"] == pytest.approx(f_host(to_numpy(x)), rel=1e-12, abs=1e-12)

    x0 = xp.zeros(x_ref.shape)
    res = nlcg(f, grad, x0, line=line if with_line else None, max_iter=500, tol=1e-12, callback=record)
    assert_on(res.x)
    np.testing.assert_array_equal(to_numpy(x0), 0)  # x0 is not modified
    x = to_numpy(res.x)
    assert _rel(x, x_ref) < 1e-4
    assert f_host(x) <= f_host(x_ref) + 1e-10 * abs(f_host(x_ref))
    assert ks == list(range(1, len(ks) + 1))
    assert all(o2 <= o1 for o1, o2 in zip(objectives, objectives[1:]))
    assert objectives[0] < f_host(to_numpy(x0))
    if with_line:
        # accept() is called once per iteration with the step reported to the callback
        assert accepted == steps


def test_nlcg_respects_max_iter_and_callback_stop(xp, assert_on):
    f, grad, *_ = _smooth_problem_on(xp)
    res = nlcg(f, grad, xp.zeros(8), max_iter=3, tol=0.0)
    assert res.iterations == 3 and not res.converged
    assert_on(res.x)
    res = nlcg(f, grad, xp.zeros(8), max_iter=100, tol=0.0, callback=lambda k, x, i: k == 2)
    assert res.iterations == 2 and not res.converged


def test_nlcg_at_the_minimiser_stops(xp, assert_on):
    def f(x):
        return float(x @ x)

    def grad(x):
        return 2 * x

    res = nlcg(f, grad, xp.zeros(4), max_iter=50)
    assert res.converged
    assert res.iterations == 1
    assert_on(res.x)
    np.testing.assert_array_equal(to_numpy(res.x), 0)


@pytest.mark.parametrize(("max_iter", "tol"), [(-1, 1e-4), (1.5, 1e-4), (10, -1.0), (10, np.nan)])
def test_nlcg_bad_parameters_raise(max_iter, tol):
    f, grad, *_ = _smooth_problem()
    with pytest.raises(InvalidParameterError):
        nlcg(f, grad, np.zeros(8), max_iter=max_iter, tol=tol)


# ---------------------------------------------------------------- callbacks
def test_history_records_errors_every_few_iterations(xp):
    a, b = _spd(seed=12)
    matvec, bd = _on(xp, a, b)
    x_true = np.linalg.solve(a, b)
    seen = {}

    def independent(k, x, info):
        seen[k] = np.linalg.norm(to_numpy(x) - x_true) / np.linalg.norm(x_true)

    # the reference and the metric on the solver's device: only the number comes back
    hist = History(xp.asarray(x_true), lambda x, r: float(xp.linalg.norm(x - r) / xp.linalg.norm(r)), every=3)
    res = cg(matvec, bd, tol=1e-12, max_iter=200, callback=chain(hist, independent))
    assert hist.iterations == list(range(1, res.iterations + 1))
    assert len(hist.times) == len(hist.errors) == len(hist.infos) == res.iterations
    assert all(t >= 0 for t in hist.times)
    assert all(t2 >= t1 for t1, t2 in zip(hist.times, hist.times[1:]))
    for k, err in zip(hist.iterations, hist.errors):
        if k % 3 == 0:
            assert err == pytest.approx(seen[k], rel=1e-12)
        else:
            assert err is None
    assert [i["residual"] for i in hist.infos][-1] == res.info["residual"]


def test_history_transform_and_restart():
    a, b = _spd(seed=13)
    x_true = np.linalg.solve(a, b)
    hist = History(2 * x_true, lambda x, r: np.linalg.norm(x - r), transform=lambda x: 2 * x)
    cg(lambda x: a @ x, b, tol=1e-12, max_iter=200, callback=hist)
    assert hist.errors[-1] < 1e-9 * np.linalg.norm(x_true)
    assert all(e is not None for e in hist.errors)
    hist.start()
    assert hist.iterations == hist.times == hist.errors == hist.infos == []


def test_history_without_metric_records_no_errors():
    a, b = _spd(seed=14)
    hist = History()
    res = cg(lambda x: a @ x, b, tol=1e-8, callback=hist)
    assert hist.errors == [None] * res.iterations


def test_chain_calls_all_and_stops_when_one_asks():
    a, b = _spd(seed=15)
    calls = []

    def first(k, x, info):
        calls.append(("first", k))
        return False

    def second(k, x, info):
        calls.append(("second", k))
        return k == 4

    res = cg(lambda x: a @ x, b, tol=1e-14, max_iter=100, callback=chain(first, None, second))
    assert res.iterations == 4 and not res.converged
    assert calls == [(name, k) for k in range(1, 5) for name in ("first", "second")]
    assert chain() is None
    assert chain(None, None) is None
    assert chain(second)(4, None, {}) is True
    assert chain(second, first)(4, None, {}) is True  # a later False does not undo the stop


def test_progress_bar_runs(capsys):
    a, b = _spd(seed=16)
    quiet = ProgressBar(50, desc="quiet", disable=True)
    res = cg(lambda x: a @ x, b, tol=1e-10, max_iter=50, callback=chain(quiet))
    quiet.close()
    assert res.converged
    shown = ProgressBar(50, desc="shown", disable=False)
    res = cg(lambda x: a @ x, b, tol=1e-10, max_iter=50, callback=chain(shown))
    assert shown.bar.n == res.iterations
    shown.close()
    captured = capsys.readouterr()
    assert "shown" in captured.err and "quiet" not in captured.err
    assert captured.out == ""
