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
    assert info["lam_selection"].startswith("discrepancy" if crit == "auto" else crit)
    if crit in ("auto", "discrepancy"):  # on the full problem: not restricted to the lattice grid
        assert info["lam_solves"] >= 1
    else:
        lams = info["lam_curve"].lams
        assert lams[0] <= info["lam"] <= lams[-1]


@pytest.mark.parametrize("noise_sd", [None, 0.1, 0.2])
def test_auto_lam_meets_the_discrepancy_on_the_full_problem(noise_sd):
    """The residual of the chosen λ, computed through the dense operator, is n σ² (n: acquired samples × coils)."""
    shape, nc = (32, 24), 8
    rng = np.random.default_rng(3)
    sens = coils.simulate_coil_maps(shape, nc)
    img = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    mask = sampling.uniform_mask(shape, 4, acs=8, offset=1)
    sigma = 0.1
    noise = sigma / np.sqrt(2) * (rng.standard_normal((nc, *shape)) + 1j * rng.standard_normal((nc, *shape)))
    k = ((fftc(sens * img, axes=(1, 2)) + noise) * mask).astype(np.complex64)
    x, info = recon.sense(k, sens, noise_sd=noise_sd, acs_iter=60, tol=1e-7, return_info=True)
    s2 = info["noise_sd"] ** 2
    if noise_sd is None:  # σ estimated from the lattice residual
        assert abs(info["noise_sd"] / sigma - 1) < 0.15
    else:
        assert info["noise_sd"] == pytest.approx(noise_sd)
    res = float(np.sum(np.abs(fftc(sens * x, axes=(1, 2)) * mask - k) ** 2))
    n = nc * int(mask.sum())
    assert res == pytest.approx(n * s2, rel=0.035)
    assert info["lam_residual_ratio"] == pytest.approx(res / (n * s2), rel=1e-3)
    # the returned image is the fixed-λ solution of that λ
    ref = iterative.cg_sense(k, sens, lam=info["lam"], max_iter=400, tol=1e-10)
    assert np.linalg.norm(x - ref) / np.linalg.norm(ref) < 1e-3
    # more noise, more regularisation
    if noise_sd is not None:
        _, info2 = recon.sense(k, sens, noise_sd=2 * noise_sd, return_info=True)
        assert info2["lam"] > info["lam"]


def test_auto_lam_is_scale_invariant():
    """Data × c (σ × c): the same λ, the image × c."""
    k, sens = _case(acs=8)
    x1, i1 = recon.sense(k, sens, return_info=True)
    x2, i2 = recon.sense(4 * k, sens, return_info=True)
    assert i2["lam"] == pytest.approx(i1["lam"], rel=1e-3)
    np.testing.assert_allclose(x2, 4 * x1, rtol=1e-3, atol=1e-4)


def test_auto_lam_needs_sigma_when_coils_do_not_exceed_accel():
    k, sens = _case(nc=4, acs=8)
    with pytest.raises(InvalidParameterError, match="noise_sd"):
        recon.sense(k, sens)
    x = recon.sense(k, sens, noise_sd=0.01)
    assert np.isfinite(x).all()


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
