"""Masks from magnitude images; erosion by a ball in mm."""

import numpy as np
import pytest
from scipy import ndimage

from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.qsm.masking import erode, mask_from_magnitude

N = 40


def _ellipsoid(shape, centre, semi_axes):
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre, semi_axes)) <= 1.0


def _head(seed=0, n=N):
    """Ellipsoid of intensity 1 with a dark hole inside, a bright speck outside, noise 0.05."""
    rng = np.random.default_rng(seed)
    head = _ellipsoid((n, n, n), (n / 2, n / 2 - 1, n / 2), (15.0, 17.0, 13.0))
    hole = _ellipsoid((n, n, n), (n / 2 + 2, n / 2, n / 2), (4.0, 6.0, 3.0))
    image = head.astype(float)
    image[hole] = 0.1
    image[1:3, 1:3, 1:3] = 1.0  # a detached bright speck in a corner
    noisy = np.abs(image + 0.05 * (rng.standard_normal(image.shape) + 1j * rng.standard_normal(image.shape)))
    return noisy.astype(np.float32), head


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _eroded_truth(head):
    return ndimage.binary_erosion(head, structure=ndimage.generate_binary_structure(3, 1))


def test_mask_otsu_fills_hole_and_matches_eroded_head():
    image, head = _head()
    mask = mask_from_magnitude(image)
    assert mask.dtype == bool and mask.shape == image.shape
    truth = _eroded_truth(head)
    assert _dice(mask, truth) > 0.98  # measured 1.0 (seeds 0-3: >= 0.99996)
    assert mask[N // 2 + 2, N // 2, N // 2]  # the hole is filled
    assert not mask[1:3, 1:3, 1:3].any()  # the speck is dropped


def test_mask_threshold_fraction():
    image, head = _head(seed=1)
    mask = mask_from_magnitude(image, threshold=0.5)
    assert _dice(mask, _eroded_truth(head)) > 0.98  # measured 1.0


def test_mask_options():
    image, head = _head(seed=2)
    raw = mask_from_magnitude(image, fill_holes=False, erode_voxels=0, largest_component=False)
    assert raw[1:3, 1:3, 1:3].all()  # speck kept
    assert not raw[N // 2 + 2, N // 2, N // 2]  # hole kept
    filled = mask_from_magnitude(image, erode_voxels=0)
    assert _dice(filled, head) > 0.98  # measured 1.0
    two = mask_from_magnitude(image, erode_voxels=2)
    assert np.count_nonzero(two) < np.count_nonzero(mask_from_magnitude(image)) < np.count_nonzero(filled)
    np.testing.assert_array_equal(two, erode(filled, radius_mm=2.0, voxel_size_mm=1.0))


def test_mask_multi_echo_root_sum_of_squares():
    image, head = _head(seed=3)
    echoes = np.stack([image, 0.6 * image, 0.3 * image])
    mask = mask_from_magnitude(echoes)
    assert mask.shape == image.shape
    assert _dice(mask, _eroded_truth(head)) > 0.98


def test_mask_errors():
    image, _ = _head()
    with pytest.raises(InvalidParameterError, match="threshold"):
        mask_from_magnitude(image, threshold=1.5)
    with pytest.raises(InvalidParameterError, match="threshold"):
        mask_from_magnitude(image, threshold=0.0)
    with pytest.raises(InvalidParameterError, match="erode_voxels"):
        mask_from_magnitude(image, erode_voxels=-1)
    with pytest.raises(InvalidParameterError, match="constant"):
        mask_from_magnitude(np.ones((8, 8, 8)))
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        mask_from_magnitude(bad)
    with pytest.raises(ShapeMismatchError, match="3-D"):
        mask_from_magnitude(image[0])
    spike = np.zeros((8, 8, 8))
    spike[4, 4, 4] = 1.0
    with pytest.raises(InvalidParameterError, match="removed the whole mask"):
        mask_from_magnitude(spike)
    # (only reachable with non-positive values: a fraction of a negative percentile lies above the maximum)
    negative = -1.0 - np.random.default_rng(5).random((8, 8, 8))
    with pytest.raises(InvalidParameterError, match="no voxel above"):
        mask_from_magnitude(negative, threshold=0.5)


@pytest.mark.parametrize(
    ("radius_mm", "voxel_size_mm"),
    [(1.0, (1.0, 1.0, 1.0)), (2.0, (1.0, 1.0, 1.0)), (1.5, (0.5, 0.5, 1.5)), (3.0, (1.0, 1.0, 2.0))],
)
def test_erode_equals_binary_erosion_with_ball(radius_mm, voxel_size_mm):
    rng = np.random.default_rng(4)
    mask = ndimage.gaussian_filter(rng.random((24, 25, 26)), 3) > 0.5
    half = [int(np.floor(radius_mm / v)) for v in voxel_size_mm]
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    ball = sum((g * v) ** 2 for g, v in zip(grids, voxel_size_mm)) <= radius_mm**2
    expected = ndimage.binary_erosion(mask, structure=ball, border_value=0)
    out = erode(mask, radius_mm=radius_mm, voxel_size_mm=voxel_size_mm)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)


def test_erode_sphere_radius():
    sphere = _ellipsoid((32, 32, 32), (16, 16, 16), (12, 12, 12))
    out = erode(sphere, radius_mm=6.0, voxel_size_mm=2.0)  # 3 voxels
    # digital balls: the eroded sphere of radius 12 holds the one of radius 9, within one voxel
    assert not (_ellipsoid((32, 32, 32), (16, 16, 16), (9, 9, 9)) & ~out).any()
    assert not (out & ~_ellipsoid((32, 32, 32), (16, 16, 16), (10, 10, 10))).any()
    np.testing.assert_array_equal(erode(sphere, radius_mm=0.0, voxel_size_mm=1.0), sphere)
    assert not erode(np.zeros((5, 5, 5), dtype=bool), radius_mm=1.0).any()


def test_erode_errors():
    mask = np.ones((4, 4, 4), dtype=bool)
    with pytest.raises(InvalidParameterError, match="radius_mm"):
        erode(mask, radius_mm=-1.0)
    with pytest.raises(InvalidParameterError, match="voxel_size_mm"):
        erode(mask, radius_mm=1.0, voxel_size_mm=(1.0, 0.0, 1.0))
    with pytest.raises(ShapeMismatchError, match="3-D"):
        erode(mask[0], radius_mm=1.0)
