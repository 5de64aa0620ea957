"""Chemical-shift axes and spectra of FIDs (time last, as NIfTI-MRS stores them).

Conventions (FSL-MRS / spec2nii, as :mod:`nifti_mrs` hands the data out): the
spectrum of a FID is ``fftshift(fft(fid))`` along time (here orthonormal, so
energies are the same in both domains), the frequency axis runs from
``-SW/2`` upwards, and the chemical shift is
``ppm = reference_ppm + f_Hz / SF_MHz`` with the receiver on water
(``reference_ppm`` 4.65 by default, the header's ``SpectrometerFrequency``
as SF). A resonance at ``p`` ppm has the FID ``exp(2πi (p − 4.65)·SF·t)``.
"""

from __future__ import annotations

import numpy as np

from .. import fft
from ..device import get_array_module
from ..errors import InvalidParameterError

__all__ = [
    "WATER_PPM",
    "band_mask",
    "fid_from_spectrum",
    "frequency_axis_hz",
    "hz_to_ppm",
    "ppm_axis",
    "ppm_to_hz",
    "spectrum",
]

#: Chemical shift of water at body temperature (ppm), the receiver's reference.
WATER_PPM = 4.65


def _check(n_points, dwell_time_s, spectrometer_frequency_mhz):
    if int(n_points) < 2:
        raise InvalidParameterError(f"n_points must be >= 2, got {n_points}")
    if not (np.isfinite(dwell_time_s) and dwell_time_s > 0):
        raise InvalidParameterError(f"dwell_time_s must be a positive number of seconds, got {dwell_time_s}")
    if not (np.isfinite(spectrometer_frequency_mhz) and spectrometer_frequency_mhz > 0):
        raise InvalidParameterError(
            f"spectrometer_frequency_mhz must be positive (e.g. 123.2 at 2.89 T), got {spectrometer_frequency_mhz}"
        )


def frequency_axis_hz(n_points: int, *, dwell_time_s: float) -> np.ndarray:
    """Frequencies (Hz) of the points of :func:`spectrum`: ``fftshift(fftfreq(n, dwell))``."""
    _check(n_points, dwell_time_s, 1.0)
    return np.fft.fftshift(np.fft.fftfreq(int(n_points), d=float(dwell_time_s)))


def hz_to_ppm(f_hz, *, spectrometer_frequency_mhz: float, reference_ppm: float = WATER_PPM):
    """Chemical shift (ppm) of a frequency offset ``f_hz`` from the receiver (on ``reference_ppm``)."""
    return reference_ppm + np.asarray(f_hz, dtype=float) / float(spectrometer_frequency_mhz)


def ppm_to_hz(ppm, *, spectrometer_frequency_mhz: float, reference_ppm: float = WATER_PPM):
    """Frequency offset (Hz) from the receiver of a chemical shift ``ppm`` (inverse of :func:`hz_to_ppm`)."""
    return (np.asarray(ppm, dtype=float) - reference_ppm) * float(spectrometer_frequency_mhz)


def ppm_axis(
    n_points: int, *, dwell_time_s: float, spectrometer_frequency_mhz: float, reference_ppm: float = WATER_PPM
) -> np.ndarray:
    """Chemical shift (ppm) of every point of :func:`spectrum`, increasing with the index.

    Parameters
    ----------
    n_points : int
        Spectral points (the FID's length).
    dwell_time_s : float
        Sampling interval of the FID (NIfTI-MRS ``pixdim[4]``).
    spectrometer_frequency_mhz : float
        The header's ``SpectrometerFrequency`` (MHz).
    reference_ppm : float
        Chemical shift on the receiver frequency (4.65: water at 37 °C).
    """
    _check(n_points, dwell_time_s, spectrometer_frequency_mhz)
    f = frequency_axis_hz(n_points, dwell_time_s=dwell_time_s)
    return hz_to_ppm(f, spectrometer_frequency_mhz=spectrometer_frequency_mhz, reference_ppm=reference_ppm)


def band_mask(ppm, low_ppm: float, high_ppm: float):
    """Boolean mask of the points of ``ppm`` within ``[low_ppm, high_ppm]``."""
    lo, hi = sorted((float(low_ppm), float(high_ppm)))
    ppm = np.asarray(ppm)
    return (ppm >= lo) & (ppm <= hi)


def spectrum(fid, *, axis: int = -1):
    """Orthonormal spectrum ``fftshift(fft(fid)) / sqrt(n)`` along ``axis`` (time last by default).

    Goes through :mod:`mrirecon.fft`; NumPy or CuPy in, the same out. Being
    unitary, it keeps energies: ``‖spectrum(x)‖ = ‖x‖``.
    """
    xp = get_array_module(fid)
    fid = xp.asarray(fid)
    n = fid.shape[axis]
    s = fft.fftn(fid, axes=(axis,))
    s *= 1.0 / np.sqrt(n)
    return xp.fft.fftshift(s, axes=(axis,))


def fid_from_spectrum(spec, *, axis: int = -1):
    """The inverse of :func:`spectrum`."""
    xp = get_array_module(spec)
    spec = xp.asarray(spec)
    n = spec.shape[axis]
    x = fft.ifftn(xp.fft.ifftshift(spec, axes=(axis,)), axes=(axis,))
    x *= np.sqrt(n)
    return x
