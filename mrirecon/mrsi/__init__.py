"""MRSI: lipid suppression by a lipid-basis penalty, ppm axes, metabolite maps.

- :mod:`~mrirecon.mrsi.lipid` — :func:`lipid_suppress` (closed-form L2 through
  the SVD of the lipid matrix; the L1 baseline by FISTA on the dual), the
  lipid basis (:func:`lipid_basis`, cached) and data-driven β
  (:func:`beta_curve`)
- :mod:`~mrirecon.mrsi.ppm` — chemical-shift axes, spectra of FIDs
- :mod:`~mrirecon.mrsi.maps` — metabolite maps by peak integration, lipid energy in dB

Arrays are (x, y, z, t) FIDs, time last, as NIfTI-MRS stores them.
"""

from .lipid import (
    BETA_CRITERIA,
    BetaCurve,
    L1Result,
    LipidBasis,
    SuppressionInfo,
    beta_curve,
    l1_fista,
    l2_closed_form,
    lipid_basis,
    lipid_matrix,
    lipid_suppress,
)
from .maps import METABOLITE_BANDS_PPM, band_energy, lipid_energy_db, metabolite_map, metabolite_maps
from .ppm import (
    WATER_PPM,
    band_mask,
    fid_from_spectrum,
    frequency_axis_hz,
    hz_to_ppm,
    ppm_axis,
    ppm_to_hz,
    spectrum,
)

__all__ = [
    "BETA_CRITERIA",
    "METABOLITE_BANDS_PPM",
    "WATER_PPM",
    "BetaCurve",
    "L1Result",
    "LipidBasis",
    "SuppressionInfo",
    "band_energy",
    "band_mask",
    "beta_curve",
    "fid_from_spectrum",
    "frequency_axis_hz",
    "hz_to_ppm",
    "l1_fista",
    "l2_closed_form",
    "lipid_basis",
    "lipid_energy_db",
    "lipid_matrix",
    "lipid_suppress",
    "metabolite_map",
    "metabolite_maps",
    "ppm_axis",
    "ppm_to_hz",
    "spectrum",
]
