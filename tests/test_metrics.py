"""Tests for mrirecon.metrics."""

import math

import numpy as np
import pytest
from scipy import ndimage

from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.metrics import _ssim_map, hfen, nrmse, psnr, ssim


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


@pytest.fixture
def on(xp):
    """``on(a)``: a NumPy array moved to the test's array module."""
    return xp.asarray


def test_nrmse_values(ref, mask, on):
    ref_, mask_ = on(ref), on(mask)
    assert nrmse(ref_, ref_) == 0.0
    assert nrmse(0.9 * ref_, ref_, demean=False) == pytest.approx(10.0, rel=1e-5)
    assert nrmse(0.9 * ref_, ref_, mask=mask_, demean=False) == pytest.approx(10.0, rel=1e-5)
    # Scaling is preserved by demeaning: 0.5 * ref demeaned is 0.5 * (ref demeaned).
    assert nrmse(0.5 * ref_, ref_, mask=mask_) == pytest.approx(50.0, rel=1e-5)
    # Zero estimate gives 100 %.
    assert nrmse(on(np.zeros_like(ref)), ref_, demean=False) == pytest.approx(100.0)
    assert isinstance(nrmse(0.9 * ref_, ref_), float)


def test_nrmse_matches_formula(ref, mask, on):
    rng = np.random.default_rng(1)
    x = ref + 0.05 * rng.standard_normal(ref.shape)
    xm = x[mask] - x[mask].mean()
    rm = ref[mask].astype(np.float64) - ref[mask].mean()
    expected = 100 * np.linalg.norm(xm - rm) / np.linalg.norm(rm)
    assert nrmse(on(x), on(ref), mask=on(mask)) == pytest.approx(expected, rel=1e-6)
    # a NumPy mask goes with maps of either module
    assert nrmse(on(x), on(ref), mask=mask) == pytest.approx(expected, rel=1e-6)


def test_demean_invariance(ref, mask, on):
    rng = np.random.default_rng(2)
    x = ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32)
    shifted = x + 0.3
    for metric in (nrmse, hfen, psnr, ssim):
        a = metric(on(x), on(ref), mask=on(mask))
        b = metric(on(shifted), on(ref), mask=on(mask))
        c = metric(on(x), on(ref + 0.7), mask=on(mask))
        assert b == pytest.approx(a, rel=1e-6)
        assert c == pytest.approx(a, rel=1e-6)
        # the same number on both modules
        assert a == pytest.approx(metric(x, ref, mask=mask), rel=1e-9)
    # Without demeaning an offset c is an error: 100 * c * sqrt(N) / ||ref||.
    rm = ref[mask].astype(np.float64)
    expected = 100 * 0.3 * math.sqrt(rm.size) / np.linalg.norm(rm)
    got = nrmse(on(ref + np.float32(0.3)), on(ref), mask=on(mask), demean=False)
    assert got == pytest.approx(expected, rel=1e-5)


def test_outside_mask_ignored(ref, mask, on):
    x = ref.copy()
    x[~mask] = 100.0
    assert nrmse(on(x), on(ref), mask=on(mask)) == 0.0
    assert psnr(on(x), on(ref), mask=on(mask)) == math.inf


def test_hfen(ref, mask, on):
    ref_, mask_ = on(ref), on(mask)
    assert hfen(ref_, ref_) == 0.0
    assert hfen(ref_, ref_, mask=mask_) == 0.0
    blurred = ndimage.gaussian_filter(ref, 1.0)
    value = hfen(on(blurred), ref_, mask=mask_)
    assert 10.0 < value < 100.0
    assert value == pytest.approx(hfen(blurred, ref, mask=mask), rel=1e-9)
    # More blur, more high-frequency error.
    assert hfen(on(ndimage.gaussian_filter(ref, 2.0)), ref_, mask=mask_) > value
    # HFEN is a relative error: 0.9 * ref gives exactly 10 %.
    assert hfen(0.9 * ref_, ref_, mask=mask_, demean=False) == pytest.approx(10.0, rel=1e-5)


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


def test_ssim(ref, mask, on):
    ref_, mask_ = on(ref), on(mask)
    assert ssim(ref_, ref_) == pytest.approx(1.0, abs=1e-9)
    assert ssim(ref_, ref_, mask=mask_) == pytest.approx(1.0, abs=1e-9)
    rng = np.random.default_rng(3)
    noise = rng.standard_normal(ref.shape)
    span = float(ref[mask].max() - ref[mask].min())
    values = [ssim(on(ref + s * span * noise), ref_, mask=mask_) for s in (0.01, 0.05, 0.2)]
    assert 1.0 > values[0] > values[1] > values[2] > 0.0
    for s, v in zip((0.01, 0.05, 0.2), values):  # the same number on both modules
        assert v == pytest.approx(ssim(ref + s * span * noise, ref, mask=mask), rel=1e-9)
    # An explicit data_range larger than the default makes SSIM more forgiving.
    assert ssim(on(ref + 0.05 * span * noise), ref_, mask=mask_, data_range=10 * span) > values[1]


@pytest.mark.parametrize("shape", [(32, 32, 32), (9, 12, 7), (20, 15)])
def test_ssim_map_is_scikit_images(shape):
    # the SSIM map used for CuPy arrays, here on NumPy, against scikit-image's
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(4)
    a = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    b = a + 0.1 * rng.standard_normal(shape)
    for data_range in (float(np.ptp(a)), 3.0):
        _, expected = structural_similarity(b, a, data_range=data_range, full=True)
        np.testing.assert_allclose(_ssim_map(b, a, data_range), expected, rtol=1e-12, atol=1e-15)


def test_psnr(ref, mask, on):
    ref_, mask_ = on(ref), on(mask)
    assert psnr(ref_, ref_) == math.inf
    # A constant error of e without demeaning: PSNR = 20 log10(peak / e).
    e = 0.01
    peak = float(np.abs(ref[mask].astype(np.float64)).max())
    got = psnr(ref_ + e, ref_, mask=mask_, demean=False)
    assert got == pytest.approx(20 * math.log10(peak / e), rel=1e-5)
    # Scaling: 0.9 * ref has RMSE = 0.1 * rms(ref).
    rm = ref[mask].astype(np.float64)
    expected = 20 * math.log10(peak / (0.1 * np.sqrt(np.mean(rm**2))))
    assert psnr(0.9 * ref_, ref_, mask=mask_, demean=False) == pytest.approx(expected, rel=1e-5)


@pytest.mark.gpu
def test_maps_on_two_devices_raise(ref, xp):
    if xp is np:
        pytest.skip("needs two array modules")
    with pytest.raises(InvalidParameterError, match="different devices"):
        nrmse(xp.asarray(ref), ref)
    with pytest.raises(InvalidParameterError, match="mask is a CuPy array"):
        nrmse(ref, ref, mask=xp.ones(ref.shape, dtype=bool))


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
