"""A DSI phantom slice: crossing bundles, a curved bundle, single fibres, grey matter and CSF.

Multi-tensor signals (:func:`mrirecon.dsi.multi_tensor_signal`) on the DSI
lattice, with per-voxel texture (smooth random variations of the
diffusivities, orientation dispersion, a smooth receive bias) and partial
volume at every boundary, Rician noise, and variable-density q-space
undersampling masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dsi import Lattice, multi_tensor_signal, q_lattice
from ..errors import InvalidParameterError

__all__ = ["DSIPhantom", "dsi_phantom", "rician", "undersampling_mask"]

#: Region labels of :attr:`DSIPhantom.labels`.
LABELS = {
    0: "background",
    1: "CSF",
    2: "grey matter",
    3: "white matter, one fibre",
    4: "crossing",
    5: "curved",
}


@dataclass
class DSIPhantom:
    """A DSI slice and its truth.

    Attributes
    ----------
    signal : (x, y, 1, m) float32
        Noise-free signal on the full lattice (``lattice.points`` order), S0 ≈ 1000 in white matter.
    noisy : (x, y, 1, m) float32
        With Rician noise of SD ``sigma``.
    mask : (x, y, 1) bool
        Brain (tissue or CSF).
    labels : (x, y, 1) uint8
        See :data:`LABELS` (the dominant region of each voxel).
    directions : (x, y, 1, F, 3) float32
        Fibre directions; ``fractions`` (x, y, 1, F) their signal fractions (0 where absent).
    lattice : Lattice
    sigma : float
        Rician noise SD (data units): the mean b = 0 signal in the mask over ``snr``.
    """

    signal: np.ndarray
    noisy: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    directions: np.ndarray
    fractions: np.ndarray
    lattice: Lattice
    sigma: float

    @property
    def bvals(self) -> np.ndarray:
        return self.lattice.bvals()

    @property
    def bvecs(self) -> np.ndarray:
        return self.lattice.bvecs()


def _smooth_field(rng, shape, scale_px):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), scale_px, mode="wrap")
    return f / (f.std() + 1e-12)


def _band(x, y, x0, y0, angle, half_width, edge):
    """Membership (0..1, soft edge) of a straight band through (x0, y0) at ``angle``, and its direction."""
    d = np.abs(-(x - x0) * np.sin(angle) + (y - y0) * np.cos(angle))
    w = np.clip((half_width - d) / edge + 0.5, 0, 1)
    u = np.array([np.cos(angle), np.sin(angle), 0.0])
    return w, np.broadcast_to(u, x.shape + (3,))


def rician(signal, sigma, rng) -> np.ndarray:
    """``|signal + n₁ + i n₂|`` with n₁, n₂ ~ N(0, σ²): magnitude-image noise."""
    n1 = rng.standard_normal(signal.shape) * sigma
    n2 = rng.standard_normal(signal.shape) * sigma
    return np.sqrt((signal + n1) ** 2 + n2**2)


def dsi_phantom(
    shape=(40, 40),
    *,
    b_max_s_mm2: float = 4000.0,
    radius_sq: int = 25,
    snr: float = 30.0,
    seed: int = 0,
    s0: float = 1000.0,
) -> DSIPhantom:
    """Simulate a DSI slice.

    Parameters
    ----------
    shape : (int, int)
        In-plane grid (the slice spans [-1, 1]² in phantom units).
    b_max_s_mm2 : float
        Outer-shell b-value.
    radius_sq : int
        Lattice radius² (25: the 515-point grid).
    snr : float
        Mean b = 0 signal in the mask over the noise SD (inf: no noise).
    seed : int
        Texture, geometry jitter (bundle positions ±0.05, angles ±8°) and noise.
    s0 : float
        White-matter b = 0 signal (grey matter ×1.15, CSF ×1.6: T2 weighting).

    Notes
    -----
    Regions: a CSF rim and two ventricles; a grey-matter ribbon; white matter
    whose background is one fibre population along a smooth swirling
    orientation field; straight bundles crossing each other at about 90°,
    60° and 45°; a through-plane bundle; and a curved (arc) bundle.
    Diffusivities (×10⁻³ mm²/s): fibres d∥ 1.7, d⊥ 0.3–0.45 (±10 % smooth
    texture), grey matter 0.8, CSF 3.0; partial volume at all edges.
    """
    nx, ny = (int(s) for s in shape)
    if nx < 8 or ny < 8:
        raise InvalidParameterError(f"shape must be at least 8 x 8, got {shape}")
    if not (snr > 0):
        raise InvalidParameterError(f"snr must be > 0 (inf for no noise), got {snr}")
    rng = np.random.default_rng(seed)
    lattice = q_lattice(radius_sq, b_max_s_mm2=b_max_s_mm2)
    xs = np.linspace(-1, 1, nx)
    ys = np.linspace(-1, 1, ny)
    x, y = np.meshgrid(xs, ys, indexing="ij")
    px = 2.0 / max(nx, ny)  # one voxel in phantom units
    edge = 1.5 * px
    rad = np.sqrt((x / 0.95) ** 2 + (y / 0.85) ** 2)
    head = np.clip((1.0 - rad) / (edge / 0.9) + 0.5, 0, 1)
    inner = np.clip((0.86 - rad) / (edge / 0.9) + 0.5, 0, 1)  # inside the CSF rim
    wm_env = np.clip((0.72 - rad) / (edge / 0.9) + 0.5, 0, 1)  # inside the GM ribbon
    vent = np.zeros_like(x)
    for cx in (-0.12, 0.12):
        rv = np.sqrt(((x - cx) / 0.07) ** 2 + ((y + 0.05) / 0.2) ** 2)
        vent = np.maximum(vent, np.clip((1.0 - rv) / (edge / 0.1) + 0.5, 0, 1))
    jit = lambda s: s * rng.uniform(-1, 1)  # noqa: E731
    deg = np.pi / 180
    fibres = []  # (membership, direction field)
    # background white matter: one population along a smooth swirl
    theta = 0.8 * _smooth_field(rng, (nx, ny), 0.25 / px) + np.arctan2(y, x) + np.pi / 2
    u_bg = np.stack([np.cos(theta), np.sin(theta), np.zeros_like(theta)], axis=-1)
    bands = [
        (-0.45 + jit(0.05), 0.35 + jit(0.05), 0.0 + jit(8 * deg), 0.09),  # A
        (-0.45 + jit(0.05), 0.35 + jit(0.05), 90 * deg + jit(8 * deg), 0.08),  # B: ~90° with A
        (0.35 + jit(0.05), 0.30 + jit(0.05), 20 * deg + jit(8 * deg), 0.08),  # C
        (0.35 + jit(0.05), 0.30 + jit(0.05), 80 * deg + jit(8 * deg), 0.08),  # D: ~60° with C
        (0.0 + jit(0.05), -0.45 + jit(0.05), 0.0 + jit(8 * deg), 0.08),  # E
        (0.0 + jit(0.05), -0.45 + jit(0.05), 45 * deg + jit(8 * deg), 0.08),  # F: ~45° with E
    ]
    memb = []
    for x0, y0, ang, hw in bands:
        w, u = _band(x, y, x0, y0, ang, hw, edge)
        # bundles live in a disc around their crossing point, so single-fibre stretches remain
        dist = np.sqrt((x - x0) ** 2 + (y - y0) ** 2)
        w = w * np.clip((0.3 - dist) / edge + 0.5, 0, 1)
        memb.append(w)
        fibres.append(u)
    # a curved bundle: an arc around (0.45, -0.35)
    cx, cy, r0 = 0.5 + jit(0.04), -0.25 + jit(0.04), 0.22
    rr = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    ang = np.arctan2(y - cy, x - cx)
    arc = np.clip((0.06 - np.abs(rr - r0)) / edge + 0.5, 0, 1) * (ang < 0.6)
    memb.append(arc)
    fibres.append(np.stack([-np.sin(ang), np.cos(ang), np.zeros_like(ang)], axis=-1))
    # a through-plane bundle (z), single fibre
    zc = np.sqrt((x + 0.35) ** 2 + (y + 0.45) ** 2)
    memb.append(np.clip((0.1 - zc) / edge + 0.5, 0, 1))
    fibres.append(np.broadcast_to(np.array([0.0, 0.0, 1.0]), x.shape + (3,)))
    memb = np.stack(memb, axis=-1) * wm_env[..., None] * (1 - vent[..., None])
    n_b = memb.shape[-1]
    # bundle fractions: each bundle takes a share; the background fibre the rest
    total = memb.sum(axis=-1)
    f_b = memb * np.where(total > 1, 1 / np.maximum(total, 1e-9), 1.0)[..., None] * 0.9
    f_bg = np.clip(1.0 - f_b.sum(axis=-1), 0, 1)
    dirs = np.concatenate([np.stack(fibres, axis=-2), u_bg[..., None, :]], axis=-2)
    # orientation dispersion: a small random tilt per voxel and population
    tilt = rng.standard_normal(dirs.shape) * 4 * deg
    dirs = dirs + tilt - np.sum(tilt * dirs, axis=-1, keepdims=True) * dirs
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    wm = wm_env * (1 - vent)
    f_fib = np.concatenate([f_b, f_bg[..., None]], axis=-1) * wm[..., None]
    f_gm = (inner - wm_env) * head
    f_csf = np.clip(head - inner + vent * wm_env, 0, 1)
    norm = f_fib.sum(-1) + f_gm + f_csf
    scale = np.divide(head, norm, out=np.zeros_like(norm), where=norm > 0)
    f_fib, f_gm, f_csf = f_fib * scale[..., None], f_gm * scale, f_csf * scale
    tex = _smooth_field(rng, (nx, ny), 0.08 / px)
    tex2 = _smooth_field(rng, (nx, ny), 0.08 / px)
    nf = n_b + 1
    dpar = np.concatenate([np.full((nx, ny, nf), 1.7e-3) * (1 + 0.08 * tex)[..., None]], axis=-1)
    dperp = (0.3e-3 + 0.15e-3 * (0.5 + 0.5 * np.tanh(tex2)))[..., None] * np.ones((1, 1, nf))
    dgm = 0.8e-3 * (1 + 0.08 * tex)
    dcsf = np.full((nx, ny), 3.0e-3)
    d_par = np.concatenate([dpar, dgm[..., None], dcsf[..., None]], axis=-1)
    d_perp = np.concatenate([dperp, dgm[..., None], dcsf[..., None]], axis=-1)
    zdir = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (nx, ny, 2, 3))
    all_dirs = np.concatenate([dirs, zdir], axis=-2)
    rel_s0 = np.stack([np.ones((nx, ny))] * nf + [np.full((nx, ny), 1.15), np.full((nx, ny), 1.6)], axis=-1)
    fr = np.concatenate([f_fib, f_gm[..., None], f_csf[..., None]], axis=-1) * rel_s0
    bias = 1.0 + 0.08 * _smooth_field(rng, (nx, ny), 0.4 / px)
    sig = multi_tensor_signal(
        lattice.bvals(),
        lattice.bvecs(),
        d_par_mm2_s=d_par,
        d_perp_mm2_s=d_perp,
        directions=all_dirs,
        fractions=fr,
    )
    sig *= (s0 * bias)[..., None]
    mask = head > 0.5
    sig[~mask] = 0.0
    labels = np.zeros((nx, ny), dtype=np.uint8)
    labels[mask] = 1
    labels[mask & (f_gm > f_csf) & (f_gm > f_fib.sum(-1))] = 2
    fib_dom = mask & (f_fib.sum(-1) >= np.maximum(f_gm, f_csf))
    labels[fib_dom] = 3
    n_big = np.sum(f_fib[..., :n_b] > 0.25, axis=-1)
    labels[fib_dom & (n_big >= 2)] = 4
    labels[fib_dom & (arc > 0.5) & (n_big < 2)] = 5
    b0 = sig[..., 0][mask]
    sigma = float(b0.mean() / snr) if np.isfinite(snr) else 0.0
    noisy = rician(sig, sigma, rng) if sigma > 0 else sig.copy()
    noisy[~mask] = rician(np.zeros_like(noisy[~mask]), sigma, rng) if sigma > 0 else 0.0
    f_fib_out = f_fib * mask[..., None]
    return DSIPhantom(
        sig[:, :, None].astype(np.float32),
        noisy[:, :, None].astype(np.float32),
        mask[:, :, None],
        labels[:, :, None],
        dirs[:, :, None].astype(np.float32),
        f_fib_out[:, :, None].astype(np.float32),
        lattice,
        sigma,
    )


def undersampling_mask(
    lattice: Lattice, *, accel: float = 3.0, seed: int = 0, power: float = 2.0
) -> np.ndarray:
    """Variable-density random q-space sampling: sorted lattice rows to acquire.

    ``round(m / accel)`` points drawn without replacement with probability
    ``∝ (1 − |k|/(r_max + 1))^power`` (dense near q = 0, sparse at high q, as in
    compressed-sensing DSI, Menzel et al. 2011); q = 0 is always acquired.
    """
    if not (accel >= 1):
        raise InvalidParameterError(f"accel must be >= 1, got {accel}")
    rng = np.random.default_rng(seed)
    n = int(round(lattice.size / accel))
    r = np.linalg.norm(lattice.points, axis=1)
    p = (1 - r / (np.sqrt(lattice.radius_sq) + 1)) ** power
    p[0] = 0.0
    p /= p.sum()
    pick = rng.choice(np.arange(1, lattice.size), size=n - 1, replace=False, p=p[1:])
    return np.sort(np.concatenate([[0], pick]))
