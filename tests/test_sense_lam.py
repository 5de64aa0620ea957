"""sense(): the fast path equals converged CG on the same objective; automatic λ; accel check."""

import numpy as np
import pytest

from mrirecon.errors import InvalidParameterError
from mrirecon.fft import fftc
from mrirecon.sense import coils, iterative, recon, sampling
from mrirecon.sense.lam import lam_curve


def _case(shape=(32, 24), nc=6, acs=8, offset=1, seed=1):
    rng = np.random.default_rng(seed)
    sens = coils.simulate_coil_maps(shape, nc)
    img = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    mask = sampling.uniform_mask(shape, 4, acs=acs, offset=offset)
    axes = tuple(range(1, len(shape) + 1))
    k = fftc(sens * img, axes=axes) * mask
    k = (k + 0.01 * rng.standard_normal(k.shape) * mask).astype(np.complex64)
    return k, sens


@pytest.mark.parametrize("shape", [(32, 24), (32, 20, 6)])
@pytest.mark.parametrize("acs", [0, 8])
def test_sense_equals_converged_cg(shape, acs):
    k, sens = _case(shape, acs=acs)
    ref = iterative.cg_sense(k, sens, lam=1e-2, max_iter=400, tol=1e-10)
    x, info = recon.sense(k, sens, lam=1e-2, acs_iter=200, tol=1e-8, return_info=True)
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-4
    assert info["accel"] == 4 and info["offset"] == 1
    assert (info["pcg_iterations"] == 0) == (acs == 0)


def test_sense_scales_with_data():
    k, sens = _case()
    x1 = recon.sense(k, sens, lam=1e-2)
    x2 = recon.sense(3 * k, sens, lam=1e-2)
    np.testing.assert_allclose(x2, 3 * x1, rtol=1e-4, atol=1e-5)


def test_lam_curve_matches_direct_solves():
    rng = np.random.default_rng(0)
    g, c, r = 50, 6, 3
    e = rng.standard_normal((g, c, r)) + 1j * rng.standard_normal((g, c, r))
    b = rng.standard_normal((g, c)) + 1j * rng.standard_normal((g, c))
    gram = np.einsum("gcr,gcs->grs", e.conj(), e)
    h = np.einsum("gcr,gc->gr", e.conj(), b)
    lams = np.array([1e-3, 0.1, 10.0])

    def proj(v):
        return np.abs(np.einsum("gru,gr->gu", np.conj(v), h)) ** 2

    curve = lam_curve(gram, proj, float(np.sum(np.abs(b) ** 2)), b.size, lams=lams)
    for i, lam in enumerate(lams):
        x = np.linalg.solve(gram + lam * np.eye(r), h[..., None])[..., 0]
        res = np.sum(np.abs(np.einsum("gcr,gr->gc", e, x) - b) ** 2)
        hat = np.einsum("gcr,grs,gds->gcd", e, np.linalg.inv(gram + lam * np.eye(r)), e.conj())
        trace = np.real(np.trace(hat, axis1=1, axis2=2)).sum()
        np.testing.assert_allclose(curve.res[i], res, rtol=1e-8)
        np.testing.assert_allclose(curve.trace[i], trace, rtol=1e-8)
        np.testing.assert_allclose(curve.xnorm[i], np.sum(np.abs(x) ** 2), rtol=1e-8)


@pytest.mark.parametrize("crit", ["auto", "gcv", "sure", "upre", "discrepancy"])
def test_auto_lam_is_recorded(crit):
    k, sens = _case()
    x, info = recon.sense(k, sens, lam=crit, return_info=True)
    assert info["lam"] > 0 and np.isfinite(x).all()
    assert info["lam_selection"].startswith("gcv" if crit == "auto" else crit)
    lams = info["lam_curve"].lams
    assert lams[0] <= info["lam"] <= lams[-1]


def test_accel_contradiction_names_both():
    k, sens = _case()
    with pytest.raises(InvalidParameterError, match="accel=2 contradicts.*R=4"):
        recon.sense(k, sens, lam=1e-2, accel=2)


def test_bad_lam():
    k, sens = _case()
    with pytest.raises(InvalidParameterError):
        recon.sense(k, sens, lam="best")
    with pytest.raises(InvalidParameterError):
        recon.sense(k, sens, lam=-1.0)
