"""Iterative SENSE: CG-SENSE against the closed form, L1-wavelet (FISTA) and TV (PDHG) baselines."""

import numpy as np
import pytest
import pywt
from test_sense_unfold import coil_maps, rand_c, simulate

from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.fft import fftc
from mrirecon.sense.iterative import cg_sense, l1_wavelet, power_iteration, tv
from mrirecon.sense.operator import SenseOp
from mrirecon.sense.unfold import lattice_mask, unfold
from mrirecon.solvers import SolverResult


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- CG-SENSE
@pytest.mark.parametrize("accel,lam", [(2, 0.0), (2, 0.01), (4, 0.01)])
def test_cg_sense_converges_to_unfold(accel, lam):
    spatial = (32, 32)
    sens = coil_maps(8, spatial)
    mask = lattice_mask(spatial, accel, offset=1)
    y, _ = simulate(sens, mask, seed=accel)
    ref = unfold(y, sens, lam=lam, accel=accel, offset=1)
    res = cg_sense(y, sens, lam=lam, max_iter=400, tol=1e-10, return_result=True)
    assert isinstance(res, SolverResult) and res.converged
    assert res.x.dtype == np.complex128
    assert rel(res.x, ref) < 1e-4


def test_cg_sense_caipi_converges_to_unfold():
    spatial = (16, 8, 4)
    sens = coil_maps(6, spatial, seed=4)
    mask = lattice_mask(spatial, (2, 2), offset=(1, 0), shift=1)
    y, _ = simulate(sens, mask, seed=3)
    ref = unfold(y, sens, lam=0.02, accel=(2, 2), offset=(1, 0), shift=1)
    x = cg_sense(y, sens, lam=0.02, mask=mask, max_iter=300, tol=1e-10)
    assert rel(x, ref) < 1e-4


def test_cg_sense_options_and_errors():
    spatial = (16, 16)
    sens = coil_maps(4, spatial, dtype=np.complex64)
    mask = lattice_mask(spatial, 2)
    y, _ = simulate(sens, mask)
    seen = []
    x = cg_sense(y, sens, lam=0.01, max_iter=5, callback=lambda k, x, info: seen.append(info["residual"]))
    assert x.dtype == np.complex64 and x.shape == spatial
    assert 1 <= len(seen) <= 5
    np.testing.assert_allclose(cg_sense(y, sens, lam=0.01, max_iter=5, mask=mask), x, rtol=1e-5)
    with pytest.raises(ShapeMismatchError):
        cg_sense(y[:, :8], sens)
    with pytest.raises(InvalidParameterError, match="zero"):
        cg_sense(np.zeros_like(y), sens)
    with pytest.raises(InvalidParameterError, match="lam"):
        cg_sense(y, sens, lam=-1.0)
    with pytest.raises(InvalidParameterError, match="max_iter"):
        cg_sense(y, sens, max_iter=0)


def test_power_iteration_bounds_normalised_maps():
    sens = coil_maps(6, (24, 20))
    lip = power_iteration(SenseOp(sens))
    assert 0.9 < lip <= 1 + 1e-6  # RSS-normalised maps, full sampling: ‖A‖ = 1
    lip4 = power_iteration(SenseOp(sens, lattice_mask((24, 20), 4)))
    assert 0 < lip4 <= 1 + 1e-6


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


def test_l1_wavelet_reduces_objective_and_beats_zero_filling(cs_problem):
    sens, mask, y, img, zf = cs_problem
    lam = 3e-3
    hist = []
    res = l1_wavelet(
        y,
        sens,
        lam=lam,
        level=3,
        max_iter=100,
        callback=lambda k, x, info: hist.append(info),
        return_result=True,
    )
    x = res.x
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


def test_tv_reduces_objective_and_beats_zero_filling(cs_problem):
    sens, mask, y, img, zf = cs_problem
    lam = 1e-2
    hist = []
    res = tv(
        y, sens, lam=lam, max_iter=100, callback=lambda k, x, info: hist.append(info), return_result=True
    )
    x = res.x
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
    xa = tv(y, sens, lam=lam, max_iter=40, isotropic=False)
    assert nrmse(xa, img) < 0.7 * nrmse(zf, img)


def test_cs_bad_input(cs_problem):
    sens, mask, y, img, zf = cs_problem
    for solver in (l1_wavelet, tv):
        with pytest.raises(InvalidParameterError, match="lam"):
            solver(y, sens, lam=0.0)
        with pytest.raises(ShapeMismatchError):
            solver(y[:4], sens, lam=0.01)
        with pytest.raises(ShapeMismatchError):
            solver(y, sens, lam=0.01, x0=np.zeros((3, 3)))
    with pytest.raises(InvalidParameterError, match="wavelet"):
        l1_wavelet(y, sens, lam=0.01, wavelet="nope")
