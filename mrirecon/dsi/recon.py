"""Completing undersampled q-space: closed-form PCA–Tikhonov, zero filling, and the L1 (FISTA) baseline.

Every method returns the signal on the full lattice, so the PDF, ODF and GFA
of all of them come from the same :mod:`mrirecon.dsi.pdf` functions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import fft
from ..device import get_array_module, to_numpy
from ..errors import InvalidParameterError, ShapeMismatchError
from .basis import Basis, basis_from_data, default_basis
from .lattice import Lattice, identify

__all__ = [
    "METHODS",
    "Completion",
    "DSIReconstruction",
    "completion_operator",
    "cube_to_signal",
    "gcv",
    "l1_wavelet",
    "reconstruct",
]

METHODS = ("pca-l2", "l1", "zero-filled")
#: Default relative L1 weight for ``method="l1", lam="auto"`` (times the median b = 0 signal).
L1_DEFAULT_LAM = 0.003


@dataclass
class DSIReconstruction:
    """What :func:`reconstruct` returns.

    Attributes
    ----------
    signal : (..., m) ndarray
        The signal completed on every lattice point (``lattice.points`` order), data units.
    lattice : Lattice
    bvals, bvecs : (m,), (m, 3) ndarrays
        The full lattice's b-values (s/mm²) and unit b-vectors, for writing ``.bval/.bvec``.
    lam : float or None
        The regularisation weight used (None for zero filling).
    lam_source : str
        ``"gcv"``, ``"given"``, ``"default"`` or ``"none"``.
    method : str
    info : dict
        Method details (components, GCV curve, iterations, times).
    """

    signal: object
    lattice: Lattice
    bvals: np.ndarray
    bvecs: np.ndarray
    lam: float | None
    lam_source: str
    method: str
    info: dict = field(default_factory=dict)


class Completion:
    """The closed form for one sampling Ω and basis: SVD of ``A = P[Ω]`` and the matrices per λ.

    ``P = Q diag(s)`` is the PCA basis Q with its columns weighted by their
    normalised singular values s (``s₁ = 1``); ``A = P[Ω] = U Σ Vᵀ``; the
    completion matrix for λ is ``R(λ) = P V diag(σ/(σ² + λ)) Uᵀ`` (m × n), so
    a volume is ``Y Rᵀ``, one product. Built by :func:`completion_operator`
    (cached per Ω and basis).
    """

    def __init__(self, basis: Basis, index: np.ndarray):
        p = basis.vectors * basis.singular_values
        a = p[index]  # (n, K): the sampled rows (repeated rows allowed)
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        self.basis, self.index = basis, index
        self.u, self.s, self.vt = u, s, vt
        self.pv = p @ vt.T  # (m, r)
        self._cache: dict = {}

    @property
    def n_samples(self) -> int:
        return int(self.index.size)

    def default_lams(self) -> np.ndarray:
        """λ grid for GCV: 10⁻⁹ … 1 (the largest column of P has unit norm, so σ₁ ≲ 1)."""
        return np.logspace(-9, 0, 73)

    def matrix(self, lam: float, dtype=np.float32) -> np.ndarray:
        """``R(λ)``, (m, n), cached per (λ, dtype)."""
        key = (float(lam), np.dtype(dtype).str)
        if key not in self._cache:
            if len(self._cache) > 16:
                self._cache.clear()
            filt = self.s / (self.s**2 + float(lam))
            self._cache[key] = np.ascontiguousarray(((self.pv * filt) @ self.u.T).astype(dtype))
        return self._cache[key]


_OPERATORS: dict = {}
_MAX_OPERATORS = 16


def completion_operator(basis: Basis, index) -> Completion:
    """The :class:`Completion` for ``basis`` and sampled lattice rows ``index`` (built once, cached)."""
    idx = np.ascontiguousarray(index, dtype=np.int64)
    key = (basis.key, idx.tobytes())
    op = _OPERATORS.get(key)
    if op is None:
        if len(_OPERATORS) >= _MAX_OPERATORS:
            _OPERATORS.pop(next(iter(_OPERATORS)))
        op = _OPERATORS[key] = Completion(basis, idx)
    return op


def gcv(op: Completion, y, lams=None):
    """Generalised cross-validation of λ for all voxels together.

    ``GCV(λ) = Σ_v ‖(I − H_λ) y_v‖² / (n − tr H_λ)²`` with the hat matrix
    ``H_λ = U diag(σ²/(σ² + λ)) Uᵀ``: from ``Uᵀ Y``, computed once, each λ
    costs O(rank · voxels).

    Returns
    -------
    lam : float
        The minimiser on the grid.
    lams, scores : ndarrays
    """
    y = np.asarray(y, dtype=np.float64)
    lams = op.default_lams() if lams is None else np.asarray(lams, dtype=np.float64)
    z2 = np.sum((y @ op.u) ** 2, axis=0)  # (r,)
    total = float(np.sum(y**2))
    s2 = op.s**2
    keep = s2[None, :] / (s2[None, :] + lams[:, None])  # (λ, r)
    rss = total - np.sum(z2) + np.sum(((1 - keep) ** 2) * z2, axis=1)
    scores = rss / (op.n_samples - np.sum(keep, axis=1)) ** 2
    return float(lams[int(np.argmin(scores))]), lams, scores


def _check_lam(lam):
    if isinstance(lam, str):
        if lam != "auto":
            raise InvalidParameterError(f"lam must be a positive number or 'auto', got {lam!r}")
        return None
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"lam must be a positive number or 'auto', got {lam!r}") from None
    if not np.isfinite(value) or value < 0:
        raise InvalidParameterError(f"lam must be a finite number >= 0 or 'auto', got {lam!r}")
    return value


def l1_wavelet(
    y,
    lattice: Lattice,
    index,
    *,
    lam: float,
    max_iter: int = 500,
    tol: float = 1e-4,
    grid_size: int | None = None,
    callback=None,
    progress: bool = False,
):
    """Compressed-sensing DSI: L1-wavelet sparsity of the PDF by FISTA, all voxels at once.

    Parameters
    ----------
    y : (V, n) array_like
        Measured signals of V voxels at the lattice rows ``index``.
    lattice : Lattice
    index : (n,) int array_like
    lam : float
        ``β`` in the objective below, in data units.
    max_iter, tol : int, float
        Stop when ``‖p_k − p_{k−1}‖ ≤ tol · ‖p_k‖`` (all voxels together), or after max_iter.
    grid_size : int, optional
        Even edge of the PDF cube (default ``2·r_max + 2``: 12 for the 515 lattice).
    callback : callable, optional
        ``callback(k, p, info)`` after every iteration with the current PDF
        cube p (V, M, M, M); :func:`cube_to_signal` gives its lattice signal.
        Returning True stops.

    Returns
    -------
    signal : (V, m) float ndarray
        The lattice signal of the solution: the spectrum of p at the lattice points.
    info : dict
        ``iterations``, ``converged``, ``objective``.

    Notes
    -----
    Per voxel, ``min_p ½‖S F p − y‖² + β‖Ψ p‖₁`` over real PDFs p on an
    M³ cube (M even), with F the centred orthonormal 3-D DFT
    (:func:`mrirecon.fft.fftc`, q = 0 at index M/2), S the selection of the
    acquired lattice points (a repeated point counts once per acquisition)
    and Ψ the orthonormal Daubechies-2 wavelet transform (periodic, as many
    levels as the cube allows: 2 on 12³; PyWavelets). The step is 1/L with L = ‖SF‖² = the largest
    repetition count of a point. β scales with the data (scaling y by c and β
    by c scales the solution by c). Spectrum values of p off the lattice are
    free (no data) and left to the prior; the returned signal keeps only the
    lattice points.
    """
    import pywt

    wname = "db2"
    y = np.asarray(y)
    real = np.float64 if y.dtype == np.float64 else np.float32
    y = y.astype(real, copy=False)
    idx = np.asarray(index, dtype=np.int64)
    r = int(np.floor(np.sqrt(lattice.radius_sq)))
    m = grid_size or 2 * r + 2
    if m % 2 or m < 2 * r + 2:
        raise InvalidParameterError(f"grid_size must be even and >= {2 * r + 2}, got {m}")
    level = max(1, pywt.dwt_max_level(m, wname))
    c = m // 2
    flat_lat = np.ravel_multi_index(tuple((lattice.points + c).T), (m,) * 3)
    flat_s = flat_lat[idx]
    counts = np.bincount(idx, minlength=lattice.size)
    step = 1.0 / float(counts.max())
    v = y.shape[0]
    # Sᵀy on the cube (repeats add up)
    sty = np.zeros((v, m**3), dtype=np.complex128 if real == np.float64 else np.complex64)
    np.add.at(sty.T, flat_s, y.T.astype(sty.dtype))
    wcount = np.zeros(m**3, dtype=real)
    np.add.at(wcount, flat_s, 1.0)
    shape = (v, m, m, m)
    axes = (1, 2, 3)
    thresh = real(lam * step)

    def forward(p):
        return fft.fftc(p, axes=axes).reshape(v, -1)

    def adjoint_real(q):
        return fft.ifftc(q.reshape(shape), axes=axes).real.astype(real, copy=False)

    def prox(p):
        coeffs = pywt.wavedecn(p, wname, mode="periodization", level=level, axes=axes)
        arr, slices = pywt.coeffs_to_array(coeffs, axes=axes)
        mag = np.abs(arr)
        arr = arr * np.maximum(1 - thresh / np.maximum(mag, 1e-30), 0)
        back = pywt.array_to_coeffs(arr, slices, output_format="wavedecn")
        return pywt.waverecn(back, wname, mode="periodization", axes=axes).astype(real, copy=False)

    x = adjoint_real(sty)
    z, t = x.copy(), 1.0
    converged, k = False, 0
    bar = None
    if progress:
        from ..progress import progress as _progress

        bar = _progress(total=max_iter, desc="L1-wavelet FISTA", unit="it")
    for k in range(1, max_iter + 1):
        spec = forward(z)
        grad = adjoint_real(wcount * spec - sty)
        x_new = prox(z - step * grad)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        change = float(np.linalg.norm(x_new - x)) / max(float(np.linalg.norm(x_new)), 1e-30)
        x, t = x_new, t_new
        if bar is not None:
            bar.update(1)
            bar.set_postfix(change=f"{change:.2e}", refresh=False)
        stop = False
        if callback is not None:
            stop = bool(callback(k, x, {"change": change}))
        if change <= tol:
            converged = True
            break
        if stop:
            break
    if bar is not None:
        bar.close()
    signal = cube_to_signal(x, lattice)
    return signal, {"iterations": k, "converged": converged, "grid_size": m, "wavelet": wname, "level": level}


def cube_to_signal(p, lattice: Lattice):
    """Lattice signal (V, m) of PDF cubes p (V, M, M, M) of :func:`l1_wavelet`: ``(F p)`` at the lattice points."""
    m = p.shape[-1]
    flat = np.ravel_multi_index(tuple((lattice.points + m // 2).T), (m,) * 3)
    spec = fft.fftc(p, axes=(1, 2, 3)).reshape(p.shape[0], -1)
    return spec[:, flat].real.astype(p.dtype, copy=False)


def _zero_filled(y, lattice, index):
    counts = np.bincount(index, minlength=lattice.size)
    out = np.zeros((y.shape[0], lattice.size), dtype=y.dtype)
    np.add.at(out.T, index, y.T)
    return out / np.maximum(counts, 1).astype(y.dtype)


def _resolve_basis(train, lattice, n_components):
    if train is None:
        kw = {} if n_components is None else {"n_components": n_components}
        return default_basis(lattice, **kw)
    if isinstance(train, Basis):
        basis = train
    elif isinstance(train, (tuple, list)) and len(train) in (3, 4):
        kw = {} if n_components is None else {"n_components": n_components}
        mask = train[3] if len(train) == 4 else None
        basis = basis_from_data(train[0], train[1], train[2], mask=mask, **kw)
    else:
        raise InvalidParameterError(
            "train must be None, a dsi.Basis, or a tuple (dwi, bvals, bvecs[, mask]) of fully sampled data"
        )
    if basis.lattice.key[0] != lattice.radius_sq or not np.isclose(
        basis.lattice.b_max_s_mm2, lattice.b_max_s_mm2, rtol=0.02
    ):
        raise InvalidParameterError(
            f"the training data's lattice (r_max² {basis.lattice.radius_sq}, b_max "
            f"{basis.lattice.b_max_s_mm2:g}) differs from the data's (r_max² {lattice.radius_sq}, "
            f"b_max {lattice.b_max_s_mm2:g})"
        )
    return basis


def reconstruct(
    dwi,
    bvals,
    bvecs,
    *,
    method: str = "pca-l2",
    lam="auto",
    mask=None,
    train=None,
    n_components: int | None = None,
    radius_sq: int | None = None,
    max_iter: int = 500,
    tol: float = 1e-4,
    callback=None,
    progress: bool = False,
) -> DSIReconstruction:
    """Complete undersampled DSI q-space on the full lattice.

    Parameters
    ----------
    dwi : (..., n) array_like
        Diffusion-weighted volumes last, as nibabel and dipy hold them (e.g. (x, y, z, n)).
        NumPy, or CuPy for ``method="pca-l2"`` (the product runs on the device).
    bvals : (n,) array_like
        b-values, s/mm².
    bvecs : (n, 3) or FSL's (3, n) array_like
        The volumes must sit on a Cartesian q-lattice (see :func:`mrirecon.dsi.identify`).
    method : {"pca-l2", "l1", "zero-filled"}
    lam : float or "auto"
        Regularisation weight (see Notes). ``"auto"``: GCV for ``pca-l2``;
        :data:`L1_DEFAULT_LAM` for ``l1``.
    mask : (...) bool array_like, optional
        Voxels to reconstruct (others are 0); default all.
    train : None, Basis, or (dwi, bvals, bvecs[, mask])
        PCA basis: None for the simulation-trained default
        (:func:`mrirecon.dsi.default_basis`), a :class:`Basis`, or fully
        sampled training data of the same lattice and b_max.
    n_components : int, optional
        Basis size (default :data:`mrirecon.dsi.basis.DEFAULT_COMPONENTS`).
    radius_sq : int, optional
        ``r_max²`` of the lattice to complete onto (default: see :func:`mrirecon.dsi.identify`).
    max_iter, tol, callback, progress
        For ``method="l1"`` (see :func:`l1_wavelet`).

    Returns
    -------
    DSIReconstruction

    Raises
    ------
    ShapeMismatchError
        Volume count differs from the b-values, or the mask's shape from the volumes'.
    InvalidParameterError
        Not a q-lattice, no b = 0, NaN/Inf in the data inside the mask, a bad λ or method.

    Notes
    -----
    ``pca-l2``: per voxel ``c = argmin ‖F_Ω P c − y‖² + λ‖c‖²``, written on
    the PDF as in the paper; because the PDF is an isometric DFT of the
    zero-padded lattice signal, F_Ω P is the sampled rows ``P[Ω]`` of the
    signal basis, ``c = (P[Ω]ᵀP[Ω] + λI)⁻¹P[Ω]ᵀy`` and the completed signal
    is ``P c``. ``P = Q diag(s)``: the PCA vectors Q weighted by their
    singular values in the training matrix, normalised to ``s₁ = 1`` — so
    ``λ‖c‖²`` is the Gaussian prior of the training signals' second moments
    (the penalty is ``λ Σₖ (qₖᵀx / sₖ)²`` on the signal x), and the result
    hardly depends on the number of components kept. The matrix depends on
    Ω only, is built once (SVD, cached) and a whole volume is one matrix
    product. λ is dimensionless (scaling the data by a scales the result by
    a at the same λ; λ ≈ σ²/(S0² s-scale) in a Bayesian reading); GCV over all
    masked voxels picks it for ``"auto"`` at the cost of one (n × r) product.

    ``l1``: ``min_p ½‖S F p − y‖² + β‖Ψp‖₁`` per voxel (see
    :func:`l1_wavelet`), with ``β = lam · median(b = 0 signal in the mask)``,
    so ``lam`` is relative to the signal scale and scaling the data scales the result.

    ``zero-filled``: the acquired points (repeats averaged), zeros elsewhere.
    Magnitude data carry a Rician noise floor at high b; no method here removes it.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InvalidParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    lam_value = _check_lam(lam)
    lattice, index = identify(bvals, bvecs, radius_sq=radius_sq)
    xp = get_array_module(dwi)
    data = xp.asarray(dwi)
    if data.ndim < 1 or data.shape[-1] != index.size:
        raise ShapeMismatchError(
            f"dwi has {data.shape[-1] if data.ndim else 0} volumes (last axis) but there are "
            f"{index.size} b-values; expected dwi shaped (x, y, z, n)"
        )
    lead = data.shape[:-1]
    real = xp.float64 if data.dtype == np.float64 else xp.float32
    flat = data.reshape(-1, index.size)
    if mask is not None:
        m = np.asarray(to_numpy(mask)).astype(bool)
        if m.shape != lead:
            raise ShapeMismatchError(f"mask has shape {m.shape}, expected the volumes' {lead}")
        sel = np.flatnonzero(m.reshape(-1))
        if sel.size == 0:
            raise InvalidParameterError("mask is empty")
        y = flat[xp.asarray(sel)] if xp is not np else flat[sel]
    else:
        sel = None
        y = flat
    y = y.astype(real, copy=False)
    if not bool(xp.all(xp.isfinite(y))):
        raise InvalidParameterError("dwi contains NaN or Inf inside the mask")
    info: dict = {"n_samples": int(index.size), "lattice_points": lattice.size}
    lam_used, lam_source = None, "none"
    if method == "pca-l2":
        basis = _resolve_basis(train, lattice, n_components)
        op = completion_operator(basis, index)
        if lam_value is None:
            lam_used, lams, scores = gcv(op, to_numpy(y) if xp is not np else y)
            lam_source = "gcv"
            info["gcv"] = {"lams": lams.tolist(), "scores": scores.tolist()}
        else:
            lam_used, lam_source = lam_value, "given"
        r = xp.asarray(op.matrix(lam_used, dtype=np.dtype(real)))
        out = y @ r.T
        info.update(basis=basis.source, n_components=basis.n_components, basis_key=basis.key)
    elif method == "zero-filled":
        out = xp.asarray(_zero_filled(to_numpy(y), lattice, index))
    else:
        if xp is not np:
            raise InvalidParameterError("method='l1' runs on NumPy arrays; move the data with to_numpy")
        b0 = y[:, index == 0].mean(axis=1)
        scale = float(np.median(b0)) if b0.size else 1.0
        if scale <= 0:
            raise InvalidParameterError("the median b = 0 signal in the mask is <= 0")
        if lam_value is None:
            lam_used, lam_source = L1_DEFAULT_LAM, "default"
        else:
            lam_used, lam_source = lam_value, "given"
        out, extra = l1_wavelet(
            y,
            lattice,
            index,
            lam=lam_used * scale,
            max_iter=max_iter,
            tol=tol,
            callback=callback,
            progress=progress,
        )
        info.update(extra, beta=lam_used * scale)
    if sel is None:
        signal = out.reshape(lead + (lattice.size,))
    else:
        full = xp.zeros((flat.shape[0], lattice.size), dtype=real)
        full[xp.asarray(sel) if xp is not np else sel] = out
        signal = full.reshape(lead + (lattice.size,))
    info["time_s"] = time.perf_counter() - t0
    return DSIReconstruction(
        signal, lattice, lattice.bvals(), lattice.bvecs(), lam_used, lam_source, method, info
    )
