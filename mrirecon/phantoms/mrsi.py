"""A 2-D 1H MRSI brain slice with a scalp lipid ring, simulated at high resolution.

The slice is built on a fine grid (``oversample`` × the MRSI matrix): a head
ellipse with scalp fat, a skull with marrow fat, outer CSF, a folded cortex
(grey-matter ribbon over white matter), ventricles, thalami and one focal
lesion. Every fine pixel has its own metabolite concentrations (tissue value
× smooth texture), T2s, B0 offset and line broadening, so the FIDs are not
separable in space and time. The MRSI acquisition keeps only the central
``shape`` block of k-space (the low-resolution point-spread function whose
ringing carries the scalp lipids into the brain) and adds complex Gaussian
noise. The truth is the same acquisition without lipids and without noise.
Tissue values and their sources are data: ``phantoms/mrsi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import fft
from ..errors import InvalidParameterError
from .head import _read_definition_text

__all__ = ["LABELS", "MRSIPhantom", "load_mrsi_definition", "mrsi_phantom"]

#: Fine-grid tissue labels.
LABELS = ("background", "scalp_fat", "skull", "marrow", "csf", "grey_matter", "white_matter")


@dataclass(frozen=True, eq=False)
class MRSIPhantom:
    """A simulated MRSI slice; spectral arrays are (x, y, 1, t) FIDs, complex64.

    Attributes
    ----------
    data : ndarray
        The acquisition: metabolites + lipids + noise.
    truth : ndarray
        Metabolites only, without noise (the same k-space truncation).
    lipids : ndarray
        Lipids only, without noise (``data = truth + lipids + noise``).
    noise : ndarray
        The complex Gaussian noise that was added.
    brain_mask, lipid_mask : ndarray of bool, (x, y, 1)
        From the geometry: voxels at least half brain (and free of fat), and
        voxels at least ``lipid_fraction`` fat (scalp or marrow).
    b0_hz : ndarray, (x, y, 1)
        The B0 offset averaged over each MRSI voxel (Hz).
    fractions : dict of ndarray
        Tissue fraction of each MRSI voxel, per label.
    dwell_time_s, spectrometer_frequency_mhz, reference_ppm : float
    voxel_size_mm : tuple of 3 floats
    noise_sd : float
        Standard deviation of the noise per real and imaginary part.
    params : dict
        Everything needed to rebuild it.
    """

    data: np.ndarray
    truth: np.ndarray
    lipids: np.ndarray
    noise: np.ndarray
    brain_mask: np.ndarray
    lipid_mask: np.ndarray
    b0_hz: np.ndarray
    fractions: dict
    dwell_time_s: float
    spectrometer_frequency_mhz: float
    reference_ppm: float
    voxel_size_mm: tuple
    noise_sd: float
    params: dict


def load_mrsi_definition() -> dict:
    """The MRSI phantom's tissue values and sources (``phantoms/mrsi.json``), a fresh copy."""
    import json

    text = _read_definition_text("mrsi")
    if text is None:
        raise InvalidParameterError("the MRSI phantom definition phantoms/mrsi.json is missing")
    return json.loads(text)


def _smooth_field(rng, shape, sigma_px):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma=sigma_px, mode="wrap")
    return f / (np.abs(f).max() + 1e-12)


