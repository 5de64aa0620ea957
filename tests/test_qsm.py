"""Closed-form L2, TKD and the L-curve against independent references."""

import numpy as np
import pytest
from dense_reference import difference_matrices, dipole_matrix

from mrirecon import qsm
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.kspace import dipole_kernel
from mrirecon.metrics import nrmse
from mrirecon.phantoms import head_phantom, simulate_field
from mrirecon.qsm.lcurve import _curvature, _extremum


# ---------------------------------------------------------------- references
def _dense_l2(phi, vox, b, lam):
    """Minimum-norm minimiser of ||A chi - phi||^2 + lam sum ||E_i chi||^2."""
    a = dipole_matrix(phi.shape, vox, b)
    h = a.T @ a + lam * sum(e.T @ e for e in difference_matrices(phi.shape))
    return (np.linalg.pinv(h, rcond=1e-12, hermitian=True) @ (a.T @ phi.reshape(-1))).reshape(phi.shape)


CASES = [
    ((6, 5, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)),
    ((5, 6, 7), (1.0, 1.2, 0.9), (0.3, 0.2, 1.0)),
    ((6, 6, 4), (0.8, 0.8, 2.0), (-0.2, 0.5, 0.8)),
]


# ---------------------------------------------------------------- closed form
@pytest.mark.parametrize(("shape", "vox", "b"), CASES)
@pytest.mark.parametrize("lam", [1e-3, 0.05, 1.0])
def test_closed_form_equals_dense_minimiser(shape, vox, b, lam):
    phi = np.random.default_rng(0).standard_normal(shape)
    ref = _dense_l2(phi, vox, b, lam)
    chi64 = qsm.closed_form_l2(phi, voxel_size_mm=vox, b0_dir=b, lam=lam, reference=None)
    assert chi64.dtype == np.float64
    assert np.linalg.norm(chi64 - ref) <= 1e-9 * np.linalg.norm(ref)
    chi32 = qsm.closed_form_l2(phi.astype(np.float32), voxel_size_mm=vox, b0_dir=b, lam=lam, reference=None)
    assert chi32.dtype == np.float32
    assert np.linalg.norm(chi32 - ref) <= 1e-5 * np.linalg.norm(ref)


def test_padding_solves_the_padded_problem():
    shape, vox, b, lam = (5, 4, 4), (1.0, 1.0, 1.0), (0.2, 0.0, 1.0), 0.02
    phi = np.random.default_rng(1).standard_normal(shape)
    chi = qsm.closed_form_l2(phi, voxel_size_mm=vox, b0_dir=b, lam=lam, pad=1, reference=None)
    # pad 1 per axis, rounded up to 2,3,5-smooth lengths: (6, 5, 5)
    big = np.zeros((6, 5, 5))
    big[:5, :4, :4] = phi
    ref = _dense_l2(big, vox, b, lam)[:5, :4, :4]
    assert chi.shape == shape
    assert np.linalg.norm(chi - ref) <= 1e-9 * np.linalg.norm(ref)


def test_lambda_to_zero_gives_least_squares_solution():
    shape, vox, b = (6, 5, 4), (1.0, 1.0, 1.0), (0.3, 0.2, 1.0)
    phi = np.random.default_rng(2).standard_normal(shape)
    a = dipole_matrix(shape, vox, b)
    ls = (np.linalg.pinv(a, rcond=1e-8, hermitian=True) @ phi.reshape(-1)).reshape(shape)
    errors = [
        np.linalg.norm(qsm.closed_form_l2(phi, voxel_size_mm=vox, b0_dir=b, lam=lam, reference=None) - ls)
        / np.linalg.norm(ls)
        for lam in (1e-2, 1e-5, 1e-8, 1e-11)
    ]
    assert all(e2 < e1 for e1, e2 in zip(errors, errors[1:]))
    assert errors[-1] < 1e-6


