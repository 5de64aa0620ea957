"""The closed form against a dense solve, GCV against its definition, L1 at its optimality condition."""

import numpy as np
import pytest

from mrirecon import dsi
from mrirecon.dsi import recon
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.phantoms.dsi import dsi_phantom, undersampling_mask


@pytest.fixture(scope="module")
def small():
    lat = dsi.q_lattice(9, b_max_s_mm2=3000)  # 123 points
    rng = np.random.default_rng(0)
    train = dsi.basis.simulate_training_signals(lat, n_voxels=2000, seed=3)
    basis = dsi.pca_basis(train, lat, n_components=40)
    idx = np.sort(np.concatenate([[0, 0], rng.choice(np.arange(1, lat.size), 45, replace=False)]))
    truth = dsi.basis.simulate_training_signals(lat, n_voxels=30, seed=4) * 800
    y = truth[:, idx] + rng.normal(0, 10, (30, idx.size))
    return lat, basis, idx, y


def _args(lat, idx):
    return lat.bvals()[idx], lat.bvecs()[idx]


def test_closed_form_equals_dense_least_squares(small):
    lat, basis, idx, y = small
    lam = 3e-3
    out = dsi.reconstruct(y, *_args(lat, idx), train=basis, lam=lam).signal
    p = basis.vectors * basis.singular_values
    a = p[idx]
    k = a.shape[1]
    big = np.vstack([a, np.sqrt(lam) * np.eye(k)])
    rhs = np.vstack([y.T, np.zeros((k, y.shape[0]))])
    c = np.linalg.lstsq(big, rhs, rcond=None)[0]
    np.testing.assert_allclose(out, (p @ c).T, rtol=2e-4, atol=2e-3)


def test_fully_sampled_with_lambda_to_zero_reproduces_the_data():
    lat = dsi.q_lattice(4, b_max_s_mm2=2000)  # 33 points
    rng = np.random.default_rng(2)
    basis = dsi.pca_basis(rng.random((200, lat.size)), lat, n_components=lat.size)
    y = rng.random((5, lat.size)) * 100
    out = dsi.reconstruct(y.astype(np.float64), lat.bvals(), lat.bvecs(), train=basis, lam=1e-12).signal
    np.testing.assert_allclose(out, y, rtol=1e-6)


def test_scaling_the_data_scales_the_result(small):
    lat, basis, idx, y = small
    a = dsi.reconstruct(y, *_args(lat, idx), train=basis, lam=1e-3).signal
    b = dsi.reconstruct(3 * y, *_args(lat, idx), train=basis, lam=1e-3).signal
    np.testing.assert_allclose(b, 3 * a, rtol=1e-4, atol=1e-3)
    a = dsi.reconstruct(y, *_args(lat, idx), method="l1", lam=0.01, max_iter=30).signal
    b = dsi.reconstruct(3 * y, *_args(lat, idx), method="l1", lam=0.01, max_iter=30).signal
    np.testing.assert_allclose(b, 3 * a, rtol=1e-3, atol=1e-2)


def test_gcv_matches_its_definition_with_an_explicit_hat_matrix(small):
    lat, basis, idx, y = small
    op = dsi.completion_operator(basis, idx)
    lams = np.logspace(-6, 0, 13)
    best, _, scores = dsi.gcv(op, y, lams)
    a = (basis.vectors * basis.singular_values)[idx]
    ref = []
    for lam in lams:
        h = a @ np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T)
        res = y.T - h @ y.T
        ref.append(np.sum(res**2) / (idx.size - np.trace(h)) ** 2)
    np.testing.assert_allclose(scores, ref, rtol=1e-6)
    assert best == lams[int(np.argmin(ref))]
    assert dsi.completion_operator(basis, idx) is op  # cached per Ω


def test_l1_reaches_its_optimality_condition(small):
    """At the FISTA solution x = prox(x − ∇f(x)): the proximal-gradient residual is small."""
    import pywt

    lat, _, idx, y = small
    y = y[:4]
    beta = 5.0
    seen = {}

    def grab(k, x, inf):
        seen["x"] = x.copy()

    sig2, info = dsi.l1_wavelet(
        y.astype(np.float64), lat, idx, lam=beta, max_iter=1500, tol=1e-9, callback=grab
    )
    x = seen["x"]
    np.testing.assert_allclose(recon.cube_to_signal(x, lat), sig2, atol=1e-8)
    from mrirecon import fft

    m = x.shape[-1]
    flat = np.ravel_multi_index(tuple((lat.points[idx] + m // 2).T), (m,) * 3)
    spec = fft.fftc(x, axes=(1, 2, 3)).reshape(x.shape[0], -1)
    resid = np.zeros_like(spec)
    np.add.at(resid.T, flat, (spec[:, flat] - y).T)
    grad = fft.ifftc(resid.reshape(x.shape), axes=(1, 2, 3)).real
    step = 1.0 / np.bincount(idx).max()
    z = x - step * grad
    c = pywt.wavedecn(z, "db2", mode="periodization", level=info["level"], axes=(1, 2, 3))
    arr, sl = pywt.coeffs_to_array(c, axes=(1, 2, 3))
    arr = np.sign(arr) * np.maximum(np.abs(arr) - beta * step, 0)
    px = pywt.waverecn(
        pywt.array_to_coeffs(arr, sl, output_format="wavedecn"), "db2", mode="periodization", axes=(1, 2, 3)
    )
    assert np.linalg.norm(px - x) / np.linalg.norm(x) < 1e-5
    assert info["iterations"] > 10


def test_zero_filled_averages_repeats(small):
    lat, _, idx, y = small
    out = dsi.reconstruct(y, *_args(lat, idx), method="zero-filled").signal
    np.testing.assert_allclose(out[:, 0], y[:, :2].mean(axis=1), rtol=1e-5)
    missing = np.setdiff1d(np.arange(lat.size), idx)
    assert np.all(out[:, missing] == 0)


def test_pca_l2_beats_zero_filling_on_the_phantom():
    ph = dsi_phantom((16, 16), seed=7)
    lat = ph.lattice
    idx = undersampling_mask(lat, accel=3, seed=7)
    y = ph.noisy[..., idx]
    m = ph.mask
    truth = dsi.pdf(ph.signal[m], lat)

    def err(method):
        r = dsi.reconstruct(y, lat.bvals()[idx], lat.bvecs()[idx], method=method, mask=m)
        assert np.all(r.signal[~m] == 0)
        return np.linalg.norm(dsi.pdf(r.signal[m], lat) - truth) / np.linalg.norm(truth)

    e_pca, e_zf = err("pca-l2"), err("zero-filled")
    assert e_pca < 0.3 * e_zf, (e_pca, e_zf)


def test_bad_inputs(small):
    lat, basis, idx, y = small
    b, g = _args(lat, idx)
    with pytest.raises(ShapeMismatchError, match="volumes"):
        dsi.reconstruct(y[:, :-1], b, g)
    bad = y.copy()
    bad[0, 3] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        dsi.reconstruct(bad, b, g)
    with pytest.raises(InvalidParameterError, match="method"):
        dsi.reconstruct(y, b, g, method="cs")
    with pytest.raises(InvalidParameterError, match="lam"):
        dsi.reconstruct(y, b, g, lam=-1)
    with pytest.raises(InvalidParameterError, match="lattice"):
        dsi.reconstruct(y, b, g, train=dsi.default_basis(dsi.q_lattice(), n_components=5, n_voxels=200))