def _geometry(nh, fov_mm, rng):
    """Fine-grid labels (int8), lesion weight and polar helpers for one geometry draw."""
    d = fov_mm / nh
    c = (np.arange(nh) - nh / 2.0) * d
    x, y = np.meshgrid(c, c, indexing="ij")  # x: left-right, y: posterior-anterior
    rot = np.deg2rad(rng.uniform(-8, 8))
    xr = np.cos(rot) * x + np.sin(rot) * y
    yr = -np.sin(rot) * x + np.cos(rot) * y
    ax, ay = 80.0 * rng.uniform(0.95, 1.05), 97.0 * rng.uniform(0.95, 1.05)
    theta = np.arctan2(yr / ay, xr / ax)
    rho = np.hypot(xr / ax, yr / ay)  # 1 on the head's surface
    scale = np.hypot(ax * np.cos(theta), ay * np.sin(theta))  # mm per unit rho along each ray
    depth = (1.0 - rho) * scale  # mm below the surface, along the ray
    # slow bumps of the head and brain outline
    k = np.arange(2, 7)
    amp = rng.normal(0, 1.2, k.size)
    phs = rng.uniform(0, 2 * np.pi, k.size)
    bump = np.sum(amp[:, None, None] * np.cos(k[:, None, None] * theta + phs[:, None, None]), axis=0)
    scalp_mm = 6.0 + 1.5 * np.cos(2 * theta + rng.uniform(0, 2 * np.pi))
    skull_mm = 7.0
    csf_mm = 2.0
    depth = depth + bump
    # gyri: cortex 3 mm thick over white matter whose surface folds 0-7 mm deep
    n_gyri = rng.integers(22, 30)
    g = 0.5 * (1 + np.cos(n_gyri * theta + 1.5 * np.sin(3 * theta + rng.uniform(0, 6))))
    fold = 7.0 * g**2
    brain_top = scalp_mm + skull_mm + csf_mm
    labels = np.zeros((nh, nh), np.int8)
    head = depth >= 0
    labels[head] = 1
    skull = depth >= scalp_mm
    labels[skull] = 2
    marrow = (depth >= scalp_mm + 2.0) & (depth < scalp_mm + skull_mm - 2.0)
    labels[marrow] = 3
    labels[depth >= scalp_mm + skull_mm] = 4
    brain = depth >= brain_top
    labels[brain] = 5
    labels[depth >= brain_top + 3.0 + fold] = 6
    # sulci: thin CSF clefts where the folding is deepest
    labels[brain & (g > 0.93) & (depth < brain_top + 3.0 + fold)] = 4

    # ventricles (CSF) and thalami (grey matter)
    def ell(cx, cy, rx, ry, ang=0.0):
        a = np.deg2rad(ang)
        u = np.cos(a) * (xr - cx) + np.sin(a) * (yr - cy)
        v = -np.sin(a) * (xr - cx) + np.cos(a) * (yr - cy)
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0

    for s in (-1, 1):
        labels[ell(s * 10.0, -6.0, 7.0, 9.0)] = 5
        labels[ell(s * 9.0, 12.0, 4.0, 20.0, s * 12.0)] = 4
    labels[ell(0.0, -6.0, 1.5, 8.0)] = 4
    # one focal lesion in white matter (low NAA, high Cho), 7-10 mm radius
    for _ in range(100):
        lx, ly = rng.uniform(-45, 45), rng.uniform(-55, 55)
        ok = labels[np.argmin(np.abs(c - lx)), np.argmin(np.abs(c - ly))] == 6
        if ok and np.hypot(lx, ly) > 25:
            break
    lr = rng.uniform(7, 10)
    lesion = np.clip(1.5 - np.hypot(x - lx, y - ly) / lr, 0, 1)  # soft edge
    return labels, lesion, x, y


def _b0_map(x, y, rng, fov_mm):
    """Smooth B0 offset (Hz): low-order terms plus a frontal (sinus) hot spot."""
    u, v = x / (fov_mm / 2), y / (fov_mm / 2)
    coef = rng.normal(0, 1, 6) * np.array([3.0, 4.0, 4.0, 3.0, 3.0, 3.0])
    b0 = coef[0] + coef[1] * u + coef[2] * v + coef[3] * u * v + coef[4] * u**2 + coef[5] * v**2
    b0 += 15.0 * np.exp(-((x - rng.uniform(-8, 8)) ** 2 + (y - 75.0) ** 2) / (2 * 14.0**2))
    return b0


def _lines(ppm, weights, t2_s, t, sf, ref):
    f = (np.asarray(ppm) - ref) * sf
    w = np.asarray(weights, float)
    return (w[:, None] * np.exp(2j * np.pi * f[:, None] * t[None, :] - t[None, :] / t2_s)).sum(0)


