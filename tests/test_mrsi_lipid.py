"""Lipid suppression: closed form against a dense solve and converged CG; L1 FISTA optimality; β limits."""

import numpy as np
import pytest

from mrirecon import mrsi
from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.mrsi import lipid


def _tiny(seed=0, n=6, t=48):
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((n, n, 1, t)) + 1j * rng.standard_normal((n, n, 1, t))).astype(np.complex64)
    lip = np.zeros((n, n, 1), bool)
    lip[0] = lip[-1] = True
    lip[:, 0] = lip[:, -1] = True
    # lipid voxels: a few strong shared components plus noise
    comps = (rng.standard_normal((3, t)) + 1j * rng.standard_normal((3, t))) * 10
    data[lip] += (rng.standard_normal((int(lip.sum()), 3)) @ comps).astype(np.complex64)
    data[~lip] += (0.3 * rng.standard_normal((int((~lip).sum()), 3)) @ comps).astype(np.complex64)
    return data, lip


def test_closed_form_equals_dense_solve_and_cg(xp, assert_on):
    data, lip = _tiny()
    beta = 3e-3
    out = mrsi.lipid_suppress(xp.asarray(data), xp.asarray(lip), beta=beta)
    assert_on(out)
    out = to_numpy(out)
    L = data[lip].T.astype(np.complex128)  # T × N_lip
    A = np.eye(L.shape[0]) + beta * L @ L.conj().T
    x0 = data[~lip].astype(np.complex128)
    dense = np.linalg.solve(A, x0.T).T
    np.testing.assert_allclose(out[~lip], dense, rtol=0, atol=2e-4 * np.abs(dense).max())
    np.testing.assert_array_equal(out[lip], data[lip])  # untouched outside the brain mask
    # conjugate gradients on the same normal equations, to convergence
    from scipy.sparse.linalg import LinearOperator, cg

    op = LinearOperator(A.shape, matvec=lambda v: v + beta * (L @ (L.conj().T @ v)), dtype=np.complex128)
    x_cg = np.array([cg(op, v, rtol=1e-12, maxiter=500)[0] for v in x0])
    np.testing.assert_allclose(out[~lip], x_cg, atol=2e-4 * np.abs(dense).max())


def test_beta_to_zero_gives_input_and_scaling():
    data, lip = _tiny(1)
    out = mrsi.lipid_suppress(data, lip, beta=1e-14)
    np.testing.assert_allclose(out, data, atol=1e-5 * np.abs(data).max())
    c = 7.0
    a = mrsi.lipid_suppress(data, lip, beta=2e-3)
    b = mrsi.lipid_suppress(c * data, lip, beta=2e-3 / c**2)
    np.testing.assert_allclose(b, c * a, rtol=0, atol=1e-4 * np.abs(c * a).max())


def test_rank_truncation_matches_rank_r_dense_solve():
    data, lip = _tiny(2)
    beta, r = 1e-2, 3
    out = mrsi.lipid_suppress(data, lip, beta=beta, rank=r)
    L = data[lip].T.astype(np.complex128)
    u, s, vh = np.linalg.svd(L, full_matrices=False)
    Lr = (u[:, :r] * s[:r]) @ vh[:r]
    A = np.eye(L.shape[0]) + beta * Lr @ Lr.conj().T
    dense = np.linalg.solve(A, data[~lip].T.astype(np.complex128)).T
    np.testing.assert_allclose(out[~lip], dense, atol=2e-4 * np.abs(dense).max())


def test_l1_fista_decreases_and_meets_optimality():
    data, lip = _tiny(3, n=5, t=32)
    rows = lipid.lipid_matrix(data, lip).astype(np.complex128)
    x0 = data[~lip].astype(np.complex128)
    beta = 0.05
    res = lipid.l1_fista(x0, rows, beta, max_iter=20000, tol=1e-10, check_every=20, show=False)
    assert res.converged
    obj = np.asarray(res.objectives)
    assert obj[-1] <= obj[0]
    L = rows.T
    x = res.x
    z = x @ rows.conj().T  # Lᴴx per row
    # optimality: x0 − x = (β/2) L s, s ∈ ∂‖·‖₁(Lᴴx); solve for s by least squares and check it
    s = np.linalg.lstsq(L, (2.0 / beta) * (x0 - x).T, rcond=None)[0].T
    nz = np.abs(z) > 1e-6 * np.abs(z).max()
    assert np.all(np.abs(s) <= 1 + 1e-3)
    np.testing.assert_allclose(s[nz], z[nz] / np.abs(z[nz]), atol=5e-3)

    # and the objective is lower than at random nearby points
    def f(v):
        return np.sum(np.abs(v - x0) ** 2) + beta * np.sum(np.abs(v @ rows.conj().T))

    rng = np.random.default_rng(0)
    for _ in range(5):
        d = 1e-3 * (rng.standard_normal(x.shape) + 1j * rng.standard_normal(x.shape))
        assert f(x + d) >= f(x) - 1e-9


def test_auto_beta_on_small_phantom_improves_naa():
    from mrirecon.phantoms.mrsi import mrsi_phantom

    ph = mrsi_phantom((16, 16), n_points=256, oversample=2)
    kw = dict(dwell_time_s=ph.dwell_time_s, spectrometer_frequency_mhz=ph.spectrometer_frequency_mhz)
    out, info = mrsi.lipid_suppress(ph.data, ph.lipid_mask, brain_mask=ph.brain_mask, return_info=True, **kw)
    b = ph.brain_mask
    ref = mrsi.metabolite_map(ph.truth, (1.92, 2.10), **kw)[b]
    e_in = np.linalg.norm(mrsi.metabolite_map(ph.data, (1.92, 2.10), **kw)[b] - ref)
    e_out = np.linalg.norm(mrsi.metabolite_map(out, (1.92, 2.10), **kw)[b] - ref)
    assert e_out < 0.7 * e_in
    assert info.beta_source.startswith("auto") and set(info.curve.selected) == set(mrsi.BETA_CRITERIA)
    assert out.dtype == np.complex64 and out.shape == ph.data.shape


def test_bad_inputs():
    data, lip = _tiny()
    with pytest.raises(InvalidParameterError):
        mrsi.lipid_suppress(data.real, lip, beta=1.0)
    with pytest.raises(InvalidParameterError):
        mrsi.lipid_suppress(data, np.zeros_like(lip), beta=1.0)
    with pytest.raises(ShapeMismatchError):
        mrsi.lipid_suppress(data, lip[:-1], beta=1.0)
    with pytest.raises(InvalidParameterError):
        mrsi.lipid_suppress(data, lip, beta=-1.0)
    with pytest.raises(InvalidParameterError):
        mrsi.lipid_suppress(data, lip)  # auto needs the spectral axis
    bad = data.copy()
    bad[2, 2, 0, 0] = np.nan
    with pytest.raises(InvalidParameterError):
        mrsi.lipid_suppress(bad, lip, beta=1.0)
