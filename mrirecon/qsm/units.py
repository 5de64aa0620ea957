"""Field units: conversions to ppm of B0."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError

__all__ = ["GAMMA_BAR_MHZ_PER_T", "field_to_ppm"]

#: Proton gyromagnetic ratio / 2π, MHz/T (CODATA 2018).
GAMMA_BAR_MHZ_PER_T = 42.577478


def _positive(name, value):
    if value is None:
        raise InvalidParameterError(f"{name} is required for this field unit")
    if isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def field_to_ppm(field, *, units="ppm", b0_tesla=None, te_s=None):
    """Convert a field map to ppm of B0.

    Parameters
    ----------
    field : ndarray
    units : ``"ppm"``, ``"hz"`` or ``"rad"``
        ``"hz"``: frequency offset in Hz (needs ``b0_tesla``); ``"rad"``: phase
        accumulated over an echo time (needs ``b0_tesla`` and ``te_s``).
    b0_tesla : float, optional
        Main field strength in tesla.
    te_s : float, optional
        Echo time (or echo spacing of a phase difference) in seconds.

    Returns
    -------
    ndarray
        The field in ppm (a new array unless ``units == "ppm"``).

    Notes
    -----
    ``ppm = Hz / (γ̄ · B0[T])`` with γ̄ in MHz/T, and
    ``Hz = rad / (2π · TE[s])``; γ̄ = 42.577478 MHz/T.
    """
    u = str(units).lower()
    if u == "ppm":
        return field
    if u == "hz":
        return field * (1.0 / (GAMMA_BAR_MHZ_PER_T * _positive("b0_tesla", b0_tesla)))
    if u == "rad":
        b0 = _positive("b0_tesla", b0_tesla)
        te = _positive("te_s", te_s)
        return field * (1.0 / (2.0 * np.pi * te * GAMMA_BAR_MHZ_PER_T * b0))
    raise InvalidParameterError(f"field units must be 'ppm', 'hz' or 'rad', got {units!r}")
