"""Generic solvers (CG, nonlinear CG) and their callbacks, against dense NumPy/SciPy references."""

import functools

import numpy as np
import pytest
from scipy.optimize import minimize

from mrirecon.errors import InvalidParameterError
from mrirecon.solvers import History, ProgressBar, SolverResult, cg, chain, nlcg


def _spd(n=30, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, n))
    return m @ m.T + n * np.eye(n), rng.standard_normal(n)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ---------------------------------------------------------------- CG
def test_cg_solves_spd_system():
    a, b = _spd()
    res = cg(lambda x: a @ x, b, tol=1e-12, max_iter=200)
    assert isinstance(res, SolverResult)
    assert res.converged
    assert 1 <= res.iterations <= 30  # n = 30: at most n steps in exact arithmetic
    assert _rel(res.x, np.linalg.solve(a, b)) < 1e-10
    # the reported residual is the true one
    assert res.info["residual"] <= 1e-12
    assert res.info["residual"] == pytest.approx(np.linalg.norm(b - a @ res.x) / np.linalg.norm(b), abs=1e-13)


def test_cg_tolerance_bounds_the_true_residual():
    a, b = _spd(seed=1)
    for tol in (1e-2, 1e-5, 1e-8):
        res = cg(lambda x: a @ x, b, tol=tol, max_iter=200)
        assert res.converged
        assert np.linalg.norm(b - a @ res.x) <= tol * np.linalg.norm(b) * (1 + 1e-6)


def test_cg_float32_stays_float32():
    a, b = _spd(seed=2)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    res = cg(lambda x: a32 @ x, b32, tol=1e-5, max_iter=100)
    assert res.x.dtype == np.float32
    assert _rel(res.x, np.linalg.solve(a, b)) < 1e-4


def test_cg_warm_start_from_solution_takes_no_iteration():
    a, b = _spd(seed=3)
    x = np.linalg.solve(a, b)
    calls = []
    res = cg(lambda v: a @ v, b, x0=x, tol=1e-10, callback=lambda k, v, info: calls.append(k))
    assert res.iterations == 0
    assert res.converged
    assert calls == []
    np.testing.assert_array_equal(res.x, x)
    assert res.x is not x  # x0 is not modified in place


def test_cg_warm_start_does_not_modify_x0():
    a, b = _spd(seed=4)
    x0 = np.ones(30)
    res = cg(lambda v: a @ v, b, x0=x0, tol=1e-12, max_iter=200)
    np.testing.assert_array_equal(x0, np.ones(30))
    assert _rel(res.x, np.linalg.solve(a, b)) < 1e-10


def test_cg_singular_system_gives_minimum_norm_solution():
    rng = np.random.default_rng(5)
    m = rng.standard_normal((30, 20))
    a = m @ m.T  # PSD, rank 20
    b = a @ rng.standard_normal(30)  # in the range
    res = cg(lambda x: a @ x, b, tol=1e-12, max_iter=200)
    ref = np.linalg.pinv(a, hermitian=True) @ b
    assert res.converged
    # measured: 22 iterations, relative difference 2e-13
    assert _rel(res.x, ref) < 1e-9
    # the minimum-norm solution is orthogonal to the null space
    null = np.linalg.svd(m.T)[2][20:]
    assert np.linalg.norm(null @ res.x) < 1e-9 * np.linalg.norm(res.x)


def test_cg_zero_rhs_returns_zero():
    a, _ = _spd(seed=6)
    res = cg(lambda x: a @ x, np.zeros(30))
    assert res.converged and res.iterations == 0
    np.testing.assert_array_equal(res.x, 0)


def test_cg_callback_sees_increasing_k_and_falling_residual():
    a, b = _spd(seed=7)
    ks, residuals, iterates = [], [], []

    def record(k, x, info):
        ks.append(k)
        residuals.append(info["residual"])
        iterates.append(x.copy())
        # the residual passed is that of the iterate passed
        assert info["residual"] == pytest.approx(np.linalg.norm(b - a @ x) / np.linalg.norm(b), abs=1e-12)

    res = cg(lambda x: a @ x, b, tol=1e-10, max_iter=200, callback=record)
    assert ks == list(range(1, res.iterations + 1))
    # CG minimises the A-norm of the error: that falls strictly; the residual (well-conditioned
    # system, cond(A) ~ 5) falls at every step here too
    x_true = np.linalg.solve(a, b)
    energy = [(x - x_true) @ a @ (x - x_true) for x in iterates]
    assert all(e2 < e1 for e1, e2 in zip(energy, energy[1:]))
    assert all(r2 < r1 for r1, r2 in zip(residuals, residuals[1:]))
    assert residuals[-1] <= 1e-10


