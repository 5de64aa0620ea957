"""Phase to field: units, Laplacian unwrapping, multi-echo fit."""

import warnings

import numpy as np
import pytest

from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError, ShapeMismatchError
from mrirecon.qsm.phase import (
    EchoFit,
    PhaseRescaledWarning,
    field_hz_to_ppm,
    fit_echoes,
    laplacian_kernels,
    laplacian_unwrap,
    phase_to_radians,
    unwrap_echoes,
)
from mrirecon.qsm.units import field_to_ppm

PI32 = np.float32(np.pi)


def _wrap(phi):
    return np.angle(np.exp(1j * phi))


def _grid(shape):
    return np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")


# ---------------------------------------------------------------- phase_to_radians


def test_radians_pass_through(xp, assert_on):
    rng = np.random.default_rng(0)
    phi = rng.uniform(-np.pi, np.pi, (8, 9, 10)).astype(np.float32)
    phi_d = xp.asarray(phi)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = phase_to_radians(phi_d)
        out_rad = phase_to_radians(phi_d, units="rad")
    assert_on(out, out_rad)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(to_numpy(out), phi)
    np.testing.assert_array_equal(to_numpy(out_rad), phi)
    assert out is not phi_d


def test_radians_wrapped_to_half_open_interval(xp, assert_on):
    x = np.array([np.pi, np.pi + 5e-4, -np.pi - 5e-4, 0.0, -np.pi])
    out = phase_to_radians(xp.asarray(x), units="radians")
    assert_on(out)
    out = to_numpy(out)
    assert out.dtype == np.float64  # float64 stays float64
    assert np.all(out < np.pi) and np.all(out >= -np.pi)
    np.testing.assert_allclose(out, [-np.pi, -np.pi + 5e-4, np.pi - 5e-4, 0.0, -np.pi], atol=1e-12)


def test_signed_integers_rescaled(xp, assert_on):
    v = np.arange(-4096, 4096, dtype=np.int16).reshape(16, 16, 32)
    with pytest.warns(PhaseRescaledWarning, match=r"\[-4096, 4096\)"):
        out = phase_to_radians(xp.asarray(v))
    assert_on(out)
    out = to_numpy(out)
    assert out.dtype == np.float32 and out.shape == v.shape
    flat = out.reshape(-1)
    assert flat[0] == -PI32  # -4096 -> -π
    assert flat[4096] == 0.0  # 0 -> 0
    np.testing.assert_allclose(flat[4096 + 2048], np.pi / 2, rtol=1e-7)
    np.testing.assert_allclose(flat, np.arange(-4096, 4096) * np.pi / 4096, atol=1e-6)
    assert flat.max() < np.pi and flat.min() >= -PI32


def test_unsigned_integers_rescaled(xp, assert_on):
    v = np.arange(4096, dtype=np.uint16)
    with pytest.warns(PhaseRescaledWarning, match=r"\[0, 4096\)"):
        out = phase_to_radians(xp.asarray(v), units="a.u.")
    assert_on(out)
    out = to_numpy(out)
    assert out[0] == -PI32  # 0 -> -π
    assert out[2048] == 0.0  # mid-range -> 0
    np.testing.assert_allclose(out, np.arange(4096) * 2 * np.pi / 4096 - np.pi, atol=1e-6)
    assert out.max() < np.pi


def test_unsigned_range_at_least_8_bits():
    with pytest.warns(PhaseRescaledWarning, match=r"\[0, 256\)"):
        out = phase_to_radians(np.array([0, 10, 100], dtype=np.uint8), units="arbitrary")
    np.testing.assert_allclose(out, np.array([0, 10, 100]) * 2 * np.pi / 256 - np.pi, atol=1e-6)


def test_wrong_units_and_bad_values():
    with pytest.raises(InvalidParameterError, match="integer-scaled"):
        phase_to_radians(np.array([0.0, 4095.0]), units="rad")
    with pytest.raises(InvalidParameterError, match="units must be"):
        phase_to_radians(np.zeros(3), units="degrees")
    with pytest.raises(InvalidParameterError, match="NaN"):
        phase_to_radians(np.array([0.0, np.nan]))
    with pytest.raises(InvalidParameterError, match="complex"):
        phase_to_radians(np.exp(1j * np.zeros(3)))


# ---------------------------------------------------------------- laplacian_unwrap


