"""Iterative SENSE: CG-SENSE against the closed form, L1-wavelet (FISTA) and TV (PDHG) baselines.

The tests take the ``xp`` fixture: NumPy always, CuPy where a GPU is present.
"""

import numpy as np
import pytest
import pywt
from test_sense_unfold import coil_maps, rand_c, simulate

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.fft import fftc
from mrirecon.sense.iterative import _MatrixWavelet, _Wavelet, cg_sense, l1_wavelet, power_iteration, tv
from mrirecon.sense.operator import SenseOp
from mrirecon.sense.unfold import lattice_mask, unfold
from mrirecon.solvers import SolverResult


def rel(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- CG-SENSE
@pytest.mark.parametrize("accel,lam", [(2, 0.0), (2, 0.01), (4, 0.01)])
def test_cg_sense_converges_to_unfold(accel, lam, xp, assert_on):
    spatial = (32, 32)
    sens = coil_maps(8, spatial)
    mask = lattice_mask(spatial, accel, offset=1)
    y, _ = simulate(sens, mask, seed=accel)
    ref = unfold(y, sens, lam=lam, accel=accel, offset=1)
    res = cg_sense(xp.asarray(y), xp.asarray(sens), lam=lam, max_iter=400, tol=1e-10, return_result=True)
    assert isinstance(res, SolverResult) and res.converged
    assert_on(res.x)
    assert res.x.dtype == np.complex128
    assert rel(res.x, ref) < 1e-4


def test_cg_sense_caipi_converges_to_unfold(xp, assert_on):
    spatial = (16, 8, 4)
    sens = coil_maps(6, spatial, seed=4)
    mask = lattice_mask(spatial, (2, 2), offset=(1, 0), shift=1)
    y, _ = simulate(sens, mask, seed=3)
    ref = unfold(y, sens, lam=0.02, accel=(2, 2), offset=(1, 0), shift=1)
    x = cg_sense(xp.asarray(y), xp.asarray(sens), lam=0.02, mask=mask, max_iter=300, tol=1e-10)
    assert_on(x)
    assert rel(x, ref) < 1e-4


def test_cg_sense_options_and_errors(xp, assert_on):
    spatial = (16, 16)
    sens = coil_maps(4, spatial, dtype=np.complex64)
    mask = lattice_mask(spatial, 2)
    y, _ = simulate(sens, mask)
    y, sens = xp.asarray(y), xp.asarray(sens)
    seen = []
    x = cg_sense(y, sens, lam=0.01, max_iter=5, callback=lambda k, x, info: seen.append(info["residual"]))
    assert_on(x)
    assert x.dtype == np.complex64 and x.shape == spatial
    assert 1 <= len(seen) <= 5
    for m in (mask, xp.asarray(mask)):
        np.testing.assert_allclose(
            to_numpy(cg_sense(y, sens, lam=0.01, max_iter=5, mask=m)), to_numpy(x), rtol=1e-5
        )
    # a warm start at the answer stays there
    warm = cg_sense(y, sens, lam=0.01, max_iter=200, tol=1e-7)
    assert rel(cg_sense(y, sens, lam=0.01, max_iter=2, x0=warm), warm) < 1e-4
    with pytest.raises(ShapeMismatchError):
        cg_sense(y[:, :8], sens)
    with pytest.raises(InvalidParameterError, match="zero"):
        cg_sense(xp.zeros_like(y), sens)
    with pytest.raises(InvalidParameterError, match="lam"):
        cg_sense(y, sens, lam=-1.0)
    with pytest.raises(InvalidParameterError, match="max_iter"):
        cg_sense(y, sens, max_iter=0)


@pytest.mark.gpu
@pytest.mark.parametrize("xp", ["cupy"], indirect=True)
def test_iterative_refuse_mixed_devices(xp):
    spatial = (16, 16)
    sens = coil_maps(4, spatial, dtype=np.complex64)
    y, _ = simulate(sens, lattice_mask(spatial, 2))
    for solver, kw in ((cg_sense, {}), (l1_wavelet, {"lam": 0.01}), (tv, {"lam": 0.01})):
        with pytest.raises(InvalidParameterError, match="devices"):
            solver(xp.asarray(y), sens, **kw)
        with pytest.raises(InvalidParameterError, match="devices"):
            solver(y, xp.asarray(sens), **kw)
        with pytest.raises(InvalidParameterError, match="devices"):
            solver(xp.asarray(y), xp.asarray(sens), x0=np.zeros(spatial, np.complex64), **kw)


def test_power_iteration_bounds_normalised_maps(xp):
    sens = xp.asarray(coil_maps(6, (24, 20)))
    lip = power_iteration(SenseOp(sens))
    assert isinstance(lip, float)
    assert 0.9 < lip <= 1 + 1e-6  # RSS-normalised maps, full sampling: ‖A‖ = 1
    lip4 = power_iteration(SenseOp(sens, lattice_mask((24, 20), 4)))
    assert 0 < lip4 <= 1 + 1e-6


@pytest.mark.parametrize("shape,level", [((64, 64), 3), ((37, 34), 2), ((20, 18, 16), None)])
def test_matrix_wavelet_is_pywavelets_transform(shape, level, xp, assert_on):
    """The device wavelet (matrices) has PyWavelets' coefficients, and inverts like waverecn."""
    rng = np.random.default_rng(0)
    x = rand_c(rng, shape).astype(np.complex128)
    ref = _Wavelet(shape, "db4", level)
    mw = _MatrixWavelet(shape, "db4", level, np.complex128, xp)
    c_ref = ref.forward(x).ravel()
    c = mw.forward(xp.asarray(x))
    assert_on(c)
    c = to_numpy(c)
    # the same coefficients (both layouts hold zeros: pywt's padding, the device's approximation corners)
    c, c_ref = c[c != 0], c_ref[c_ref != 0]
    assert c.size == c_ref.size
    np.testing.assert_allclose(np.sort(np.abs(c)), np.sort(np.abs(c_ref)), atol=1e-12)
    # inverse of thresholded coefficients == PyWavelets' inverse of the same thresholding
    thr = np.median(np.abs(c_ref))

    def soft(v):
        mag = np.abs(v)
        return v * np.where(mag > thr, 1 - thr / np.where(mag > 0, mag, 1), 0)

    back = mw.inverse(xp.asarray(soft(to_numpy(mw.forward(xp.asarray(x))))))
    assert_on(back)
    np.testing.assert_allclose(to_numpy(back), ref.inverse(soft(ref.forward(x))), atol=1e-12)
    np.testing.assert_allclose(to_numpy(mw.inverse(mw.forward(xp.asarray(x)))), x, atol=1e-12)


# ---------------------------------------------------------------- compressed sensing baselines
@pytest.fixture(scope="module")
def cs_problem():
    """Piecewise-constant 64×64 image, 8 coils, R = 4 variable-density random lines."""
    n = 64
    sens = coil_maps(8, (n, n), dtype=np.complex64)
    g = np.meshgrid(*[np.linspace(-1, 1, n)] * 2, indexing="ij")
    img = np.zeros((n, n))
    img[(g[0] ** 2 + g[1] ** 2) < 0.8**2] = 1.0
    img[(np.abs(g[0] - 0.2) < 0.2) & (np.abs(g[1] + 0.2) < 0.3)] = 0.5
    img[((g[0] + 0.35) ** 2 + (g[1] - 0.3) ** 2) < 0.15**2] = 2.0
    img[(np.abs(g[0] + 0.1) < 0.05) & (np.abs(g[1]) < 0.5)] = 0.2
    rng = np.random.default_rng(0)
    k = np.arange(n) - n // 2
    centre = set(range(n // 2 - 4, n // 2 + 4))
    pdf = (1 - np.abs(k) / (n / 2)) ** 3
    pdf[list(centre)] = 0
    pdf /= pdf.sum()
    lines = centre | set(rng.choice(n, n // 4 - len(centre), replace=False, p=pdf).tolist())
    mask = np.zeros((n, n), bool)
    mask[sorted(lines)] = True
    assert mask.mean() == 0.25
    y = ((fftc(sens * img, axes=(1, 2)) + 0.005 * rand_c(rng, sens.shape)) * mask).astype(np.complex64)
    zero_filled = SenseOp(sens, mask).adjoint(y)
    return sens, mask, y, img, zero_filled


def nrmse(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def test_l1_wavelet_reduces_objective_and_beats_zero_filling(cs_problem, xp, assert_on):
    sens, mask, y, img, zf = cs_problem
    lam = 3e-3
    hist = []
    res = l1_wavelet(
        xp.asarray(y),
        xp.asarray(sens),
        lam=lam,
        level=3,
        max_iter=100,
        callback=lambda k, x, info: hist.append(info),
        return_result=True,
    )
    assert_on(res.x)
    x = to_numpy(res.x)
    assert x.dtype == np.complex64 and x.shape == img.shape
    op = SenseOp(sens, mask)
    coef, _ = pywt.coeffs_to_array(pywt.wavedecn(x, "db4", mode="periodization", level=3))
    direct = 0.5 * np.linalg.norm(op.forward(x) - y) ** 2 + lam * np.abs(coef).sum()
    assert hist[-1]["objective"] == pytest.approx(direct, rel=1e-3)
    initial = 0.5 * np.linalg.norm(y) ** 2  # objective at x = 0
    assert direct < 0.01 * initial
    assert hist[-1]["objective"] < hist[0]["objective"]
    zf_err, l1_err = nrmse(zf, img), nrmse(x, img)
    assert zf_err > 0.18
    assert l1_err < 0.7 * zf_err


def test_tv_reduces_objective_and_beats_zero_filling(cs_problem, xp, assert_on):
    sens, mask, y, img, zf = cs_problem
    lam = 1e-2
    hist = []
    res = tv(
        xp.asarray(y),
        xp.asarray(sens),
        lam=lam,
        max_iter=100,
        callback=lambda k, x, info: hist.append(info),
        return_result=True,
    )
    assert_on(res.x)
    x = to_numpy(res.x)
    assert x.dtype == np.complex64 and x.shape == img.shape
    op = SenseOp(sens, mask)
    grad = np.stack([np.roll(x, -1, axis=a) - x for a in range(2)])
    direct = 0.5 * np.linalg.norm(op.forward(x) - y) ** 2 + lam * np.sqrt((np.abs(grad) ** 2).sum(0)).sum()
    assert hist[-1]["objective"] == pytest.approx(direct, rel=1e-3)
    assert direct < 0.01 * 0.5 * np.linalg.norm(y) ** 2
    assert hist[-1]["objective"] < hist[0]["objective"]
    tv_err = nrmse(x, img)
    assert tv_err < 0.5 * nrmse(zf, img)
    # anisotropic TV also works and improves on zero filling
    xa = tv(xp.asarray(y), xp.asarray(sens), lam=lam, max_iter=40, isotropic=False)
    assert_on(xa)
    assert nrmse(to_numpy(xa), img) < 0.7 * nrmse(zf, img)


def test_cs_bad_input(cs_problem, xp):
    sens, mask, y, img, zf = cs_problem
    sens, y = xp.asarray(sens), xp.asarray(y)
    for solver in (l1_wavelet, tv):
        with pytest.raises(InvalidParameterError, match="lam"):
            solver(y, sens, lam=0.0)
        with pytest.raises(ShapeMismatchError):
            solver(y[:4], sens, lam=0.01)
        with pytest.raises(ShapeMismatchError):
            solver(y, sens, lam=0.01, x0=xp.zeros((3, 3)))
    with pytest.raises(InvalidParameterError, match="wavelet"):
        l1_wavelet(y, sens, lam=0.01, wavelet="nope")
