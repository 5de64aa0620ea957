"""Coil sensitivities, noise whitening, coil compression (mrirecon.sense.coils).

Functions that take coil data take the ``xp`` fixture (NumPy always, CuPy where
a GPU is present); the simulators make NumPy arrays from shapes.
"""

import numpy as np
import pytest

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.fft import fftc, ifftc
from mrirecon.phantoms import brain_slice
from mrirecon.sense.coils import (
    apply_coil_matrix,
    coil_compress,
    espirit_maps,
    noise_covariance,
    prewhiten,
    ratio_maps,
    simulate_coil_maps,
)

N, NC = 64, 8


@pytest.fixture(scope="module")
def data():
    maps = simulate_coil_maps((N, N), NC)
    image = brain_slice((N, N), fov_mm=240.0)  # the head clear of the FOV edges
    kspace = fftc(maps * image, axes=(-2, -1))
    obj = np.abs(image) > 0.1 * np.abs(image).max()
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    # the maps ESPIRiT / ratio estimate: unit norm over coils, coil 0 real
    normalised = maps * np.exp(-1j * np.angle(maps[0])) / rss
    return maps, image, kspace, obj, rss, normalised


def test_simulated_maps_normalised_smooth_distinct(data):
    maps, *_ = data
    assert isinstance(maps, np.ndarray)  # made from a shape: always on the host
    assert maps.shape == (NC, N, N) and maps.dtype == np.complex64
    assert np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)).max() == pytest.approx(1.0, abs=1e-6)
    # smooth: second differences tiny next to the maps (measured 0.003 and 0.004)
    for axis in (1, 2):
        assert np.linalg.norm(np.diff(maps, 2, axis=axis)) < 0.01 * np.linalg.norm(maps)
    gram = np.abs(np.einsum("cxy,dxy->cd", maps.conj(), maps))
    d = np.sqrt(np.diag(gram))
    assert (gram / d[:, None] / d[None, :] - np.eye(NC)).max() < 0.8  # measured 0.66


@pytest.mark.parametrize("n_coils", [16, 32])
def test_simulated_maps_volume_rings(n_coils):
    maps = simulate_coil_maps((20, 20, 12), n_coils, voxel_size_mm=(10.0, 10.0, 10.0))
    assert maps.shape == (n_coils, 20, 20, 12)
    assert np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)).max() == pytest.approx(1.0, abs=1e-6)
    # several rings along z: the sensitivity profile along z differs between coils
    prof = np.abs(maps[:, 10, 10, :])
    peak_z = np.argmax(prof, axis=1)
    assert len(set(peak_z.tolist())) > 1


def test_simulated_maps_errors():
    with pytest.raises(InvalidParameterError):
        simulate_coil_maps((32,), 8)
    with pytest.raises(InvalidParameterError):
        simulate_coil_maps((32, 32), 8, radius_factor=0.9)
    with pytest.raises(InvalidParameterError):
        simulate_coil_maps((32, 32), 8, voxel_size_mm=1.0, fov_mm=100.0)


def test_noise_covariance_properties():
    cov = noise_covariance(8, correlation=0.2, seed=1)
    assert np.allclose(cov, cov.conj().T)
    assert np.linalg.eigvalsh(cov).min() > 0
    corr = np.abs(cov) / np.sqrt(np.outer(np.diag(cov).real, np.diag(cov).real))
    assert corr[0, 1] == pytest.approx(0.2) and corr[0, 7] == pytest.approx(0.2)  # ring neighbours
    assert corr[0, 4] == pytest.approx(0.2**4)
    assert np.diag(cov).real.std() > 0.01
    with pytest.raises(InvalidParameterError):
        noise_covariance(8, correlation=1.0)


def test_prewhiten_noise_scan_gives_identity(xp, assert_on):
    cov = noise_covariance(NC, correlation=0.3, seed=0)
    assert isinstance(cov, np.ndarray)
    chol = np.linalg.cholesky(cov)
    rng = np.random.default_rng(0)

    def noise(n):
        white = (rng.standard_normal((NC, n)) + 1j * rng.standard_normal((NC, n))) / np.sqrt(2)
        return chol @ white

    scan = noise(20000)
    data = noise(20000)  # independent noise, whitened with the scan's estimate
    white, w = prewhiten(xp.asarray(data.astype(np.complex64)), noise=xp.asarray(scan))
    assert_on(white, w)
    white, w = to_numpy(white), to_numpy(w)
    assert white.dtype == np.complex64 and w.dtype == np.complex64
    assert w.shape == (NC, NC) and np.allclose(w, np.tril(w))
    est = white @ white.conj().T / white.shape[1]
    assert np.abs(est - np.eye(NC)).max() < 0.05  # Monte-Carlo, 20000 samples
    # with the exact covariance (a host matrix, also for device data), W C W^H = I
    _, w_exact = prewhiten(xp.asarray(data), covariance=cov)
    assert_on(w_exact)
    w_exact = to_numpy(w_exact)
    assert np.allclose(w_exact @ cov @ w_exact.conj().T, np.eye(NC), atol=1e-10)
    with pytest.raises(InvalidParameterError):
        prewhiten(xp.asarray(data), noise=xp.asarray(scan), covariance=cov)
    with pytest.raises(ShapeMismatchError):
        prewhiten(xp.asarray(data), covariance=cov[:4, :4])
    with pytest.raises(InvalidParameterError, match="positive definite"):
        prewhiten(xp.asarray(data), covariance=-np.eye(NC))