def test_laplacian_kernels_cached_and_read_only(xp, assert_on):
    lap, inv = laplacian_kernels((8, 10, 12), voxel_size_mm=(1.0, 1.0, 2.0), xp=xp)
    assert_on(lap, inv)
    assert laplacian_kernels((8, 10, 12), voxel_size_mm=(1, 1, 2), xp=xp)[0] is lap
    host = laplacian_kernels((8, 10, 12), voxel_size_mm=(1.0, 1.0, 2.0))
    np.testing.assert_array_equal(to_numpy(lap), host[0])
    np.testing.assert_array_equal(to_numpy(inv), host[1])
    lap, inv = host
    assert lap.shape == (8, 10, 7) and lap.dtype == np.float32
    assert not lap.flags.writeable and not inv.flags.writeable
    assert lap[0, 0, 0] == 0 and inv[0, 0, 0] == 0
    assert laplacian_kernels((8, 10, 12), voxel_size_mm=(1, 1, 2))[0] is lap
    np.testing.assert_allclose((lap * inv).reshape(-1)[1:], 1.0, rtol=1e-6)


@pytest.mark.parametrize("voxel_size_mm", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.0)])
def test_unwrap_periodic_phase_exact(voxel_size_mm, xp, assert_on):
    # low-frequency Fourier modes: periodic, and exp(iφ) (nearly) band-limited on the
    # grid, so the spectral Laplacian makes the closed form exact up to a constant.
    # (On a 32³ grid the same phase is too steep: the spectrum of sin φ aliases and
    # the error is 2e-3 rad.)
    n = 48
    x, y, z = _grid((n, n, n))
    phi = (
        6 * np.cos(2 * np.pi * x / n)
        + 4 * np.sin(2 * np.pi * (y + z) / n)
        + 3 * np.cos(2 * np.pi * 2 * z / n + 1)
    )
    assert np.ptp(phi) > 20
    out = laplacian_unwrap(xp.asarray(_wrap(phi).astype(np.float32)), voxel_size_mm=voxel_size_mm)
    assert_on(out)
    assert out.dtype == np.float32
    d = to_numpy(out) - phi
    d -= d.mean()
    assert np.sqrt(np.mean(d**2)) < 1e-5  # measured 1.4e-6 (isotropic), 1.6e-6 (anisotropic)
    assert np.abs(d).max() < 5e-5  # measured 5.8e-6, 6.3e-6


def _bump_phase(n, amp=20.0):
    """A smooth phase that vanishes (with its derivatives) outside a sphere."""
    x, y, z = _grid((n, n, n))
    r2 = ((x - n / 2) ** 2 + (y - n / 2 + 1) ** 2 + ((z - n / 2) * 1.1) ** 2) / (n / 2) ** 2
    window = np.where(r2 < 1, np.cos(np.pi / 2 * np.sqrt(np.minimum(r2, 1))) ** 2, 0.0)
    inside = 0.5 * amp * np.cos(2 * np.pi * x / (1.7 * n) + 0.3) + 0.3 * amp * np.sin(
        2 * np.pi * y / (2.3 * n)
    )
    return window * (inside + amp * np.exp(-3 * r2))


