"""mrirecon: MRI reconstruction with fast closed-form L2 (Tikhonov) regularisation.

Subpackages and modules (import what you need; heavy dependencies such as
nibabel, matplotlib and scikit-image load only when used):

- :mod:`mrirecon.qsm` — dipole inversion: :func:`~mrirecon.qsm.closed_form_l2`,
  :func:`~mrirecon.qsm.tkd`, :func:`~mrirecon.qsm.lcurve`
- :mod:`mrirecon.fft` — the FFT core (pyfftw, scipy.fft, cuFFT via CuPy)
- :mod:`mrirecon.kspace` — dipole and gradient kernels
- :mod:`mrirecon.io` — NIfTI, B0 direction from the affine, sidecars
- :mod:`mrirecon.phantoms`, :mod:`mrirecon.metrics`, :mod:`mrirecon.plot`
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mrirecon")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.1.0+unknown"

from . import qsm  # noqa: E402

__all__ = ["__version__", "qsm"]
