"""Sampling masks and pattern detection (mrirecon.sense.sampling).

The mask generators make NumPy masks from shapes; the detection tests take the
``xp`` fixture (NumPy always, CuPy where a GPU is present).
"""

import numpy as np
import pytest

from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.sense.sampling import caipi_mask, detect_pattern, uniform_mask, variable_density_mask


def test_uniform_mask_lines_and_acs():
    m = uniform_mask((64, 48), 4, acs=8, offset=1)
    assert m.shape == (64, 48) and m.dtype == bool
    assert np.all(m == m[:, :1])  # constant along the readout
    lines = np.flatnonzero(m[:, 0])
    acs = np.arange(32 - 4, 32 + 4)
    assert set(range(1, 64, 4)) | set(acs) == set(lines)
    assert lines.size == 16 + 8 - 2  # lines 29 and 33 are in both sets
    assert m[28:36, 0].all()


def test_uniform_mask_volume_and_errors():
    m = uniform_mask((48, 16, 8), 3)
    assert m.shape == (48, 16, 8) and m[:, 0, 0].sum() == 16 and np.all(m == m[:, :1, :1])
    with pytest.raises(InvalidParameterError, match="R=3 does not divide 256 phase-encoding lines"):
        uniform_mask((256, 256), 3)
    with pytest.raises(InvalidParameterError):
        uniform_mask((64, 64), 0)
    with pytest.raises(InvalidParameterError):
        uniform_mask((64, 64), 2, offset=2)


