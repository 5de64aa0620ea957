"""The same reconstructions on CuPy arrays (skipped without CuPy and a GPU)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

cupy = pytest.importorskip("cupy")
try:
    cupy.cuda.runtime.getDeviceCount()
except Exception:  # pragma: no cover - no driver/device
    pytest.skip("no CUDA device", allow_module_level=True)

from mrirecon import fft, qsm  # noqa: E402
from mrirecon.phantoms import head_phantom, simulate_field  # noqa: E402


@pytest.fixture(scope="module")
def data():
    ph = head_phantom((32, 30, 28))
    f = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask, noise_ppm=0.003, seed=0)
    return ph, f


def test_fft_round_trip_on_device():
    x = cupy.random.standard_normal((9, 8, 7), dtype=cupy.float32)
    spec = fft.rfftn(x)
    assert isinstance(spec, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(fft.irfftn(spec, x.shape)), cupy.asnumpy(x), atol=1e-5)


@pytest.mark.parametrize("method", ["l2", "tkd", "auto"])
def test_device_results_match_host(data, method):
    ph, f = data
    kw = {"voxel_size_mm": ph.voxel_size_mm, "b0_dir": (0.1, 0.2, 1.0)}
    fd, md = cupy.asarray(f), cupy.asarray(ph.mask)
    if method == "tkd":
        host, dev = qsm.tkd(f, ph.mask, **kw), qsm.tkd(fd, md, **kw)
    else:
        lam = "auto" if method == "auto" else 0.01
        host, dev = qsm.closed_form_l2(f, ph.mask, lam=lam, **kw), qsm.closed_form_l2(fd, md, lam=lam, **kw)
    assert isinstance(dev, cupy.ndarray) and dev.dtype == cupy.float32
    np.testing.assert_allclose(cupy.asnumpy(dev), host, atol=1e-5 * float(np.abs(host).max()))


def test_lcurve_on_device(data):
    ph, f = data
    host = qsm.lcurve(f, ph.mask, voxel_size_mm=ph.voxel_size_mm)
    dev = qsm.lcurve(cupy.asarray(f), cupy.asarray(ph.mask), voxel_size_mm=ph.voxel_size_mm)
    np.testing.assert_allclose(dev.data_fit, host.data_fit, rtol=1e-4)
    assert dev.lam == pytest.approx(host.lam, rel=1e-3)
