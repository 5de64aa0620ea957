"""4-D local-field series: every volume inverted with one kernel and one plan, one λ for the series."""

import numpy as np
import pytest

from mrirecon import qsm
from mrirecon.errors import ShapeMismatchError
from mrirecon.phantoms import head_phantom, simulate_field


@pytest.fixture(scope="module")
def series():
    ph = head_phantom((32, 32, 32))
    field = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask)
    rng = np.random.default_rng(3)
    # a BOLD-like series: the same anatomy scaled a little per volume, plus noise
    scale = 1.0 + 0.05 * np.sin(np.linspace(0, np.pi, 6))
    vols = field[..., None] * scale + 0.002 * rng.standard_normal((*field.shape, 6)) * ph.mask[..., None]
    return ph, vols.astype(np.float32), scale


@pytest.mark.parametrize("method", ["l2", "tkd"])
def test_series_equals_volume_by_volume(series, method):
    ph, vols, _ = series
    kw = {"voxel_size_mm": ph.voxel_size_mm}
    invert = (
        (lambda f: qsm.closed_form_l2(f, ph.mask, lam=0.01, **kw))
        if method == "l2"
        else (lambda f: qsm.tkd(f, ph.mask, **kw))
    )
    chi = invert(vols)
    assert chi.shape == vols.shape and chi.dtype == np.float32
    for t in range(vols.shape[3]):
        np.testing.assert_allclose(chi[..., t], invert(np.ascontiguousarray(vols[..., t])), rtol=0, atol=1e-6)


def test_series_is_linear_in_each_volume(series):
    """Volume t scaled by c_t gives χ scaled by c_t (no cross-talk between volumes)."""
    ph, vols, _ = series
    base = np.repeat(vols[..., :1], 4, axis=3)
    c = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    chi = qsm.closed_form_l2(base * c, ph.mask, lam=0.02, voxel_size_mm=ph.voxel_size_mm)
    ref = qsm.closed_form_l2(
        np.ascontiguousarray(base[..., 0]), ph.mask, lam=0.02, voxel_size_mm=ph.voxel_size_mm
    )
    for t in range(4):
        np.testing.assert_allclose(chi[..., t], c[t] * ref, rtol=1e-4, atol=1e-6)


def test_auto_lambda_is_one_lambda_for_the_series(series):
    ph, vols, _ = series
    lam = qsm.lcurve(np.ascontiguousarray(vols[..., 0]), ph.mask, voxel_size_mm=ph.voxel_size_mm).lam
    auto = qsm.closed_form_l2(vols, ph.mask, lam="auto", voxel_size_mm=ph.voxel_size_mm)
    fixed = qsm.closed_form_l2(vols, ph.mask, lam=lam, voxel_size_mm=ph.voxel_size_mm)
    np.testing.assert_array_equal(auto, fixed)


def test_series_with_a_4d_mask_and_bad_shapes(series):
    ph, vols, _ = series
    m4 = np.repeat(ph.mask[..., None], vols.shape[3], axis=3)
    np.testing.assert_array_equal(
        qsm.closed_form_l2(vols, m4, lam=0.01, voxel_size_mm=ph.voxel_size_mm),
        qsm.closed_form_l2(vols, ph.mask, lam=0.01, voxel_size_mm=ph.voxel_size_mm),
    )
    with pytest.raises(ShapeMismatchError):
        qsm.closed_form_l2(vols, m4[..., :2], lam=0.01)
    with pytest.raises(ShapeMismatchError):
        qsm.closed_form_l2(vols[..., :0], ph.mask, lam=0.01)
