"""Diffusion propagator (PDF) by a 3-D FFT of the lattice signal, the DSI ODF and GFA.

Conventions follow dipy's ``DiffusionSpectrumModel`` (the reference the tests
compare with): the lattice signal is multiplied by dipy's window
``w(k) = cos(2π|k|/filter_width)`` (dipy's ``hanning_filter`` without its
constant factor ½, so that ``w(0) = 1``), placed on an odd
``grid_size``³ cube with q = 0 at the centre, transformed by a 3-D DFT and
the real part kept, with r = 0 at the centre. Normalisation here (unless
``normalize``): ``P = Re DFT(w·E) / grid_size³``, so ``Σᵣ P(r) = E(0)``, the
b = 0 signal; multiply by ``1/Δr³`` with ``Δr = r_max / (grid_size·q_max)``
for a density per unit volume. ``clip=True, normalize=True`` is dipy's
``pdf()`` exactly (negative ringing clipped, then divided by the sum).
"""

from __future__ import annotations

import functools

import numpy as np

from .. import fft
from ..errors import InvalidParameterError, ShapeMismatchError
from .lattice import Lattice

__all__ = ["gfa", "hemisphere", "odf", "odf_matrix", "pdf"]

#: dipy's defaults: a 17³ grid, window width 32, ODF radii 2.1..6 (grid units) in steps of 0.2.
GRID_SIZE = 17
FILTER_WIDTH = 32.0
ODF_RADII = np.arange(2.1, 6.0, 0.2)


def _check_grid(lattice: Lattice, grid_size: int) -> int:
    n = int(grid_size)
    r = int(np.floor(np.sqrt(lattice.radius_sq)))
    if n != grid_size or n % 2 == 0 or n < 2 * r + 1:
        raise InvalidParameterError(
            f"grid_size must be an odd integer >= {2 * r + 1} (the lattice diameter), got {grid_size!r}"
        )
    return n


@functools.lru_cache(maxsize=16)
def _placement(key, grid_size, filter_width):
    from .lattice import q_lattice

    lat = q_lattice(key[0], b_max_s_mm2=key[1])
    # q = 0 at index 0 (DFT layout); the centred layout is restored by fftshift of the output
    flat = np.ravel_multi_index(tuple((lat.points % grid_size).T), (grid_size,) * 3)
    if filter_width is None:
        w = np.ones(lat.size)
    else:
        w = np.cos(2 * np.pi * np.linalg.norm(lat.points, axis=1) / float(filter_width))
    return flat, w


def pdf(
    signal,
    lattice: Lattice,
    *,
    grid_size: int = GRID_SIZE,
    filter_width: float | None = FILTER_WIDTH,
    clip: bool = False,
    normalize: bool = False,
):
    """The diffusion propagator of lattice signals, for a whole volume at once.

    Parameters
    ----------
    signal : (..., m) array_like
        Signals on ``lattice.points`` (as returned by :func:`mrirecon.dsi.reconstruct`).
    lattice : Lattice
    grid_size : int
        Odd edge of the PDF cube (dipy: 17; ``2·r_max + 1`` is the unpadded grid).
    filter_width : float or None
        Width of the window applied before the DFT (dipy's 32); None: no window.
    clip, normalize : bool
        Clip negative values to 0; divide by the sum over the cube (dipy does both).

    Returns
    -------
    (..., grid_size, grid_size, grid_size) float32 (float64 for float64 input) ndarray
        r = 0 at index ``grid_size // 2``; the axes are the lattice axes (x, y, z).

    Notes
    -----
    ``P(r) = (1/N³) Re Σ_k w(k) E(k) exp(−2πi k·r/N)`` with ``N = grid_size``
    (centred indices), so ``Σ_r P = E(0)``. Linear in the signal unless ``clip``.
    """
    s = np.asarray(signal)
    if s.shape[-1] != lattice.size:
        raise ShapeMismatchError(f"signal has {s.shape[-1]} values per voxel, the lattice {lattice.size}")
    n = _check_grid(lattice, grid_size)
    flat, w = _placement(lattice.key, n, None if filter_width is None else float(filter_width))
    real = np.float64 if s.dtype == np.float64 else np.float32
    lead = s.shape[:-1]
    v = int(np.prod(lead))
    cube = np.zeros((v, n**3), dtype=np.complex128 if real == np.float64 else np.complex64)
    cube[:, flat] = s.reshape(v, -1) * w.astype(real)
    spec = fft.fftn(cube.reshape(v, n, n, n), axes=(1, 2, 3))
    out = np.fft.fftshift(spec.real, axes=(1, 2, 3)).astype(real, copy=False) * real(1.0 / n**3)
    if clip:
        np.maximum(out, 0, out=out)
    if normalize:
        total = out.sum(axis=(1, 2, 3), keepdims=True)
        out = np.divide(out, total, out=np.zeros_like(out), where=total != 0)
    return out.reshape(lead + (n, n, n))