@pytest.mark.parametrize("ry,rz,shift", [(2, 2, 1), (2, 2, 0), (4, 2, 3), (3, 1, 1), (1, 4, 0)])
def test_caipi_mask_pattern(ry, rz, shift):
    m = caipi_mask((48, 48, 8), (ry, rz), shift=shift)
    assert np.all(m == m[:, :, :1])
    plane = m[:, :, 0]
    k0, k1 = np.nonzero(plane)
    assert np.all(k1 % rz == 0)
    assert np.all(k0 % ry == (shift * (k1 // rz)) % ry)
    assert plane.sum() == 48 * 48 // (ry * rz)
    # each sampled column holds lines spaced ry, shifted by `shift` from one column to the next
    assert np.flatnonzero(plane[:, rz])[0] == shift % ry


def test_caipi_mask_default_shift_acs_and_errors():
    assert np.array_equal(caipi_mask((32, 32, 4), (2, 2)), caipi_mask((32, 32, 4), (2, 2), shift=1))
    m = caipi_mask((32, 32, 4), (2, 2), acs=(6, 4))
    assert m[13:19, 14:18].all()
    with pytest.raises(InvalidParameterError, match="does not divide"):
        caipi_mask((30, 32, 4), (4, 2))
    with pytest.raises(InvalidParameterError, match="wrap"):
        caipi_mask((48, 32, 4), (3, 1), shift=1)  # 32 columns: not a multiple of ry
    with pytest.raises(InvalidParameterError):
        caipi_mask((32, 32), (2, 2))


def test_variable_density_fraction_and_determinism():
    m = variable_density_mask((128, 64), 4, acs=16, seed=3)
    assert m[:, 0].sum() == 32 and np.all(m == m[:, :1])
    assert m[56:72, 0].all()
    assert np.array_equal(m, variable_density_mask((128, 64), 4, acs=16, seed=3))
    assert not np.array_equal(m, variable_density_mask((128, 64), 4, acs=16, seed=4))
    v = variable_density_mask((48, 32, 6), 5, acs=8, seed=0)
    assert v[:, :, 0].sum() == round(48 * 32 / 5) and np.all(v == v[:, :, :1])
    assert v[20:28, 12:20, 0].all()
    # density falls off: the central half of k-space is sampled more densely than the rest
    many = np.mean([variable_density_mask((128, 8), 4, acs=0, seed=s)[:, 0] for s in range(20)], axis=0)
    assert many[32:96].mean() > 1.5 * np.r_[many[:32], many[96:]].mean()
    with pytest.raises(InvalidParameterError, match="ACS block"):
        variable_density_mask((64, 64), 8, acs=24)


@pytest.mark.parametrize("r,acs,offset", [(4, 24, 1), (3, 0, 2), (2, 0, 0), (4, 10, 3)])
def test_detect_uniform_from_mask(r, acs, offset, xp):
    m = uniform_mask((96, 32), r, acs=acs, offset=offset)
    assert isinstance(m, np.ndarray)
    p = detect_pattern(xp.asarray(m))
    assert p.kind == "uniform" and p.accel == r and p.offset == offset
    if acs == 24 or acs == 0:  # unambiguous: no regular line touches the block
        assert p.acs_lines == acs
    # the detected pattern reproduces the mask
    rebuilt = np.zeros(96, dtype=bool)
    rebuilt[p.offset :: p.accel] = True
    rebuilt[p.acs_start : p.acs_start + p.acs_lines] = True
    assert np.array_equal(rebuilt, m[:, 0])


def test_detect_ambiguous_acs_takes_largest_block(xp):
    # R=2, offset 0: lines 116 and 140 are regular lines touching the ACS block [116, 140)
    p = detect_pattern(xp.asarray(uniform_mask((256, 8), 2, acs=24)))
    assert (p.accel, p.offset, p.acs_lines, p.acs_start) == (2, 0, 25, 116)


def test_detect_from_kspace_with_zeros(xp):
    rng = np.random.default_rng(0)
    m = uniform_mask((64, 40), 4, acs=12, offset=3)
    k = (rng.standard_normal((4, 64, 40)) + 1j * rng.standard_normal((4, 64, 40))).astype(np.complex64) * m
    k[:, 3, :] = 0  # a sampled line with all-zero coils except one sample
    k[3, 3, 7] = 1.0
    p = detect_pattern(xp.asarray(k))
    assert (p.kind, p.accel, p.offset, p.acs_lines) == ("uniform", 4, 3, 12)
    assert all(isinstance(v, int) for v in (p.accel, p.offset, p.acs_lines, p.acs_start))
    # a volume accelerated along axis 0 only
    k3 = xp.asarray(np.ones((2, 32, 16, 4), np.complex64) * uniform_mask((32, 16, 4), 2, acs=0))
    assert detect_pattern(k3).accel == 2 and detect_pattern(k3).kind == "uniform"


@pytest.mark.parametrize(
    "ry,rz,shift,acs", [(2, 2, 1, (8, 8)), (2, 2, 0, (0, 0)), (4, 2, 3, (10, 12)), (2, 3, 1, (7, 5))]
)
def test_detect_caipi(ry, rz, shift, acs, xp):
    m = caipi_mask((48, 48, 6), (ry, rz), shift=shift, acs=acs)
    p = detect_pattern(xp.asarray(m))
    assert p.kind == "caipi" and p.accel == (ry, rz) and p.shift == shift and p.offset == (0, 0)
    assert p.acs_lines == acs
    k = xp.asarray(np.ones((3, 48, 48, 6), np.complex64) * m)
    assert detect_pattern(k) == p


def test_detect_irregular_full_and_empty(xp):
    p = detect_pattern(xp.asarray(variable_density_mask((128, 32), 4, acs=16)))
    assert p.kind == "irregular" and p.accel == pytest.approx(4.0) and p.acs_lines >= 16
    p3 = detect_pattern(xp.asarray(variable_density_mask((48, 32, 4), 4, acs=8)))
    assert p3.kind == "irregular" and p3.acs_lines[0] >= 8 and p3.acs_lines[1] >= 8
    assert detect_pattern(xp.ones((32, 16), bool)).kind == "full"
    with pytest.raises(InvalidParameterError, match="no sampled k-space line"):
        detect_pattern(xp.zeros((32, 16), bool))
    with pytest.raises(InvalidParameterError, match="no sampled k-space line"):
        detect_pattern(xp.zeros((4, 32, 16), np.complex64))
    with pytest.raises(ShapeMismatchError):
        detect_pattern(xp.zeros((32,), bool))
