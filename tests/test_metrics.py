"""Tests for mrirecon.metrics."""

import math

import numpy as np
import pytest
from scipy import ndimage

from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.metrics import hfen, nrmse, psnr, ssim


@pytest.fixture(scope="module")
def ref():
    """Smooth random 32^3 map with structure at several scales (seeded)."""
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((32, 32, 32))
    return (ndimage.gaussian_filter(noise, 2.0) * 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def mask():
    x, y, z = np.ogrid[:32, :32, :32]
    return (x - 15.5) ** 2 + (y - 15.5) ** 2 + (z - 15.5) ** 2 <= 13**2


def test_nrmse_values(ref, mask):
    assert nrmse(ref, ref) == 0.0
    assert nrmse(0.9 * ref, ref, demean=False) == pytest.approx(10.0, rel=1e-5)
    assert nrmse(0.9 * ref, ref, mask=mask, demean=False) == pytest.approx(10.0, rel=1e-5)
    # Scaling is preserved by demeaning: 0.5 * ref demeaned is 0.5 * (ref demeaned).
    assert nrmse(0.5 * ref, ref, mask=mask) == pytest.approx(50.0, rel=1e-5)
    # Zero estimate gives 100 %.
    assert nrmse(np.zeros_like(ref), ref, demean=False) == pytest.approx(100.0)


def test_nrmse_matches_formula(ref, mask):
    rng = np.random.default_rng(1)
    x = ref + 0.05 * rng.standard_normal(ref.shape)
    xm = x[mask] - x[mask].mean()
    rm = ref[mask].astype(np.float64) - ref[mask].mean()
    expected = 100 * np.linalg.norm(xm - rm) / np.linalg.norm(rm)
    assert nrmse(x, ref, mask=mask) == pytest.approx(expected, rel=1e-6)


def test_demean_invariance(ref, mask):
    rng = np.random.default_rng(2)
    x = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    shifted = x + 0.3
    for metric in (nrmse, hfen, psnr, ssim):
        a = metric(x, ref, mask=mask)
        b = metric(shifted, ref, mask=mask)
        c = metric(x, ref + 0.7, mask=mask)
        assert b == pytest.approx(a, rel=1e-6)
        assert c == pytest.approx(a, rel=1e-6)
    # Without demeaning an offset c is an error: 100 * c * sqrt(N) / ||ref||.
    rm = ref[mask].astype(np.float64)
    expected = 100 * 0.3 * math.sqrt(rm.size) / np.linalg.norm(rm)
    assert nrmse(ref + np.float32(0.3), ref, mask=mask, demean=False) == pytest.approx(expected, rel=1e-5)


def test_outside_mask_ignored(ref, mask):
    x = ref.copy()
    x[~mask] = 100.0
    assert nrmse(x, ref, mask=mask) == 0.0
    assert psnr(x, ref, mask=mask) == math.inf


def test_hfen(ref, mask):
    assert hfen(ref, ref) == 0.0
    assert hfen(ref, ref, mask=mask) == 0.0
    blurred = ndimage.gaussian_filter(ref, 1.0)
    value = hfen(blurred, ref, mask=mask)
    assert 10.0 < value < 100.0
    # More blur, more high-frequency error.
    assert hfen(ndimage.gaussian_filter(ref, 2.0), ref, mask=mask) > value
    # HFEN is a relative error: 0.9 * ref gives exactly 10 %.
    assert hfen(0.9 * ref, ref, mask=mask, demean=False) == pytest.approx(10.0, rel=1e-5)


def test_hfen_kernel_is_15_cubed(ref, monkeypatch):
    """HFEN filters with a LoG of sigma 1.5 voxels truncated to radius 7 (15^3 kernel)."""
    import mrirecon.metrics as metrics

    calls = []
    original = ndimage.gaussian_laplace

    def spy(data, sigma, **kwargs):
        calls.append((sigma, kwargs["truncate"]))
        return original(data, sigma, **kwargs)

    monkeypatch.setattr(metrics.ndimage, "gaussian_laplace", spy)
    hfen(ref * 1.1, ref)
    assert len(calls) == 2
    for sigma, truncate in calls:
        assert sigma == 1.5
        assert int(truncate * sigma + 0.5) == 7  # scipy's kernel radius
    # The response of an impulse really stops at 7 voxels.
    impulse = np.zeros((17, 17, 17))
    impulse[8, 8, 8] = 1.0
    response = original(impulse, 1.5, truncate=calls[0][1])
    support = np.flatnonzero(np.abs(response[:, 8, 8]) > 0)
    assert (support.min(), support.max()) == (1, 15)


def test_ssim(ref, mask):
    assert ssim(ref, ref) == pytest.approx(1.0, abs=1e-9)
    assert ssim(ref, ref, mask=mask) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(ref.shape)
    span = float(ref[mask].max() - ref[mask].min())
    values = [ssim(ref + s * span * noise, ref, mask=mask) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0
    # An explicit data_range larger than the default makes SSIM more forgiving.
    assert ssim(ref + 0.05 * span * noise, ref, mask=mask, data_range=10 * span) > values[1]


def test_psnr(ref, mask):
    assert psnr(ref, ref) == math.inf
    # A constant error of e without demeaning: PSNR = 20 log10(peak / e).
    e = 0.01
    peak = float(np.abs(ref[mask].astype(np.float64)).max())
    assert psnr(ref + e, ref, mask=mask, demean=False) == pytest.approx(20 * math.log10(peak / e), rel=1e-5)
    # Scaling: 0.9 * ref has RMSE = 0.1 * rms(ref).
    rm = ref[mask].astype(np.float64)
    expected = 20 * math.log10(peak / (0.1 * np.sqrt(np.mean(rm**2))))
    assert psnr(0.9 * ref, ref, mask=mask, demean=False) == pytest.approx(expected, rel=1e-5)


def test_errors(ref, mask):
    with pytest.raises(ShapeMismatchError, match=r"\(32, 32, 32\).*\(32, 32, 31\)"):
        nrmse(ref, ref[:, :, :31])
    with pytest.raises(ShapeMismatchError, match="mask"):
        hfen(ref, ref, mask=mask[:, :, :31])
    empty = np.zeros(ref.shape, dtype=bool)
    for metric in (nrmse, hfen, ssim, psnr):
        with pytest.raises(InvalidParameterError, match="no voxels"):
            metric(ref, ref, mask=empty)
        with pytest.raises(InvalidParameterError, match="ref"):
            metric(ref, np.zeros_like(ref), demean=False)
        with pytest.raises(InvalidParameterError, match="ref"):
            metric(ref, np.full_like(ref, 2.0))  # constant -> zero after demeaning
    with pytest.raises(InvalidParameterError, match="real"):
        nrmse(ref.astype(np.complex64), ref)
    bad = ref.copy()
    bad[16, 16, 16] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        nrmse(bad, ref)
    with pytest.raises(InvalidParameterError, match="sigma"):
        hfen(ref, ref, sigma=0)
    with pytest.raises(InvalidParameterError, match="data_range"):
        ssim(ref, ref, data_range=-1.0)
    with pytest.raises(InvalidParameterError, match="7 voxels"):
        ssim(ref[:, :, :5], ref[:, :, :5])
    with pytest.raises(ValueError):
        nrmse(ref, ref[:, :, :31])