def test_noise_free_well_posed_recovery():
    """chi with no energy where |D| <= t: TKD recovers it exactly, L2 as lam -> 0."""
    shape, b, t = (16, 14, 12), (0.2, 0.1, 1.0), 0.19
    rng = np.random.default_rng(3)
    d = dipole_kernel(shape, b0_dir=b, dtype=np.float64)
    chi0 = np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal(shape)) * (np.abs(d) > t)))
    phi = np.real(np.fft.ifftn(d * np.fft.fftn(chi0)))
    chi_tkd = qsm.tkd(phi, b0_dir=b, threshold=t, reference=None)
    assert np.linalg.norm(chi_tkd - chi0) <= 1e-10 * np.linalg.norm(chi0)
    errs = [
        nrmse(qsm.closed_form_l2(phi, b0_dir=b, lam=lam), chi0, demean=True) for lam in (1e-1, 1e-3, 1e-6)
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05, errs  # percent


def test_tkd_is_truncated_inverse():
    shape, b, t = (8, 7, 6), (0.0, 0.3, 1.0), 0.15
    phi = np.random.default_rng(4).standard_normal(shape)
    d = dipole_kernel(shape, b0_dir=b, dtype=np.float64)
    inv = np.where(np.abs(d) > t, 1 / np.where(d == 0, 1, d), np.sign(d) / t)
    ref = np.real(np.fft.ifftn(np.fft.fftn(phi) * inv))
    np.testing.assert_allclose(qsm.tkd(phi, b0_dir=b, threshold=t, reference=None), ref, atol=1e-12)


@pytest.mark.parametrize("c", [3.0, -0.5, 1e3])
def test_scaling_field_scales_chi(c):
    ph = head_phantom((24, 24, 24))
    f = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask, noise_ppm=0.003, seed=0)
    kw = {"voxel_size_mm": ph.voxel_size_mm}
    for method in (
        lambda x: qsm.closed_form_l2(x, ph.mask, lam=0.01, **kw),
        lambda x: qsm.tkd(x, ph.mask, **kw),
        lambda x: qsm.closed_form_l2(x, ph.mask, lam="auto", **kw),  # GCV is scale invariant
    ):
        base = method(f.astype(np.float64))
        scaled = method(c * f.astype(np.float64))
        np.testing.assert_allclose(scaled, c * base, rtol=1e-9, atol=1e-12 * abs(c) * np.abs(base).max())


