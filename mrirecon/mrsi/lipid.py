"""Lipid suppression by a lipid-basis penalty: closed-form L2 and the iterative L1 baseline.

The spectra (or FIDs: the FFT along time is unitary, so every quantity here is
the same in both domains) of the voxels in a lipid (scalp) mask are the
columns of ``L`` (T × N_lip). Each brain voxel's measured FID ``x0`` becomes

- L2: ``x = argmin ‖x − x0‖² + β‖Lᴴx‖² = (I + βLLᴴ)⁻¹ x0``. With the thin SVD
  ``L = U Σ Vᴴ`` this is ``x = x0 − U diag(w) Uᴴ x0``, ``w_k = βσ_k²/(1 + βσ_k²)``
  (Woodbury): one T × r matrix for all voxels, two matrix products;
- L1: ``x = argmin ‖x − x0‖² + β‖Lᴴx‖₁`` (``|·|`` of complex entries),
  solved by FISTA on its dual (below).

The basis (SVD of ``L``) is built once per lipid matrix and cached.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .._xp import common_module, on_module
from ..errors import InvalidParameterError, ShapeMismatchError
from ..progress import progress
from . import ppm as _ppm

__all__ = [
    "BETA_CRITERIA",
    "BetaCurve",
    "L1Result",
    "LipidBasis",
    "SuppressionInfo",
    "beta_curve",
    "lipid_basis",
    "lipid_matrix",
    "lipid_suppress",
    "l1_fista",
    "l2_closed_form",
]

#: Data-driven β criteria of :func:`beta_curve` (the first is the default of ``beta="auto"``).
BETA_CRITERIA = ("naa-tradeoff", "balance", "discrepancy", "lcurve", "gcv")

#: Components whose weight ``w_k`` is below this are left out of the L2 product
#: (``rank=None``): the result moves by at most this fraction of ``‖x0‖``.
W_TOL = 1e-4
#: Singular values below this fraction of the largest are treated as zero.
SIGMA_RTOL = 1e-5
#: Default ppm bands of the criteria: lipid-only band, metabolite band free of
#: the big lipid peaks, and signal-free bands for the noise level.
LIPID_BAND_PPM = (0.7, 1.8)
METABOLITE_BAND_PPM = (2.9, 4.0)
NOISE_BANDS_PPM = ((-2.0, -0.5), (6.0, 8.0))
NAA_BAND_PPM = (1.92, 2.10)
CR_CHO_BAND_PPM = (2.95, 3.30)
#: Synthetic templates of the "naa-tradeoff" criterion: singlets (ppm, protons),
#: a typical healthy-brain NAA : Cr : Cho ratio, 6 Hz lines, B0 offsets (Hz).
TEMPLATE_NAA = ((2.008, 3.0),)
TEMPLATE_CR_CHO = ((3.027, 3.0), (3.185, 9.0 * 0.25))
TEMPLATE_LINEWIDTH_HZ = 6.0
TEMPLATE_SHIFTS_HZ = (-8.0, -4.0, 0.0, 4.0, 8.0)

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 4


# ---------------------------------------------------------------- inputs


def _check_inputs(data, lipid_mask, brain_mask):
    xp = common_module(data=data)
    if not hasattr(data, "ndim") or data.ndim < 2:
        raise ShapeMismatchError("data must be an array of FIDs (x, y, z, t), time last")
    if not xp.iscomplexobj(data):
        raise InvalidParameterError(
            f"data must be complex FIDs (real and imaginary parts), got real dtype {data.dtype}"
        )
    spatial = data.shape[:-1]
    lipid_mask = on_module(xp, lipid_mask, "lipid_mask")
    if lipid_mask is None or tuple(lipid_mask.shape) != tuple(spatial):
        got = None if lipid_mask is None else tuple(lipid_mask.shape)
        raise ShapeMismatchError(f"lipid_mask must have the data's spatial shape {spatial}, got {got}")
    lipid_mask = lipid_mask.astype(bool)
    if not bool(lipid_mask.any()):
        raise InvalidParameterError("lipid_mask is empty: the lipid basis needs at least one voxel")
    if brain_mask is None:
        brain_mask = ~lipid_mask
    else:
        brain_mask = on_module(xp, brain_mask, "brain_mask")
        if tuple(brain_mask.shape) != tuple(spatial):
            raise ShapeMismatchError(
                f"brain_mask must have the data's spatial shape {spatial}, got {tuple(brain_mask.shape)}"
            )
        brain_mask = brain_mask.astype(bool)
    if not bool(brain_mask.any()):
        raise InvalidParameterError("brain_mask is empty: there is no voxel to suppress lipids in")
    return xp, lipid_mask, brain_mask


def _as_complex(xp, a):
    return a.astype(xp.complex128 if a.dtype == xp.complex128 else xp.complex64, copy=False)


def lipid_matrix(data, lipid_mask):
    """The lipid-mask voxels' FIDs as rows, ``(N_lip, T)``: ``L = lipid_matrix(...).T``."""
    xp, lipid_mask, _ = _check_inputs(data, lipid_mask, None)
    rows = _as_complex(xp, data[lipid_mask])
    if not bool(xp.isfinite(rows).all()):
        raise InvalidParameterError("the lipid-mask voxels hold NaN or Inf")
    return rows


