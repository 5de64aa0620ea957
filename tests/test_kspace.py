"""Dipole and gradient kernels: definition, symmetry, layouts, directions."""

import numpy as np
import pytest

from mrirecon import kspace
from mrirecon.errors import InvalidParameterError


def _direct_dipole(shape, vox, b):
    """D from its definition, on the full grid, without the Nyquist averaging."""
    k = np.meshgrid(*[np.fft.fftfreq(n, d=d) for n, d in zip(shape, vox)], indexing="ij")
    b = np.asarray(b, float) / np.linalg.norm(b)
    k2 = sum(ki**2 for ki in k)
    kb = sum(ki * bi for ki, bi in zip(k, b))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = 1 / 3 - kb**2 / k2
    d[0, 0, 0] = 0
    return d


@pytest.mark.parametrize("b", [(1, 0, 0), (0, 1, 0), (0, 0, 1)])
def test_dipole_along_each_axis(b):
    shape, vox = (8, 7, 6), (1.0, 1.5, 2.0)
    d = kspace.dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float64)
    assert d[0, 0, 0] == 0
    np.testing.assert_allclose(d, _direct_dipole(shape, vox, b), atol=1e-15)
    # along B0 the kernel is -2/3, perpendicular to it +1/3
    axis = int(np.argmax(b))
    idx = [0, 0, 0]
    idx[axis] = 1
    assert d[tuple(idx)] == pytest.approx(-2 / 3)
    idx = [0, 0, 0]
    idx[(axis + 1) % 3] = 1
    assert d[tuple(idx)] == pytest.approx(1 / 3)
    assert -2 / 3 - 1e-12 <= d.min() and d.max() <= 1 / 3 + 1e-12


def test_dipole_oblique_matches_definition_away_from_nyquist():
    shape, vox, b = (9, 7, 11), (1.0, 0.8, 1.3), (0.3, -0.2, 1.0)  # odd sizes: no Nyquist plane
    d = kspace.dipole_kernel(shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float64)
    np.testing.assert_allclose(d, _direct_dipole(shape, vox, b), atol=1e-15)
    # rotating the kernel's direction with the grid: D(k; b) for b along k is -2/3
    kvec = np.array([np.fft.fftfreq(9, 1.0)[2], np.fft.fftfreq(7, 0.8)[1], np.fft.fftfreq(11, 1.3)[3]])
    d2 = kspace.dipole_kernel(shape, voxel_size_mm=vox, b0_dir=kvec, dtype=np.float64)
    assert d2[2, 1, 3] == pytest.approx(-2 / 3)


@pytest.mark.parametrize("shape", [(8, 6, 4), (7, 6, 5), (6, 6, 6)])
def test_dipole_is_even_and_layouts_agree(shape):
    b = (0.4, 0.3, 1.0)
    d = kspace.dipole_kernel(shape, voxel_size_mm=(1, 1.2, 0.9), b0_dir=b, dtype=np.float64)
    # D(k) = D(-k) on the periodic grid (indices -m mod n), Nyquist planes included
    flipped = np.roll(d[::-1, ::-1, ::-1], 1, axis=(0, 1, 2))
    np.testing.assert_array_equal(d, flipped)
    half = kspace.dipole_kernel(shape, voxel_size_mm=(1, 1.2, 0.9), b0_dir=b, half=True, dtype=np.float64)
    np.testing.assert_array_equal(half, d[:, :, : shape[2] // 2 + 1])
    # so the dipole convolution of a real volume is real
    x = np.random.default_rng(0).standard_normal(shape)
    y = np.fft.ifftn(d * np.fft.fftn(x))
    assert np.abs(y.imag).max() < 1e-14


def test_dipole_scale_invariance_and_direction_normalisation():
    shape = (8, 8, 8)
    a = kspace.dipole_kernel(shape, voxel_size_mm=1.0, b0_dir=(0, 0, 1))
    b = kspace.dipole_kernel(shape, voxel_size_mm=2.0, b0_dir=(0, 0, 5))
    np.testing.assert_array_equal(a, b)  # isotropic scaling of k does not change D
    assert a.dtype == np.float32 and not a.flags.writeable
    assert kspace.dipole_kernel(shape, voxel_size_mm=1.0, b0_dir=(0, 0, 1)) is a  # cached


def test_gradient_kernels():
    shape = (6, 5, 4)
    g = kspace.gradient_sq_kernel(shape, dtype=np.float64)
    e = kspace.gradient_kernels(shape, dtype=np.complex128)
    np.testing.assert_allclose(sum(np.abs(ei) ** 2 for ei in e), g, atol=1e-14)
    assert g[0, 0, 0] == 0 and np.all(g.reshape(-1)[1:] > 0)
    x = np.random.default_rng(1).standard_normal(shape)
    for axis, ei in enumerate(e):
        direct = np.roll(x, -1, axis=axis) - x
        via_k = np.fft.ifftn(ei * np.fft.fftn(x)).real
        np.testing.assert_allclose(via_k, direct, atol=1e-12)
    half = kspace.gradient_sq_kernel(shape, half=True, dtype=np.float64)
    np.testing.assert_allclose(half, g[:, :, :3], atol=1e-15)


@pytest.mark.parametrize("shape", [(6, 5, 4), (5, 4, 7)])
def test_half_spectrum_weights_parseval(shape):
    x = np.random.default_rng(2).standard_normal(shape)
    w = kspace.half_spectrum_weights(shape, dtype=np.float64)
    assert np.sum(w * np.abs(np.fft.rfftn(x)) ** 2) / x.size == pytest.approx(np.sum(x**2), rel=1e-12)


@pytest.mark.parametrize("bad", [(0, 0, 0), (1, 2), (np.nan, 0, 1)])
def test_bad_directions(bad):
    with pytest.raises(InvalidParameterError, match="b0_dir"):
        kspace.dipole_kernel((4, 4, 4), b0_dir=bad)


@pytest.mark.parametrize("bad", [0, -1, (1, 1), (1, np.inf, 1)])
def test_bad_voxel_sizes(bad):
    with pytest.raises(InvalidParameterError, match="voxel_size_mm"):
        kspace.dipole_kernel((4, 4, 4), voxel_size_mm=bad)


def test_uncached_kernels_are_fresh_writable_copies():
    from mrirecon.kspace import dipole_kernel, gradient_sq_kernel

    kw = {"voxel_size_mm": (1.0, 1.2, 0.9), "b0_dir": (0.1, 0.2, 1.0), "half": True}
    cached = dipole_kernel((10, 9, 8), **kw)
    fresh = dipole_kernel((10, 9, 8), **kw, cache=False)
    assert not cached.flags.writeable and fresh.flags.writeable
    assert fresh is not cached and np.array_equal(fresh, cached)
    assert dipole_kernel((10, 9, 8), **kw) is cached  # the uncached call left the cache alone
    g, g2 = gradient_sq_kernel((10, 9, 8), half=True), gradient_sq_kernel((10, 9, 8), half=True, cache=False)
    assert g2.flags.writeable and np.array_equal(g, g2)