@pytest.mark.parametrize("voxel_size_mm", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
def test_unwrap_phase_inside_sphere(voxel_size_mm, xp, assert_on):
    n = 48
    phi = _bump_phase(n)
    assert np.ptp(phi) > 20
    wrapped = _wrap(phi)
    assert np.ptp(wrapped) < 2 * np.pi
    out = laplacian_unwrap(xp.asarray(wrapped), voxel_size_mm=voxel_size_mm)
    assert_on(out)
    assert out.dtype == np.float64
    d = to_numpy(out) - phi
    d -= d.mean()
    assert np.sqrt(np.mean(d**2)) < 1e-4  # measured 3.2e-5 (isotropic), 2.9e-5 (1x1x2 mm)


def _harmonic_basis(n, region):
    g = np.arange(n, dtype=float) - n / 2
    x, y, z = (a[region].reshape(-1) / n for a in np.meshgrid(g, g, g, indexing="ij"))
    cols = [np.ones_like(x), x, y, z, x * y, y * z, x * z, x * x - y * y, y * y - z * z]
    cols += [x**3 - 3 * x * y * y, y**3 - 3 * y * z * z, z**3 - 3 * z * x * x, x * y * z]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("voxel_size_mm", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
def test_unwrap_nonperiodic_phase_up_to_harmonic(voxel_size_mm, xp, assert_on):
    # a smooth phase over the whole (non-periodic) grid: inside, the result
    # differs from the truth by a smooth harmonic function, not a constant
    n = 32
    x, y, z = _grid((n, n, n))
    r2 = ((x - n / 2) ** 2 + (y - n / 2 + 1) ** 2 + ((z - n / 2) * 1.1) ** 2) / (n / 2) ** 2
    phi = (
        8 * np.cos(2 * np.pi * x / (1.7 * n) + 0.3)
        + 5 * np.sin(2 * np.pi * y / (2.3 * n))
        + 14 * np.exp(-3 * r2)
    )
    assert np.ptp(phi) > 20
    out = laplacian_unwrap(xp.asarray(_wrap(phi).astype(np.float32)), voxel_size_mm=voxel_size_mm)
    assert_on(out)
    out = to_numpy(out)
    region = (slice(6, n - 6),) * 3
    d = (out - phi)[region].reshape(-1)
    assert np.std(d) > 1.0  # not a constant offset
    basis = _harmonic_basis(n, region)
    coef, *_ = np.linalg.lstsq(basis, d, rcond=None)
    rms = np.sqrt(np.mean((d - basis @ coef) ** 2))
    assert rms < 0.02  # measured 0.0065 (isotropic), 0.0075 (1x1x2 mm)


def test_unwrap_4d_equals_per_echo(xp, assert_on):
    n = 32
    phi = _bump_phase(n).astype(np.float32)
    echoes = xp.asarray(np.stack([_wrap(phi), _wrap(2.0 * phi), _wrap(3.0 * phi)]))
    out = laplacian_unwrap(echoes, voxel_size_mm=1.0)
    assert_on(out)
    assert out.shape == echoes.shape and out.dtype == np.float32
    for e in range(3):
        np.testing.assert_array_equal(
            to_numpy(out[e]), to_numpy(laplacian_unwrap(echoes[e], voxel_size_mm=1.0))
        )


def test_unwrap_echoes_temporal(xp, assert_on):
    # echo differences: echo n = unwrap(echo 1) + sum of unwrapped wrapped differences
    n = 32
    phi = _bump_phase(n, amp=12.0)
    echoes = np.stack([_wrap(phi), _wrap(2.0 * phi), _wrap(3.0 * phi)])
    out = unwrap_echoes(xp.asarray(echoes), voxel_size_mm=1.0)
    assert_on(out)
    assert out.dtype == np.float64
    out = to_numpy(out)
    for e, factor in enumerate((1.0, 2.0, 3.0)):
        d = out[e] - factor * phi
        d -= d.mean()
        assert np.sqrt(np.mean(d**2)) < 1e-3  # measured 7e-5, 1.5e-4, 2.2e-4 rad
    per_echo = unwrap_echoes(xp.asarray(echoes), voxel_size_mm=1.0, temporal=False)
    assert_on(per_echo)
    expected = laplacian_unwrap(xp.asarray(echoes), voxel_size_mm=1.0)
    np.testing.assert_array_equal(to_numpy(per_echo), to_numpy(expected))
    # cuFFT and FFTW round differently: the same result to ~1e-14 rad across modules (measured 9e-15)
    np.testing.assert_allclose(to_numpy(per_echo), laplacian_unwrap(echoes, voxel_size_mm=1.0), atol=1e-12)


def test_unwrap_echoes_first_left_wrapped(xp, assert_on):
    # unwrap_first=False: echo 1 stays wrapped, every echo moves by the same per-voxel
    # amount, so the fitted field and residual are those of the default (independent
    # reference: the default path), only the intercept changes
    n = 32
    phi = _bump_phase(n, amp=12.0)
    rng = np.random.default_rng(3)
    offset = rng.uniform(-3, 3) + 0.5 * phi / phi.max()
    echoes = np.stack([_wrap(offset + f * phi) for f in (1.0, 2.0, 3.0)]).astype(np.float32)
    echoes = echoes + (2 * np.pi) * rng.integers(-1, 2, size=echoes.shape)  # any range goes in
    mags = rng.uniform(0.5, 1.0, size=echoes.shape).astype(np.float32)
    te = (0.004, 0.008, 0.012)
    full = unwrap_echoes(xp.asarray(echoes), voxel_size_mm=1.0)
    short = unwrap_echoes(xp.asarray(echoes), voxel_size_mm=1.0, unwrap_first=False)
    assert_on(short)
    first = to_numpy(short[0])
    assert first.min() >= -np.pi - 1e-5 and first.max() <= np.pi + 1e-5
    shift = to_numpy(full - short)
    np.testing.assert_allclose(shift - shift[0], 0, atol=2e-5)  # one shift for all echoes
    a = fit_echoes(full, te, magnitude=xp.asarray(mags))
    b = fit_echoes(short, te, magnitude=xp.asarray(mags))
    scale = float(np.abs(to_numpy(a.field_hz)).max())
    np.testing.assert_allclose(to_numpy(b.field_hz), to_numpy(a.field_hz), atol=2e-5 * scale)
    np.testing.assert_allclose(to_numpy(b.residual_rad), to_numpy(a.residual_rad), atol=2e-5)


def test_atan2_fast_against_numpy():
    from mrirecon.qsm.phase import _atan2_fast

    rng = np.random.default_rng(0)
    y = rng.standard_normal(200_000).astype(np.float32) * rng.choice([1e-3, 1.0, 1e3], 200_000).astype(
        np.float32
    )
    x = rng.standard_normal(200_000).astype(np.float32)
    special = np.float32([0, 0, 1, -1, 0, 1, -1, 1, -1])
    specialx = np.float32([1, -1, 0, 0, 0, 1, 1, -1, -1])
    y, x = np.concatenate([y, special]), np.concatenate([x, specialx])
    err = _atan2_fast(y, x) - np.arctan2(y, x)
    err = np.angle(np.exp(1j * err.astype(np.float64)))  # ±π are the same angle
    assert np.abs(err).max() < 5e-6


def test_equally_spaced():
    from mrirecon.qsm.phase import equally_spaced

    assert equally_spaced([0.004, 0.012, 0.020])
    assert equally_spaced([4e-3, 8e-3, 12e-3, 16.000001e-3])
    assert not equally_spaced([0.004, 0.012])  # two echoes: nothing to average
    assert not equally_spaced([0.004, 0.010, 0.020])
    assert not equally_spaced([0.020, 0.012, 0.004])


def test_unwrap_mean_difference_noise_free(xp, assert_on):
    # equally spaced echoes of a steep smooth field: each echo comes back as n·φ up to a constant
    from mrirecon.qsm.phase import unwrap_mean_difference

    n = 32
    phi = _bump_phase(n, amp=10.0)
    offset = 0.4 * np.cos(2 * np.pi * _grid((n, n, n))[0] / n)
    echoes = np.stack([_wrap(offset + f * phi) for f in (1.0, 2.0, 3.0, 4.0)]).astype(np.float32)
    mags = np.stack([np.full((n, n, n), a, np.float32) for a in (1.0, 0.8, 0.6, 0.5)])
    out = unwrap_mean_difference(xp.asarray(echoes), magnitude=xp.asarray(mags), voxel_size_mm=1.0)
    assert_on(out)
    out = to_numpy(out)
    assert out.dtype == np.float32
    for k in range(1, 4):
        d = (out[k] - out[0]) - k * phi
        d -= d.mean()
        assert np.sqrt(np.mean(d**2)) < 2e-3
    # two echoes: the same as unwrapping the one difference
    two = unwrap_mean_difference(xp.asarray(echoes[:2]), voxel_size_mm=1.0)
    ref = unwrap_echoes(xp.asarray(echoes[:2]), voxel_size_mm=1.0, unwrap_first=False)
    np.testing.assert_allclose(to_numpy(two), to_numpy(ref), atol=1e-4)


def test_unwrap_mean_difference_keeps_the_data_and_the_field():
    # noisy echoes: every unwrapped difference is its data's difference plus one smooth
    # field, the same for all of them modulo 2π (the unwrap's harmonic part; the per-voxel
    # deviations are exact), and the fitted field is as good as one unwrap per difference's
    # (independent reference)
    from mrirecon.qsm.phase import unwrap_mean_difference

    n = 40
    rng = np.random.default_rng(5)
    phi = _bump_phase(n, amp=9.0)
    mags = rng.uniform(0.3, 1.0, size=(3, n, n, n)).astype(np.float32)
    noise = rng.normal(0, 0.15, size=(3, n, n, n)) / mags
    echoes = np.stack([_wrap(f * phi + noise[i]) for i, f in enumerate((1.0, 2.0, 3.0))]).astype(np.float32)
    out = unwrap_mean_difference(echoes, magnitude=mags, voxel_size_mm=1.0)
    jumps = [(out[k] - out[k - 1]) - (echoes[k] - echoes[k - 1]) for k in (1, 2)]
    same = np.angle(np.exp(1j * (jumps[1] - jumps[0]).astype(np.float64)))
    assert np.abs(same).max() < 1e-4
    assert np.std(jumps[0]) > 1e-3  # (not trivially zero: the unwrap's smooth part is there)
    te = (0.004, 0.008, 0.012)
    a = fit_echoes(out, te, magnitude=mags).field_hz
    b = fit_echoes(unwrap_echoes(echoes, voxel_size_mm=1.0, unwrap_first=False), te, magnitude=mags).field_hz
    true = phi / (2 * np.pi * 0.004)
    inside = phi != 0
    ea, eb = a - true, b - true
    ea, eb = ea - ea[inside].mean(), eb - eb[inside].mean()
    rms = np.sqrt(np.mean(true[inside] ** 2))
    ra, rb = (np.sqrt(np.mean(e[inside] ** 2)) / rms for e in (ea, eb))
    # measured 0.104 against 0.153: the mean difference is less noisy to unwrap
    assert ra < 0.15  # the noise (0.15-0.5 rad per echo) sets it
    assert ra < rb


def test_unwrap_errors():
    with pytest.raises(ShapeMismatchError, match="3-D"):
        laplacian_unwrap(np.zeros((4, 4)))
    bad = np.zeros((8, 8, 8))
    bad[1, 2, 3] = np.inf
    with pytest.raises(InvalidParameterError, match="NaN/Inf"):
        laplacian_unwrap(bad)
    with pytest.raises(InvalidParameterError, match="voxel_size_mm"):
        laplacian_unwrap(np.zeros((8, 8, 8)), voxel_size_mm=(1, 1, 0))


# ---------------------------------------------------------------- fit_echoes

TE = (4.1e-3, 9.7e-3, 18.2e-3)


def _field_and_offset(shape=(10, 11, 12)):
    x, y, z = _grid(shape)
    field = 30.0 + 8.0 * np.sin(x / 3.0) * np.cos(y / 4.0) - 0.5 * z
    return field, np.full(shape, 0.5)


def _fit_on_host(fit, assert_on):
    """An :class:`EchoFit` of ``xp`` arrays, checked to be on ``xp``, as NumPy arrays."""
    assert isinstance(fit, EchoFit)
    assert_on(fit.field_hz, fit.offset_rad, fit.residual_rad)
    return EchoFit(*(to_numpy(a) for a in (fit.field_hz, fit.offset_rad, fit.residual_rad)))


def test_fit_noise_free_exact(xp, assert_on):
    field, offset = _field_and_offset()
    phase = np.stack([offset + 2 * np.pi * field * t for t in TE])
    fit = _fit_on_host(fit_echoes(xp.asarray(phase.astype(np.float32)), TE), assert_on)
    assert fit.field_hz.dtype == np.float32 and fit.field_hz.shape == field.shape
    np.testing.assert_allclose(fit.field_hz, field, atol=1e-4)  # measured 1.1e-5 Hz (float32)
    np.testing.assert_allclose(fit.offset_rad, offset, atol=1e-5)  # measured 1e-6 rad
    fit64 = fit_echoes(xp.asarray(phase), list(TE), magnitude=xp.asarray(np.ones_like(phase) * 3.0))
    fit64 = _fit_on_host(fit64, assert_on)
    assert fit64.field_hz.dtype == np.float64
    np.testing.assert_allclose(fit64.field_hz, field, atol=1e-9)  # measured 2e-14 Hz
    np.testing.assert_allclose(fit64.offset_rad, 0.5, atol=1e-9)
    assert fit64.residual_rad.max() < 1e-9


def test_fit_residual_and_mask(xp, assert_on):
    field, offset = _field_and_offset((4, 5, 6))
    phase = np.stack([offset + 2 * np.pi * field * t for t in TE])
    phase[1] += 0.3  # the middle echo off the line
    mask = np.ones(field.shape, dtype=bool)
    mask[0] = False
    fit = _fit_on_host(fit_echoes(xp.asarray(phase), TE, mask=xp.asarray(mask)), assert_on)
    assert (
        np.all(fit.field_hz[0] == 0) and np.all(fit.offset_rad[0] == 0) and np.all(fit.residual_rad[0] == 0)
    )
    # the residual of a 3-point line fit to one point displaced by 0.3 rad
    t = np.asarray(TE)
    a = np.stack([np.ones(3), t], axis=1)
    r = np.array([0.0, 0.3, 0.0])
    r = r - a @ np.linalg.lstsq(a, r, rcond=None)[0]
    np.testing.assert_allclose(fit.residual_rad[1:], np.sqrt(np.mean(r**2)), rtol=1e-6)


def test_fit_weighted_beats_unweighted(xp, assert_on):
    rng = np.random.default_rng(3)
    shape = (16, 16, 16)
    field, offset = _field_and_offset(shape)
    mags = np.array([1.0, 0.7, 0.05])  # the last echo has decayed ...
    sigma = 0.02 / mags  # ... so its phase noise is 20x larger (sigma_phase = sigma_signal / magnitude)
    phase = np.stack(
        [offset + 2 * np.pi * field * t + s * rng.standard_normal(shape) for t, s in zip(TE, sigma)]
    )
    magnitude = np.broadcast_to(mags[:, None, None, None], phase.shape)
    weighted = _fit_on_host(fit_echoes(xp.asarray(phase), TE, magnitude=xp.asarray(magnitude)), assert_on)
    unweighted = _fit_on_host(fit_echoes(xp.asarray(phase), TE), assert_on)
    err_w = np.sqrt(np.mean((weighted.field_hz - field) ** 2))
    err_u = np.sqrt(np.mean((unweighted.field_hz - field) ** 2))
    assert err_w < 0.5 * err_u  # measured 0.97 Hz vs 4.7 Hz RMS


def test_fit_zero_weight_voxels(xp, assert_on):
    field, offset = _field_and_offset((3, 4, 5))
    phase = np.stack([offset + 2 * np.pi * field * t for t in TE])
    magnitude = np.ones_like(phase)
    magnitude[:, 0] = 0.0  # no signal at all
    magnitude[1:, 1] = 0.0  # signal in one echo only: slope undetermined
    fit = _fit_on_host(fit_echoes(xp.asarray(phase), TE, magnitude=xp.asarray(magnitude)), assert_on)
    assert np.all(fit.field_hz[0] == 0) and np.all(fit.offset_rad[0] == 0)
    assert np.all(fit.field_hz[1] == 0)
    np.testing.assert_allclose(fit.offset_rad[1], phase[0, 1], rtol=1e-6)
    np.testing.assert_allclose(fit.field_hz[2:], field[2:], atol=1e-4)
    assert np.all(np.isfinite(fit.residual_rad))


def test_fit_errors():
    phase = np.zeros((3, 4, 4, 4))
    with pytest.raises(InvalidParameterError, match="single echo"):
        fit_echoes(phase[:1], [5e-3])
    with pytest.raises(ShapeMismatchError, match="3 echoes"):
        fit_echoes(phase, [5e-3, 10e-3])
    with pytest.raises(ShapeMismatchError, match="4-D"):
        fit_echoes(phase[0], TE)
    with pytest.raises(ShapeMismatchError, match="magnitude"):
        fit_echoes(phase, TE, magnitude=np.ones((3, 4, 4, 5)))
    with pytest.raises(ShapeMismatchError, match="mask"):
        fit_echoes(phase, TE, mask=np.ones((4, 4, 5), dtype=bool))
    with pytest.raises(InvalidParameterError, match="positive"):
        fit_echoes(phase, (5e-3, -1e-3, 10e-3))
    with pytest.raises(InvalidParameterError, match="distinct"):
        fit_echoes(phase, (5e-3, 5e-3, 5e-3))
    with pytest.raises(InvalidParameterError, match="non-negative"):
        fit_echoes(phase, TE, magnitude=-np.ones(phase.shape))
    bad = phase.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InvalidParameterError, match="NaN"):
        fit_echoes(bad, TE)


def test_field_hz_to_ppm(xp, assert_on):
    f = xp.asarray(np.array([42.577478 * 3.0, 0.0], dtype=np.float32))
    out = field_hz_to_ppm(f, b0_tesla=3.0)
    assert_on(out)
    assert out.dtype == np.float32
    np.testing.assert_allclose(to_numpy(out), [1.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(to_numpy(out), to_numpy(field_to_ppm(f, units="hz", b0_tesla=3.0)))


@pytest.mark.gpu
def test_phase_and_magnitude_on_two_devices_raise(xp):
    if xp is np:
        pytest.skip("needs two array modules")
    phase = np.zeros((3, 4, 4, 4))
    with pytest.raises(InvalidParameterError, match="different devices"):
        fit_echoes(xp.asarray(phase), TE, magnitude=np.ones(phase.shape))
    with pytest.raises(InvalidParameterError, match="mask is a CuPy array"):
        fit_echoes(phase, TE, mask=xp.ones((4, 4, 4), dtype=bool))