# ---------------------------------------------------------------- basis


@dataclass(frozen=True, eq=False)
class LipidBasis:
    """The thin SVD ``L = U Σ Vᴴ`` of a lipid matrix (FID domain).

    Attributes
    ----------
    u : ndarray, (T, r)
        Left singular vectors (orthonormal columns), on the data's device, data dtype.
    sigma : numpy.ndarray, (r,)
        Singular values, descending (float64, host).
    n_lipid_voxels : int
    build_s : float
        Seconds it took to build.
    """

    u: object
    sigma: np.ndarray
    n_lipid_voxels: int
    build_s: float

    @property
    def rank(self) -> int:
        return int(self.sigma.size)

    def weights(self, beta: float) -> np.ndarray:
        """``w_k = βσ_k² / (1 + βσ_k²)``: the fraction of each component the L2 solution removes."""
        s2 = self.sigma**2 * float(beta)
        return s2 / (1.0 + s2)


def _fingerprint(xp, rows) -> bytes:
    if xp is np:
        return hashlib.blake2b(np.ascontiguousarray(rows).view(np.uint8), digest_size=16).digest()
    probe = xp.asarray(np.random.default_rng(0).standard_normal(rows.shape[1]) + 0j, dtype=rows.dtype)
    return hashlib.blake2b(xp.asnumpy(rows @ probe).tobytes(), digest_size=16).digest()


def lipid_basis(data, lipid_mask, *, cache: bool = True) -> LipidBasis:
    """Build (or fetch from the cache) the SVD of the lipid matrix of ``data`` in ``lipid_mask``.

    The SVD comes from the eigendecomposition of the smaller Gram matrix
    (``LᴴL``, N_lip², or ``LLᴴ``, T²) in double precision; singular values
    below ``SIGMA_RTOL`` × the largest are dropped (numerical rank).

    Parameters
    ----------
    data : ndarray, complex, (..., T)
        FIDs, time last (NumPy or CuPy).
    lipid_mask : ndarray of bool, data.shape[:-1]
    cache : bool
        Keep the result for the same lipid matrix (the last few are kept).

    Returns
    -------
    LipidBasis
    """
    rows = lipid_matrix(data, lipid_mask)
    xp = common_module(data=rows)
    key = (xp.__name__, rows.shape, str(rows.dtype), _fingerprint(xp, rows))
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    t0 = time.perf_counter()
    r64 = rows.astype(xp.complex128)
    n_lip, n_t = rows.shape
    if n_lip <= n_t:
        gram = xp.conj(r64) @ r64.T  # LᴴL
        lam, vec = xp.linalg.eigh(gram)
        lam, vec = lam[::-1], vec[:, ::-1]
    else:
        gram = r64.T @ xp.conj(r64)  # LLᴴ
        lam, vec = xp.linalg.eigh(gram)
        lam, vec = lam[::-1], vec[:, ::-1]
    lam_h = np.asarray(lam.get() if xp is not np else lam, dtype=np.float64)
    lam_h = np.clip(lam_h, 0.0, None)
    keep = int(np.count_nonzero(lam_h > lam_h[0] * SIGMA_RTOL**2)) if lam_h[0] > 0 else 0
    if keep == 0:
        raise InvalidParameterError("the lipid-mask voxels hold only zeros: there is no lipid basis")
    sigma = np.sqrt(lam_h[:keep])
    if n_lip <= n_t:
        u = (r64.T @ vec[:, :keep]) / xp.asarray(sigma)[None, :]  # U = L V Σ⁻¹
    else:
        u = vec[:, :keep]
    basis = LipidBasis(
        u=xp.ascontiguousarray(u.astype(rows.dtype)),
        sigma=sigma,
        n_lipid_voxels=int(n_lip),
        build_s=time.perf_counter() - t0,
    )
    if cache:
        _CACHE[key] = basis
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return basis


