"""PCA bases for q-space signals: from multi-tensor simulations (the default) or from fully sampled data.

The basis is the leading left singular vectors of a training matrix of
q-space signals on the full lattice, each normalised to ``E(0) = 1``, without
centring: the span of an uncentred PCA contains ``S0·E`` for every ``S0``, so
data need not be normalised by their b = 0 signal before the fit. The PDF is
the 3-D DFT of the lattice signal zero-padded to a cube, an isometry, so the
same basis is the PCA basis of the (unfiltered) PDFs.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError, ShapeMismatchError
from .lattice import Lattice, identify

__all__ = [
    "Basis",
    "basis_from_data",
    "default_basis",
    "multi_tensor_signal",
    "pca_basis",
    "random_directions",
    "simulate_training_signals",
]

#: Components kept by default. With the singular-value weighting of the closed
#: form the error is flat from ~60 components on (measured on a phantom slice of
#: another seed than the benchmark's; docs/readme/dsi.md), so this is not a tuned value.
DEFAULT_COMPONENTS = 100


@dataclass(frozen=True, eq=False)
class Basis:
    """A PCA basis of lattice signals.

    Attributes
    ----------
    vectors : (m, K) float64 ndarray
        Orthonormal columns on the lattice points (``lattice.points`` order).
    singular_values : (K,) float64 ndarray
        Their singular values in the training matrix, largest first, divided by
        the largest (so the first is 1).
    lattice : Lattice
    source : str
        ``"simulation"`` or ``"data"``.
    key : str
        Identity for the caches (a digest of the vectors).
    """

    vectors: np.ndarray
    singular_values: np.ndarray
    lattice: Lattice
    source: str
    key: str

    @property
    def n_components(self) -> int:
        return int(self.vectors.shape[1])


def multi_tensor_signal(bvals, bvecs, *, d_par_mm2_s, d_perp_mm2_s, directions, fractions):
    """Signal of a sum of axially symmetric Gaussian compartments, for many voxels at once.

    ``E(b, ĝ) = Σⱼ fⱼ exp(−b (d⊥ⱼ + (d∥ⱼ − d⊥ⱼ)(ĝ·uⱼ)²))``, with ``E(0) = Σ fⱼ``.

    Parameters
    ----------
    bvals : (n,) array_like
        s/mm².
    bvecs : (n, 3) array_like
        Unit vectors (zeros allowed for b = 0).
    d_par_mm2_s, d_perp_mm2_s : (..., J) array_like
        Axial and radial diffusivities of each compartment, mm²/s
        (equal for an isotropic compartment).
    directions : (..., J, 3) array_like
        Unit axis of each compartment.
    fractions : (..., J) array_like
        Signal fractions (not renormalised).

    Returns
    -------
    (..., n) float64 ndarray
    """
    b = np.asarray(bvals, dtype=np.float64)
    g = np.asarray(bvecs, dtype=np.float64)
    dpar = np.asarray(d_par_mm2_s, dtype=np.float64)
    dperp = np.asarray(d_perp_mm2_s, dtype=np.float64)
    u = np.asarray(directions, dtype=np.float64)
    f = np.asarray(fractions, dtype=np.float64)
    cos2 = (u @ g.T) ** 2  # (..., J, n)
    adc = dperp[..., None] + (dpar - dperp)[..., None] * cos2
    return np.einsum("...j,...jn->...n", f, np.exp(-adc * b))


def random_directions(rng, shape) -> np.ndarray:
    """Unit vectors uniform on the sphere, ``shape + (3,)``."""
    v = rng.standard_normal(tuple(shape) + (3,))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def simulate_training_signals(lattice: Lattice, *, n_voxels: int = 10000, seed: int = 0) -> np.ndarray:
    """Multi-tensor training signals on the full lattice, ``E(0) = 1``, (n_voxels, m).

    The mixture spans white matter with 1, 2 or 3 fibre populations at any
    crossing angle (directions uniform on the sphere; d∥ 1.0–2.2, d⊥ 0.1–0.7
    ×10⁻³ mm²/s per fibre; Dirichlet fractions), partial volume with grey
    matter (isotropic, 0.6–1.2 ×10⁻³ mm²/s) and CSF (2.5–3.2 ×10⁻³ mm²/s), and
    pure grey matter/CSF voxels: 15 % no fibre, 35 % one, 35 % two, 15 % three.
    """
    rng = np.random.default_rng(seed)
    n = int(n_voxels)
    n_fib = rng.choice(4, size=n, p=(0.15, 0.35, 0.35, 0.15))
    slots = 3
    dpar = np.empty((n, slots + 2))
    dperp = np.empty((n, slots + 2))
    dirs = np.zeros((n, slots + 2, 3))
    frac = np.zeros((n, slots + 2))
    dpar[:, :slots] = rng.uniform(1.0e-3, 2.2e-3, (n, slots))
    dperp[:, :slots] = rng.uniform(0.1e-3, 0.7e-3, (n, slots))
    dirs[:, :slots] = random_directions(rng, (n, slots))
    w = rng.gamma(2.0, size=(n, slots)) * (np.arange(slots) < n_fib[:, None])
    w_sum = w.sum(axis=1, keepdims=True)
    w = np.divide(w, w_sum, out=np.zeros_like(w), where=w_sum > 0)
    dgm = rng.uniform(0.6e-3, 1.2e-3, n)
    dcsf = rng.uniform(2.5e-3, 3.2e-3, n)
    dpar[:, slots], dperp[:, slots] = dgm, dgm
    dpar[:, slots + 1], dperp[:, slots + 1] = dcsf, dcsf
    dirs[:, slots:, 2] = 1.0
    f_iso = np.where(n_fib > 0, rng.beta(1.0, 3.0, n), 1.0)
    share_csf = np.where(n_fib > 0, rng.beta(1.0, 2.0, n), rng.uniform(0, 1, n))
    frac[:, :slots] = w * (1.0 - f_iso)[:, None]
    frac[:, slots] = f_iso * (1.0 - share_csf)
    frac[:, slots + 1] = f_iso * share_csf
    return multi_tensor_signal(
        lattice.bvals(),
        lattice.bvecs(),
        d_par_mm2_s=dpar,
        d_perp_mm2_s=dperp,
        directions=dirs,
        fractions=frac,
    )


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def pca_basis(signals, lattice: Lattice, *, n_components: int = DEFAULT_COMPONENTS, source="data") -> Basis:
    """Uncentred PCA of training signals (V, m) on ``lattice``: the leading ``n_components`` directions.

    Raises
    ------
    InvalidParameterError
        ``n_components`` outside 1..min(V, m), or non-finite signals.
    """
    s = np.asarray(signals, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != lattice.size:
        raise ShapeMismatchError(f"training signals must be (voxels, {lattice.size}), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise InvalidParameterError("training signals contain NaN or Inf")
    k = int(n_components)
    if not 1 <= k <= min(s.shape):
        raise InvalidParameterError(
            f"n_components must be in 1..{min(s.shape)} (voxels and lattice points), got {n_components}"
        )
    gram = s.T @ s
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1][:k]
    sv = np.sqrt(np.clip(evals[order], 0, None))
    vec = evecs[:, order]
    vec *= np.where(vec[0] < 0, -1.0, 1.0)  # a fixed sign: positive at q = 0
    sv = sv / sv[0]
    vec.setflags(write=False)
    sv.setflags(write=False)
    return Basis(vec, sv, lattice, source, _digest(vec, np.array(lattice.key, dtype=np.float64)))


@functools.lru_cache(maxsize=4)
def _default_basis(key, n_components, n_voxels, seed) -> Basis:
    from .lattice import q_lattice

    lattice = q_lattice(key[0], b_max_s_mm2=key[1])
    sig = simulate_training_signals(lattice, n_voxels=n_voxels, seed=seed)
    return pca_basis(sig, lattice, n_components=n_components, source="simulation")


def default_basis(
    lattice: Lattice, *, n_components: int = DEFAULT_COMPONENTS, n_voxels: int = 10000, seed: int = 0
) -> Basis:
    """The simulation-trained basis for ``lattice`` (built once per lattice and b_max, then cached).

    See :func:`simulate_training_signals` for what the simulations span.
    Building it (10 000 simulated voxels, an eigendecomposition) takes a few seconds on 2 cores.
    """
    return _default_basis(lattice.key, int(n_components), int(n_voxels), int(seed))


def basis_from_data(
    dwi, bvals, bvecs, *, mask=None, n_components: int = DEFAULT_COMPONENTS, min_b0_fraction: float = 0.1
) -> Basis:
    """A PCA basis from a fully sampled DSI dataset (every lattice point acquired).

    Parameters
    ----------
    dwi : (..., n) array_like
        Volumes last. Repeated lattice points (several b = 0) are averaged.
    bvals, bvecs
        As for :func:`mrirecon.dsi.reconstruct`.
    mask : (...) bool array_like, optional
        Training voxels (default: all with a b = 0 signal above ``min_b0_fraction`` of the
        99th percentile).
    n_components : int

    Raises
    ------
    InvalidParameterError
        Some lattice point is not acquired, or there are too few training voxels.
    """
    lattice, index = identify(bvals, bvecs)
    data = np.asarray(dwi)
    if data.shape[-1] != index.size:
        raise ShapeMismatchError(f"{data.shape[-1]} volumes but {index.size} b-values")
    counts = np.bincount(index, minlength=lattice.size)
    if np.any(counts == 0):
        raise InvalidParameterError(
            f"training data must sample every lattice point: {int(np.sum(counts == 0))} of "
            f"{lattice.size} are missing"
        )
    y = data.reshape(-1, index.size).astype(np.float64)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != data.shape[:-1]:
            raise ShapeMismatchError(f"mask has shape {m.shape}, expected {data.shape[:-1]}")
        y = y[m.reshape(-1)]
    full = np.zeros((y.shape[0], lattice.size))
    np.add.at(full.T, index, y.T)
    full /= counts
    s0 = full[:, 0]
    if y.shape[0] and mask is None:
        keep = s0 > min_b0_fraction * np.percentile(s0, 99)
        full, s0 = full[keep], s0[keep]
    keep = s0 > 0
    full = full[keep] / s0[keep, None]
    if full.shape[0] < n_components:
        raise InvalidParameterError(
            f"{full.shape[0]} training voxels with signal; need at least n_components = {n_components}"
        )
    return pca_basis(full, lattice, n_components=n_components, source="data")