def mrsi_phantom(
    shape=(64, 64),
    *,
    n_points: int = 1024,
    dwell_time_s: float = 5e-4,
    fov_mm: float = 240.0,
    slice_mm: float = 10.0,
    oversample: int = 4,
    lipid_scale: float = 1.0,
    naa_snr: float = 20.0,
    lipid_fraction: float = 0.1,
    seed: int = 0,
    geometry_seed: int = 0,
    chunk: int = 64,
) -> MRSIPhantom:
    """Simulate a 2-D MRSI slice of the brain with scalp lipids.

    Parameters
    ----------
    shape : 2 ints
        MRSI matrix (x, y): the central block of k-space that is acquired.
    n_points : int
        Spectral points of each FID.
    dwell_time_s : float
        FID sampling interval (spectral width ``1/dwell_time_s`` Hz).
    fov_mm : float
        Square field of view.
    slice_mm : float
        Slice thickness (only written to the voxel size).
    oversample : int
        Fine grid = ``oversample`` × ``shape`` (the object is simulated there).
    lipid_scale : float
        Multiplies every lipid amplitude. At 1 the methylene (1.3 ppm) peak area
        of pure scalp fat is 100–300× the NAA singlet area of white matter
        (200× on average, varying smoothly around the head).
    naa_snr : float
        Median over the brain mask of the NAA peak height in the truth's
        spectrum divided by the noise SD.
    lipid_fraction : float
        A voxel is in the lipid mask when at least this fraction of it is fat.
    seed : int
        Texture, lipid variation and noise.
    geometry_seed : int
        Head and brain outline, folding, rotation, lesion and B0 map.
    chunk : int
        Spectral points simulated at once (memory: fine grid² × chunk).

    Returns
    -------
    MRSIPhantom
    """
    nx, ny = (int(s) for s in shape)
    if nx != ny or nx < 8:
        raise InvalidParameterError(f"shape must be square and at least 8 × 8, got {shape}")
    if int(oversample) < 1 or int(n_points) < 16:
        raise InvalidParameterError("oversample must be >= 1 and n_points >= 16")
    for name, v in (("lipid_scale", lipid_scale), ("naa_snr", naa_snr), ("dwell_time_s", dwell_time_s)):
        if not (np.isfinite(v) and v > 0):
            raise InvalidParameterError(f"{name} must be positive, got {v}")
    definition = load_mrsi_definition()
    sf = float(definition["spectrometer_frequency_mhz"])
    ref = float(definition["reference_ppm"])
    n, T, f = nx, int(n_points), int(oversample)
    nh = n * f
    t = np.arange(T) * float(dwell_time_s)

    geo_rng = np.random.default_rng([geometry_seed, 7])
    labels, lesion, x, y = _geometry(nh, fov_mm, geo_rng)
    b0 = _b0_map(x, y, geo_rng, fov_mm)
    rng = np.random.default_rng([seed, 11])
    px = nh / fov_mm  # fine pixels per mm
    extra_hz = float(definition["linewidth"]["extra_lorentzian_hz"]) * (
        1 + 0.3 * _smooth_field(rng, (nh, nh), 8 * px)
    )

    # basis FIDs (K, T) and fine-grid amplitudes (npix, K)
    basis, amps, is_lipid = [], [], []
    gm, wm = labels == 5, labels == 6
    for m in definition["metabolites"]:
        tex = 1.0 + 0.15 * _smooth_field(rng, (nh, nh), 5 * px)
        les = 1.0 + (m["lesion_factor"] - 1.0) * lesion
        for tissue, where in (("grey_matter", gm), ("white_matter", wm)):
            basis.append(_lines(m["peaks_ppm"], m["protons"], m["t2_ms"][tissue] / 1e3, t, sf, ref))
            amps.append((where * m["conc_mM"][tissue] * tex * les).ravel())
            is_lipid.append(False)
    lip = definition["lipid"]
    naa = definition["metabolites"][0]
    naa_wm_area = naa["conc_mM"]["white_matter"] * naa["protons"][0]
    rel = np.asarray(lip["relative_area"], float)
    mi = int(lip["methylene_index"])
    per_area = 200.0 * naa_wm_area / rel[mi] * float(lipid_scale)  # total lipid area per fat pixel
    vary = 1.0 + 0.5 * _smooth_field(rng, (nh, nh), 12 * px)  # 0.5 ... 1.5 → 100-300× NAA
    ratio = 1.0 + 0.2 * _smooth_field(rng, (nh, nh), 12 * px)  # methylene share varies ±20 %
    others = rel.copy()
    others[mi] = 0.0
    methylene = np.zeros_like(rel)
    methylene[mi] = rel[mi]
    for where, a in ((labels == 1, 1.0), (labels == 3, float(lip["marrow_relative_amplitude"]))):
        unsat = others if a == 1.0 else others * np.where(np.asarray(lip["peaks_ppm"]) > 5, 0.5, 1.0)
        for weights, w_map in ((methylene, ratio), (unsat, 1.0)):
            basis.append(_lines(lip["peaks_ppm"], weights, lip["t2_ms"] / 1e3, t, sf, ref))
            amps.append((where * a * per_area * vary * w_map).ravel())
            is_lipid.append(True)
    basis = np.asarray(basis, np.complex64)
    amps = np.asarray(amps, np.float32).T  # (npix, K)
    is_lipid = np.asarray(is_lipid)
    rate = (2j * np.pi * b0 - np.pi * extra_hz).ravel().astype(np.complex64)  # per fine pixel

    # the acquisition keeps the central n × n block of k-space: X_low = D X_fine Dᵀ with
    # D = (inverse n-point FFT) · (central crop) · (nh-point FFT), built once from an identity
    lo = nh // 2 - n // 2
    eye = np.eye(nh, dtype=np.complex64)
    d = fft.ifftc(np.ascontiguousarray(fft.fftc(eye, axes=(0,))[lo : lo + n]), axes=(0,))
    d = (d * np.float32(np.sqrt(n / nh))).astype(np.complex64)  # keeps voxel intensities
    out = {"met": np.empty((n, n, T), np.complex64), "lip": np.empty((n, n, T), np.complex64)}
    parts = {"met": ~is_lipid, "lip": is_lipid}
    step = int(chunk)
    zpow = np.exp(rate[:, None] * (np.arange(step, dtype=np.float32) * np.float32(dwell_time_s))[None, :])
    for s0 in range(0, T, step):
        tc = min(step, T - s0)
        decay = np.exp(rate * np.float32(t[s0]))[:, None] * zpow[:, :tc]  # (npix, tc)
        for key, sel in parts.items():
            fine = (amps[:, sel] @ basis[sel, s0 : s0 + tc]) * decay
            y = (d @ fine.reshape(nh, nh * tc)).reshape(n, nh, tc)
            z = d @ y.transpose(1, 0, 2).reshape(nh, n * tc)
            out[key][:, :, s0 : s0 + tc] = z.reshape(n, n, tc).transpose(1, 0, 2)

    # MRSI-voxel tissue fractions and B0 (block averages centred like the k-space crop)
    def block(a):
        if f > 1:  # shift by f // 2 fine pixels, repeating the edge (no wrap-around)
            a = np.pad(a, ((f // 2, 0), (f // 2, 0)), mode="edge")[:nh, :nh]
        return a.reshape(n, f, n, f).mean(axis=(1, 3))

    fractions = {name: block((labels == i).astype(np.float32)) for i, name in enumerate(LABELS)}
    fat = fractions["scalp_fat"] + fractions["marrow"]
    brainfrac = fractions["grey_matter"] + fractions["white_matter"]
    inner = block(((labels >= 5) | ((labels == 4) & (_depth_inside(labels)))).astype(np.float32))
    brain_mask = (np.maximum(brainfrac, inner) >= 0.5) & (fat == 0)
    lipid_mask = fat >= float(lipid_fraction)

    truth, lipids = out["met"], out["lip"]
    from ..mrsi.ppm import band_mask, ppm_axis, spectrum

    ppm = ppm_axis(T, dwell_time_s=dwell_time_s, spectrometer_frequency_mhz=sf, reference_ppm=ref)
    naa_pts = band_mask(ppm, 1.9, 2.1)
    heights = np.abs(spectrum(truth[brain_mask])[:, naa_pts]).max(axis=1)
    noise_sd = float(np.median(heights) / float(naa_snr)) / np.sqrt(2.0)
    noise = (rng.standard_normal((n, n, T)) + 1j * rng.standard_normal((n, n, T))).astype(np.complex64)
    noise *= np.float32(noise_sd)
    data = truth + lipids + noise
    e = (slice(None), slice(None), None)
    params = {
        "shape": [n, n],
        "n_points": T,
        "dwell_time_s": float(dwell_time_s),
        "fov_mm": float(fov_mm),
        "slice_mm": float(slice_mm),
        "oversample": f,
        "lipid_scale": float(lipid_scale),
        "naa_snr": float(naa_snr),
        "lipid_fraction": float(lipid_fraction),
        "seed": int(seed),
        "geometry_seed": int(geometry_seed),
    }
    return MRSIPhantom(
        data=data[:, :, None, :],
        truth=truth[:, :, None, :],
        lipids=lipids[:, :, None, :],
        noise=noise[:, :, None, :],
        brain_mask=brain_mask[e],
        lipid_mask=lipid_mask[e],
        b0_hz=block(b0.astype(np.float32))[e],
        fractions={k: v[e] for k, v in fractions.items()},
        dwell_time_s=float(dwell_time_s),
        spectrometer_frequency_mhz=sf,
        reference_ppm=ref,
        voxel_size_mm=(fov_mm / n, fov_mm / n, float(slice_mm)),
        noise_sd=noise_sd,
        params=params,
    )


def _depth_inside(labels):
    """CSF enclosed by the brain (ventricles, sulci), not the outer CSF layer."""
    from scipy.ndimage import binary_fill_holes

    return binary_fill_holes(labels >= 5)