@pytest.mark.parametrize("stop_at", [1, 3, 6])
def test_cg_callback_stops_early(stop_at):
    a, b = _spd(seed=8)
    ks = []

    def stop(k, x, info):
        ks.append(k)
        return k == stop_at

    res = cg(lambda x: a @ x, b, tol=1e-14, max_iter=200, callback=stop)
    assert res.iterations == stop_at
    assert not res.converged
    assert ks == list(range(1, stop_at + 1))


@pytest.mark.parametrize("max_iter", [0, 1, 5])
def test_cg_respects_max_iter(max_iter):
    a, b = _spd(seed=9)
    calls = []
    res = cg(lambda x: a @ x, b, tol=0.0, max_iter=max_iter, callback=lambda k, x, i: calls.append(k))
    assert res.iterations == max_iter
    assert not res.converged
    assert len(calls) == max_iter
    if max_iter == 0:
        np.testing.assert_array_equal(res.x, 0)


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

    def __init__(self, q, b, c, eps, x, d, accepted):
        self.qx, self.qd, self.x, self.d = q @ x, q @ d, x.copy(), d.copy()
        self.b, self.c, self.eps, self.accepted = b, c, eps, accepted

    def __call__(self, t):
        y = self.x + t * self.d
        quad = 0.5 * (self.x @ self.qx + 2 * t * (self.d @ self.qx) + t * t * (self.d @ self.qd))
        return float(quad - self.b @ y + self.c * np.sum(np.sqrt(y * y + self.eps)))

    def accept(self, t):
        self.accepted.append(t)


@pytest.mark.parametrize("with_line", [False, True])
def test_nlcg_finds_known_minimiser(with_line):
    f, grad, q, b, c, eps, x_ref = _smooth_problem()
    accepted, objectives, steps, ks = [], [], [], []

    def line(x, d):
        return _QuadraticLine(q, b, c, eps, x, d, accepted)

    def record(k, x, info):
        ks.append(k)
        objectives.append(info["objective"])
        steps.append(info["step"])
        assert info["objective"] == pytest.approx(f(x), rel=1e-12, abs=1e-12)

    x0 = np.zeros_like(x_ref)
    res = nlcg(f, grad, x0, line=line if with_line else None, max_iter=500, tol=1e-12, callback=record)
    np.testing.assert_array_equal(x0, 0)  # x0 is not modified
    assert _rel(res.x, x_ref) < 1e-4
    assert f(res.x) <= f(x_ref) + 1e-10 * abs(f(x_ref))
    assert ks == list(range(1, len(ks) + 1))
    assert all(o2 <= o1 for o1, o2 in zip(objectives, objectives[1:]))
    assert objectives[0] < f(x0)
    if with_line:
        # accept() is called once per iteration with the step reported to the callback
        assert accepted == steps


def test_nlcg_respects_max_iter_and_callback_stop():
    f, grad, *_ = _smooth_problem()
    res = nlcg(f, grad, np.zeros(8), max_iter=3, tol=0.0)
    assert res.iterations == 3 and not res.converged
    res = nlcg(f, grad, np.zeros(8), max_iter=100, tol=0.0, callback=lambda k, x, i: k == 2)
    assert res.iterations == 2 and not res.converged


def test_nlcg_at_the_minimiser_stops():
    def f(x):
        return float(x @ x)

    def grad(x):
        return 2 * x

    res = nlcg(f, grad, np.zeros(4), max_iter=50)
    assert res.converged
    assert res.iterations == 1
    np.testing.assert_array_equal(res.x, 0)


@pytest.mark.parametrize(("max_iter", "tol"), [(-1, 1e-4), (1.5, 1e-4), (10, -1.0), (10, np.nan)])
def test_nlcg_bad_parameters_raise(max_iter, tol):
    f, grad, *_ = _smooth_problem()
    with pytest.raises(InvalidParameterError):
        nlcg(f, grad, np.zeros(8), max_iter=max_iter, tol=tol)


# ---------------------------------------------------------------- callbacks
def test_history_records_errors_every_few_iterations():
    a, b = _spd(seed=12)
    x_true = np.linalg.solve(a, b)
    seen = {}

    def independent(k, x, info):
        seen[k] = np.linalg.norm(x - x_true) / np.linalg.norm(x_true)

    hist = History(x_true, lambda x, r: np.linalg.norm(x - r) / np.linalg.norm(r), every=3)
    res = cg(lambda x: a @ x, b, tol=1e-12, max_iter=200, callback=chain(hist, independent))
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
