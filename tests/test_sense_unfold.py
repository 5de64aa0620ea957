"""Closed-form SENSE unfolding, the SENSE operator and g-factors (mrirecon.sense.unfold / operator).

Every test of a public function takes the ``xp`` fixture: inputs are made with
NumPy (seeded), moved with ``xp.asarray``, and the results compared on the host
with the same dense references, for NumPy and (where a GPU is present) CuPy.
"""

import numpy as np
import pytest

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.fft import fftc, ifftc
from mrirecon.sense.operator import SenseOp
from mrirecon.sense.unfold import (
    SenseUnfolder,
    gfactor,
    gfactor_pseudo_replica,
    lattice_mask,
    unfold,
)
from mrirecon.testing import dot_test


def coil_maps(n_coils, spatial, *, seed=0, dtype=np.complex128, width=0.7):
    """Smooth synthetic maps: Gaussians around the object times low-order phase, normalised by RSS."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in spatial], indexing="ij")
    maps = []
    for c in range(n_coils):
        ang = 2 * np.pi * c / n_coils + rng.uniform(-0.2, 0.2)
        centre = [1.1 * np.cos(ang), 1.1 * np.sin(ang)] + list(rng.uniform(-0.6, 0.6, len(spatial) - 2))
        d2 = sum((gi - ci) ** 2 for gi, ci in zip(g, centre))
        a = rng.uniform(-1.5, 1.5, len(spatial) + 1)
        phase = np.exp(1j * (a[0] + sum(ai * gi for ai, gi in zip(a[1:], g))))
        maps.append(np.exp(-d2 / (2 * width**2)) * phase)
    maps = np.array(maps)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    return maps.astype(dtype)


def rand_c(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def disk(spatial, radius=0.8):
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in spatial[:2]], indexing="ij")
    d = (g[0] ** 2 + g[1] ** 2) <= radius**2
    return np.broadcast_to(d.reshape(d.shape + (1,) * (len(spatial) - 2)), spatial)


def dense_minimiser(sens, mask, y, lam):
    """argmin ‖M F S x − y‖² + λ‖x‖² by a dense solve (explicit orthonormal centred DFT matrices)."""
    spatial = sens.shape[1:]
    f = np.ones((1, 1), dtype=complex)
    for n in spatial:
        f = np.kron(f, fftc(np.eye(n, dtype=complex), axes=(0,)))
    m = mask.reshape(-1)
    fm = f[m]  # sampled rows of the DFT matrix
    s = sens.reshape(sens.shape[0], -1)
    # AᴴA = Σ_c diag(conj S_c) Fmᴴ Fm diag(S_c) = (Fmᴴ Fm) ∘ (Sᴴ S)
    normal = (fm.conj().T @ fm) * (s.conj().T @ s)
    rhs = (s.conj() * (fm.conj().T @ y.reshape(sens.shape[0], -1)[:, m].T).T).sum(axis=0)
    normal += lam * np.eye(normal.shape[0])
    return np.linalg.solve(normal, rhs).reshape(spatial)


def simulate(sens, mask, *, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    spatial = sens.shape[1:]
    x = rand_c(rng, spatial) * disk(spatial)
    y = fftc(sens * x, axes=tuple(range(1, sens.ndim))) + noise * rand_c(rng, sens.shape)
    return (y * mask).astype(sens.dtype), x


def rel(a, b):
    a, b = to_numpy(a), to_numpy(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------- SenseOp
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("spatial", [(24, 20), (8, 6, 4)])
def test_senseop_dot_test(dtype, spatial, xp):
    sens = xp.asarray(coil_maps(4, spatial, dtype=dtype))
    mask = np.random.default_rng(3).random(spatial) < 0.4
    for m in (None, mask, xp.asarray(mask)):
        op = SenseOp(sens, m)
        assert op.dtype == dtype and op.xp is xp
        dot_test(op, xp=xp)


def test_senseop_forward_matches_numpy(xp, assert_on):
    sens = coil_maps(4, (16, 12))
    rng = np.random.default_rng(0)
    x = rand_c(rng, (16, 12))
    mask = rng.random((16, 12)) < 0.5
    ax = (1, 2)
    ref = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(sens * x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    op = SenseOp(xp.asarray(sens), mask)
    fwd = op.forward(xp.asarray(x))
    assert_on(fwd, op.mask)
    np.testing.assert_allclose(to_numpy(fwd), ref * mask, atol=1e-12)
    adj = (np.conj(sens) * ifftc(ref * mask, axes=ax)).sum(axis=0)
    back = op.adjoint(xp.asarray(ref))
    assert_on(back)
    np.testing.assert_allclose(to_numpy(back), adj, atol=1e-12)
    np.testing.assert_allclose(to_numpy(op.normal(xp.asarray(x))), to_numpy(op.adjoint(fwd)), atol=1e-12)


def test_senseop_bad_input(xp):
    sens = xp.asarray(coil_maps(4, (8, 8)))
    with pytest.raises(ShapeMismatchError):
        SenseOp(sens, np.ones((8, 7), bool))
    with pytest.raises(ShapeMismatchError):
        SenseOp(sens).forward(xp.zeros((8, 7), complex))
    with pytest.raises(ShapeMismatchError):
        SenseOp(sens[0])
    bad = sens.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        SenseOp(bad)
    with pytest.raises(InvalidParameterError, match="empty"):
        SenseOp(sens, xp.zeros((8, 8), bool))


# ---------------------------------------------------------------- unfold == minimiser
@pytest.mark.parametrize("R", [2, 3, 4])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_unfold_equals_dense_minimiser_1d(R, offset, lam, xp, assert_on):
    spatial = (24, 20)
    sens = coil_maps(6, spatial, seed=R)
    mask = lattice_mask(spatial, R, offset=offset)
    assert mask.sum() * R == mask.size and mask[offset::R].all()
    y, _ = simulate(sens, mask, seed=10 * R + offset)
    ref = dense_minimiser(sens, mask, y, lam)
    y, sens = xp.asarray(y), xp.asarray(sens)
    x = unfold(y, sens, lam=lam, accel=R, offset=offset)
    assert_on(x)
    assert x.dtype == np.complex128
    assert rel(x, ref) < 1e-9
    x = to_numpy(x)
    # accel/offset inferred from the zero pattern of the data, and from the mask (NumPy or device)
    for kw in ({}, {"mask": mask}, {"mask": xp.asarray(mask)}):
        got = unfold(y, sens, lam=lam, **kw)
        assert_on(got)
        np.testing.assert_allclose(to_numpy(got), x, rtol=0, atol=1e-12 * np.abs(x).max())


@pytest.mark.parametrize("offset,shift", [((0, 0), 0), ((0, 0), 1), ((1, 1), 1)])
@pytest.mark.parametrize("lam", [0.0, 0.05])
def test_unfold_caipi_equals_dense_minimiser(offset, shift, lam, xp, assert_on):
    spatial = (16, 8, 4)
    sens = coil_maps(6, spatial, seed=4)
    mask = lattice_mask(spatial, (2, 2), offset=offset, shift=shift)
    assert mask.sum() * 4 == mask.size
    y, _ = simulate(sens, mask, seed=5)
    ref = dense_minimiser(sens, mask, y, lam)
    y, sens = xp.asarray(y), xp.asarray(sens)
    x = unfold(y, sens, lam=lam, accel=(2, 2), offset=offset, shift=shift)
    assert_on(x)
    assert rel(x, ref) < 1e-9
    x = to_numpy(x)
    np.testing.assert_allclose(to_numpy(unfold(y, sens, lam=lam)), x, rtol=0, atol=1e-12 * np.abs(x).max())


def test_unfold_complex64_default_precision(xp, assert_on):
    spatial = (24, 20)
    sens = coil_maps(6, spatial, dtype=np.complex64)
    mask = lattice_mask(spatial, 2)
    y, _ = simulate(sens, mask)
    ref = dense_minimiser(sens.astype(np.complex128), mask, y.astype(np.complex128), 0.01)
    x = unfold(xp.asarray(y), xp.asarray(sens), lam=0.01, accel=2)
    assert_on(x)
    assert x.dtype == np.complex64
    assert rel(x, ref) < 1e-5


@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_unfold_r1_is_coil_combination(lam, xp, assert_on):
    spatial = (20, 18)
    sens = coil_maps(5, spatial)
    y = rand_c(np.random.default_rng(2), sens.shape)
    x = unfold(xp.asarray(y), xp.asarray(sens), lam=lam, accel=1)
    assert_on(x)
    ref = (np.conj(sens) * ifftc(y, axes=(1, 2))).sum(axis=0) / ((np.abs(sens) ** 2).sum(axis=0) + lam)
    np.testing.assert_allclose(to_numpy(x), ref, rtol=1e-10, atol=1e-12)


def test_unfolder_reuse_and_batches(xp, assert_on):
    spatial = (24, 20)
    sens = coil_maps(6, spatial)
    mask = lattice_mask(spatial, 3, offset=2)
    y1, _ = simulate(sens, mask, seed=1)
    y2, _ = simulate(sens, mask, seed=2)
    sens_h, y1_h, y2_h = sens, y1, y2
    sens, y1, y2 = xp.asarray(sens), xp.asarray(y1), xp.asarray(y2)
    unf = SenseUnfolder(sens, 3, lam=0.02, offset=2)
    assert unf.xp is xp
    assert_on(unf.unmix, unf.mask, unf.index, unf.normal_inverse)
    assert unf.unmix.shape == (24 * 20 // 3, 3, 6)
    np.testing.assert_array_equal(to_numpy(unf.mask), mask)
    a1, a2 = unf(y1), unf(y2)
    assert_on(a1, a2)
    a1, a2 = to_numpy(a1), to_numpy(a2)
    np.testing.assert_allclose(a1, to_numpy(unfold(y1, sens, lam=0.02, accel=3, offset=2)), rtol=1e-12)
    np.testing.assert_allclose(a2, to_numpy(unfold(y2, sens, lam=0.02, accel=3, offset=2)), rtol=1e-12)
    batch = unf(xp.stack([xp.stack([y1, y2]), xp.stack([y2, y1])]))
    assert_on(batch)
    assert batch.shape == (2, 2, *spatial)
    np.testing.assert_allclose(to_numpy(batch[0, 0]), a1, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(batch[1, 0]), a2, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(unfold(xp.stack([y1, y2]), sens, lam=0.02)[1]), a2, rtol=1e-12)
    # the same numbers on the host: CPU and GPU agree
    np.testing.assert_allclose(a2, to_numpy(unfold(y2_h, sens_h, lam=0.02)), rtol=1e-10)
    if xp is np:
        # the read-only cache (NumPy maps only) gives the same answer
        ro = sens_h.copy()
        ro.setflags(write=False)
        np.testing.assert_allclose(unfold(np.stack([y1_h, y2_h]), ro, lam=0.02)[1], a2, rtol=1e-12)
        np.testing.assert_allclose(unfold(y2_h, ro, lam=0.02), a2, rtol=1e-12)


def test_unfold_ignores_samples_outside_lattice(xp):
    spatial = (24, 20)
    sens = coil_maps(6, spatial)
    mask = lattice_mask(spatial, 4)
    y, _ = simulate(sens, np.ones(spatial, bool))
    acs = mask.copy()
    acs[10:14] = True
    sens, y = xp.asarray(sens), xp.asarray(y)
    x = unfold(y * xp.asarray(acs), sens, accel=4, mask=acs)
    ref = unfold(y * xp.asarray(mask), sens, accel=4)
    np.testing.assert_allclose(to_numpy(x), to_numpy(ref), rtol=1e-12)


def test_unfold_bad_input(xp):
    spatial = (24, 20)
    sens = coil_maps(4, spatial)
    mask = lattice_mask(spatial, 2)
    y, _ = simulate(sens, mask)
    y, sens = xp.asarray(y), xp.asarray(sens)
    with pytest.raises(ShapeMismatchError, match="coil"):
        unfold(y[:3], sens, accel=2)
    with pytest.raises(ShapeMismatchError):
        unfold(y[:, :, :10], sens, accel=2)
    with pytest.raises(InvalidParameterError, match="divide"):
        unfold(y, sens, accel=5)
    with pytest.raises(InvalidParameterError, match="divide"):
        SenseUnfolder(sens, 7)
    bad = y.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        unfold(bad, sens, accel=2)
    with pytest.raises(InvalidParameterError, match="zero"):
        unfold(xp.zeros_like(y), sens)
    with pytest.raises(InvalidParameterError, match="empty"):
        unfold(y, sens, accel=2, mask=np.zeros(spatial, bool))
    with pytest.raises(InvalidParameterError, match="lam"):
        unfold(y, sens, accel=2, lam=-1.0)
    with pytest.raises(InvalidParameterError, match="offset"):
        unfold(y, sens, accel=2, offset=2)
    irregular = mask.copy()
    irregular[1] = True
    with pytest.raises(InvalidParameterError, match="uniform"):
        unfold(y, sens, mask=xp.asarray(irregular))
    with pytest.raises(InvalidParameterError, match="lattice"):
        unfold(y, sens, accel=2, offset=1, mask=mask)
    with pytest.raises(InvalidParameterError, match="CAIPI"):
        SenseUnfolder(xp.asarray(coil_maps(4, (10, 9, 4))), (2, 3), shift=1)


@pytest.mark.gpu
@pytest.mark.parametrize("xp", ["cupy"], indirect=True)
def test_mixed_devices_are_refused(xp):
    """k-space and maps on different devices raise instead of being copied."""
    spatial = (24, 20)
    sens = coil_maps(4, spatial)
    mask = lattice_mask(spatial, 2)
    y, _ = simulate(sens, mask)
    with pytest.raises(InvalidParameterError, match="devices"):
        unfold(xp.asarray(y), sens, accel=2)
    with pytest.raises(InvalidParameterError, match="devices"):
        unfold(y, xp.asarray(sens), accel=2)
    with pytest.raises(InvalidParameterError, match="numpy"):
        SenseUnfolder(xp.asarray(sens), 2)(y)
    with pytest.raises(InvalidParameterError, match="CuPy"):
        SenseOp(sens, xp.asarray(mask))


# ---------------------------------------------------------------- g-factor
def test_gfactor_properties(xp, assert_on):
    spatial = (32, 32)
    sens_h = coil_maps(8, spatial)
    sens = xp.asarray(sens_h)
    obj = disk(spatial)

    def g_of(*args, **kw):
        g = gfactor(*args, **kw)
        assert_on(g)
        return to_numpy(g)

    g1 = g_of(sens, 1)
    np.testing.assert_allclose(g1, 1.0, atol=1e-6)
    g2, g4 = g_of(sens, 2), g_of(sens, 4)
    assert g2.shape == spatial and g2.dtype == np.float64
    assert g2[obj].min() >= 1 - 1e-6 and g4.min() >= 1 - 1e-6
    assert g4[obj].mean() > g2[obj].mean()
    # regularisation lowers the (regularised) g-factor; the offset does not change it
    assert np.all(g_of(sens, 4, lam=0.1) <= g4 + 1e-9)
    np.testing.assert_allclose(g_of(sens, 4, offset=3), g4, rtol=1e-9)
    # the regularised formula: at R = 1, g = sqrt(a / (a + λ)) with a = Σ|S|² (= 1 here)
    a = (np.abs(sens_h) ** 2).sum(axis=0)
    np.testing.assert_allclose(g_of(sens, 1, lam=0.25), np.sqrt(a / (a + 0.25)), rtol=1e-9)
    # maps without signal somewhere: g = 1 there
    holes = sens * xp.asarray(disk(spatial, 0.9))
    gh = g_of(holes, 2)
    assert np.all(gh[~disk(spatial, 0.9) & ~np.roll(disk(spatial, 0.9), 16, axis=0)] == 1.0)
    assert np.isfinite(gh).all()
    assert g_of(sens.astype(np.complex64), 2).dtype == np.float32


@pytest.mark.parametrize("accel", [2, 4])
def test_gfactor_matches_pseudo_replica(accel, xp, assert_on):
    spatial = (32, 32)
    sens = xp.asarray(coil_maps(8, spatial))
    obj = disk(spatial)
    g = to_numpy(gfactor(sens, accel))
    gp = gfactor_pseudo_replica(sens, accel, n_replicas=500, seed=1)
    assert_on(gp)
    gp = to_numpy(gp)
    err = np.abs(gp[obj] / g[obj] - 1)
    assert np.median(err) < 0.05
    assert np.percentile(err, 95) < 0.10


def test_gfactor_caipi_matches_pseudo_replica(xp):
    spatial = (16, 8, 4)
    sens = xp.asarray(coil_maps(6, spatial, seed=4))
    g = to_numpy(gfactor(sens, (2, 2), shift=1))
    gp = to_numpy(gfactor_pseudo_replica(sens, (2, 2), shift=1, n_replicas=500, seed=2))
    err = np.abs(gp / g - 1)
    assert g.min() >= 1 - 1e-6
    assert np.median(err) < 0.05
    assert np.percentile(err, 95) < 0.10