def test_mask_reference_dtype_and_nan_outside_mask():
    ph = head_phantom((24, 22, 20))
    f = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask, noise_ppm=0.002, seed=1)
    chi = qsm.closed_form_l2(f, ph.mask, voxel_size_mm=ph.voxel_size_mm, lam=0.01)
    assert chi.dtype == np.float32 and chi.shape == f.shape
    assert np.all(chi[~ph.mask] == 0)
    assert abs(chi[ph.mask].mean()) < 1e-6
    g = f.copy()
    g[~ph.mask] = np.nan
    chi_nan = qsm.closed_form_l2(g, ph.mask, voxel_size_mm=ph.voxel_size_mm, lam=0.01)
    np.testing.assert_allclose(chi_nan, chi, atol=1e-7)
    tkd_nan = qsm.tkd(g, ph.mask, voxel_size_mm=ph.voxel_size_mm)
    assert np.all(np.isfinite(tkd_nan))
    assert qsm.closed_form_l2(f.astype(np.int16), lam=1.0).dtype == np.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"field": np.zeros((4, 4, 4, 2, 2))}, ShapeMismatchError, "3-D"),
        ({"field": np.zeros((4, 4, 4), complex)}, InvalidParameterError, "real"),
        ({"mask": np.ones((4, 4, 5), bool)}, ShapeMismatchError, "mask shape"),
        ({"mask": np.zeros((4, 4, 4), bool)}, InvalidParameterError, "empty"),
        ({"lam": 0}, InvalidParameterError, "lam"),
        ({"lam": -1.0}, InvalidParameterError, "lam"),
        ({"lam": "best"}, InvalidParameterError, "lam"),
        ({"lam": np.nan}, InvalidParameterError, "lam"),
        ({"b0_dir": (0, 0, 0)}, InvalidParameterError, "b0_dir"),
        ({"pad": -1}, InvalidParameterError, "pad"),
        ({"pad": 1.5}, InvalidParameterError, "pad"),
        ({"reference": "median"}, InvalidParameterError, "reference"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    kw = {"field": np.ones((4, 4, 4), np.float32), "lam": 0.1, **kwargs}
    field = kw.pop("field")
    with pytest.raises(error, match=match):
        qsm.closed_form_l2(field, **kw)


def test_nan_inside_mask_or_without_mask_raises():
    f = np.ones((6, 6, 6), np.float32)
    f[3, 3, 3] = np.nan
    mask = np.zeros((6, 6, 6), bool)
    mask[2:5, 2:5, 2:5] = True
    with pytest.raises(InvalidParameterError, match="NaN/Inf voxels inside the mask"):
        qsm.closed_form_l2(f, mask, lam=0.1)
    with pytest.raises(InvalidParameterError, match="NaN/Inf"):
        qsm.tkd(f)
    with pytest.raises(InvalidParameterError, match="NaN/Inf"):
        qsm.lcurve(f, mask)
    with pytest.raises(InvalidParameterError, match="threshold"):
        qsm.tkd(np.ones((4, 4, 4)), threshold=0.9)


# ---------------------------------------------------------------- L-curve
def test_lcurve_sums_match_image_space_norms():
    ph = head_phantom((20, 24, 22))
    vox, b = ph.voxel_size_mm, (0.1, 0.2, 1.0)
    f = simulate_field(ph.chi, voxel_size_mm=vox, b0_dir=b, mask=ph.mask, noise_ppm=0.003, seed=2).astype(
        np.float64
    )
    curve = qsm.lcurve(f, ph.mask, voxel_size_mm=vox, b0_dir=b, lams=np.logspace(-4, 0, 9))
    d = dipole_kernel(f.shape, voxel_size_mm=vox, b0_dir=b, dtype=np.float64)
    for lam, data, reg in zip(curve.lams, curve.data_fit, curve.regularization):
        chi = qsm.closed_form_l2(f, ph.mask, voxel_size_mm=vox, b0_dir=b, lam=lam, reference=None)
        # closed_form_l2 zeroes chi outside the mask; the L-curve describes the unmasked minimiser
        spec = (
            np.fft.fftn(f)
            * d
            / (
                d**2
                + lam
                * sum(
                    2 - 2 * np.cos(2 * np.pi * k)
                    for k in np.meshgrid(*[np.fft.fftfreq(n) for n in f.shape], indexing="ij")
                )
                + (d == 0)
            )
        )
        chi_full = np.real(np.fft.ifftn(spec))
        np.testing.assert_allclose(chi_full[ph.mask], chi[ph.mask], atol=1e-12)
        resid = np.real(np.fft.ifftn(d * np.fft.fftn(chi_full))) - f
        grad = sum(np.sum((np.roll(chi_full, -1, a) - chi_full) ** 2) for a in range(3))
        assert data == pytest.approx(np.sum(resid**2), rel=1e-3)
        assert reg == pytest.approx(grad, rel=1e-3)


def test_corner_of_an_analytic_l_curve():
    """x = log(1+e^s), y = log(1+e^-s) turns most sharply at s = 0 (lam = 1)."""
    lams = np.logspace(-3, 3, 61)
    s = np.log(lams)
    data, reg = 1 + np.exp(s), 1 + np.exp(-s)
    kappa = _curvature(lams, data, reg)
    lam, _ = _extremum(lams, kappa)
    assert lam == pytest.approx(1.0, rel=0.05)
    assert kappa.max() > 0


@pytest.fixture(scope="module")
def phantom64():
    return head_phantom((64, 64, 64))


@pytest.mark.parametrize("noise_ppm", [0.003, 0.01])
def test_gcv_lambda_is_within_factor_two_of_nrmse_optimal(phantom64, noise_ppm):
    ph = phantom64
    vox = ph.voxel_size_mm
    f = simulate_field(ph.chi, voxel_size_mm=vox, mask=ph.mask, noise_ppm=noise_ppm, seed=0)
    curve = qsm.lcurve(f, ph.mask, voxel_size_mm=vox)
    grid = np.logspace(-4, 0, 33)
    errs = [
        nrmse(qsm.closed_form_l2(f, ph.mask, voxel_size_mm=vox, lam=lam), ph.chi, mask=ph.mask)
        for lam in grid
    ]
    best = grid[int(np.argmin(errs))]
    assert curve.criterion == "gcv" and curve.lam == curve.lam_gcv
    assert 0.5 <= curve.lam / best <= 2.0, (curve.lam, best)
    chi_auto = qsm.closed_form_l2(f, ph.mask, voxel_size_mm=vox, lam="auto")
    np.testing.assert_allclose(
        chi_auto, qsm.closed_form_l2(f, ph.mask, voxel_size_mm=vox, lam=curve.lam), atol=1e-6
    )
    assert nrmse(chi_auto, ph.chi, mask=ph.mask) <= 1.05 * min(errs)


def test_lcurve_options_and_errors(phantom64):
    ph = phantom64
    f = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask, noise_ppm=0.003, seed=0)
    corner = qsm.lcurve(f, ph.mask, voxel_size_mm=ph.voxel_size_mm, criterion="corner")
    assert corner.lam == corner.lam_corner and corner.lams[0] <= corner.lam <= corner.lams[-1]
    assert np.all(np.diff(corner.data_fit) > 0) and np.all(np.diff(corner.regularization) < 0)
    d = corner.as_dict()
    assert d["criterion"] == "corner" and len(d["gcv"]) == len(corner.lams)
    with pytest.raises(InvalidParameterError, match="criterion"):
        qsm.lcurve(f, ph.mask, criterion="best")
    with pytest.raises(InvalidParameterError, match="lams"):
        qsm.lcurve(f, ph.mask, lams=[1e-3, 1e-2, 1e-1])
    with pytest.raises(InvalidParameterError, match="lams"):
        qsm.lcurve(f, ph.mask, lams=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5])


