"""Simulated multi-echo gradient-echo (MEGRE) acquisitions of the head phantom."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError
from .head import TISSUE_M0 as _M0
from .head import head_phantom, simulate_field

__all__ = ["MEGREData", "simulate_megre"]


@dataclass(frozen=True, eq=False)
class MEGREData:
    """Simulated multi-echo gradient-echo data of the head phantom, with its truths.

    Attributes
    ----------
    magnitude, phase : ndarray, (echo, x, y, z), float32
        Magnitude (a.u.) and wrapped phase (radians, [-π, π)) of each echo.
    te_s : tuple of float
        Echo times in seconds.
    b0_tesla : float
    b0_dir : tuple of 3 floats
    voxel_size_mm : tuple of 3 floats
    chi : ndarray
        The brain's susceptibility (ppm, CSF = 0), the truth for QSM.
    mask : ndarray of bool
        The brain mask.
    local_field_ppm : ndarray
        Field of the brain's own χ (the truth after background removal), zero outside the mask.
    total_field_ppm : ndarray
        Field of all sources (brain plus the air cavities outside it).
    phase_offset_rad : ndarray
        The smooth phase at TE = 0 added to every echo.
    """

    magnitude: np.ndarray
    phase: np.ndarray
    te_s: tuple
    b0_tesla: float
    b0_dir: tuple
    voxel_size_mm: tuple
    chi: np.ndarray
    mask: np.ndarray
    local_field_ppm: np.ndarray
    total_field_ppm: np.ndarray
    phase_offset_rad: np.ndarray


_R2STAR = {
    "globus_pallidus": 35.0,
    "red_nucleus": 35.0,
    "substantia_nigra": 40.0,
    "dentate_nucleus": 35.0,
    "vein": 45.0,
    "calcification": 80.0,
    "csf": 4.0,
}
_AIR_CHI_PPM = 9.4  # air relative to tissue (Schenck JF, Med Phys 1996;23:815-850)


def simulate_megre(
    shape=(96, 96, 96),
    *,
    voxel_size_mm=None,
    te_s=(0.004, 0.0095, 0.017),
    b0_tesla=3.0,
    b0_dir=(0.0, 0.0, 1.0),
    snr=60.0,
    air_cavities=True,
    seed=0,
):
    """Multi-echo GRE magnitude and phase of the head phantom, with background fields.

    Parameters
    ----------
    shape : 3 ints
    voxel_size_mm : float or 3 floats, optional
        Default: the phantom's 192 mm field of view over ``shape``.
    te_s : sequence of float
        Echo times in seconds (uneven spacing is fine).
    b0_tesla : float
    b0_dir : 3 floats
        B0 direction in voxel axes.
    snr : float
        Signal-to-noise ratio of the brain's magnitude at TE = 0 (complex Gaussian noise).
    air_cavities : bool
        Add a frontal sinus and two ear canals of air (χ = +9.4 ppm against tissue) outside
        the brain: the background field that background-field removal must remove.
    seed : int

    Returns
    -------
    MEGREData

    Notes
    -----
    Signal of echo n: ``M0 exp(-TE_n R2*) exp(i(φ0 + 2π γ̄ B0 TE_n f))`` with f the total field
    in ppm (γ̄ B0 f in Hz), M0 and R2* per tissue, a smooth φ0, and complex Gaussian noise; a
    scalp shell 12 mm thick around the brain has signal too. The field comes from
    :func:`simulate_field` (1.5× padded grid), so it does not share the periodic model of the
    inversions.
    """
    from ..qsm.units import GAMMA_BAR_MHZ_PER_T

    te = np.asarray(te_s, dtype=float).reshape(-1)
    if te.size < 1 or not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InvalidParameterError(f"te_s must be positive echo times in seconds, got {te_s!r}")
    if not np.isfinite(snr) or snr <= 0:
        raise InvalidParameterError(f"snr must be positive, got {snr!r}")
    ph = head_phantom(shape, voxel_size_mm=voxel_size_mm)
    vox = ph.voxel_size_mm
    x, y, z = (
        ((np.arange(n) - (n - 1) / 2.0) * d).reshape([-1 if i == a else 1 for i in range(3)])
        for a, (n, d) in enumerate(zip(ph.chi.shape, vox, strict=True))
    )
    head = (x / 82.0) ** 2 + (y / 97.0) ** 2 + (z / 72.0) ** 2 <= 1.0
    chi_total = ph.chi.astype(np.float32, copy=True)
    if air_cavities:
        air = (x**2 + (y - 72.0) ** 2 + (z + 56.0) ** 2 <= 14.0**2) & ~ph.mask
        for sx in (-80.0, 80.0):
            air |= ((x - sx) ** 2 + y**2 + (z + 30.0) ** 2 <= 6.0**2) & ~ph.mask
        chi_total[air] = _AIR_CHI_PPM
        head &= ~air
    total = simulate_field(chi_total, voxel_size_mm=vox, b0_dir=b0_dir)
    local = simulate_field(ph.chi, voxel_size_mm=vox, b0_dir=b0_dir, mask=ph.mask)

    names = ph.label_names
    m0_table = np.array([_M0.get(name, 0.0) for name in names], dtype=np.float32)
    r2_table = np.array([_R2STAR.get(name, 20.0) for name in names], dtype=np.float32)
    m0 = m0_table[ph.labels]
    r2 = r2_table[ph.labels]
    scalp = head & ~ph.mask
    m0[scalp] = 0.5
    r2[scalp] = 25.0
    offset = (0.4 + 0.6 * np.cos(np.pi * x / 192.0) * np.cos(np.pi * y / 240.0) + 0.002 * z).astype(
        np.float32
    )
    offset = np.broadcast_to(offset, ph.chi.shape)
    rng = np.random.default_rng(seed)
    sigma = float(m0[ph.mask].mean()) / snr
    hz = total * np.float32(GAMMA_BAR_MHZ_PER_T * b0_tesla)
    mags, phases = [], []
    for t in te:
        sig = (m0 * np.exp(-t * r2)) * np.exp(1j * (offset + np.float32(2 * np.pi * t) * hz))
        sig = sig + sigma * (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape))
        mags.append(np.abs(sig).astype(np.float32))
        phases.append(np.angle(sig).astype(np.float32))
    return MEGREData(
        magnitude=np.stack(mags),
        phase=np.stack(phases),
        te_s=tuple(float(t) for t in te),
        b0_tesla=float(b0_tesla),
        b0_dir=tuple(float(v) for v in np.asarray(b0_dir, float) / np.linalg.norm(b0_dir)),
        voxel_size_mm=vox,
        chi=ph.chi,
        mask=ph.mask,
        local_field_ppm=local,
        total_field_ppm=total,
        phase_offset_rad=np.ascontiguousarray(offset),
    )
