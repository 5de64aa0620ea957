"""Array modules and devices: NumPy on the CPU, CuPy on a GPU.

mrirecon's reconstructions follow their input: a :class:`numpy.ndarray` runs on
the CPU (FFTW), a :class:`cupy.ndarray` runs on the GPU (cuFFT) and the result
stays there. Nothing in the library copies between host and device behind the
caller's back; the functions here are the explicit, one-time moves (the CLI's
``--device gpu`` uses them once on the way in and once on the way out).
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidParameterError

__all__ = ["DEVICES", "cupy_available", "get_array_module", "is_device_array", "to_device", "to_numpy"]

DEVICES = ("cpu", "gpu")


def get_array_module(x):
    """Return the array module (:mod:`numpy` or :mod:`cupy`) that owns ``x``."""
    if type(x).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def is_device_array(x) -> bool:
    """True for a CuPy array (data in GPU memory)."""
    return get_array_module(x) is not np


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def to_numpy(x):
    """``x`` as a NumPy array (a device-to-host copy for CuPy arrays; NumPy arrays pass through)."""
    if is_device_array(x):
        return x.get()
    return np.asarray(x)


def to_device(x, device: str):
    """Move ``x`` to ``"cpu"`` (NumPy) or ``"gpu"`` (CuPy, the current CUDA device).

    Raises
    ------
    InvalidParameterError
        For an unknown device name, or ``"gpu"`` without CuPy and a CUDA device.
    """
    if device not in DEVICES:
        raise InvalidParameterError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return to_numpy(x)
    if not cupy_available():
        raise InvalidParameterError(
            "device 'gpu' needs CuPy and a CUDA GPU (pip install 'mrirecon[gpu]'); none was found"
        )
    import cupy

    return cupy.asarray(x)