# ---------------------------------------------------------------- L2


def l2_closed_form(x0, basis: LipidBasis, beta: float, *, rank=None, coefficients=None):
    """``(I + βLLᴴ)⁻¹ x0`` for every row of ``x0`` (N, T), through the SVD ``basis``.

    ``rank=None`` keeps the components whose weight is at least ``W_TOL``
    (the result then differs from the full solve by at most ``W_TOL·‖x0‖``);
    an integer keeps the leading ``rank`` (``L`` replaced by its best rank-r
    approximation). ``coefficients`` (``x0 @ conj(U)``) may be passed if known.
    """
    xp = common_module(x0=x0)
    w = basis.weights(beta)
    if rank is None:
        r = int(np.count_nonzero(w >= W_TOL))
    else:
        r = min(int(rank), basis.rank)
    if r == 0:
        return x0.copy()
    u = basis.u[:, :r]
    c = coefficients[:, :r] if coefficients is not None else x0 @ xp.conj(u)
    c = c * xp.asarray(w[:r].astype(np.float32 if x0.dtype == xp.complex64 else np.float64))[None, :]
    return x0 - c @ u.T


# ---------------------------------------------------------------- L1


@dataclass
class L1Result:
    """FISTA's answer and its history (relative duality gap per check, seconds, iterations)."""

    x: object
    iterations: int
    converged: bool
    gaps: list = field(default_factory=list)
    gap_iterations: list = field(default_factory=list)
    times: list = field(default_factory=list)
    objectives: list = field(default_factory=list)


def l1_fista(x0, rows, beta: float, *, max_iter=2000, tol=1e-4, check_every=10, callback=None, show=True):
    """``argmin ‖x − x0‖² + β‖Lᴴx‖₁`` for every row of ``x0`` (N, T), by FISTA on the dual.

    With ``L = rows.T`` and ``G = LᴴL``, the dual is
    ``min_{|u_i| ≤ β} ¼ uᴴGu − Re uᴴLᴴx0`` (a smooth quadratic over a box of
    complex discs: its proximal step is a projection), and ``x = x0 − Lu/2``.
    The primal is 2-strongly convex, so ``‖x − x*‖² ≤ gap``: FISTA stops when
    the duality gap summed over voxels is below ``tol`` × the primal objective.
    Step ``2/λ_max(G)``. ``callback(it, x)`` is called at every check.
    """
    xp = common_module(x0=x0, rows=rows)
    t_start = time.perf_counter()
    real = np.float32 if x0.dtype == xp.complex64 else np.float64
    gram = (xp.conj(rows) @ rows.T).astype(rows.dtype)  # G = LᴴL, N_lip²
    gram_t = xp.ascontiguousarray(gram.T)  # row-wise (G u)ᵀ = uᵀ Gᵀ
    b = x0 @ xp.conj(rows.T)  # (Lᴴx0)ᵀ per row: (N, N_lip)
    lmax = float(_power_lmax(xp, gram))
    step = real(2.0 / lmax)
    beta_r = real(beta)
    u = xp.zeros_like(b)
    y = u.copy()
    t_k = 1.0
    res = L1Result(x=None, iterations=0, converged=False)
    x0_energy = float(xp.sum(xp.abs(x0) ** 2))
    bar = progress(total=max_iter, desc="L1 FISTA", unit="it", disable=not show)
    try:
        for it in range(1, int(max_iter) + 1):
            grad = 0.5 * (y @ gram_t) - b  # ½Gu − Lᴴx0 = −Lᴴx, per row
            u_new = y - step * grad
            mag = xp.abs(u_new)
            u_new *= xp.minimum(real(1.0), beta_r / xp.maximum(mag, real(1e-30)))
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t_k * t_k))
            y = u_new + ((t_k - 1.0) / t_next) * (u_new - u)
            u, t_k = u_new, t_next
            bar.update(1)
            if it % int(check_every) == 0 or it == max_iter:
                gu = u @ gram_t
                quad = float(xp.sum((xp.conj(u) * gu).real))  # Σ uᴴGu
                lin = float(xp.sum((xp.conj(u) * b).real))  # Σ Re uᴴb
                l1 = float(xp.sum(xp.abs(b - 0.5 * gu)))  # Σ ‖Lᴴx‖₁
                primal = 0.25 * quad + float(beta) * l1
                gap = max(0.5 * quad - lin + float(beta) * l1, 0.0)
                rel = gap / max(primal, 1e-30 * max(x0_energy, 1e-30))
                res.gaps.append(rel)
                res.gap_iterations.append(it)
                res.times.append(time.perf_counter() - t_start)
                res.objectives.append(primal)
                bar.set_postfix(gap=f"{rel:.1e}")
                if callback is not None:
                    callback(it, x0 - 0.5 * (u @ rows))
                if rel <= tol:
                    res.converged = True
                    res.iterations = it
                    break
        else:
            res.iterations = int(max_iter)
    finally:
        bar.close()
    res.iterations = res.iterations or it
    res.x = x0 - 0.5 * (u @ rows)  # x = x0 − Lu/2, row-wise: (Lu)ᵀ = uᵀ Lᵀ = u rows
    return res


