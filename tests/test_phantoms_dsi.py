"""The DSI phantom slice and the q-space undersampling masks."""

import numpy as np
import pytest

from mrirecon import dsi
from mrirecon.phantoms.dsi import LABELS, dsi_phantom, undersampling_mask


@pytest.fixture(scope="module")
def ph():
    return dsi_phantom((32, 32), seed=0)


def test_shapes_regions_and_signal(ph):
    assert ph.signal.shape == (32, 32, 1, 515) and ph.signal.dtype == np.float32
    assert set(np.unique(ph.labels[ph.mask])) == set(LABELS) - {0}
    assert np.all(ph.signal[~ph.mask] == 0)
    s0 = ph.signal[..., 0][ph.mask]
    assert 800 < np.median(s0) < 1500
    # attenuation with b: the outer shell is well below b = 0, CSF the lowest
    outer = np.sum(ph.lattice.points**2, 1) == 25
    e = ph.signal[ph.mask][:, outer].mean(1) / s0
    csf = ph.labels[ph.mask] == 1
    assert e[csf].mean() < e[~csf].mean() < 0.5


def test_crossing_voxels_have_two_fibres_and_higher_gfa_than_csf(ph):
    cross = (ph.labels == 4)[..., 0]
    fr = ph.fractions[..., 0, :][cross]
    assert np.all(np.sum(fr > 0.2, axis=1) >= 2)
    g = dsi.gfa(dsi.odf(ph.signal[ph.mask], ph.lattice))
    lab = ph.labels[ph.mask]
    assert g[lab == 3].mean() > 2 * g[lab == 1].mean()


def test_rician_noise_level(ph):
    bg = ph.noisy[~ph.mask]
    # pure noise: Rayleigh with mean σ√(π/2)
    assert bg.mean() == pytest.approx(ph.sigma * np.sqrt(np.pi / 2), rel=0.03)
    assert ph.sigma == pytest.approx(ph.signal[..., 0][ph.mask].mean() / 30, rel=1e-6)


def test_seeds_change_geometry_and_noise():
    a, b = dsi_phantom((16, 16), seed=1), dsi_phantom((16, 16), seed=2)
    assert not np.allclose(a.signal, b.signal)
    np.testing.assert_array_equal(dsi_phantom((16, 16), seed=1).noisy, a.noisy)


def test_undersampling_is_variable_density_and_seeded():
    lat = dsi.q_lattice()
    idx = undersampling_mask(lat, accel=3, seed=0)
    assert idx.size == round(515 / 3) and idx[0] == 0 and np.unique(idx).size == idx.size
    r = np.linalg.norm(lat.points, axis=1)
    inner, outer = r <= 2.5, r > 4
    frac = lambda sel: np.isin(np.flatnonzero(sel), idx).mean()  # noqa: E731
    assert frac(inner) > 2 * frac(outer)
    np.testing.assert_array_equal(idx, undersampling_mask(lat, accel=3, seed=0))
    assert not np.array_equal(idx, undersampling_mask(lat, accel=3, seed=1))
