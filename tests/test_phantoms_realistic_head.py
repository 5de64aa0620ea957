"""The realistic head: anatomy, truths consistent with the simulated signal, seeds differ."""

import numpy as np
import pytest

from mrirecon.phantoms.head import simulate_field
from mrirecon.phantoms.realistic_head import LABELS, realistic_head

SHAPE = (48, 56, 46)


@pytest.fixture(scope="module")
def head():
    return realistic_head(SHAPE, seed=0, snr=1e6)


def test_tissues_present_and_mask_is_brain(head):
    present = {LABELS[i] for i in np.unique(head.labels)}
    assert {"air", "scalp", "skull", "csf", "grey_matter", "white_matter"} <= present
    brain_labels = {LABELS[i] for i in np.unique(head.labels[head.mask])}
    assert not brain_labels & {"air", "scalp", "skull", "neck"}
    assert head.chi[~head.mask].max() == 0 and head.chi[head.mask].std() > 0.01


def test_local_field_is_field_of_demeaned_chi(head):
    chi = np.where(head.mask, head.chi - head.chi[head.mask].mean(), 0)
    ref = simulate_field(chi, voxel_size_mm=head.voxel_size_mm, mask=head.mask)
    np.testing.assert_allclose(head.local_field_ppm, ref, atol=1e-6)


def test_phase_follows_total_field(head):
    # noiseless: the echo-to-echo phase difference is 2π γ̄ B0 ΔTE f (wrapped) where there is signal
    from mrirecon.qsm.units import GAMMA_BAR_MHZ_PER_T

    dte = head.te_s[1] - head.te_s[0]
    expect = 2 * np.pi * GAMMA_BAR_MHZ_PER_T * head.b0_tesla * dte * head.total_field_ppm
    diff = np.angle(np.exp(1j * (head.phase[1] - head.phase[0] - expect)))
    strong = head.mask & (head.magnitude[1] > 0.2)
    assert np.abs(diff[strong]).max() < 1e-3


def test_seeds_give_different_anatomy():
    a = realistic_head((32, 37, 31), seed=1)
    b = realistic_head((32, 37, 31), seed=2)
    assert (a.mask != b.mask).mean() > 0.005


def test_volumes_are_the_same_head_with_their_own_noise():
    one = realistic_head((24, 28, 24), seed=4)
    series = realistic_head((24, 28, 24), seed=4, volumes=3)
    assert series.magnitude.shape == (*one.magnitude.shape, 3)
    np.testing.assert_array_equal(series.magnitude[..., 0], one.magnitude)
    np.testing.assert_array_equal(series.phase[..., 0], one.phase)
    np.testing.assert_array_equal(series.chi, one.chi)
    # the other volumes: the same signal, other noise (differences of the size of the noise)
    d = series.magnitude[..., 1] - series.magnitude[..., 0]
    inside = one.mask
    assert 0 < np.std(d[:, inside]) < 0.2 * np.mean(one.magnitude[0][inside])
    with pytest.raises(ValueError, match="volumes"):
        realistic_head((24, 28, 24), volumes=0)