def _power_lmax(xp, gram, n_iter=50):
    """Largest eigenvalue of the Hermitian PSD ``gram`` (power iteration, 1 % safety margin)."""
    v = xp.asarray(np.random.default_rng(0).standard_normal(gram.shape[0]) + 0j, dtype=gram.dtype)
    lam = 0.0
    for _ in range(n_iter):
        w = gram @ v
        lam = float(xp.linalg.norm(w))
        v = w / lam
    return 1.01 * lam


# ---------------------------------------------------------------- β curve


@dataclass
class BetaCurve:
    """Closed-form L2 quantities over a grid of β, summed over the brain voxels.

    Attributes
    ----------
    betas : ndarray
    residual : ndarray
        ``Σ‖x − x0‖²`` (what the suppression removed).
    penalty : ndarray
        ``Σ‖Lᴴx‖²`` (lipid-basis energy left).
    gcv : ndarray
        ``Σ‖x − x0‖² / (Σ_voxels tr(I − A))²`` with ``A = (I + βLLᴴ)⁻¹``.
    naa_error : ndarray or None
        The "naa-tradeoff" criterion: predicted NAA-band error energy.
    lipid_band, metabolite_loss, noise_level : ndarray or None
        With a ppm axis: energy left in ``LIPID_BAND_PPM``, energy removed in
        ``METABOLITE_BAND_PPM``, and the noise energy expected in the lipid band
        (from the signal-free bands).
    selected : dict
        β chosen by each criterion of ``BETA_CRITERIA`` that could be evaluated.
    sigma_max : float
        Largest singular value of ``L`` (``β·σ_max²`` is a dimensionless β).
    """

    betas: np.ndarray
    residual: np.ndarray
    penalty: np.ndarray
    gcv: np.ndarray
    naa_error: np.ndarray | None
    lipid_band: np.ndarray | None
    metabolite_loss: np.ndarray | None
    noise_level: float | None
    selected: dict
    sigma_max: float


def default_betas(basis: LipidBasis, n: int = 49) -> np.ndarray:
    """β grid: ``β·σ_max²`` from 10⁻² to 10⁶ (log-spaced, ``n`` points)."""
    return np.logspace(-2, 6, int(n)) / basis.sigma[0] ** 2


