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
    ref = simulate_field(chi, voxel_size_mm=head.voxel_size_mm, mask=head.mask, supersample=2)
    np.testing.assert_allclose(head.local_field_ppm, ref, atol=1e-6)


def _laplacian(f):
    f = f.astype(np.float64)
    return sum(np.roll(f, 1, i) + np.roll(f, -1, i) - 2 * f for i in range(3))


def test_background_is_harmonic_inside_the_brain_with_oblique_b0():
    # total - local comes from sources outside the brain (and the brain's uniform mean): harmonic
    # inside it. The voxel-grid dipole convolution breaks that with B0 oblique to the grid (a
    # component on the highest frequencies); the sub-voxel field does not.
    from scipy import ndimage

    lap = {}
    for ss in (1, 2):
        d = realistic_head((40, 46, 38), seed=0, snr=1e6, b0_dir=(0.0, 0.42, 0.91), field_supersample=ss)
        deep = ndimage.binary_erosion(d.mask, iterations=4)
        assert deep.sum() > 500
        bg = d.total_field_ppm - d.local_field_ppm
        lap[ss] = np.sqrt(np.mean(_laplacian(bg)[deep] ** 2)) / np.sqrt(
            np.mean(_laplacian(d.local_field_ppm)[deep] ** 2)
        )
    assert lap[2] < 0.05 < 0.5 < lap[1], lap


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


@pytest.mark.parametrize("b0_dir", [(0.0, 0.0, 1.0), (0.3, -0.2, 0.93)])
def test_supersampled_field_is_the_fine_grid_field_averaged_back(b0_dir):
    # reference: each voxel split into 2³ sub-voxels, dipole field on that grid (NumPy FFT, the
    # continuous kernel), averaged back over each voxel
    import math

    from mrirecon import fft

    rng = np.random.default_rng(3)
    vox, s = (1.0, 1.2, 1.5), 2
    chi = rng.standard_normal((12, 14, 10))
    big = tuple(s * fft.next_fast_len(math.ceil(n * 1.5)) for n in chi.shape)
    fine = np.zeros(big)
    fine[tuple(slice(0, s * n) for n in chi.shape)] = chi.repeat(s, 0).repeat(s, 1).repeat(s, 2)
    k = np.meshgrid(*[np.fft.fftfreq(n, d=v / s) for n, v in zip(big, vox, strict=True)], indexing="ij")
    b = np.asarray(b0_dir) / np.linalg.norm(b0_dir)
    k2 = sum(q * q for q in k)
    k2[0, 0, 0] = 1.0
    kernel = 1 / 3 - sum(q * c for q, c in zip(k, b, strict=True)) ** 2 / k2
    kernel[0, 0, 0] = 0.0
    f = np.real(np.fft.ifftn(np.fft.fftn(fine) * kernel))[tuple(slice(0, s * n) for n in chi.shape)]
    ref = f.reshape(12, s, 14, s, 10, s).mean(axis=(1, 3, 5))
    got = simulate_field(chi, voxel_size_mm=vox, b0_dir=b0_dir, supersample=2)
    np.testing.assert_allclose(got, ref, atol=1e-12 * np.abs(ref).max())
    plain = simulate_field(chi, voxel_size_mm=vox, b0_dir=b0_dir)
    assert np.linalg.norm(plain - ref) > 0.05 * np.linalg.norm(ref)  # a different (voxel-grid) model


def test_supersample_must_be_a_small_integer():
    from mrirecon.errors import InvalidParameterError

    for bad in (0, 5, 1.5, True):
        with pytest.raises(InvalidParameterError, match="supersample"):
            simulate_field(np.zeros((4, 4, 4)), supersample=bad)