@functools.lru_cache(maxsize=4)
def hemisphere(n_points: int = 362) -> np.ndarray:
    """``n_points`` unit vectors spread evenly over the upper hemisphere (a Fibonacci spiral), (n, 3).

    The DSI ODF is antipodally symmetric, so a hemisphere holds all of it.
    """
    i = np.arange(int(n_points)) + 0.5
    z = 1.0 - i / n_points  # uniform in z on (0, 1]: uniform area on the hemisphere
    phi = np.pi * (1 + 5**0.5) * i
    rho = np.sqrt(1 - z**2)
    v = np.stack([rho * np.cos(phi), rho * np.sin(phi), z], axis=1)
    v.setflags(write=False)
    return v


@functools.lru_cache(maxsize=8)
def _odf_matrix(grid_size, sphere_bytes, n_sphere, radii_bytes):
    from scipy import sparse

    sphere = np.frombuffer(sphere_bytes, dtype=np.float64).reshape(n_sphere, 3)
    radii = np.frombuffer(radii_bytes, dtype=np.float64)
    c = grid_size // 2
    pts = c + sphere[:, None, :] * radii[None, :, None]  # (M, R, 3) in grid units
    base = np.floor(pts).astype(np.int64)
    frac = pts - base
    rows, cols, vals = [], [], []
    row = np.broadcast_to(np.arange(n_sphere)[:, None], pts.shape[:2])
    for corner in np.ndindex(2, 2, 2):
        off = np.asarray(corner)
        idx = base + off
        wgt = np.prod(np.where(off == 1, frac, 1 - frac), axis=-1) * radii[None, :] ** 2
        inside = np.all((idx >= 0) & (idx < grid_size), axis=-1)  # map_coordinates' constant 0 outside
        rows.append(row[inside])
        cols.append(np.ravel_multi_index(tuple(idx[inside].T), (grid_size,) * 3))
        vals.append(wgt[inside])
    m = sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_sphere, grid_size**3)
    )
    return m.T.tocsr()


def odf_matrix(grid_size: int = GRID_SIZE, *, sphere=None, radii=ODF_RADII):
    """Sparse (grid_size³, M) matrix: ODF = PDF (flattened) @ matrix.

    ``ψ(û) = Σ_r r² P(r·û)`` over ``radii`` (grid units), P trilinearly
    interpolated (dipy's ``pdf_odf``: ``map_coordinates(order=1)``), built once per
    grid and sphere and cached.
    """
    sphere = hemisphere() if sphere is None else np.asarray(sphere, dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    return _odf_matrix(int(grid_size), sphere.tobytes(), sphere.shape[0], radii.tobytes())


def odf(signal, lattice: Lattice, *, sphere=None, grid_size: int = GRID_SIZE, filter_width=FILTER_WIDTH):
    """DSI ODF of lattice signals on ``sphere`` (default :func:`hemisphere`), (..., M).

    The PDF is dipy's (clipped and normalised to sum 1), then radially
    integrated with weight r² (see :func:`odf_matrix`).
    """
    p = pdf(signal, lattice, grid_size=grid_size, filter_width=filter_width, clip=True, normalize=True)
    lead = p.shape[:-3]
    mat = odf_matrix(grid_size, sphere=sphere)
    flat = p.reshape(-1, grid_size**3)
    out = np.asarray((mat.T @ flat.T).T, dtype=p.dtype)
    return out.reshape(lead + (mat.shape[1],))


def gfa(odf_values):
    """Generalised fractional anisotropy of ODFs (..., M): ``std(ψ)/rms(ψ)`` (dipy's ``gfa``).

    ``sqrt(M Σ(ψ − ψ̄)² / ((M − 1) Σ ψ²))``; 0 where the ODF is zero.
    """
    psi = np.asarray(odf_values)
    m = psi.shape[-1]
    num = m * np.sum((psi - psi.mean(axis=-1, keepdims=True)) ** 2, axis=-1)
    den = (m - 1) * np.sum(psi**2, axis=-1)
    return np.sqrt(np.divide(num, den, out=np.zeros_like(num), where=den > 0))