def _corner(x, y):
    """Index of maximum curvature of the curve (log x, log y), over interior points."""
    lx, ly = np.log(np.maximum(x, 1e-300)), np.log(np.maximum(y, 1e-300))
    dx, dy = np.gradient(lx), np.gradient(ly)
    ddx, ddy = np.gradient(dx), np.gradient(dy)
    kappa = (dx * ddy - ddx * dy) / np.maximum((dx**2 + dy**2) ** 1.5, 1e-300)
    kappa[[0, -1]] = -np.inf
    return int(np.argmax(kappa))


def beta_curve(
    data,
    lipid_mask,
    *,
    brain_mask=None,
    betas=None,
    dwell_time_s=None,
    spectrometer_frequency_mhz=None,
    reference_ppm: float = _ppm.WATER_PPM,
    basis: LipidBasis | None = None,
    coefficients=None,
) -> BetaCurve:
    """Every data-driven β criterion of the closed-form L2 at once, over a β grid.

    One product ``C = X0 conj(U)`` (the one the suppression needs anyway) and,
    for the band criteria, one FFT of the brain FIDs and two r × r Gram
    matrices; after that each β costs O(r²). The criteria:

    - ``"naa-tradeoff"`` (the default of ``beta="auto"``): minimise the predicted
      NAA-band error, lipid left there (κ × lipid-band energy left, κ from the
      shape of the leading lipid component) plus NAA removed (a synthetic NAA
      singlet through the same filter, scaled by the data's Cr + Cho band);
    - ``"balance"``: minimise (lipid-band energy left) + (metabolite-band
      energy removed): the lipid still leaking in against the metabolite
      signal taken with it;
    - ``"discrepancy"``: the smallest β whose lipid-band energy is within 2× the
      noise energy expected in that band;
    - ``"lcurve"``: maximum curvature of (log Σ‖x − x0‖², log Σ‖Lᴴx‖²);
    - ``"gcv"``: minimum of the generalised cross-validation function.

    The band criteria need ``dwell_time_s`` and ``spectrometer_frequency_mhz``.
    """
    xp, lipid_mask, brain_mask = _check_inputs(data, lipid_mask, brain_mask)
    basis = basis or lipid_basis(data, lipid_mask)
    x0 = _as_complex(xp, data[brain_mask])
    betas = np.asarray(default_betas(basis) if betas is None else betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size < 3 or np.any(~np.isfinite(betas)) or np.any(betas <= 0):
        raise InvalidParameterError("betas must be at least 3 positive numbers")
    c = coefficients if coefficients is not None else x0 @ xp.conj(basis.u)
    s_k = _host(xp, xp.sum(xp.abs(c) ** 2, axis=0)).astype(np.float64)  # Σ_v |c_vk|²
    s2 = basis.sigma**2
    w = betas[:, None] * s2[None, :] / (1.0 + betas[:, None] * s2[None, :])  # (nβ, r)
    residual = (w**2) @ s_k
    penalty = ((1.0 - w) ** 2 * s2[None, :]) @ s_k
    n_vox = x0.shape[0]
    gcv = residual / np.maximum((n_vox * w.sum(axis=1)) ** 2, 1e-300)
    selected = {"lcurve": float(betas[_corner(residual, penalty)]), "gcv": float(betas[int(np.argmin(gcv))])}
    lipid_band = metabolite_loss = noise_level = naa_error = None
    if dwell_time_s is not None and spectrometer_frequency_mhz is not None:
        n_t = x0.shape[-1]
        ppm = _ppm.ppm_axis(
            n_t,
            dwell_time_s=dwell_time_s,
            spectrometer_frequency_mhz=spectrometer_frequency_mhz,
            reference_ppm=reference_ppm,
        )
        spec = _ppm.spectrum(x0)
        u_spec = _ppm.spectrum(basis.u, axis=0)
        cc = xp.conj(c).T @ c  # (r, r): Σ_v conj(c_vj) c_vk

        def band_terms(lo, hi):
            sel = xp.asarray(_ppm.band_mask(ppm, lo, hi))
            pu = u_spec[sel]  # (nb, r)
            gram = xp.conj(pu).T @ pu
            h = _host(xp, (gram * cc.T).real).astype(np.float64)  # Σ_jk w_j w_k G_jk CᴴC_jk
            d = spec[:, sel] @ xp.conj(pu)  # (N, r): (PU)ᴴ P x0 per voxel
            m = _host(xp, xp.sum(xp.conj(c) * d, axis=0).real).astype(np.float64)
            e0 = float(xp.sum(xp.abs(spec[:, sel]) ** 2))
            quad = np.einsum("bj,jk,bk->b", w, h, w)
            return e0, m, quad, int(_host(xp, sel).sum())

        e0, m, quad, nb = band_terms(*LIPID_BAND_PPM)
        lipid_band = np.maximum(e0 - 2.0 * (w @ m) + quad, 0.0)
        _, _, quad_met, _ = band_terms(*METABOLITE_BAND_PPM)
        metabolite_loss = quad_met
        noise_e, noise_n = 0.0, 0
        for lo, hi in NOISE_BANDS_PPM:
            sel = _ppm.band_mask(ppm, lo, hi)
            if sel.any():
                noise_e += float(xp.sum(xp.abs(spec[:, xp.asarray(sel)]) ** 2))
                noise_n += int(sel.sum())
        if noise_n:
            noise_level = noise_e / noise_n * nb
        selected["balance"] = float(betas[int(np.argmin(lipid_band + metabolite_loss))])
        naa_error = _naa_tradeoff(
            xp, basis, spec, ppm, w, lipid_band, n_t, dwell_time_s, spectrometer_frequency_mhz, reference_ppm
        )
        selected["naa-tradeoff"] = float(betas[int(np.argmin(naa_error))])
        if noise_level is not None:
            ok = np.nonzero(lipid_band <= 2.0 * noise_level)[0]
            selected["discrepancy"] = float(betas[ok[0]] if ok.size else betas[-1])
    return BetaCurve(
        betas=betas,
        residual=residual,
        penalty=penalty,
        gcv=gcv,
        naa_error=naa_error,
        lipid_band=lipid_band,
        metabolite_loss=metabolite_loss,
        noise_level=noise_level,
        selected=selected,
        sigma_max=float(basis.sigma[0]),
    )


def _templates(peaks, n_t, dwell_time_s, sf, ref):
    t = np.arange(n_t) * float(dwell_time_s)
    out = []
    for df in TEMPLATE_SHIFTS_HZ:
        fid = np.zeros(n_t, np.complex128)
        for p, protons in peaks:
            f = (p - ref) * sf + df
            fid += protons * np.exp(2j * np.pi * f * t - np.pi * TEMPLATE_LINEWIDTH_HZ * t)
        out.append(fid)
    return np.asarray(out)


def _naa_tradeoff(xp, basis, spec, ppm, w, lipid_band, n_t, dwell_time_s, sf, ref):
    """Predicted Σ_brain energy of the NAA-band error for every β of ``w`` (nβ, r).

    lipid left in the NAA band ≈ κ × (lipid-band energy left), κ the NAA-band to
    lipid-band energy ratio of the leading lipid component (the lipid spectrum's
    shape); NAA removed = the energy a synthetic NAA singlet (at a few B0
    offsets) loses through the same filter, scaled to the data by the ratio of
    the Cr + Cho band energy of the data to that of a Cr + Cho template.
    """
    u1 = _host(xp, _ppm.spectrum(basis.u[:, :1], axis=0))[:, 0]
    naa_sel = _ppm.band_mask(ppm, *NAA_BAND_PPM)
    lip_sel = _ppm.band_mask(ppm, *LIPID_BAND_PPM)
    kappa = float(np.sum(np.abs(u1[naa_sel]) ** 2) / max(np.sum(np.abs(u1[lip_sel]) ** 2), 1e-300))
    naa_t = _templates(TEMPLATE_NAA, n_t, dwell_time_s, sf, ref)
    crcho_t = _templates(TEMPLATE_CR_CHO, n_t, dwell_time_s, sf, ref)
    u_h = _host(xp, basis.u).astype(np.complex128)
    coef = np.abs(naa_t @ np.conj(u_h)) ** 2  # (n_templates, r)
    loss = (w**2) @ coef.mean(axis=0)  # energy one template loses, per β
    cb = _ppm.band_mask(ppm, *CR_CHO_BAND_PPM)
    e_data = float(xp.sum(xp.abs(spec[:, xp.asarray(cb)]) ** 2))
    e_tmpl = float(np.mean(np.sum(np.abs(_ppm.spectrum(crcho_t)[:, cb]) ** 2, axis=1)))
    return kappa * lipid_band + loss * (e_data / max(e_tmpl, 1e-300))


def _host(xp, a):
    return a.get() if xp is not np else np.asarray(a)


# ---------------------------------------------------------------- the function


@dataclass
class SuppressionInfo:
    """What :func:`lipid_suppress` did: β, how it was chosen, the basis and timings."""

    method: str
    beta: float
    beta_source: str
    beta_normalised: float
    rank_used: int
    n_lipid_voxels: int
    n_brain_voxels: int
    curve: BetaCurve | None = None
    l1: L1Result | None = None
    seconds: dict = field(default_factory=dict)


def lipid_suppress(
    data,
    lipid_mask,
    *,
    method: str = "l2",
    beta="auto",
    brain_mask=None,
    rank=None,
    dwell_time_s=None,
    spectrometer_frequency_mhz=None,
    reference_ppm: float = _ppm.WATER_PPM,
    criterion: str = "naa-tradeoff",
    max_iter: int = 2000,
    tol: float = 1e-4,
    return_info: bool = False,
    show_progress: bool = True,
):
    """Remove scalp lipids from the brain voxels of an MRSI FID array by a lipid-basis penalty.

    Parameters
    ----------
    data : ndarray, complex, (x, y, z, t) (any spatial shape, time last)
        FIDs as NIfTI-MRS stores them (NumPy or CuPy; the result stays there).
    lipid_mask : ndarray of bool, data.shape[:-1]
        Voxels whose spectra span the lipid subspace (the scalp ring).
    method : {"l2", "l1"}
        Closed-form L2 (the fast method) or the iterative L1 baseline.
    beta : float or "auto"
        Penalty weight (units: 1 / data²  for L2, 1 / data for L1; no
        normalisation). ``"auto"`` picks it from the data with ``criterion``
        (see :func:`beta_curve`; needs ``dwell_time_s`` and
        ``spectrometer_frequency_mhz`` for the band criteria).
    brain_mask : ndarray of bool, optional
        Voxels to suppress in (default: every voxel outside ``lipid_mask``).
        The other voxels are returned unchanged.
    rank : int, optional
        Keep only the leading ``rank`` singular vectors of L (L replaced by
        its best rank-r approximation). Default: every numerically non-zero
        component, with those whose weight ``w_k < 1e-4`` left out of the L2
        product (a change below 1e-4 ‖x0‖).
    dwell_time_s, spectrometer_frequency_mhz, reference_ppm : float
        The spectral axis (NIfTI-MRS ``pixdim[4]`` and header), for ``beta="auto"``.
    criterion : str
        One of ``BETA_CRITERIA``.
    max_iter, tol : int, float
        L1 only: FISTA's limit and relative duality-gap tolerance.
    return_info : bool
        Also return a :class:`SuppressionInfo`.
    show_progress : bool
        L1 only: a progress bar over iterations.

    Returns
    -------
    ndarray, same shape and dtype (complex64 or complex128) as ``data``
        (and a :class:`SuppressionInfo` with ``return_info``).

    Notes
    -----
    With ``L`` (T × N_lip) the lipid-mask FIDs as columns and ``x0`` one brain
    voxel's FID, L2 solves ``min ‖x − x0‖² + β‖Lᴴx‖²``: ``x = (I + βLLᴴ)⁻¹x0
    = x0 − U diag(βσ²/(1 + βσ²)) Uᴴ x0`` with ``L = UΣVᴴ``. L1 solves
    ``min ‖x − x0‖² + β‖Lᴴx‖₁`` by FISTA on the dual (see :func:`l1_fista`).
    Both are the same in the FID and the spectral domain (the FFT is unitary).
    Scaling the data by ``c`` scales the answer by ``c`` when β is scaled by
    ``1/c²`` (L2) or ``1/c`` (L1); ``β·σ_max²`` is the dimensionless L2 weight
    (``SuppressionInfo.beta_normalised``). The best β moves with the lipid
    strength (about 5× for 3× stronger lipids on the phantom), so no fixed
    value carries over between data sets: use ``"auto"`` or a sweep.

    References
    ----------
    Bilgic B, et al. Fast image reconstruction with L2-regularization. J Magn
    Reson Imaging 2014;40:181-191. Bilgic B, et al. Lipid suppression in CSI
    with spatial priors and highly undersampled peripheral k-space. Magn Reson
    Med 2013;69:1501-1511.
    """
    if method not in ("l2", "l1"):
        raise InvalidParameterError(f"method must be 'l2' or 'l1', got {method!r}")
    if criterion not in BETA_CRITERIA:
        raise InvalidParameterError(f"criterion must be one of {BETA_CRITERIA}, got {criterion!r}")
    if rank is not None and (int(rank) != rank or rank < 1):
        raise InvalidParameterError(f"rank must be a positive integer or None, got {rank!r}")
    xp, lipid_mask, brain_mask = _check_inputs(data, lipid_mask, brain_mask)
    seconds = {}
    t0 = time.perf_counter()
    x0 = _as_complex(xp, data[brain_mask])
    if not bool(xp.isfinite(x0).all()):
        raise InvalidParameterError("data hold NaN or Inf in the brain voxels")
    basis = lipid_basis(data, lipid_mask)
    seconds["basis"] = time.perf_counter() - t0
    curve = None
    coefficients = None
    if isinstance(beta, str):
        if beta != "auto":
            raise InvalidParameterError(f"beta must be a positive number or 'auto', got {beta!r}")
        needs_axis = criterion in ("naa-tradeoff", "balance", "discrepancy")
        if needs_axis and (dwell_time_s is None or spectrometer_frequency_mhz is None):
            raise InvalidParameterError(
                f"beta='auto' with criterion {criterion!r} needs dwell_time_s and spectrometer_frequency_mhz"
            )
        t1 = time.perf_counter()
        coefficients = x0 @ xp.conj(basis.u)
        curve = beta_curve(
            data,
            lipid_mask,
            brain_mask=brain_mask,
            dwell_time_s=dwell_time_s,
            spectrometer_frequency_mhz=spectrometer_frequency_mhz,
            reference_ppm=reference_ppm,
            basis=basis,
            coefficients=coefficients,
        )
        beta_l2 = curve.selected[criterion]
        seconds["beta"] = time.perf_counter() - t1
        source = f"auto ({criterion})"
    else:
        beta_l2 = float(beta)
        if not (math.isfinite(beta_l2) and beta_l2 > 0):
            raise InvalidParameterError(f"beta must be a positive number or 'auto', got {beta!r}")
        source = "given"
    t2 = time.perf_counter()
    l1 = None
    if method == "l2":
        x = l2_closed_form(x0, basis, beta_l2, rank=rank, coefficients=coefficients)
        w = basis.weights(beta_l2)
        used = int(np.count_nonzero(w >= W_TOL)) if rank is None else min(int(rank), basis.rank)
        beta_used = beta_l2
    else:
        if isinstance(beta, str):
            raise InvalidParameterError(
                "beta='auto' is for the closed-form L2 (its criteria are closed-form sums); "
                "give the L1 a number (its scale is 1/data, not L2's 1/data²)"
            )
        rows = lipid_matrix(data, lipid_mask)
        if rank is not None:
            r = min(int(rank), basis.rank)
            rows = (basis.u[:, :r] * xp.asarray(basis.sigma[:r].astype(np.float32))[None, :]).T.astype(
                rows.dtype
            )
        l1 = l1_fista(x0, rows, beta_l2, max_iter=max_iter, tol=tol, show=show_progress)
        x = l1.x
        used = int(rows.shape[0])
        beta_used = beta_l2
    out = data.copy()
    out[brain_mask] = x.astype(data.dtype, copy=False)
    seconds["solve"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    if not return_info:
        return out
    info = SuppressionInfo(
        method=method,
        beta=float(beta_used),
        beta_source=source,
        beta_normalised=float(beta_used * basis.sigma[0] ** (2 if method == "l2" else 1)),
        rank_used=used,
        n_lipid_voxels=basis.n_lipid_voxels,
        n_brain_voxels=int(x0.shape[0]),
        curve=curve,
        l1=l1,
        seconds=seconds,
    )
    return out, info
