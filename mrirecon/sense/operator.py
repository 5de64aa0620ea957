"""The SENSE encoding operator: coil sensitivities, centred orthonormal FFT, sampling mask."""

from __future__ import annotations

import numpy as np

from .._xp import common_module
from ..device import is_device_array
from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import fftc, get_array_module, ifftc
from ..operators import Operator

__all__ = ["SenseOp", "check_sens", "common_module"]


def _complex_dtype(a) -> np.dtype:
    return np.dtype(np.complex128) if a.dtype in (np.float64, np.complex128) else np.dtype(np.complex64)


def check_sens(sens):
    """Validate coil maps ``(coil, *spatial)`` (2-D or 3-D spatial, finite); return them complex.

    complex128/float64 stay double precision, anything else becomes complex64.
    """
    xp = get_array_module(sens)
    sens = xp.asarray(sens)
    if sens.ndim not in (3, 4):
        raise ShapeMismatchError(
            f"coil maps must have shape (coil, n0, n1) or (coil, n0, n1, n2), got {tuple(sens.shape)}"
        )
    if sens.shape[0] < 1 or min(sens.shape) < 1:
        raise ShapeMismatchError(f"coil maps must not be empty, got shape {tuple(sens.shape)}")
    if not (np.issubdtype(sens.dtype, np.number) and not np.issubdtype(sens.dtype, np.bool_)):
        raise InvalidParameterError(f"coil maps must be numeric, got dtype {sens.dtype}")
    sens = sens.astype(_complex_dtype(sens), copy=False)
    if not bool(xp.isfinite(sens).all()):
        raise InvalidParameterError("coil maps contain NaN or infinite values")
    return sens


def check_kspace_values(kspace, xp=np):
    """Raise unless ``kspace`` (an array of module ``xp``) is numeric and finite everywhere."""
    if not np.issubdtype(kspace.dtype, np.number) or kspace.dtype == np.bool_:
        raise InvalidParameterError(f"k-space must be numeric, got dtype {kspace.dtype}")
    if not bool(xp.isfinite(kspace).all()):
        raise InvalidParameterError("k-space contains NaN or infinite values")


def check_mask(mask, spatial, xp=np):
    """Validate a sampling mask of the spatial shape; return it as a bool array of module ``xp``.

    A mask is small and is usually made on the host by the generators of
    :mod:`mrirecon.sense.sampling`: a NumPy mask (or a list) given with CuPy
    data is copied to the device once, here; a CuPy mask given with NumPy data
    raises (no device-to-host copy is made behind the caller's back).
    """
    if xp is np and is_device_array(mask):
        raise InvalidParameterError(
            "the sampling mask is a CuPy array but the data are NumPy arrays: move it with "
            "mrirecon.device.to_numpy, or pass the data as CuPy arrays"
        )
    mask = xp.asarray(mask)
    if tuple(mask.shape) != tuple(spatial):
        raise ShapeMismatchError(
            f"sampling mask must have the spatial shape {tuple(spatial)}, got {tuple(mask.shape)}"
        )
    if mask.dtype != np.bool_:
        if not bool(xp.isfinite(mask).all()):
            raise InvalidParameterError("sampling mask contains NaN or infinite values")
        mask = mask != 0
    if not bool(mask.any()):
        raise InvalidParameterError("sampling mask is empty: no k-space sample is marked as acquired")
    return mask


class SenseOp(Operator):
    """SENSE encoding ``A x = M · fftc(S x)``: image ``(*spatial)`` → k-space ``(coil, *spatial)``.

    Parameters
    ----------
    sens : ndarray, complex, shape (coil, *spatial)
        Coil sensitivity maps, spatial 2-D ``(n0, n1)`` or 3-D ``(n0, n1, n2)``.
        complex128 keeps the operator in double precision; anything else is complex64.
        NumPy maps make a CPU operator, CuPy maps a GPU operator (inputs and
        outputs of ``forward``/``adjoint`` then are CuPy arrays).
    mask : ndarray of bool, shape spatial, optional
        Sampling mask M (True: acquired). None: fully sampled (M = I). A NumPy
        mask is copied to the maps' device (see :func:`check_mask`).

    Notes
    -----
    ``forward(x) = M · F(S_c x)`` for every coil c and
    ``adjoint(y) = Σ_c conj(S_c) · F⁻¹(M · y_c)``, with F the centred orthonormal
    FFT over the spatial axes (:func:`mrirecon.fft.fftc`). Because F is unitary,
    ``‖A‖ ≤ max_r sqrt(Σ_c |S_c(r)|²)`` (1 for maps normalised by their
    root-sum-of-squares). The operator passes :func:`mrirecon.testing.dot_test`.
    """

    def __init__(self, sens, mask=None):
        sens = check_sens(sens)
        xp = get_array_module(sens)
        spatial = tuple(sens.shape[1:])
        super().__init__(spatial, sens.shape, sens.dtype)
        #: the array module (numpy or cupy) the operator works in
        self.xp = xp
        self.sens = sens
        self.sens_conj = xp.conj(sens)
        self.axes = tuple(range(1, sens.ndim))
        self.mask = None if mask is None else check_mask(mask, spatial, xp)

    @property
    def n_coils(self) -> int:
        return int(self.sens.shape[0])

    def _forward(self, x):
        y = fftc(self.sens * x[None], axes=self.axes)
        if self.mask is not None:
            y *= self.mask
        return y

    def _adjoint(self, y):
        if self.mask is not None:
            y = y * self.mask
        img = ifftc(y, axes=self.axes)
        img *= self.sens_conj
        return img.sum(axis=0)

    def _normal(self, x):
        return self._adjoint(self._forward(x))
