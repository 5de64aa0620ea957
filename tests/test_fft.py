"""The FFT core against numpy.fft, on odd and even sizes, both precisions."""

import pickle

import numpy as np
import pytest

from mrirecon import fft

SHAPES = [(8, 6, 4), (7, 5, 9), (16, 15, 1), (12,)]


@pytest.fixture(params=["pyfftw", "scipy"])
def backend(request, monkeypatch):
    monkeypatch.setitem(fft._state, "backend", request.param)
    return request.param


def _tol(dtype):
    return 2e-5 if dtype == np.float32 else 1e-12


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rfftn_irfftn_match_numpy(backend, shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    spec = fft.rfftn(x)
    assert spec.dtype == np.result_type(dtype, np.complex64)
    assert spec.shape == fft.half_shape(shape)
    ref = np.fft.rfftn(x.astype(np.float64))
    assert np.abs(spec - ref).max() <= _tol(dtype) * np.abs(ref).max()
    back = fft.irfftn(spec, shape)
    assert back.dtype == dtype
    assert np.abs(back - x).max() <= _tol(dtype) * 10 * np.abs(x).max()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_and_centred_transforms(backend, shape, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    ref = np.fft.fftn(x.astype(np.complex128))
    tol = 2e-5 if dtype == np.complex64 else 1e-12
    y = fft.fftn(x)
    assert y.dtype == dtype
    assert np.abs(y - ref).max() <= tol * np.abs(ref).max()
    assert np.abs(fft.ifftn(y) - x).max() <= tol * 10 * np.abs(x).max()
    axes = tuple(range(len(shape)))[-2:]
    ref_c = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)
    yc = fft.fftc(x, axes=axes)
    assert np.abs(yc - ref_c).max() <= tol * np.abs(ref_c).max()
    assert np.abs(fft.ifftc(yc, axes=axes) - x).max() <= tol * 10 * np.abs(x).max()
    # orthonormal: the norm is kept
    assert np.linalg.norm(yc) == pytest.approx(np.linalg.norm(x), rel=1e-5)


@pytest.mark.parametrize("shape", [(9, 8, 7), (10, 6, 8)])
def test_real_filter_equals_composition(backend, shape):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    mask = rng.random(shape) > 0.3
    kernel = rng.standard_normal(fft.half_shape(shape)).astype(np.float32)
    ref = np.fft.irfftn(np.fft.rfftn(x * mask) * kernel, shape, axes=(0, 1, 2)) * mask
    out = fft.real_filter(x, kernel, mask=mask)
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() <= 1e-5 * np.abs(ref).max()
    # with a precomputed spectrum, the input array is not read
    spec = np.fft.rfftn(x * mask).astype(np.complex64)
    out2 = fft.real_filter(np.zeros(shape, np.float32), kernel, mask=mask, spectrum=spec)
    assert np.abs(out2 - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("shape", [(9, 8, 7), (10, 6, 8), (104, 100, 102)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_real_filter_on_either_array_module(xp, assert_on, shape, dtype, monkeypatch):
    """The two-FFT filter against numpy.fft in float64, on NumPy (FFTW) and CuPy (cuFFT).

    The largest shape is above the size where the CPU passes are split across
    threads, so the blocked copy-out with scale and mask runs threaded too.
    """
    from mrirecon.device import to_numpy

    monkeypatch.setenv("MRIRECON_FFT_THREADS", "2")
    if max(shape) > 100:  # the cache-blocked CPU path, which normally starts at 16 MiB volumes
        monkeypatch.setattr(fft, "_FUSED_MIN_BYTES", 0)
        assert fft._use_fused(shape, dtype)
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    mask = rng.random(shape) > 0.3
    kernel = rng.standard_normal(fft.half_shape(shape)).astype(dtype)
    ref = np.fft.irfftn(np.fft.rfftn(x * mask) * kernel, shape, axes=(0, 1, 2)) * mask
    tol = 1e-5 if dtype == np.float32 else 1e-12
    xd, md, kd = xp.asarray(x), xp.asarray(mask), xp.asarray(kernel)
    for m in (md, None):
        out = fft.real_filter(xd, kd, mask=m)
        assert_on(out)
        assert out.dtype == dtype and out.shape == shape
        want = ref if m is not None else np.fft.irfftn(np.fft.rfftn(x) * kernel, shape, axes=(0, 1, 2))
        assert np.abs(to_numpy(out) - want).max() <= tol * np.abs(want).max()
    spec = xp.asarray(np.fft.rfftn(x * mask).astype(np.result_type(dtype, np.complex64)))
    spec0 = to_numpy(spec).copy()
    out = fft.real_filter(xd, kd, mask=md, spectrum=spec)
    assert np.abs(to_numpy(out) - ref).max() <= tol * np.abs(ref).max()
    # nothing the caller passed in was modified
    assert np.array_equal(to_numpy(spec), spec0)
    assert np.array_equal(to_numpy(xd), x) and np.array_equal(to_numpy(kd), kernel)
    # the round trip on the same module
    back = fft.irfftn(fft.rfftn(xd), shape)
    assert_on(back)
    assert np.abs(to_numpy(back) - x).max() <= 10 * tol * np.abs(x).max()


def test_inputs_are_not_modified(backend):
    x = np.random.default_rng(3).standard_normal((6, 5, 4)).astype(np.float32)
    spec = np.fft.rfftn(x).astype(np.complex64)
    x0, s0 = x.copy(), spec.copy()
    fft.rfftn(x)
    fft.irfftn(spec, x.shape)
    assert np.array_equal(x, x0) and np.array_equal(spec, s0)


def test_results_do_not_alias_cached_buffers(monkeypatch):
    monkeypatch.setitem(fft._state, "backend", "pyfftw")
    a = np.ones((4, 4, 4), np.float32)
    first = fft.rfftn(a)
    fft.rfftn(2 * a)
    assert first[0, 0, 0] == pytest.approx(64.0)


def test_threads_from_environment(monkeypatch):
    monkeypatch.setenv("MRIRECON_FFT_THREADS", "3")
    assert fft.n_threads() == 3
    monkeypatch.setenv("MRIRECON_FFT_THREADS", "zero")
    with pytest.warns(UserWarning):
        assert fft.n_threads() >= 1


def test_wisdom_is_saved_and_reloaded(tmp_path, monkeypatch):
    """A MEASURE plan writes wisdom; a new process state imports it."""
    pyfftw = pytest.importorskip("pyfftw")
    monkeypatch.setenv("MRIRECON_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(fft._state, "backend", "pyfftw")
    monkeypatch.delitem(fft._state, "wisdom_loaded", raising=False)
    pyfftw.forget_wisdom()
    fft.clear_plan_cache()
    with fft.planning("FFTW_MEASURE"):
        x = np.random.default_rng(4).standard_normal((10, 9, 8)).astype(np.float32)
        ref = np.fft.rfftn(x)
        assert np.abs(fft.rfftn(x) - ref).max() < 1e-4
    path = fft.wisdom_path()
    assert path.parent == tmp_path and path.exists()
    saved = pickle.loads(path.read_bytes())
    assert len(saved[1]) > 0  # single-precision wisdom was recorded
    # a fresh start: forget everything, load from disk
    pyfftw.forget_wisdom()
    fft.clear_plan_cache()
    monkeypatch.delitem(fft._state, "wisdom_loaded")
    fft._load_wisdom()
    assert fft._state["wisdom"] is not None
    now = set(pyfftw.export_wisdom()[1].splitlines())
    assert set(saved[1].splitlines()) <= now
    fft.clear_plan_cache()


def test_damaged_wisdom_file_is_ignored(tmp_path, monkeypatch):
    pytest.importorskip("pyfftw")
    monkeypatch.setenv("MRIRECON_CACHE_DIR", str(tmp_path))
    monkeypatch.delitem(fft._state, "wisdom_loaded", raising=False)
    fft.wisdom_path().write_bytes(b"not a pickle")
    with pytest.warns(UserWarning, match="unreadable FFTW wisdom"):
        fft._load_wisdom()
