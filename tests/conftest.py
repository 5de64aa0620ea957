"""Test settings: cheap FFTW planning and a private wisdom cache.

FFTW_MEASURE costs seconds per new shape on a 2-core machine; the tests use
FFTW_ESTIMATE and a temporary cache directory, so no test depends on wisdom
left behind by an earlier run (the wisdom round trip has its own test).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("MRIRECON_FFTW_PLANNER", "FFTW_ESTIMATE")
_CACHE_DIR = tempfile.mkdtemp(prefix="mrirecon-test-cache-")
os.environ["MRIRECON_CACHE_DIR"] = _CACHE_DIR
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)  # one per run, not left in /tmp
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError
    except Exception:
        pytest.skip("CuPy is installed but no CUDA device is visible")
    return cupy


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """The array module a test runs on: NumPy always, CuPy where a GPU is present.

    Tests of public reconstruction functions take this fixture, build their
    inputs with NumPy (seeded), move them with ``xp.asarray`` and compare
    ``to_numpy(result)`` with the same references on both modules.
    """
    if request.param == "numpy":
        return np
    return _cupy_or_skip()


@pytest.fixture
def assert_on(xp):
    """``assert_on(result)``: the result lives in ``xp`` (no silent host/device copy)."""

    def check(*arrays):
        for a in arrays:
            assert type(a).__module__.split(".")[0] == xp.__name__, (
                f"result is a {type(a).__module__}.{type(a).__name__}, expected an {xp.__name__} array"
            )

    return check
