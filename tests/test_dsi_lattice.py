"""The q-lattice and its identification from bvals/bvecs (dipy's q-table as the reference)."""

import numpy as np
import pytest

from mrirecon import dsi
from mrirecon.errors import InvalidParameterError, ShapeMismatchError


def test_standard_lattice_has_515_unique_points_within_radius_5():
    lat = dsi.q_lattice()
    assert lat.size == 515
    assert np.all(lat.points[0] == 0)
    assert np.max(np.sum(lat.points**2, axis=1)) == 25
    assert len({tuple(p) for p in lat.points}) == 515
    # every integer point of the 11³ grid within radius 5 is there
    g = np.arange(-5, 6)
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    assert np.sum(np.sum(cube**2, 1) <= 25) == 515


def test_identify_round_trip_fsl_layout_repeats_and_rounding():
    lat = dsi.q_lattice(b_max_s_mm2=4000)
    rng = np.random.default_rng(0)
    order = rng.permutation(lat.size)
    b = np.concatenate([[0, 5], np.round(lat.bvals()[order])])  # two b = 0 (one at b = 5)
    g = np.concatenate([[[0, 0, 0], [1, 0, 0]], np.round(lat.bvecs()[order], 4)])
    found, index = dsi.identify(b, g.T)  # FSL's (3, n)
    assert found.radius_sq == 25 and found.size == 515
    assert found.b_max_s_mm2 == pytest.approx(4000, rel=1e-3)
    assert np.array_equal(index[2:], order) and np.all(index[:2] == 0)


def test_identify_matches_dipy_q_table():
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dsi import create_qtable

    lat = dsi.q_lattice(b_max_s_mm2=3000)
    idx = np.sort(np.random.default_rng(1).choice(np.arange(1, 515), 170, replace=False))
    idx = np.concatenate([[0], idx])
    b, g = lat.bvals()[idx], lat.bvecs()[idx]
    gtab = gradient_table(b, bvecs=g)
    found, index = dsi.identify(b, g)
    assert np.array_equal(found.points[index], create_qtable(gtab, 8).astype(int))


def test_undersampled_data_missing_the_outer_shell_still_complete_to_radius_5():
    lat = dsi.q_lattice()
    inner = np.flatnonzero(np.sum(lat.points**2, 1) <= 20)
    found, index = dsi.identify(lat.bvals()[inner], lat.bvecs()[inner])
    assert found.radius_sq == 25 and found.b_max_s_mm2 == pytest.approx(4000)
    assert np.array_equal(index, inner)
    small, _ = dsi.identify(lat.bvals()[inner], lat.bvecs()[inner], radius_sq=20)
    assert small.radius_sq == 20


def test_q_encoded_in_vector_length_is_understood():
    lat = dsi.q_lattice(b_max_s_mm2=5000)
    k = lat.points.astype(float) / 5.0  # |g| = |k| / r_max, one nominal b-value
    b = np.full(lat.size, 5000.0)
    b[0] = 0
    found, index = dsi.identify(b, k)
    assert found.size == 515 and np.array_equal(index, np.arange(515))


@pytest.mark.parametrize(
    "bvals,bvecs,match",
    [
        (np.full(10, 1000.0), np.eye(3)[np.arange(10) % 3], "no b = 0"),
        (np.zeros(4), np.zeros((4, 3)), "no diffusion-weighted"),
        (np.array([0, 1000, np.nan]), np.eye(3), "NaN"),
    ],
)
def test_bad_schemes_are_refused(bvals, bvecs, match):
    with pytest.raises(InvalidParameterError, match=match):
        dsi.identify(bvals, bvecs)


def test_a_single_shell_is_not_a_lattice():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((60, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    b = np.concatenate([[0], np.full(60, 3000.0)])
    with pytest.raises(InvalidParameterError, match="not on a Cartesian q-space lattice"):
        dsi.identify(b, np.vstack([[0, 0, 0], g]))


def test_bvecs_count_must_match():
    with pytest.raises(ShapeMismatchError):
        dsi.identify(np.zeros(5), np.zeros((4, 3)))
