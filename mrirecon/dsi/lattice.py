"""The Cartesian q-space lattice of DSI and its identification from b-values and b-vectors.

DSI samples q-space on the integer lattice points within a sphere: the
standard scheme keeps the points of an 11³ grid with ``|k| <= 5``, 515 of them
(Wedeen et al. 2005). A volume with b-value ``b`` and unit gradient ``ĝ`` sits
at ``q = sqrt(b / b_max) · r_max · ĝ`` in lattice units, where ``b_max`` is
the largest b-value and ``r_max`` the lattice radius; on a DSI scheme ``q`` is
an integer vector for every volume.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidParameterError, ShapeMismatchError

__all__ = ["Lattice", "as_bvecs", "identify", "q_lattice"]

#: b-values at or below this (s/mm²) count as b = 0 (dipy's ``b0_threshold``).
B0_THRESHOLD_S_MM2 = 50.0


@dataclass(frozen=True, eq=False)
class Lattice:
    """The q-space points of a DSI scheme.

    Attributes
    ----------
    points : (m, 3) int ndarray
        Integer lattice coordinates; row 0 is the origin, then by radius.
    radius_sq : int
        ``r_max²``: the points are all integer vectors with ``|k|² <= radius_sq``.
    b_max_s_mm2 : float
        b-value of the points at ``|k|² = radius_sq``.
    """

    points: np.ndarray
    radius_sq: int
    b_max_s_mm2: float

    @property
    def size(self) -> int:
        """Number of lattice points (515 for ``radius_sq = 25``)."""
        return int(self.points.shape[0])

    @property
    def key(self) -> tuple:
        """Hashable identity (radius² and b_max), used by the caches."""
        return (int(self.radius_sq), round(float(self.b_max_s_mm2), 6))

    def bvals(self) -> np.ndarray:
        """b-values (s/mm²) of the points: ``b_max · |k|² / r_max²``."""
        r2 = np.sum(self.points.astype(np.float64) ** 2, axis=1)
        return self.b_max_s_mm2 * r2 / self.radius_sq

    def bvecs(self) -> np.ndarray:
        """Unit b-vectors ``k / |k|`` of the points, (m, 3); zeros for the origin."""
        k = self.points.astype(np.float64)
        n = np.linalg.norm(k, axis=1, keepdims=True)
        return np.divide(k, n, out=np.zeros_like(k), where=n > 0)


@functools.lru_cache(maxsize=8)
def _points(radius_sq: int) -> np.ndarray:
    r = int(np.floor(np.sqrt(radius_sq)))
    g = np.arange(-r, r + 1)
    k = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    r2 = np.sum(k**2, axis=1)
    k, r2 = k[r2 <= radius_sq], r2[r2 <= radius_sq]
    order = np.lexsort((k[:, 2], k[:, 1], k[:, 0], r2))
    pts = np.ascontiguousarray(k[order].astype(np.int64))
    pts.setflags(write=False)
    return pts


def q_lattice(radius_sq: int = 25, *, b_max_s_mm2: float = 4000.0) -> Lattice:
    """The DSI lattice of integer points with ``|k|² <= radius_sq`` (515 points for 25).

    Parameters
    ----------
    radius_sq : int
        ``r_max²`` in lattice units (default 25: the standard 515-point scheme).
    b_max_s_mm2 : float
        b-value on the outer shell, s/mm².
    """
    if isinstance(radius_sq, bool) or int(radius_sq) != radius_sq or not 1 <= radius_sq <= 100:
        raise InvalidParameterError(f"radius_sq must be an integer in 1..100, got {radius_sq!r}")
    if not np.isfinite(b_max_s_mm2) or b_max_s_mm2 <= B0_THRESHOLD_S_MM2:
        raise InvalidParameterError(
            f"b_max_s_mm2 must be a b-value above {B0_THRESHOLD_S_MM2:g} s/mm², got {b_max_s_mm2!r}"
        )
    return Lattice(_points(int(radius_sq)), int(radius_sq), float(b_max_s_mm2))


def as_bvecs(bvecs, n: int | None = None) -> np.ndarray:
    """b-vectors as an (n, 3) float64 array; FSL's (3, n) layout is transposed.

    A (3, 3) array is read as (n, 3), dipy's layout.
    """
    b = np.asarray(bvecs, dtype=np.float64)
    if b.ndim != 2 or 3 not in b.shape:
        raise ShapeMismatchError(f"bvecs must be (n, 3) or FSL's (3, n), got shape {b.shape}")
    if b.shape[1] != 3 or (n is not None and b.shape[0] != n and b.shape[1] == n):
        b = b.T
    if n is not None and b.shape[0] != n:
        raise ShapeMismatchError(f"{b.shape[0]} b-vectors for {n} b-values; expected one per volume")
    return b


def identify(
    bvals,
    bvecs,
    *,
    radius_sq: int | None = None,
    b0_threshold_s_mm2: float = B0_THRESHOLD_S_MM2,
    tol: float = 0.1,
) -> tuple[Lattice, np.ndarray]:
    """Find the Cartesian q-space lattice that a set of acquisitions sits on.

    Parameters
    ----------
    bvals : (n,) array_like
        b-values, s/mm².
    bvecs : (n, 3) or (3, n) array_like
        Gradient directions. Unit vectors as usual; if the diffusion-weighted
        vectors are not unit length (a scheme that encodes the q magnitude in
        the vector, with one nominal b-value) the effective b-value
        ``b·|g|²`` and the direction ``g/|g|`` are used.
    radius_sq : int, optional
        ``r_max²`` of the full lattice to complete onto. Default: the
        smallest perfect square (9, 16, 25, ...) at or above the largest
        ``|k|²`` acquired, since undersampled data may miss the outer shell
        (R = 3 on the 515-point grid often acquires no ``|k|² = 25`` point).
    b0_threshold_s_mm2 : float
        b-values at or below this are q = 0.
    tol : float
        Largest distance, in lattice units, from ``q`` to its nearest integer point.

    Returns
    -------
    lattice : Lattice
        The full lattice (every integer point within ``radius_sq``), with
        ``b_max`` the b-value at ``|k|² = radius_sq``.
    index : (n,) int ndarray
        Row of ``lattice.points`` that each volume samples (repeats allowed, e.g. several b = 0).

    Raises
    ------
    InvalidParameterError
        No b = 0 volume, no diffusion weighting, non-finite or negative values,
        or points that are not on a Cartesian lattice for any ``r_max² <= 100``.

    Notes
    -----
    For each integer ``r_max²`` in 1..100 the points
    ``q = sqrt(b_eff / b_max) · r_max · ĝ`` are rounded to integers and the
    largest distance to them recorded; the smallest ``r_max²`` that fits
    (nearly) as well as the best one is taken, if that fit is within ``tol``.
    The b-value per unit ``|k|²`` follows from the fit; the lattice's b_max
    is that times ``radius_sq``.
    """
    b = np.asarray(bvals, dtype=np.float64).reshape(-1)
    g = as_bvecs(bvecs, b.size)
    if b.size == 0:
        raise InvalidParameterError("no volumes: bvals is empty")
    if not (np.all(np.isfinite(b)) and np.all(np.isfinite(g))):
        raise InvalidParameterError("bvals/bvecs contain NaN or Inf")
    if np.any(b < 0):
        raise InvalidParameterError("bvals must be >= 0 (s/mm²)")
    norm = np.linalg.norm(g, axis=1)
    dw = (b > b0_threshold_s_mm2) & (norm > 1e-6)
    b_eff = b.copy()
    if np.any(dw) and np.any(np.abs(norm[dw] - 1.0) > 0.01):
        b_eff = b * norm**2
        dw = b_eff > b0_threshold_s_mm2
    if not np.any(~dw):
        raise InvalidParameterError(
            f"no b = 0 volume (every b-value is above {b0_threshold_s_mm2:g} s/mm²); DSI needs q = 0"
        )
    if not np.any(dw):
        raise InvalidParameterError("no diffusion-weighted volume: every b-value is ~0")
    b_max = float(b_eff[dw].max())
    unit = g[dw] / norm[dw, None]
    scale = np.sqrt(b_eff[dw] / b_max)[:, None] * unit
    r2s = np.arange(1, 101, dtype=np.float64)
    q = scale[None] * np.sqrt(r2s)[:, None, None]  # (candidates, n, 3), all at once
    k_all = np.rint(q)
    offs = np.max(np.sqrt(np.sum((q - k_all) ** 2, axis=-1)), axis=1)
    # a weighted volume must not round onto q = 0
    offs[~np.all(np.any(k_all != 0, axis=-1), axis=1)] = np.inf
    best = float(offs.min())
    if best > tol:
        raise InvalidParameterError(
            "bvals/bvecs are not on a Cartesian q-space lattice: q = sqrt(b/b_max)·r_max·g is "
            f"at least {best:.2f} lattice units from the nearest integer point for every r_max² in "
            "1..100 (DSI needs a grid scheme such as the 515 points within radius 5)"
        )
    # the smallest radius that fits as well as the best (a lattice scaled by 2 fits as well)
    r2 = int(np.flatnonzero(offs <= best + 0.02)[0]) + 1
    k = np.rint(scale * np.sqrt(r2))
    k = k.astype(np.int64)
    k_max = int(np.max(np.sum(k**2, axis=1)))
    if radius_sq is None:
        radius_sq = int(np.ceil(np.sqrt(k_max))) ** 2
    elif isinstance(radius_sq, bool) or int(radius_sq) != radius_sq or radius_sq < k_max:
        raise InvalidParameterError(
            f"radius_sq must be an integer >= {k_max} (the largest |k|² acquired), got {radius_sq!r}"
        )
    radius_sq = int(radius_sq)
    lattice = q_lattice(radius_sq, b_max_s_mm2=b_max * radius_sq / r2)
    r = int(np.floor(np.sqrt(radius_sq)))
    side = 2 * r + 1
    lookup = np.full(side**3, -1, dtype=np.int64)
    p = lattice.points + r
    lookup[(p[:, 0] * side + p[:, 1]) * side + p[:, 2]] = np.arange(lattice.size)
    index = np.zeros(b.size, dtype=np.int64)  # b = 0 → the origin (row 0)
    kk = k + r
    index[dw] = lookup[(kk[:, 0] * side + kk[:, 1]) * side + kk[:, 2]]
    return lattice, index
