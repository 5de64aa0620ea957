"""From multi-echo GRE magnitude and phase to a susceptibility map."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._xp import common_module, on_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..kspace import normalize_direction, normalize_voxel_size
from .units import field_to_ppm

__all__ = [
    "BACKGROUND_METHODS",
    "DEFAULT_BACKGROUND",
    "background_defaults",
    "INVERSION_METHODS",
    "LAM_CRITERIA",
    "ImplausibleParameterWarning",
    "PipelineResult",
    "pipeline",
]

BACKGROUND_METHODS = ("vsharp", "sharp", "pdf", "lbv", "resharp")
#: The default background removal: the best measured trade-off (the README says why).
DEFAULT_BACKGROUND = "pdf"
INVERSION_METHODS = ("l2", "tkd", "cg-l2", "edge-l2", "tv")
LAM_CRITERIA = ("discrepancy", "gcv", "corner")
MASK_METHODS = ("echoes", "magnitude")
_ERODING = ("vsharp", "sharp", "resharp")


class ImplausibleParameterWarning(UserWarning):
    """A parameter whose value is allowed but almost certainly a unit mistake."""


def warn_implausible(*, te_s=None, b0_tesla=None, field_ppm_max=None, stacklevel=3):
    """Warn (:class:`ImplausibleParameterWarning`) on TE > 0.2 s, B0 > 12 T or |field| > 10 ppm."""
    msgs = []
    if te_s is not None:
        te = np.atleast_1d(np.asarray(te_s, dtype=float))
        if te.size and float(np.max(te)) > 0.2:
            msgs.append(
                f"echo time {float(np.max(te)):g} s is longer than 0.2 s: milliseconds given as seconds? "
                f"(χ would come out {1000 if float(np.max(te)) > 1 else 'many'}× too small)"
            )
    if b0_tesla is not None and float(b0_tesla) > 12.0:
        msgs.append(f"B0 = {float(b0_tesla):g} T is above 12 T: is it in tesla?")
    if field_ppm_max is not None and float(field_ppm_max) > 10.0:
        msgs.append(
            f"the field reaches {float(field_ppm_max):g} ppm (above 10 ppm): is it in Hz or radians? "
            "(give the right --field-units)"
        )
    for m in msgs:
        warnings.warn(m, ImplausibleParameterWarning, stacklevel=stacklevel)
    return msgs


def _fast_shape(shape):
    from ..fft import next_fast_len

    return tuple(int(next_fast_len(n)) for n in shape)


def _pad_to(x, shape, xp):
    """``x`` (…, x, y, z) zero-padded at the far ends to the spatial ``shape``.

    On the host the copy runs in slabs of planes on the threads (a new 1 mm
    multi-echo array is mostly page faults, which one core takes 0.25 s over).
    """
    if tuple(x.shape[-3:]) == tuple(shape):
        return x
    if xp is not np:
        out = xp.zeros(x.shape[:-3] + tuple(shape), dtype=x.dtype)
        out[(...,) + tuple(slice(0, n) for n in x.shape[-3:])] = x
        return out
    from .._parallel import fused

    out = np.empty(x.shape[:-3] + tuple(shape), dtype=x.dtype)
    nx, ny, nz = x.shape[-3:]
    src = x.reshape((-1, nx, ny, nz))
    dst = out.reshape((-1,) + tuple(shape))
    rows = np.arange(shape[0]).reshape(-1, 1, 1)  # the x index of each block row, for fused

    def block(o, r, s):  # o: (rows, gy, gz) of one echo, r: their x indices, s: that echo's source
        lo, hi = int(r[0, 0, 0]), int(r[-1, 0, 0]) + 1
        inside = max(0, min(hi, nx) - lo)
        o[:inside, :ny, :nz] = s[lo : lo + inside]
        o[:inside, ny:] = 0
        o[:inside, :ny, nz:] = 0
        o[inside:] = 0

    for e in range(src.shape[0]):
        fused(lambda o, r, s=src[e]: block(o, r, s), dst[e], rows)
    return out


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
        Field from the echo fit (Hz), before background removal: on the brain
        mask and the background margin's reliable voxels, zero elsewhere.
    mask : ndarray of bool
        The mask of the result (the brain mask eroded by background removal).
    brain_mask : ndarray of bool
        The mask given or derived from the magnitude.
    timings_s : dict
        Wall time of each step.
    params : dict
        Every parameter used (for provenance sidecars).
    field_noise_ppm : ndarray
        Per-voxel SD of the fitted field (ppm) from the echo fit's residual.
    """

    chi: object
    local_field_ppm: object
    total_field_hz: object
    mask: object
    brain_mask: object
    timings_s: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    field_noise_ppm: object = None


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


