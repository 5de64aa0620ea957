"""Metabolite maps by peak integration, and the lipid energy left in the brain (dB)."""

from __future__ import annotations

import numpy as np

from .._xp import common_module, on_module
from ..errors import InvalidParameterError, ShapeMismatchError
from . import ppm as _ppm

__all__ = ["METABOLITE_BANDS_PPM", "band_energy", "lipid_energy_db", "metabolite_map", "metabolite_maps"]

#: Integration windows (ppm) of :func:`metabolite_maps`.
METABOLITE_BANDS_PPM = {"NAA": (1.92, 2.10), "Cr": (2.95, 3.10), "Cho": (3.13, 3.28)}


def _axis(n_t, dwell_time_s, spectrometer_frequency_mhz, reference_ppm):
    return _ppm.ppm_axis(
        n_t,
        dwell_time_s=dwell_time_s,
        spectrometer_frequency_mhz=spectrometer_frequency_mhz,
        reference_ppm=reference_ppm,
    )


def metabolite_map(fid, band_ppm, *, dwell_time_s, spectrometer_frequency_mhz, reference_ppm=_ppm.WATER_PPM):
    """Peak area: the real (absorption) part of the spectrum summed over ``band_ppm``, per voxel.

    ``fid`` is (..., t), time last; the FIDs are taken as phased (zero-order
    phase 0 at t = 0, as the phantom simulates and spec2nii-converted FID-MRSI
    is after phasing). Returns a real array of shape ``fid.shape[:-1]``.
    """
    xp = common_module(fid=fid)
    ppm = _axis(fid.shape[-1], dwell_time_s, spectrometer_frequency_mhz, reference_ppm)
    sel = _ppm.band_mask(ppm, *band_ppm)
    if not sel.any():
        raise InvalidParameterError(
            f"band {band_ppm} ppm holds no spectral point (axis {ppm[0]:.2f}..{ppm[-1]:.2f})"
        )
    spec = _ppm.spectrum(fid)
    return spec[..., xp.asarray(sel)].real.sum(axis=-1)


def metabolite_maps(
    fid, *, dwell_time_s, spectrometer_frequency_mhz, reference_ppm=_ppm.WATER_PPM, bands=None
):
    """``{name: map}`` for NAA, Cr and Cho (windows ``METABOLITE_BANDS_PPM``, or ``bands``)."""
    bands = METABOLITE_BANDS_PPM if bands is None else bands
    return {
        name: metabolite_map(
            fid,
            band,
            dwell_time_s=dwell_time_s,
            spectrometer_frequency_mhz=spectrometer_frequency_mhz,
            reference_ppm=reference_ppm,
        )
        for name, band in bands.items()
    }


def band_energy(
    fid, band_ppm, *, mask, dwell_time_s, spectrometer_frequency_mhz, reference_ppm=_ppm.WATER_PPM
):
    """``Σ_{voxels in mask} Σ_{points in band} |spectrum|²``."""
    xp = common_module(fid=fid)
    mask = on_module(xp, mask, "mask").astype(bool)
    if tuple(mask.shape) != tuple(fid.shape[:-1]):
        raise ShapeMismatchError(f"mask must have shape {fid.shape[:-1]}, got {tuple(mask.shape)}")
    ppm = _axis(fid.shape[-1], dwell_time_s, spectrometer_frequency_mhz, reference_ppm)
    sel = xp.asarray(_ppm.band_mask(ppm, *band_ppm))
    spec = _ppm.spectrum(fid[mask])
    return float(xp.sum(xp.abs(spec[:, sel]) ** 2))


def lipid_energy_db(
    x,
    x0,
    *,
    mask,
    dwell_time_s,
    spectrometer_frequency_mhz,
    reference_ppm=_ppm.WATER_PPM,
    band_ppm=(0.7, 1.8),
    reference=None,
):
    """Lipid energy left in ``mask`` after suppression, in dB relative to the input.

    ``10·log10(E(x − r) / E(x0 − r))`` with ``E`` the energy in the lipid band
    (no metabolite there) summed over ``mask``, and ``r`` the lipid-free signal
    when it is known (a phantom's truth + noise), else 0 (then the noise in
    the band sets a floor).
    """
    kw = dict(
        mask=mask,
        dwell_time_s=dwell_time_s,
        spectrometer_frequency_mhz=spectrometer_frequency_mhz,
        reference_ppm=reference_ppm,
    )
    a, b = (x, x0) if reference is None else (x - reference, x0 - reference)
    e, e0 = band_energy(a, band_ppm, **kw), band_energy(b, band_ppm, **kw)
    if e0 <= 0:
        raise InvalidParameterError("the input holds no energy in the lipid band inside the mask")
    return 10.0 * np.log10(max(e, 1e-300) / e0)
