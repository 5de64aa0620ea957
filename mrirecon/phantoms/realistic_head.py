"""A realistic simulated multi-echo GRE head for judging the whole QSM pipeline.

Unlike the ellipsoid head phantom (:mod:`mrirecon.phantoms.head`), whose uniform
ellipsoids produce fields that are harmonic inside the brain, this head has:

* a brain whose outer surface follows the inside of the skull (perturbed by
  smooth noise), a grey-matter ribbon 3-12 mm deep with a noise-driven
  (gyrified) grey/white boundary, sulci as thin CSF sheets (level sets of a
  band-pass noise field), ventricles and deep grey nuclei warped by a smooth
  displacement field, two veins, and a few-percent tissue texture in χ and M0;
* a thin CSF layer, a skull (bone χ = -2 ppm against water, almost no signal),
  a scalp (6 mm, bright) and a neck running out of the field of view;
* air outside the head and in a frontal sinus, a sphenoid sinus and two ear
  canals (χ of air +9.4 ppm against water);
* a smooth transceive phase offset, shim fields (harmonic polynomials up to
  second order), a smooth receive bias on the magnitude, R2* decay per tissue
  with intra-voxel dephasing near air (signal drop-out), and complex Gaussian
  noise.

All geometry is in millimetres over a fixed 225 × 261 × 217 mm field of view,
so the same seed gives the same anatomy at any grid size (1 mm at the default
shape). The seed changes the anatomy (surface perturbations, gyri, warps,
texture) as well as the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError
from .megre import MEGREData

__all__ = ["FOV_MM", "RealisticHead", "realistic_head"]

#: Field of view (mm) along x (left-right), y (posterior-anterior), z (inferior-superior).
FOV_MM = (225.0, 261.0, 217.0)

_AIR_CHI_PPM = 9.4  # air against water/CSF (Schenck JF, Med Phys 1996;23:815-850)
_BONE_CHI_PPM = -2.0  # cortical bone against water (Hopkins & Wehrli 1997; Buch et al. 2015: -1.7..-2.4)

# name: (chi ppm against CSF, M0, R2* 1/s)
TISSUES = {
    "air": (None, 0.0, 0.0),
    "scalp": (0.0, 0.9, 40.0),
    "skull": (_BONE_CHI_PPM, 0.03, 300.0),
    "neck": (0.0, 0.6, 30.0),
    "csf": (0.0, 1.0, 3.0),
    "grey_matter": (0.015, 0.85, 16.0),
    "white_matter": (-0.025, 0.75, 21.0),
    "caudate": (0.07, 0.8, 22.0),
    "putamen": (0.06, 0.8, 25.0),
    "globus_pallidus": (0.17, 0.7, 40.0),
    "thalamus": (0.01, 0.78, 20.0),
    "substantia_nigra": (0.14, 0.7, 45.0),
    "red_nucleus": (0.11, 0.7, 38.0),
    "dentate_nucleus": (0.10, 0.7, 38.0),
    "vein": (0.35, 0.5, 50.0),
}
LABELS = tuple(TISSUES)
_L = {name: i for i, name in enumerate(LABELS)}

# deep structures: (label, centre mm from the brain centre, semi-axes mm), painted in order
_DEEP = (
    ("csf", (-9.0, 8.0, 14.0), (5.0, 26.0, 9.0)),  # lateral ventricles
    ("csf", (9.0, 8.0, 14.0), (5.0, 26.0, 9.0)),
    ("thalamus", (-9.0, -8.0, 4.0), (7.0, 12.0, 8.0)),
    ("thalamus", (9.0, -8.0, 4.0), (7.0, 12.0, 8.0)),
    ("caudate", (-14.0, 22.0, 12.0), (4.0, 10.0, 7.0)),
    ("caudate", (14.0, 22.0, 12.0), (4.0, 10.0, 7.0)),
    ("putamen", (-25.0, 8.0, 2.0), (5.0, 14.0, 9.0)),
    ("putamen", (25.0, 8.0, 2.0), (5.0, 14.0, 9.0)),
    ("globus_pallidus", (-19.0, 5.0, 0.0), (3.0, 8.0, 5.0)),
    ("globus_pallidus", (19.0, 5.0, 0.0), (3.0, 8.0, 5.0)),
    ("red_nucleus", (-5.0, -14.0, -10.0), (3.0, 3.5, 3.5)),
    ("red_nucleus", (5.0, -14.0, -10.0), (3.0, 3.5, 3.5)),
    ("substantia_nigra", (-10.0, -10.0, -14.0), (3.0, 7.0, 3.0)),
    ("substantia_nigra", (10.0, -10.0, -14.0), (3.0, 7.0, 3.0)),
    ("dentate_nucleus", (-14.0, -52.0, -30.0), (5.0, 7.0, 5.0)),
    ("dentate_nucleus", (14.0, -52.0, -30.0), (5.0, 7.0, 5.0)),
)


@dataclass(frozen=True, eq=False)
class RealisticHead(MEGREData):
    """:class:`~mrirecon.phantoms.megre.MEGREData` of the realistic head, with its anatomy.

    Extra attributes
    ----------------
    labels : ndarray of uint8
        Tissue label per voxel, names in :attr:`label_names`.
    label_names : tuple of str
    head_mask : ndarray of bool
        Everything that is not air (scalp, skull, neck, CSF, brain).
    background_field_ppm : ndarray
        Total field minus the brain's own field (air, skull, scalp, CSF layer, shim).
    shim_field_ppm : ndarray
        The shim part of the background (harmonic polynomials).
    """

    labels: np.ndarray = None
    label_names: tuple = LABELS
    head_mask: np.ndarray = None
    background_field_ppm: np.ndarray = None
    shim_field_ppm: np.ndarray = None


def _noise_field(shape, vox, corr_mm, rng, *, band=None):
    """Zero-mean, unit-SD Gaussian random field with Gaussian correlation length ``corr_mm``.

    ``band``: a second, smaller length; the field is then the difference of the
    two low-passes (band-pass, sheets at its zero level set). One FFT filter
    (through :func:`mrirecon.fft.real_filter`, planned with FFTW_ESTIMATE).
    """
    from .. import fft
    from ..kspace import frequency_grid

    f = frequency_grid(shape, voxel_size_mm=vox, half=True)
    k2 = sum(g * g for g in f)
    kernel = np.exp(-2.0 * np.pi**2 * corr_mm**2 * k2)
    if band is not None:
        kernel = np.exp(-2.0 * np.pi**2 * band**2 * k2) - kernel
    white = rng.standard_normal(shape, dtype=np.float32)
    with fft.planning("FFTW_ESTIMATE"):
        out = fft.real_filter(white, kernel.astype(np.float32))
    out -= out.mean()
    out /= max(float(out.std()), 1e-12)
    return out


def _coords(shape, vox):
    return [
        ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * d).reshape(
            [-1 if i == a else 1 for i in range(3)]
        )
        for a, (n, d) in enumerate(zip(shape, vox, strict=True))
    ]


def _edt_inside(mask, vox):
    """Distance (mm) from each voxel inside ``mask`` to the nearest voxel outside (0 outside)."""
    from scipy import ndimage

    return ndimage.distance_transform_edt(mask, sampling=vox).astype(np.float32)


def realistic_head(
    shape=(225, 261, 217),
    *,
    te_s=(0.004, 0.012, 0.020),
    b0_tesla=3.0,
    b0_dir=(0.0, 0.0, 1.0),
    snr=50.0,
    seed=0,
    shim_ppm=0.15,
    volumes=1,
    field_supersample=2,
):
    """Simulate a realistic 3-D multi-echo GRE head with its truths.

    Parameters
    ----------
    shape : 3 ints
        Grid over the fixed field of view :data:`FOV_MM` (default 225 × 261 × 217:
        1 mm voxels). Voxel size = FOV / shape per axis.
    te_s : sequence of float
        Echo times in seconds.
    b0_tesla : float
    b0_dir : 3 floats
        B0 direction in voxel axes.
    snr : float
        Mean brain magnitude at TE = 0 over the complex noise SD (per channel).
    seed : int
        Anatomy (surface perturbations, gyri, warps, texture) and noise.
    shim_ppm : float
        Scale of the shim field (harmonic polynomials, ±shim_ppm at 100 mm).
    volumes : int
        More than 1: a time series of the same head, each volume with its own
        noise (volume 0 is the ``volumes=1`` data); ``magnitude`` and ``phase``
        are then (echo, x, y, z, t).
    field_supersample : int
        The fields are those of χ on a grid this many times finer per axis,
        averaged back over each voxel (:func:`mrirecon.phantoms.head.simulate_field`'s
        ``supersample``; default 2). 1: the dipole convolution on the voxel grid
        itself, which with B0 oblique to the grid leaves a non-harmonic
        component in the background field inside the brain (highest grid
        frequencies, not fading with depth: a uniform brain's 7-point
        Laplacian more than 20 mm inside it, 2 mm grid, B0 tilted 25°, was
        5·10⁻³ ppm/mm², against 1.3·10⁻⁵ for the same body at 1 mm averaged
        to 2 mm).

    Returns
    -------
    RealisticHead
        ``chi``: brain χ in ppm against CSF, zero outside ``mask``;
        ``mask``: the brain (grey and white matter, deep nuclei, ventricles and
        sulci; not the CSF between brain and skull); ``local_field_ppm``: the
        field of ``chi`` inside ``mask`` (zero outside); ``total_field_ppm``:
        the field of every source and the shim.

    Notes
    -----
    Signal of echo n: ``B M0 exp(-TE_n R2*) Π_i sinc(γ̄ B0 TE_n ∂_i f Δ_i)
    exp(i(φ0 + 2π γ̄ B0 TE_n f)) + noise`` with B a smooth receive bias, f the
    total field in ppm (computed by :func:`mrirecon.phantoms.head.simulate_field`
    on a 1.5× zero-padded grid from χ against air, each voxel split into
    ``field_supersample``³ sub-voxels and the field averaged back, so air outside the head is
    χ = 0 and the field has no box edge), the sinc the intra-voxel dephasing of
    the field gradient across a voxel, and complex Gaussian noise.
    """
    from scipy import ndimage

    from ..qsm.units import GAMMA_BAR_MHZ_PER_T
    from .head import simulate_field

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise InvalidParameterError(f"shape must be 3 sizes of at least 16, got {shape}")
    te = np.asarray(te_s, dtype=float).reshape(-1)
    if te.size < 1 or not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise InvalidParameterError(f"te_s must be positive echo times in seconds, got {te_s!r}")
    if not np.isfinite(snr) or snr <= 0:
        raise InvalidParameterError(f"snr must be positive, got {snr!r}")
    if int(volumes) < 1:
        raise InvalidParameterError(f"volumes must be >= 1, got {volumes!r}")
    vox = tuple(float(f / n) for f, n in zip(FOV_MM, shape, strict=True))
    rng = np.random.default_rng(seed)
    x, y, z = _coords(shape, vox)
    scale = 1.0 + 0.04 * rng.uniform(-1, 1, 3)  # head size and proportions vary with the seed

    # ---- head: perturbed ellipsoid with a neck leaving the field of view
    n_head = _noise_field(shape, vox, 25.0, rng)
    a, b, c = 76.0 * scale[0], 96.0 * scale[1], 92.0 * scale[2]
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2 + ((z - 12.0) / c) ** 2)
    head = rho <= 1.0 + 0.025 * n_head
    neck = ((x / (0.66 * a)) ** 2 + ((y + 12.0) / (0.6 * b)) ** 2 <= 1.0) & (z < -20.0)
    head |= neck
    depth = _edt_inside(head, vox)

    n_layer = _noise_field(shape, vox, 15.0, rng)
    scalp_t = 6.0 + 1.2 * n_layer
    skull_t = 7.0 + 1.5 * n_layer[::-1, :, :]
    csf_t = np.clip(2.0 + 0.8 * n_layer[:, ::-1, :], 0.8, None)
    inner = depth > scalp_t + skull_t  # inside the skull
    # the skull base: a bone floor under the brain, its height perturbed
    floor = -38.0 * scale[2] + 6.0 * n_head[:, :, ::-1] + 0.12 * y
    inner &= z > floor
    skull = head & (depth > scalp_t) & ~inner & (z > floor - 9.0)
    scalp = head & ~inner & ~skull
    d_inner = _edt_inside(inner, vox)
    brain = d_inner > csf_t
    brain = ndimage.binary_opening(brain, iterations=1)
    labels = np.full(shape, _L["neck"], dtype=np.uint8)
    labels[~head] = _L["air"]
    labels[scalp & (z >= -20.0)] = _L["scalp"]
    labels[skull] = _L["skull"]
    labels[inner] = _L["csf"]

    # ---- cortex: grey ribbon with a noise-driven (gyrified) boundary, sulci as thin CSF sheets
    d_brain = _edt_inside(brain, vox)
    g_wm = _noise_field(shape, vox, 10.0, rng)
    g_sulc = _noise_field(shape, vox, 9.0, rng, band=4.0)
    wm_depth = 3.0 + 9.0 * (0.5 + 0.5 * np.tanh(1.2 * g_wm))
    labels[brain] = _L["grey_matter"]
    labels[brain & (d_brain > wm_depth)] = _L["white_matter"]
    sulci = brain & (np.abs(g_sulc) < 0.09) & (d_brain < wm_depth + 1.0)
    labels[sulci] = _L["csf"]

    # ---- deep structures and veins in warped coordinates (non-ellipsoidal boundaries)
    centre_z = 20.0
    warp = [4.0 * _noise_field(shape, vox, 12.0, rng) for _ in range(3)]
    xw, yw, zw = x + warp[0], y + warp[1], (z - centre_z) + warp[2]
    for name, (cx, cy, cz), (sx, sy, sz) in _DEEP:
        inside = ((xw - cx) / sx) ** 2 + ((yw - cy) / sy) ** 2 + ((zw - cz) / sz) ** 2 <= 1.0
        labels[inside & brain] = _L[name]
    # internal cerebral vein (along y) and a cortical vein running over the left hemisphere
    vein = (xw**2 + (zw - 6.0) ** 2 <= 1.6**2) & (yw > -30.0) & (yw < 15.0)
    vein |= ((xw + 30.0) ** 2 + (yw - 10.0) ** 2 <= 1.4**2) & (zw > 20.0) & (zw < 50.0)
    labels[vein & brain] = _L["vein"]
    del xw, yw, zw, warp

    # ---- air: frontal sinus, sphenoid sinus, ear canals (inside the head, outside the brain)
    away = ~ndimage.binary_dilation(brain, iterations=max(1, round(6.0 / min(vox))))  # bone walls
    air = (x / 13.0) ** 2 + ((y - 0.78 * b) / 7.0) ** 2 + ((z + 6.0) / 11.0) ** 2 <= 1.0
    air |= (x / 11.0) ** 2 + ((y - 35.0) / 14.0) ** 2 + ((z - floor.mean() + 18.0) / 9.0) ** 2 <= 1.0
    for sx in (-1.0, 1.0):
        air |= ((y + 8.0) ** 2 + (z + 36.0) ** 2 <= 5.0**2) & (np.abs(x) > 0.62 * a) & (sx * x > 0)
    air &= head & away
    labels[air] = _L["air"]
    head_mask = labels != _L["air"]
    mask = brain.copy()

    # ---- susceptibility with texture
    chi_table = np.array([0.0 if v[0] is None else v[0] for v in TISSUES.values()], dtype=np.float32)
    chi_rel = chi_table[labels]
    tissue = np.isin(labels, [_L[n] for n in LABELS[5:]]) & (labels != _L["csf"])
    texture = _noise_field(shape, vox, 1.5, rng)
    chi_rel += np.float32(0.012) * texture * tissue
    chi_rel += np.float32(0.01) * _noise_field(shape, vox, 20.0, rng) * tissue  # smooth iron gradients
    chi = np.where(mask, chi_rel, np.float32(0)).astype(np.float32)
    chi_air = np.where(head_mask, chi_rel - np.float32(_AIR_CHI_PPM), np.float32(0))  # χ against air
    ss = field_supersample
    total = simulate_field(chi_air, voxel_size_mm=vox, b0_dir=b0_dir, supersample=ss)
    del chi_air
    # the local field of χ relative to its brain mean: the mean's own field is harmonic inside
    # the brain (a uniform body), so no background removal can (or should) keep it
    chi_mean = np.float32(chi[mask].mean())
    local = simulate_field(
        np.where(mask, chi - chi_mean, 0), voxel_size_mm=vox, b0_dir=b0_dir, mask=mask, supersample=ss
    )
    shim_c = shim_ppm * rng.uniform(-1, 1, 8)
    u, v, w = x / 100.0, y / 100.0, z / 100.0  # harmonic polynomials (spherical-harmonic shims)
    shim = (
        shim_c[0] * u
        + shim_c[1] * v
        + shim_c[2] * w
        + shim_c[3] * (u * u - v * v)
        + shim_c[4] * u * v
        + shim_c[5] * (2 * w * w - u * u - v * v)
        + shim_c[6] * u * w
        + shim_c[7] * v * w
    ).astype(np.float32)
    total = total + shim
    total -= np.float32(np.median(total[mask]))  # the scanner's centre frequency sits on the brain
    background = np.where(mask, total - local, total).astype(np.float32)

    # ---- signal
    m0_table = np.array([v[1] for v in TISSUES.values()], dtype=np.float32)
    r2_table = np.array([v[2] for v in TISSUES.values()], dtype=np.float32)
    m0 = m0_table[labels] * (1.0 + 0.03 * texture)
    r2 = r2_table[labels]
    bias = np.clip(1.0 + 0.2 * _noise_field(shape, vox, 60.0, rng), 0.6, 1.4)
    m0 *= bias
    del texture, bias
    phi0 = (1.5 * _noise_field(shape, vox, 50.0, rng) + 0.01 * x - 0.008 * z).astype(np.float32)
    hz_per_ppm = GAMMA_BAR_MHZ_PER_T * b0_tesla
    grads = np.gradient(total, *vox)  # ppm/mm
    sigma = float(m0[mask].mean()) / snr
    rngs = [rng] + [np.random.default_rng((seed, v)) for v in range(1, int(volumes))]
    mags, phases = [], []
    for t in te:
        s = m0 * np.exp(-np.float32(t) * r2)
        for g, d in zip(grads, vox, strict=True):
            s *= np.abs(np.sinc(np.float32(hz_per_ppm * t * d) * g))
        clean = s * np.exp(1j * (phi0 + np.float32(2 * np.pi * t * hz_per_ppm) * total)).astype(np.complex64)
        m_t, p_t = [], []
        for r in rngs:  # one noise draw per volume
            sig = clean + np.float32(sigma) * (
                r.standard_normal(shape, dtype=np.float32) + 1j * r.standard_normal(shape, dtype=np.float32)
            )
            m_t.append(np.abs(sig).astype(np.float32))
            p_t.append(np.angle(sig).astype(np.float32))
            del sig
        mags.append(m_t[0] if len(rngs) == 1 else np.stack(m_t, axis=-1))
        phases.append(p_t[0] if len(rngs) == 1 else np.stack(p_t, axis=-1))
        del clean, s, m_t, p_t
    bdir = np.asarray(b0_dir, float)
    return RealisticHead(
        magnitude=np.stack(mags),
        phase=np.stack(phases),
        te_s=tuple(float(t) for t in te),
        b0_tesla=float(b0_tesla),
        b0_dir=tuple(float(v) for v in bdir / np.linalg.norm(bdir)),
        voxel_size_mm=vox,
        chi=chi,
        mask=mask,
        local_field_ppm=local,
        total_field_ppm=total,
        phase_offset_rad=phi0,
        labels=labels,
        label_names=LABELS,
        head_mask=head_mask,
        background_field_ppm=background,
        shim_field_ppm=shim,
    )
