"""From multi-echo GRE magnitude and phase to a susceptibility map."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .._xp import common_module, on_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..kspace import normalize_direction, normalize_voxel_size
from .units import field_to_ppm

__all__ = ["BACKGROUND_METHODS", "INVERSION_METHODS", "PipelineResult", "pipeline"]

BACKGROUND_METHODS = ("vsharp", "sharp", "pdf")
INVERSION_METHODS = ("l2", "tkd", "cg-l2", "tv")


@dataclass
class PipelineResult:
    """Everything a QSM pipeline run produces.

    Attributes
    ----------
    chi : ndarray
        Susceptibility (ppm), zero outside :attr:`mask`, relative to its mean inside it.
    local_field_ppm : ndarray
        Background-removed field (ppm), zero outside :attr:`mask`.
    total_field_hz : ndarray
        Field from the echo fit (Hz), before background removal.
    mask : ndarray of bool
        The mask of the result (the brain mask eroded by background removal).
    brain_mask : ndarray of bool
        The mask given or derived from the magnitude.
    timings_s : dict
        Wall time of each step.
    params : dict
        Every parameter used (for provenance sidecars).
    """

    chi: object
    local_field_ppm: object
    total_field_hz: object
    mask: object
    brain_mask: object
    timings_s: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)


def _check_inputs(magnitude, phase, te_s):
    xp = common_module(magnitude=magnitude, phase=phase)
    phase = xp.asarray(phase)
    if phase.ndim == 3:
        phase = phase[None]
    if phase.ndim != 4:
        raise ShapeMismatchError(f"phase must be (echo, x, y, z) or (x, y, z), got shape {phase.shape}")
    magnitude = xp.asarray(magnitude, dtype=np.float32)
    if magnitude.ndim == 3:
        magnitude = magnitude[None]
    if magnitude.shape != phase.shape:
        raise ShapeMismatchError(
            f"magnitude shape {magnitude.shape} does not match phase shape {phase.shape}"
        )
    te = np.atleast_1d(np.asarray(te_s, dtype=float))
    if te.shape != (phase.shape[0],):
        raise ShapeMismatchError(f"{te.size} echo times for {phase.shape[0]} echoes")
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InvalidParameterError(f"echo times must be positive seconds, got {te.tolist()}")
    if phase.shape[0] < 2:
        raise InvalidParameterError(
            "a single echo needs a second echo (or a phase-difference map with its TE via 'mrirecon qsm')"
        )
    if len(np.unique(te)) < 2:
        raise InvalidParameterError(f"echo times must not all be equal, got {te.tolist()}")
    for name, arr in (("magnitude", magnitude), ("phase", phase)):
        if not bool(xp.isfinite(arr).all()):
            raise InvalidParameterError(f"{name} has NaN/Inf values")
    return xp, magnitude, phase, te


def pipeline(
    magnitude,
    phase,
    te_s,
    *,
    b0_tesla,
    voxel_size_mm=(1.0, 1.0, 1.0),
    b0_dir=(0.0, 0.0, 1.0),
    mask=None,
    phase_units=None,
    background="vsharp",
    method="l2",
    lam="auto",
    mask_options=None,
    background_options=None,
    method_options=None,
    step_callback=None,
):
    """Susceptibility map from multi-echo GRE magnitude and phase.

    Steps: phase to radians → brain mask (given, or from the magnitude) →
    Laplacian unwrapping of the first echo and of the differences between
    consecutive echoes (:func:`mrirecon.qsm.phase.unwrap_echoes`) →
    magnitude-weighted linear fit over the
    echo times (total field in Hz, and ppm) → background-field removal →
    dipole inversion.

    Parameters
    ----------
    magnitude, phase : ndarray, (echo, x, y, z)
        Phase in radians, or integer-scaled (rescaled with a warning; see
        :func:`mrirecon.qsm.phase.phase_to_radians`).
    te_s : sequence of float
        Echo times in seconds (at least two distinct).
    b0_tesla : float
    voxel_size_mm : 3 floats
    b0_dir : 3 floats
        B0 direction in voxel axes (from a NIfTI affine:
        :func:`mrirecon.io.b0_direction_from_affine`).
    mask : ndarray of bool, optional
        Brain mask; default: :func:`mrirecon.qsm.masking.mask_from_magnitude`.
    phase_units : str, optional
        BIDS ``Units`` of the phase (``"rad"`` or ``"arbitrary"``); None detects.
    background : ``"vsharp"`` (default), ``"sharp"`` or ``"pdf"``
    method : ``"l2"`` (default), ``"tkd"``, ``"cg-l2"`` or ``"tv"``
    lam : float or ``"auto"``
        For l2 and cg-l2 (``"auto"``: GCV); tv needs a number.
    mask_options, background_options, method_options : dict, optional
        Keyword arguments passed to the mask, background and inversion functions.
    step_callback : callable, optional
        ``step_callback(name)`` after each step (drives a progress bar).

    Returns
    -------
    PipelineResult
        Its arrays are in the module of ``magnitude`` and ``phase``: given
        CuPy arrays, every step runs on the GPU and the results stay there
        (a NumPy ``mask`` is copied to the device once).
    """
    from . import background as bg
    from . import masking
    from . import phase as phase_tools
    from .inversion import closed_form_l2, tkd
    from .iterative import cg_l2, tv_admm
    from .lcurve import lcurve

    if background not in BACKGROUND_METHODS:
        raise InvalidParameterError(f"background must be one of {BACKGROUND_METHODS}, got {background!r}")
    if method not in INVERSION_METHODS:
        raise InvalidParameterError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
    if method == "tv" and lam == "auto":
        raise InvalidParameterError("method 'tv' needs a numeric lam (there is no automatic TV λ)")
    if not np.isfinite(b0_tesla) or b0_tesla <= 0:
        raise InvalidParameterError(f"b0_tesla must be a positive number, got {b0_tesla!r}")
    vox = normalize_voxel_size(voxel_size_mm)
    b0 = normalize_direction(b0_dir)
    xp, magnitude, phase, te = _check_inputs(magnitude, phase, te_s)
    mask_options, background_options, method_options = (
        dict(o or {}) for o in (mask_options, background_options, method_options)
    )
    timings = {}
    t = time.perf_counter()

    def step(name):
        nonlocal t
        now = time.perf_counter()
        timings[name] = now - t
        t = now
        if step_callback is not None:
            step_callback(name)

    rad = phase_tools.phase_to_radians(phase, units=phase_units)
    step("phase scaling")
    if mask is None:
        brain = masking.mask_from_magnitude(magnitude, **mask_options)
    else:
        brain = on_module(xp, mask, "mask").astype(bool)
        if brain.shape != magnitude.shape[1:]:
            raise ShapeMismatchError(
                f"mask shape {brain.shape} does not match the images' {magnitude.shape[1:]}"
            )
        if not bool(brain.any()):
            raise InvalidParameterError("mask is empty")
    step("mask")
    unwrapped = phase_tools.unwrap_echoes(rad, voxel_size_mm=vox)
    step("unwrapping")
    fit = phase_tools.fit_echoes(unwrapped, te, magnitude=magnitude, mask=brain)
    total_hz = fit.field_hz
    total_ppm = field_to_ppm(total_hz, units="hz", b0_tesla=b0_tesla).astype(np.float32)
    step("echo fit")
    fn = {"vsharp": bg.vsharp, "sharp": bg.sharp, "pdf": bg.pdf}[background]
    if background == "pdf":
        background_options.setdefault("b0_dir", b0)
    removed = fn(total_ppm, brain, voxel_size_mm=vox, **background_options)
    local, roi = removed.local_field, removed.mask
    if not bool(roi.any()):
        raise InvalidParameterError(
            f"background removal ({background}) left an empty mask; is the brain mask too small?"
        )
    step("background removal")
    kw = {"voxel_size_mm": vox, "b0_dir": b0}
    lam_used = lam
    if method in ("l2", "cg-l2") and lam == "auto":
        lam_used = lcurve(local, roi, **kw).lam
    if method == "l2":
        chi = closed_form_l2(local, roi, lam=lam_used, **kw, **method_options)
    elif method == "tkd":
        chi = tkd(local, roi, **kw, **method_options)
        lam_used = None
    elif method == "cg-l2":
        chi = cg_l2(local, roi, lam=lam_used, **kw, **method_options)
    else:
        chi = tv_admm(local, roi, lam=lam_used, **kw, **method_options)
    step("dipole inversion")
    params = {
        "EchoTime_s": [float(v) for v in te],
        "MagneticFieldStrength_T": float(b0_tesla),
        "VoxelSize_mm": list(vox),
        "B0Direction": list(b0),
        "PhaseUnits": phase_units,
        "Mask": "given" if mask is not None else {"from": "magnitude", **mask_options},
        "Unwrapping": "Laplacian (FFT), first echo and consecutive echo differences",
        "EchoFit": "magnitude-weighted linear fit with phase offset",
        "BackgroundRemoval": {
            "method": background,
            **{k: v for k, v in background_options.items() if k != "b0_dir"},
        },
        "Inversion": {
            "method": method,
            "lam": lam_used,
            "lam_selection": "GCV" if lam == "auto" else "given",
        },
    }
    return PipelineResult(chi, local, total_hz, roi, brain, timings, params)