def test_field_units():
    f = np.full((2, 2, 2), 2 * 42.577478 * 3.0)
    np.testing.assert_allclose(qsm.field_to_ppm(f, units="hz", b0_tesla=3.0), 2.0)
    rad = f * 2 * np.pi * 0.02
    np.testing.assert_allclose(qsm.field_to_ppm(rad, units="rad", b0_tesla=3.0, te_s=0.02), 2.0)
    with pytest.raises(InvalidParameterError, match="b0_tesla"):
        qsm.field_to_ppm(f, units="hz")
    with pytest.raises(InvalidParameterError, match="te_s"):
        qsm.field_to_ppm(f, units="rad", b0_tesla=3)
    with pytest.raises(InvalidParameterError, match="units"):
        qsm.field_to_ppm(f, units="tesla")


def test_discrepancy_lam_matches_noise_on_trusted_voxels():
    from mrirecon.fft import real_filter
    from mrirecon.kspace import dipole_kernel
    from mrirecon.phantoms.head import head_phantom, simulate_field
    from mrirecon.qsm.lcurve import discrepancy_lam

    ph = head_phantom((40, 40, 40))
    rng = np.random.default_rng(0)
    sigma = np.where(ph.mask, 0.002 * (1 + rng.uniform(0, 1, ph.mask.shape)), 0).astype(np.float32)
    field = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask)
    field = (field + sigma * rng.standard_normal(field.shape)).astype(np.float32) * ph.mask
    lam = discrepancy_lam(field, ph.mask, sigma, voxel_size_mm=ph.voxel_size_mm, n_eval=30)
    # independent check: the residual of the closed form at that λ, through the dipole model
    chi = qsm.closed_form_l2(field * ph.mask, None, lam=lam, voxel_size_mm=ph.voxel_size_mm, reference=None)
    d = dipole_kernel(field.shape, voxel_size_mm=ph.voxel_size_mm, half=True)
    resid = real_filter(chi, d) - field
    trusted = ph.mask & (sigma <= np.quantile(sigma[ph.mask], 0.9))
    ratio = (resid[trusted] ** 2).sum() / (sigma[trusted] ** 2).sum()
    assert 1e-4 < lam < 1 and abs(ratio - 1) < 0.02