def test_whitening_commutes_with_sensitivity_encoding(data, xp, assert_on):
    maps, image, kspace, *_ = data
    cov = noise_covariance(NC, correlation=0.2)
    white_k, w = prewhiten(xp.asarray(kspace), covariance=cov)
    white_maps = apply_coil_matrix(w, xp.asarray(maps))
    assert_on(white_k, w, white_maps)
    assert np.allclose(
        to_numpy(fftc(white_maps * xp.asarray(image), axes=(-2, -1))), to_numpy(white_k), atol=1e-5
    )
    # a host matrix applies to device data (it is small and copied once)
    np.testing.assert_allclose(
        to_numpy(apply_coil_matrix(to_numpy(w), xp.asarray(maps))), to_numpy(white_maps)
    )


def test_coil_compression(data, xp, assert_on):
    _, _, kspace, *_ = data
    k = xp.asarray(kspace)
    comp, mat, energy = coil_compress(k, 5, return_energy=True)
    assert_on(comp, mat)
    assert isinstance(energy, float)
    comp, mat = to_numpy(comp), to_numpy(mat)
    assert comp.shape == (5, N, N) and mat.shape == (5, NC)
    assert energy >= 0.99  # measured 0.997
    assert np.sum(np.abs(comp) ** 2) / np.sum(np.abs(kspace) ** 2) == pytest.approx(energy, rel=1e-4)
    full, mat8 = coil_compress(k, NC)
    assert np.allclose(to_numpy(mat8 @ mat8.conj().T), np.eye(NC), atol=1e-5)
    back = to_numpy(apply_coil_matrix(mat8.conj().T, full))
    assert np.abs(back - kspace).max() < 1e-5 * np.abs(kspace).max()
    # the ACS block gives nearly the same subspace
    _, mat_acs = coil_compress(k, 5, calib=k[:, 20:44, :])
    assert_on(mat_acs)
    assert np.linalg.norm(to_numpy(mat_acs) @ mat.conj().T, ord=2) > 0.9
    with pytest.raises(InvalidParameterError):
        coil_compress(k, NC + 1)


def _inner(est, true):
    num = np.abs(np.sum(est.conj() * true, axis=0))
    den = np.sqrt(np.sum(np.abs(est) ** 2, axis=0) * np.sum(np.abs(true) ** 2, axis=0))
    return num / np.where(den > 0, den, 1)


def test_espirit_recovers_maps_and_image(data, xp, assert_on):
    maps, image, kspace, obj, rss, normalised = data
    undersampled = kspace.copy()
    undersampled[:, ::2] *= 0  # only the ACS block matters
    undersampled[:, 20:44] = kspace[:, 20:44]
    est, lam = espirit_maps(xp.asarray(undersampled), acs=24, kernel=6)
    assert_on(est, lam)
    est, lam = to_numpy(est), to_numpy(lam)
    assert est.shape == maps.shape and lam.shape == (N, N)
    assert est.dtype == np.complex64 and lam.dtype == np.float32
    mask = obj & (lam > 0.95)
    assert mask.sum() > 0.99 * obj.sum()  # measured 1.0
    inner = _inner(est, normalised)
    assert np.median(inner[obj]) > 0.98  # measured 0.99999
    assert inner[mask].min() > 0.99  # measured 0.9998
    # coil combination with the ESPIRiT maps gives image * RSS (phase of coil 0)
    coil_images = ifftc(kspace, axes=(-2, -1))
    combined = np.sum(est.conj() * coil_images, axis=0)
    truth = image * rss * np.exp(1j * np.angle(maps[0]))
    err = np.linalg.norm((combined - truth)[mask]) / np.linalg.norm(truth[mask])
    assert err < 0.02  # measured 0.005
    # power iteration agrees with eigh inside the mask
    est_p, lam_p = espirit_maps(xp.asarray(undersampled), method="power")
    assert_on(est_p, lam_p)
    est_p, lam_p = to_numpy(est_p), to_numpy(lam_p)
    assert np.abs(est_p - est)[:, mask].max() < 1e-4
    assert np.abs(lam_p - lam)[mask].max() < 1e-4


def test_ratio_maps(data, xp, assert_on):
    maps, image, kspace, obj, rss, normalised = data
    est = ratio_maps(xp.asarray(kspace), acs_lines=24)
    assert_on(est)
    est = to_numpy(est)
    assert est.shape == maps.shape and est.dtype == np.complex64
    inner = _inner(est, normalised)
    assert np.median(inner[obj]) > 0.98 and np.percentile(inner[obj], 5) > 0.95  # measured 0.9999, 0.9995
    coil_images = ifftc(kspace, axes=(-2, -1))
    power = np.sum(np.abs(est) ** 2, axis=0)
    combined = np.sum(est.conj() * coil_images, axis=0) / np.where(power > 0, power, 1)
    truth = image * rss * np.exp(1j * np.angle(maps[0]))
    assert np.linalg.norm((combined - truth)[obj]) / np.linalg.norm(truth[obj]) < 0.05  # measured 0.011


def test_ratio_maps_volume_and_window(xp, assert_on):
    maps = simulate_coil_maps((16, 16, 8), 4)
    k = fftc(maps, axes=(-3, -2, -1))
    for window in ("hann", "kaiser", "none"):
        est = ratio_maps(xp.asarray(k), acs_lines=(8, 8), window=window)
        assert_on(est)
        assert est.shape == maps.shape
        power = to_numpy((abs(est) ** 2).sum(axis=0))
        assert np.allclose(power[power > 0], 1.0, atol=1e-5)  # unit norm over coils where supported


def test_espirit_errors(xp):
    with pytest.raises(ShapeMismatchError):
        espirit_maps(xp.zeros((4, 8, 8, 8), np.complex64))
    with pytest.raises(InvalidParameterError):
        espirit_maps(xp.ones((4, 32, 32), np.complex64), acs=8, kernel=10)
    with pytest.raises(InvalidParameterError, match="empty"):
        espirit_maps(xp.zeros((4, 32, 32), np.complex64), acs=8, kernel=4)
