"""``--device cpu|gpu`` for the reconstruction commands: one copy in, one copy out."""

from __future__ import annotations

from ..device import cupy_available, to_device, to_numpy
from ..errors import InvalidParameterError

__all__ = ["add_device_argument", "check_device", "describe", "to_device", "to_numpy"]


def add_device_argument(p) -> None:
    p.add_argument(
        "--device",
        choices=("cpu", "gpu"),
        default="cpu",
        help="cpu (default): FFTW on this machine's cores; gpu: CuPy/cuFFT on the current CUDA "
        "device (pip install 'mrirecon[gpu]'); the inputs are copied to the GPU once and the "
        "results back once",
    )


def check_device(device: str) -> None:
    """Fail early (before any input is read) when the GPU was asked for and is not there."""
    if device == "gpu" and not cupy_available():
        raise InvalidParameterError(
            "--device gpu needs CuPy and a CUDA GPU (pip install 'mrirecon[gpu]'); none was found"
        )


def describe(device: str) -> str:
    """``"cpu"``, or ``"gpu (<device name>)"`` for the sidecar."""
    if device != "gpu":
        return "cpu"
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
    if isinstance(name, bytes):
        name = name.decode()
    return f"gpu ({name})"