def background_defaults(background, *, voxel_size_mm=(1.0, 1.0, 1.0), b0_dir=(0.0, 0.0, 1.0)) -> dict:
    """The options :func:`pipeline` gives a background removal unless ``background_options`` override them.

    PDF: the B0 direction, no padding beyond the FFT grid (χ within 0.1 points of
    16 voxels' padding on the realistic head, 1 and 2 mm, two seeds, and a field of view
    cropped to the head, at 1.5-2x the speed), CG to 1e-3 or 60 iterations, and two
    levels: the far sources on 3 mm blocks, then 10 iterations for those within 16 mm
    at full resolution (χ NRMSE 62.9 / 73.1 % at 1 mm, two seeds, against 63.1 / 73.1 % for
    60 whole-grid iterations, in a fifth of the time; 20 refinement iterations gained
    0.1-0.2 points on each of the four benchmark heads for about 1 s more at 1 mm). No
    weights: the echo fit's inverse noise SD measured 3-7 points worse on every case.
    RESHARP: its radius (recorded in the sidecar). The others: none.
    """
    from .background import default_resharp_radius_mm

    if background == "pdf":
        return {
            "b0_dir": b0_dir,
            "pad": 0,
            "tol": 1e-3,
            "max_iter": 60,
            "coarse_voxel_mm": 3.0,
            "near_mm": 16.0,
            "near_iter": 10,
        }
    if background == "resharp":
        return {"radius_mm": default_resharp_radius_mm(voxel_size_mm)}
    return {}


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
    background=None,
    method="l2",
    lam="auto",
    mask_options=None,
    background_options=None,
    method_options=None,
    step_callback=None,
    mask_method="echoes",
    lam_criterion="gcv",
    fill_rim=True,
    fast_grid=True,
    trust_phase=True,
    background_margin_mm=None,
):
    """Susceptibility map from multi-echo GRE magnitude and phase.

    Steps: phase to radians → brain mask (given, or from the magnitude) →
    Laplacian unwrapping: of the mean difference between consecutive echoes
    for three or more equally spaced echoes (one unwrap,
    :func:`mrirecon.qsm.phase.unwrap_mean_difference`), else of each
    difference, added to the wrapped first echo
    (:func:`mrirecon.qsm.phase.unwrap_echoes` with ``unwrap_first=False``:
    the fitted field and residual are those of unwrapping the first echo
    too) →
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
        Brain mask; it always wins over ``mask_method``.
    phase_units : str, optional
        BIDS ``Units`` of the phase (``"rad"`` or ``"arbitrary"``); None detects.
    background : ``"vsharp"``, ``"sharp"``, ``"resharp"``, ``"lbv"``, ``"pdf"`` or None
        None: :data:`DEFAULT_BACKGROUND`.
    method : ``"l2"`` (default), ``"tkd"``, ``"cg-l2"``, ``"edge-l2"`` or ``"tv"``
        ``"edge-l2"``: the L2 objective with the gradient penalty switched off
        across the magnitude's edges (:func:`mrirecon.qsm.masking.edge_weights`,
        MEDI's prior in L2), by CG to a relative residual of 1e-3 (at most 200
        iterations; ``method_options`` override both): not closed-form, 26-36 s
        at 1 mm on 2 cores against under 1 s for the closed form.
    lam : float or ``"auto"``
        For l2, cg-l2 and edge-l2 (``"auto"``: chosen by ``lam_criterion`` on the
        closed form; edge-l2 takes that λ as it is); tv needs a number.
    mask_options, background_options, method_options : dict, optional
        Keyword arguments passed to the mask, background and inversion functions.
    step_callback : callable, optional
        ``step_callback(name)`` after each step (drives a progress bar).
    mask_method : ``"echoes"`` (default) or ``"magnitude"``
        Without ``mask``: :func:`mrirecon.qsm.masking.mask_from_echoes` (magnitude,
        multi-echo phase coherence and R2*, then morphology; no scalp) or the
        older :func:`mrirecon.qsm.masking.mask_from_magnitude` (keeps the scalp).
    lam_criterion : ``"gcv"`` (default), ``"discrepancy"`` or ``"corner"``
        With ``lam="auto"``: GCV or the L-curve corner of the whole grid
        (:func:`mrirecon.qsm.lcurve`), or the discrepancy principle with the
        echo fit's noise (:func:`mrirecon.qsm.lcurve.discrepancy_lam`; GCV
        where it finds no crossing). GCV is the default because the
        discrepancy principle found no crossing on the realistic head (the
        local field's error there is residual background, not the echo
        noise) and crossed far from the optimum on the ellipsoid phantom.
    fill_rim : bool
        For the eroding background removals (SHARP, V-SHARP, RESHARP): extend
        the local field into the eroded rim (:func:`mrirecon.qsm.background.fill_rim`)
        so that χ covers the whole brain mask (default True).
    trust_phase : bool
        With a supplied ``mask``: remove the background on the mask less the
        voxels whose phase is unreliable (:func:`mrirecon.qsm.masking.reliable_phase`:
        no signal, incoherent echoes, or R2* of bone), then fill those voxels
        like an eroded rim (default True; recorded in the sidecar). Measured on
        the realistic head with its true brain mask (``scripts/bench_pipeline.py``):
        LBV 140.3 → 87.7 % χ NRMSE at 2 mm (96.5 → 82.4 % at 1 mm), RESHARP
        87.7 → 86.3 % at 2 mm (78.3 → 78.6 % at 1 mm), PDF 74.4 → 73.9 % at 2 mm
        (62.2 → 62.1 % at 1 mm). The echo-derived mask is made of such voxels already.
    background_margin_mm : float, optional
        Remove the background on the brain mask plus the voxels of reliable
        phase (:func:`mrirecon.qsm.masking.reliable_phase`: signal, coherent
        echoes, R2* below bone's; in practice the CSF around the brain) within
        this distance outside it, so that the edge that SHARP-type methods lose
        (their radius) and that LBV's boundary condition distorts lies outside
        the brain; the local field and χ still cover the brain mask only.
        None (default): the RESHARP radius (4 mm, or one voxel if larger);
        0 turns it off. Recorded in the sidecar. Measured on the realistic head at
        1 mm (seed 0 / 1, no mask supplied): RESHARP 78.1 / 84.1 → 75.5 / 80.3 %
        χ NRMSE, PDF (then weighted by the echo fit's noise) 69.4 / 76.8 → 68.1 / 75.4 %; with the true mask RESHARP
        78.6 / 84.7 → 75.6 / 80.3 %; at 2 mm almost no voxel qualifies (the
        CSF there is partial-volumed with bone) and χ moves by 0.1 point or
        less with the echo mask.
    fast_grid : bool
        Zero-pad every step onto one FFT-friendly grid (2·3·5-smooth sizes; the
        outputs are cropped back): one set of FFT plans for unwrapping,
        background removal and inversion (default True).

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
    from .lcurve import discrepancy_lam, lcurve

    if background is None:
        background = DEFAULT_BACKGROUND
    if background not in BACKGROUND_METHODS:
        raise InvalidParameterError(f"background must be one of {BACKGROUND_METHODS}, got {background!r}")
    if method not in INVERSION_METHODS:
        raise InvalidParameterError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
    if method == "tv" and lam == "auto":
        raise InvalidParameterError("method 'tv' needs a numeric lam (there is no automatic TV λ)")
    if mask_method not in MASK_METHODS:
        raise InvalidParameterError(f"mask_method must be one of {MASK_METHODS}, got {mask_method!r}")
    if lam_criterion not in LAM_CRITERIA:
        raise InvalidParameterError(f"lam_criterion must be one of {LAM_CRITERIA}, got {lam_criterion!r}")
    if not np.isfinite(b0_tesla) or b0_tesla <= 0:
        raise InvalidParameterError(f"b0_tesla must be a positive number, got {b0_tesla!r}")
    warn_implausible(te_s=te_s, b0_tesla=b0_tesla)
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
    shape = tuple(magnitude.shape[1:])
    grid = _fast_shape(shape) if fast_grid else shape
    region = tuple(slice(0, n) for n in shape)
    rad = _pad_to(rad, grid, xp)
    magnitude = _pad_to(magnitude, grid, xp)
    step("phase scaling")
    reliable = None  # voxels of trustworthy phase, computed where needed
    if mask is None:
        if mask_method == "echoes":
            brain, reliable = masking.mask_from_echoes(
                magnitude, rad, te, voxel_size_mm=vox, return_reliable=True, **mask_options
            )
        else:
            brain = masking.mask_from_magnitude(magnitude, **mask_options)
    else:
        brain = on_module(xp, mask, "mask").astype(bool)
        if brain.shape != shape:
            raise ShapeMismatchError(f"mask shape {brain.shape} does not match the images' {shape}")
        if not bool(brain.any()):
            raise InvalidParameterError("mask is empty")
        brain = _pad_to(brain, grid, xp)
    step("mask")
    if phase_tools.equally_spaced(te):  # one unwrap for any number of echoes
        unwrapped = phase_tools.unwrap_mean_difference(rad, magnitude=magnitude, voxel_size_mm=vox)
        unwrapping = (
            "Laplacian (FFT) of the magnitude-weighted mean consecutive-echo difference (equal spacing)"
        )
    else:
        unwrapped = phase_tools.unwrap_echoes(rad, voxel_size_mm=vox, unwrap_first=False)  # fit: same field
        unwrapping = "Laplacian (FFT) of consecutive echo differences, added to the wrapped first echo"
    step("unwrapping")
    # background removal also on the trustworthy voxels (CSF) within a margin around the brain
    margin_mm = (
        bg.default_resharp_radius_mm(vox) if background_margin_mm is None else float(background_margin_mm)
    )
    if not (margin_mm >= 0 and np.isfinite(margin_mm)):
        raise InvalidParameterError(f"background_margin_mm must be >= 0 mm, got {background_margin_mm}")
    region_fit, shell_voxels = brain, 0
    if margin_mm > 0:
        if reliable is None:
            reliable = masking.reliable_phase(magnitude, rad, te)
        shell = masking.reliable_shell(brain, reliable, margin_mm=margin_mm, voxel_size_mm=vox)
        shell_voxels = int(xp.count_nonzero(shell))
        if shell_voxels:
            region_fit = brain | shell
        del shell
    fit = phase_tools.fit_echoes(unwrapped, te, magnitude=magnitude, mask=region_fit)
    del unwrapped
    total_hz = fit.field_hz
    total_ppm = field_to_ppm(total_hz, units="hz", b0_tesla=b0_tesla).astype(np.float32)
    fit_noise = phase_tools.field_noise_ppm(fit, te, b0_tesla=b0_tesla, magnitude=magnitude)  # on region_fit
    noise = xp.where(brain, fit_noise, 0).astype(np.float32)
    del fit_noise
    step("echo fit")
    bopts = {**background_defaults(background, voxel_size_mm=vox, b0_dir=b0), **background_options}
    fn = {"vsharp": bg.vsharp, "sharp": bg.sharp, "pdf": bg.pdf, "lbv": bg.lbv, "resharp": bg.resharp}[
        background
    ]
    bg_region, untrusted = brain, 0
    if mask is not None and trust_phase:
        if reliable is None:
            reliable = masking.reliable_phase(magnitude, rad, te)
        trusted = brain & reliable
        n_brain, n_trusted = int(xp.count_nonzero(brain)), int(xp.count_nonzero(trusted))
        if n_trusted < n_brain <= 2 * n_trusted:  # else nothing to leave out, or most of the mask fails
            bg_region, untrusted = trusted, n_brain - n_trusted
    if region_fit is not brain:
        bg_region = bg_region | (region_fit & ~brain)
    removed = fn(total_ppm, bg_region, voxel_size_mm=vox, **bopts)
    local, roi = removed.local_field, removed.mask
    if not bool(roi.any()):
        raise InvalidParameterError(
            f"background removal ({background}) left an empty mask; is the brain mask too small?"
        )
    rim = "none (the method does not erode)"
    gap = background in _ERODING or bg_region is not brain
    eroded_voxels = int(xp.count_nonzero(brain & ~roi)) if gap else 0
    if gap and not eroded_voxels:  # e.g. PDF or LBV on the mask and its margin: nothing to fill
        local = local * brain
        roi = brain
        rim = "none (no voxel of the mask was eroded)"
    elif gap and fill_rim:
        local = bg.fill_rim(local, roi, brain, voxel_size_mm=vox)
        roi = brain
        rim = f"filled by normalised Gaussian convolution (SD 2 mm) of the eroded field ({eroded_voxels} voxels)"
    elif gap:
        roi = roi & brain
        rim = "left out of the mask (eroded)"
    step("background removal")
    kw = {"voxel_size_mm": vox, "b0_dir": b0}
    lam_used = lam
    selection = "given"
    inversion_extra = {}
    if method in ("l2", "cg-l2", "edge-l2") and lam == "auto":
        if lam_criterion == "discrepancy" and len(te) > 2:
            lam_used = discrepancy_lam(local, roi, noise, **kw)
            selection = "discrepancy principle with the echo fit's noise (trusted 90 % of voxels)"
            if not 1.01e-4 < lam_used < 0.99:  # no crossing in the bracket: the noise model does not hold
                lam_used = lcurve(local, roi, criterion="gcv", **kw).lam
                selection = "GCV (the discrepancy principle found no crossing)"
        else:
            crit = "gcv" if lam_criterion == "discrepancy" else lam_criterion
            lam_used = lcurve(local, roi, criterion=crit, **kw).lam
            selection = {"gcv": "GCV", "corner": "L-curve corner"}[crit]
    if method == "l2":
        chi = closed_form_l2(local, roi, lam=lam_used, **kw, **method_options)
    elif method == "tkd":
        chi = tkd(local, roi, **kw, **method_options)
        lam_used = None
    elif method == "cg-l2":
        chi = cg_l2(local, roi, lam=lam_used, **kw, **method_options)
    elif method == "edge-l2":
        edges = masking.edge_weights(magnitude, roi)
        opts = {"tol": 1e-3, "max_iter": 200, **method_options}
        solved = cg_l2(local, roi, lam=lam_used, gradient_weights=edges, **kw, **opts, return_result=True)
        chi = solved.x
        inversion_extra = {
            "gradient_weights": (
                f"0 across the magnitude's edges ({100 * masking.EDGE_FRACTION:g} % of the mask's voxels per axis)"
            ),
            "tol": opts["tol"],
            "iterations": int(solved.iterations),
            "converged": bool(solved.converged),
        }
        del edges, solved
    else:
        chi = tv_admm(local, roi, lam=lam_used, **kw, **method_options)
    step("dipole inversion")
    if grid != shape:
        chi, local, total_hz, roi, brain, noise = (
            a[region].copy() for a in (chi, local, total_hz, roi, brain, noise)
        )
    params = {
        "EchoTime_s": [float(v) for v in te],
        "MagneticFieldStrength_T": float(b0_tesla),
        "VoxelSize_mm": list(vox),
        "B0Direction": list(b0),
        "PhaseUnits": phase_units,
        "Mask": "given" if mask is not None else {"from": mask_method, **mask_options},
        "Grid": {"shape": list(shape), "fft_grid": list(grid)},
        "Unwrapping": unwrapping,
        "EchoFit": "magnitude-weighted linear fit with phase offset",
        "BackgroundRemoval": {
            "method": background,
            **{k: v for k, v in bopts.items() if k not in ("b0_dir", "weights")},
            **({"weights": "given" if "weights" in bopts else "uniform"} if background == "pdf" else {}),
            "region": (
                f"the given mask less {untrusted} voxels of unreliable phase (magnitude, echo coherence, R2*)"
                if untrusted
                else "the brain mask"
            )
            + (
                f", plus {shell_voxels} voxels of reliable phase within {margin_mm:g} mm outside it"
                if shell_voxels
                else ""
            ),
            "margin_mm": margin_mm,
            "rim": rim,
        },
        "Inversion": {
            "method": method,
            "lam": lam_used,
            "lam_selection": selection,
            **inversion_extra,
        },
    }
    return PipelineResult(chi, local, total_hz, roi, brain, timings, params, noise)
