"""Coil sensitivities and coil-space operations for parallel imaging.

* :func:`simulate_coil_maps`: receive sensitivities of circular loop coils on a
  cylinder around the field of view, by Biot–Savart integration.
* :func:`noise_covariance`, :func:`prewhiten`, :func:`apply_coil_matrix`: noise
  correlation between coils and its removal.
* :func:`coil_compress`: SVD (PCA) coil compression to virtual coils.
* :func:`ratio_maps`, :func:`espirit_maps`: sensitivities estimated from the
  fully sampled k-space centre (ACS).

Conventions: multi-coil arrays put coils first, ``(coil, *spatial)``, with
spatial shape ``(n0, n1)`` (slice) or ``(n0, n1, n2)`` (volume); axis 0 (and
axis 1 for 2-D acceleration) is phase-encoded, the last axis is the readout.
k-space and images are related by the centred orthonormal FFTs of
:mod:`mrirecon.fft` over the spatial axes. complex64 unless asked otherwise.

Devices: :func:`simulate_coil_maps` and :func:`noise_covariance` make data
from shapes and numbers and return NumPy arrays (move them with
:func:`mrirecon.device.to_device`). Everything that takes coil data
(:func:`apply_coil_matrix`, :func:`prewhiten`, :func:`coil_compress`,
:func:`ratio_maps`, :func:`espirit_maps`) returns arrays of the data's module,
NumPy or CuPy, and does the work on the data's device; only coil × coil
matrices (covariance, whitening and compression matrices) and, for ESPIRiT,
the small calibration block are factorised on the host, and the small results
are copied back.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .. import fft as _fft
from ..device import get_array_module, is_device_array, to_numpy
from ..errors import InvalidParameterError, ShapeMismatchError

__all__ = [
    "apply_coil_matrix",
    "coil_compress",
    "espirit_maps",
    "noise_covariance",
    "prewhiten",
    "ratio_maps",
    "simulate_coil_maps",
]

_log = logging.getLogger(__name__)

# Biot–Savart evaluation: segments per loop, and the largest grid per axis on which the
# field is evaluated before spline interpolation (sensitivities are smooth in the FOV).
_N_SEGMENTS = 48
_COARSE_2D = 64
_COARSE_3D = 32


def _spatial_axes(ndim_spatial: int) -> tuple[int, ...]:
    return tuple(range(-ndim_spatial, 0))


def _coil_array(x, name: str, *, ndims=(3, 4)):
    arr = get_array_module(x).asarray(x)
    if arr.ndim not in ndims:
        forms = {3: "(coil, n0, n1)", 4: "(coil, n0, n1, n2)"}
        want = " or ".join(forms[n] for n in ndims)
        raise ShapeMismatchError(f"{name} must have the shape {want}, got {arr.shape}")
    return arr


def _complex_dtype(arr) -> np.dtype:
    return np.dtype(np.complex128) if arr.dtype in (np.float64, np.complex128) else np.dtype(np.complex64)


# --------------------------------------------------------------------------
# simulated sensitivities
# --------------------------------------------------------------------------
def _geometry(dims, voxel_size_mm, fov_mm):
    nd = len(dims)

    def as_vec(value, name):
        if np.ndim(value) == 0:
            value = (value,) * nd
        try:
            vec = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            vec = ()
        if len(vec) != nd or not all(math.isfinite(v) and v > 0 for v in vec):
            raise InvalidParameterError(
                f"{name} must be a positive number or {nd} positive numbers, got {value!r}"
            )
        return vec

    if voxel_size_mm is None and fov_mm is None:
        fov_mm = 220.0
    if voxel_size_mm is not None:
        voxel = as_vec(voxel_size_mm, "voxel_size_mm")
        if fov_mm is not None:
            fov = as_vec(fov_mm, "fov_mm")
            if not np.allclose(fov, [n * d for n, d in zip(dims, voxel)], rtol=1e-6):
                raise InvalidParameterError(
                    f"fov_mm={fov} disagrees with shape * voxel_size_mm = "
                    f"{tuple(n * d for n, d in zip(dims, voxel))}; give one of them"
                )
    else:
        fov = as_vec(fov_mm, "fov_mm")
        voxel = tuple(f / n for f, n in zip(fov, dims))
    return voxel


def _loop_positions(n_coils: int, n_rings: int, radius: float, z_span: float):
    """Centres, inward normals and in-plane tangents of loops on a cylinder (axis z)."""
    per_ring = [n_coils // n_rings + (1 if r < n_coils % n_rings else 0) for r in range(n_rings)]
    zs = (np.arange(n_rings) - (n_rings - 1) / 2.0) * (z_span / max(n_rings, 1))
    loops = []
    for ring, (count, z) in enumerate(zip(per_ring, zs)):
        stagger = 0.5 * ring * (2 * np.pi / count)
        for j in range(count):
            phi = 2 * np.pi * j / count + stagger
            radial = np.array([np.cos(phi), np.sin(phi), 0.0])
            tangent = np.array([-np.sin(phi), np.cos(phi), 0.0])
            loops.append((radius * radial + np.array([0.0, 0.0, z]), radial, tangent, count))
    return loops


def simulate_coil_maps(
    shape,
    n_coils,
    *,
    voxel_size_mm=None,
    fov_mm=None,
    radius_factor=1.3,
    dtype=np.complex64,
):
    """Receive sensitivities of loop coils on a cylinder, by Biot–Savart integration.

    Geometry: physical axes x, y, z are spatial axes 0, 1 and (for a volume) 2;
    voxel ``i`` of ``n`` (size ``d``) is centred at ``(i - (n - 1) / 2) * d`` mm.
    The coils are flat circular current loops whose centres lie on a cylinder of
    radius ``rho = radius_factor * sqrt(hx**2 + hy**2)`` about the z axis (``hx``,
    ``hy`` the half field of view along x and y, so the cylinder encloses the
    whole in-plane field of view), each loop in the plane tangent to the
    cylinder, its normal pointing at the axis. The loops are spaced evenly in
    angle; a slice ``(n0, n1)`` lies in the plane ``z = 0`` with one ring of
    coils around it; a volume gets one ring for ``n_coils < 16``, two rings for
    ``16 <= n_coils < 32`` and four rings beyond, stacked along z over 60 % of
    the field of view and staggered in angle by half a coil. Loop radius:
    ``a = min(0.45 * 2 pi rho / coils_per_ring, 0.5 * rho)`` (and, with several
    rings, at most 0.45 of the ring spacing).

    Field: B(r) = μ0 I / 4π ∮ dl × (r − r') / |r − r'|³, integrated with the
    midpoint rule over 48 straight segments per loop (vectorised over voxels
    and segments). The sensitivity is the complex transverse field
    ``B1- = Bx - i By`` (this sign convention; the conjugate convention only
    flips every phase). Sensitivities are smooth (the wires stay outside the
    field of view), so along an axis with more than 64 voxels (slice) or 32
    voxels (volume) they are computed on a 64- or 32-point grid spanning the
    same field of view and interpolated (separable cubic splines).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``(n0, n1)`` or ``(n0, n1, n2)``.
    n_coils : int
        Number of coils (>= 1; e.g. 8, 16, 32, 64).
    voxel_size_mm, fov_mm : float or tuple of float, optional
        Voxel size or field of view (one of them; both only if consistent).
        Default: a 220 mm field of view along each axis. Only ratios of lengths
        matter except for the z extent of a volume.
    radius_factor : float, optional
        Cylinder radius over the in-plane half diagonal of the field of view
        (> 1; default 1.3).
    dtype : complex dtype, optional
        complex64 (default) or complex128.

    Returns
    -------
    numpy.ndarray, shape ``(n_coils, *shape)``
        Normalised so that the root-sum-of-squares over coils,
        ``sqrt(sum_c |S_c|**2)``, has maximum 1 over the grid. Always on the
        host (the maps are made from a shape, not from data): for the GPU,
        ``mrirecon.device.to_device(maps, "gpu")``.
    """
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) not in (2, 3) or any(n < 1 for n in dims):
        raise InvalidParameterError(f"shape must be 2 or 3 positive integers, got {shape!r}")
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise InvalidParameterError(f"n_coils must be an integer >= 1, got {n_coils!r}")
    try:
        radius_factor = float(radius_factor)
    except (TypeError, ValueError):
        radius_factor = float("nan")
    if not math.isfinite(radius_factor) or radius_factor <= 1.0:
        raise InvalidParameterError(f"radius_factor must be a number > 1, got {radius_factor!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "c":
        raise InvalidParameterError(f"dtype must be complex64 or complex128, got {dtype}")
    voxel = _geometry(dims, voxel_size_mm, fov_mm)
    half = [n * d / 2.0 for n, d in zip(dims, voxel)]
    rho = radius_factor * math.hypot(half[0], half[1])
    nd = len(dims)
    n_rings = 1 if (nd == 2 or n_coils < 16) else (2 if n_coils < 32 else 4)
    z_span = 0.6 * 2 * half[2] if nd == 3 else 0.0
    loops = _loop_positions(int(n_coils), n_rings, rho, z_span)

    # evaluation grid (coarse for big grids), physical coordinates in mm
    limit = _COARSE_2D if nd == 2 else _COARSE_3D
    coarse = tuple(min(n, limit) for n in dims)
    axes_mm = []
    for n, m, d in zip(dims, coarse, voxel):
        full = (np.arange(n) - (n - 1) / 2.0) * d
        axes_mm.append(np.linspace(full[0], full[-1], m) if m < n else full)
    grid = np.meshgrid(*axes_mm, indexing="ij")
    pts = np.stack([g.ravel() for g in grid] + ([np.zeros(grid[0].size)] if nd == 2 else []))  # (3, P)

    n_seg = _N_SEGMENTS
    t = (np.arange(n_seg) + 0.5) * (2 * np.pi / n_seg)
    maps = np.empty((int(n_coils), pts.shape[1]), dtype=np.complex128)
    chunk = 1 << 15
    for c, (centre, normal, tangent, count) in enumerate(loops):
        binormal = np.cross(normal, tangent)  # z for a single ring
        a = min(0.45 * 2 * np.pi * rho / count, 0.5 * rho)
        if n_rings > 1:
            a = min(a, 0.45 * z_span / n_rings)
        u = np.cos(t)[:, None] * tangent + np.sin(t)[:, None] * binormal  # (S, 3)
        mid = centre + a * u
        dl = (2 * np.pi * a / n_seg) * (-np.sin(t)[:, None] * tangent + np.cos(t)[:, None] * binormal)
        for s in range(0, pts.shape[1], chunk):
            p = pts[:, s : s + chunk]
            d = p[None, :, :] - mid[:, :, None]  # (S, 3, P)
            inv3 = np.sum(d * d, axis=1) ** -1.5  # (S, P)
            wx, wy, wz = d[:, 0] * inv3, d[:, 1] * inv3, d[:, 2] * inv3
            bx = dl[:, 1] @ wz - dl[:, 2] @ wy
            by = dl[:, 2] @ wx - dl[:, 0] @ wz
            maps[c, s : s + chunk] = bx - 1j * by
    maps = maps.reshape((int(n_coils),) + coarse)
    if coarse != dims:
        from scipy.interpolate import CubicSpline

        # separable cubic-spline interpolation: one small (n, m) matrix per axis
        for axis, (n, m) in enumerate(zip(dims, coarse)):
            if m == n:
                continue
            src = np.arange(m, dtype=float)
            dst = np.linspace(0.0, m - 1.0, n)
            interp = CubicSpline(src, np.eye(m), axis=0)(dst)  # (n, m)
            maps = np.moveaxis(np.tensordot(interp, maps, axes=([1], [axis + 1])), 0, axis + 1)
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0))
    maps /= rss.max()
    return maps.astype(dtype)


# --------------------------------------------------------------------------
# noise
# --------------------------------------------------------------------------
def noise_covariance(n_coils, *, correlation=0.1, seed=0):
    """A realistic Hermitian positive-definite coil noise covariance.

    ``C = D^(1/2) P K P^H D^(1/2)`` with

    * ``K[i, j] = correlation ** dist(i, j)``, ``dist`` the circular distance
      ``min(|i - j|, n - |i - j|)`` (coils on a ring: neighbours correlate most),
    * ``P = diag(exp(i theta_i))``, random phases (complex off-diagonal terms),
    * ``D = diag(exp(0.2 g_i))``, ``g_i`` standard normal: noise variances
      around 1 that differ between coils (by about ±20 %).

    Parameters
    ----------
    n_coils : int
    correlation : float, optional
        Magnitude of the correlation between neighbouring coils, ``0 <= correlation < 1``
        (default 0.1).
    seed : int, optional

    Returns
    -------
    numpy.ndarray, complex128, shape ``(n_coils, n_coils)``

    Raises
    ------
    InvalidParameterError
        If the parameters are out of range or the resulting matrix is not positive
        definite (large correlations on small rings).
    """
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise InvalidParameterError(f"n_coils must be an integer >= 1, got {n_coils!r}")
    correlation = float(correlation)
    if not 0.0 <= correlation < 1.0:
        raise InvalidParameterError(f"correlation must satisfy 0 <= correlation < 1, got {correlation}")
    n = int(n_coils)
    idx = np.arange(n)
    dist = np.abs(idx[:, None] - idx[None, :])
    dist = np.minimum(dist, n - dist)
    k = correlation ** dist.astype(float)
    rng = np.random.default_rng(seed)
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, n))
    scale = np.exp(0.5 * 0.2 * rng.standard_normal(n))  # D^(1/2)
    cov = (scale * phase)[:, None] * k * np.conj(scale * phase)[None, :]
    cov = 0.5 * (cov + cov.conj().T)
    if np.linalg.eigvalsh(cov).min() <= 1e-8 * np.abs(np.diag(cov)).max():
        raise InvalidParameterError(
            f"correlation={correlation} gives no positive-definite covariance for {n} coils; use a smaller one"
        )
    return cov


def apply_coil_matrix(matrix, arr):
    """Mix coils: ``out[i, ...] = sum_c matrix[i, c] * arr[c, ...]``.

    Parameters
    ----------
    matrix : ndarray, shape ``(m, n_coils)``
        E.g. the whitening matrix of :func:`prewhiten` or the compression matrix of
        :func:`coil_compress`. A NumPy matrix is copied to the device for CuPy
        ``arr``; a CuPy matrix with NumPy ``arr`` raises.
    arr : ndarray, shape ``(n_coils, ...)``
        k-space, images or sensitivity maps (coils first), NumPy or CuPy.

    Returns
    -------
    ndarray, shape ``(m, ...)``, of the result dtype of the two, of ``arr``'s module.
    """
    xp = get_array_module(arr)
    arr = xp.asarray(arr)
    if xp is np and is_device_array(matrix):
        raise InvalidParameterError(
            "the coil matrix is a CuPy array but the data are a NumPy array: move one of them with "
            "mrirecon.device.to_device"
        )
    matrix = xp.asarray(matrix)
    if matrix.ndim != 2 or arr.ndim < 1 or matrix.shape[1] != arr.shape[0]:
        raise ShapeMismatchError(
            f"coil matrix of shape {matrix.shape} does not fit data with {arr.shape[0] if arr.ndim else 0} "
            "coils on axis 0 (expected matrix (m, n_coils))"
        )
    dtype = np.result_type(matrix, arr)
    out = matrix.astype(dtype, copy=False) @ arr.reshape(arr.shape[0], -1).astype(dtype, copy=False)
    return out.reshape((matrix.shape[0],) + arr.shape[1:])


def prewhiten(kspace_or_images, *, noise=None, covariance=None):
    """Decorrelate coil noise: multiply by ``W = L^-1``, ``C = L L^H`` (Cholesky).

    After whitening the noise covariance is ``W C W^H = I``. SENSE needs the
    sensitivities in the same whitened coil space: apply the same ``W`` to the
    maps, ``apply_coil_matrix(W, sens)`` (whitening is linear in the coils, so
    ``W (S x) = (W S) x``).

    Parameters
    ----------
    kspace_or_images : ndarray, shape ``(coil, ...)``
    noise : ndarray, shape ``(coil, samples...)``, optional
        A noise-only scan; the covariance is estimated as ``C = N N^H / n``
        (``N`` reshaped to ``(coil, n)``; noise assumed zero-mean).
    covariance : ndarray, shape ``(coil, coil)``, optional
        A known Hermitian positive-definite covariance. Give exactly one of
        ``noise`` and ``covariance``.

    Returns
    -------
    whitened : ndarray, shape of the input, complex (complex64 unless the input is
        double precision), of the input's module (NumPy or CuPy)
    W : ndarray, shape ``(coil, coil)``, lower triangular, of the same dtype and module.

    Notes
    -----
    The covariance of a noise scan is accumulated on the noise scan's device;
    the Cholesky factor of the (coil × coil) covariance is computed on the host
    and ``W`` copied to the data's device.
    """
    xp = get_array_module(kspace_or_images)
    data = xp.asarray(kspace_or_images)
    if data.ndim < 1:
        raise ShapeMismatchError("data must have the coils on axis 0")
    nc = data.shape[0]
    if (noise is None) == (covariance is None):
        raise InvalidParameterError("give exactly one of noise= (a noise scan) and covariance=")
    if noise is not None:
        noise = get_array_module(noise).asarray(noise)
        if noise.ndim < 2 or noise.shape[0] != nc:
            raise ShapeMismatchError(f"noise must have the shape ({nc}, samples), got {noise.shape}")
        nmat = noise.reshape(nc, -1).astype(np.complex128)
        cov = to_numpy(nmat @ nmat.conj().T) / nmat.shape[1]
    else:
        cov = to_numpy(covariance).astype(np.complex128)
        if cov.shape != (nc, nc):
            raise ShapeMismatchError(f"covariance must have the shape ({nc}, {nc}), got {cov.shape}")
    try:
        chol = np.linalg.cholesky(0.5 * (cov + cov.conj().T))
    except np.linalg.LinAlgError:
        raise InvalidParameterError("the noise covariance is not positive definite") from None
    w = np.linalg.solve(chol, np.eye(nc))
    w = np.tril(w)
    dtype = _complex_dtype(data)
    w = xp.asarray(w.astype(dtype))
    return apply_coil_matrix(w, data.astype(dtype, copy=False)), w


def coil_compress(kspace, n_virtual, *, calib=None, return_energy=False):
    """SVD (PCA) coil compression to ``n_virtual`` virtual coils.

    With the data matrix ``X`` (coils × samples) of ``calib`` (or of ``kspace``),
    ``X = U Σ V^H``, the compression matrix is ``M = U[:, :n_virtual]^H``: virtual
    coil ``i`` is the ``i``-th principal component of the coils. The energy kept
    is ``sum(σ[:n_virtual]**2) / sum(σ**2)`` (logged at INFO level). ``M`` has
    orthonormal rows, so ``M^H @ compressed`` recovers the coil data exactly when
    ``n_virtual == n_coils``. Compress sensitivities with the same ``M``
    (:func:`apply_coil_matrix`), after any prewhitening.

    Parameters
    ----------
    kspace : ndarray, shape ``(coil, ...)``
    n_virtual : int
        ``1 <= n_virtual <= n_coils``.
    calib : ndarray, shape ``(coil, ...)``, optional
        Data to derive the matrix from (e.g. the ACS block); default ``kspace``.
    return_energy : bool, optional
        Also return the energy fraction kept.

    Returns
    -------
    compressed : ndarray, shape ``(n_virtual, ...)``, of ``kspace``'s module (NumPy or CuPy)
    matrix : ndarray, shape ``(n_virtual, n_coils)``, of the same module
    energy : float
        Only with ``return_energy=True``.

    Notes
    -----
    The coil Gram matrix ``X X^H`` is accumulated on the data's device; its
    (coil × coil) eigendecomposition runs on the host.
    """
    xp = get_array_module(kspace)
    data = xp.asarray(kspace)
    if data.ndim < 2:
        raise ShapeMismatchError(f"kspace must have the shape (coil, ...), got {data.shape}")
    nc = data.shape[0]
    if (
        isinstance(n_virtual, bool)
        or not isinstance(n_virtual, (int, np.integer))
        or not 1 <= n_virtual <= nc
    ):
        raise InvalidParameterError(f"n_virtual must be an integer in [1, {nc}], got {n_virtual!r}")
    src = data if calib is None else get_array_module(calib).asarray(calib)
    if src.shape[0] != nc:
        raise ShapeMismatchError(f"calib has {src.shape[0]} coils, kspace has {nc}")
    x = src.reshape(nc, -1).astype(np.complex128)
    gram = to_numpy(x @ x.conj().T)
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    evecs = evecs[:, order]
    energy = float(evals[:n_virtual].sum() / evals.sum()) if evals.sum() > 0 else 1.0
    _log.info("coil compression %d -> %d virtual coils keeps %.4f of the energy", nc, n_virtual, energy)
    dtype = _complex_dtype(data)
    matrix = xp.asarray(evecs[:, :n_virtual].conj().T.astype(dtype))
    out = apply_coil_matrix(matrix, data.astype(dtype, copy=False))
    return (out, matrix, energy) if return_energy else (out, matrix)


# --------------------------------------------------------------------------
# sensitivities from the ACS block
# --------------------------------------------------------------------------
def _normalise_phase(maps):
    xp = get_array_module(maps)
    ref = maps[0]
    mag = xp.abs(ref)
    phase = xp.where(mag > 0, xp.conj(ref) / xp.where(mag > 0, mag, 1), 1)
    return maps * phase


def _window(n: int, kind: str, beta: float) -> np.ndarray:
    if kind == "hann":
        return np.hanning(n + 2)[1:-1] if n > 0 else np.zeros(0)
    if kind == "kaiser":
        return np.kaiser(n, beta)
    if kind in ("none", "boxcar"):
        return np.ones(n)
    raise InvalidParameterError(f"window must be 'hann', 'kaiser' or 'none', got {kind!r}")


def ratio_maps(kspace, *, acs_lines=24, window="hann", beta=4.0, threshold=0.05):
    """Low-resolution sensitivities: ACS-only coil images divided by their RSS.

    Steps: keep the centred block of ``acs_lines`` phase-encoding lines
    (``[n0 // 2 - a // 2, n0 // 2 - a // 2 + a)`` along axis 0, and along axis 1
    too when a pair ``(a0, a1)`` is given), zero the rest, taper the block by a
    window along each truncated axis, inverse FFT per coil to images ``I_c``, and
    ``S_c = I_c / sqrt(sum_c |I_c|**2)`` where the RSS exceeds ``threshold`` times
    its maximum (0 elsewhere). The phase is made relative to coil 0 (``S_0``
    real and non-negative), as in :func:`espirit_maps`, so the object's phase
    cancels and the maps approximate ``S_true * exp(-i angle(S_true_0)) /
    ||S_true||``.

    Parameters
    ----------
    kspace : ndarray, shape ``(coil, n0, n1)`` or ``(coil, n0, n1, n2)``
        The ACS block must be fully sampled.
    acs_lines : int or pair of int, optional
        Default 24 (along axis 0).
    window : {"hann", "kaiser", "none"}, optional
    beta : float, optional
        Kaiser window parameter.
    threshold : float, optional
        Relative RSS threshold of the support mask (default 0.05).

    Returns
    -------
    ndarray, shape of ``kspace``, complex64 (complex128 for double input), of
    ``kspace``'s module (NumPy or CuPy; computed on its device).
    """
    ksp = _coil_array(kspace, "kspace")
    xp = get_array_module(ksp)
    nd = ksp.ndim - 1
    sizes = (acs_lines,) if np.ndim(acs_lines) == 0 else tuple(acs_lines)
    max_axes = 1 if nd == 2 else 2  # phase-encoding axes
    if len(sizes) > max_axes or any(
        isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 1 for a in sizes
    ):
        raise InvalidParameterError(
            f"acs_lines must be a positive int (or a pair for a volume), got {acs_lines!r}"
        )
    dtype = _complex_dtype(ksp)
    low = xp.zeros(ksp.shape, dtype=dtype)
    sl = [slice(None)] * ksp.ndim
    taper = 1.0
    for axis, a in enumerate(sizes):
        n = ksp.shape[1 + axis]
        if a > n:
            raise InvalidParameterError(f"acs_lines={a} exceeds the {n} lines along axis {axis}")
        start = n // 2 - a // 2
        sl[1 + axis] = slice(start, start + a)
        shp = [1] * ksp.ndim
        shp[1 + axis] = a
        taper = taper * _window(a, window, beta).reshape(shp)
    sl = tuple(sl)
    if not np.isscalar(taper):
        taper = xp.asarray(taper)
    low[sl] = ksp[sl] * taper
    img = _fft.ifftc(low, axes=_spatial_axes(nd))
    rss = xp.sqrt(xp.sum(xp.abs(img) ** 2, axis=0))
    support = rss > threshold * rss.max()
    maps = xp.where(support, img / xp.where(support, rss, 1), 0)
    return _normalise_phase(maps).astype(dtype)


def _espirit_gram(kernels, nc, k, shape, xp=np):
    """Per-pixel ESPIRiT matrices ``G(x) = sum_j h_j(x) h_j(x)^H`` (npix, nc, nc), via k-space.

    ``h_j = ifftc(zero-padded kernel j)`` (orthonormal, centred), scaled by
    ``N / k**2``. Entry (c, d) equals ``sqrt(N) / k**2 * ifftc(R_cd)`` with
    ``R_cd(δ) = sum_j sum_b K_jc(b + δ) conj(K_jd(b))`` supported on
    ``|δ| < k``: one FFT per coil pair instead of one per kernel and coil.
    The kernels' autocorrelation is small and computed on the host; the
    zero-padded images, their FFTs and the matrices are made in ``xp``.
    """
    n0, n1 = shape
    kern = kernels.reshape(-1, nc, k, k)
    # P[(c, a0, a1), (d, b0, b1)] = sum_j K[j, c, a] conj(K[j, d, b])
    p = np.einsum("jcab,jdef->cabdef", kern, kern.conj(), optimize=True)
    lag = np.zeros((nc, nc, 2 * k - 1, 2 * k - 1), dtype=p.dtype)
    for b0 in range(k):  # loop over kernel positions (k**2 small slices)
        for b1 in range(k):
            # lag δ = a - b for a in [0, k): index δ + k - 1
            lag[:, :, k - 1 - b0 : 2 * k - 1 - b0, k - 1 - b1 : 2 * k - 1 - b1] += p[
                :, :, :, :, b0, b1
            ].transpose(0, 3, 1, 2)
    iu0, iu1 = np.triu_indices(nc)
    padded = xp.zeros((iu0.size, n0, n1), dtype=np.complex64)
    c0, c1 = n0 // 2, n1 // 2
    padded[:, c0 - (k - 1) : c0 + k, c1 - (k - 1) : c1 + k] = xp.asarray(lag[iu0, iu1].astype(np.complex64))
    img = _fft.ifftc(padded, axes=(-2, -1))
    img *= np.float32(math.sqrt(n0 * n1) / k**2)
    gram = xp.empty((n0 * n1, nc, nc), dtype=np.complex64)
    flat = img.reshape(iu0.size, -1).T
    iu0, iu1 = xp.asarray(iu0), xp.asarray(iu1)
    gram[:, iu0, iu1] = flat
    gram[:, iu1, iu0] = flat.conj()
    return gram


def espirit_maps(kspace, *, acs=24, kernel=6, threshold=0.02, eig_threshold=0.95, method="auto", n_iter=30):
    """ESPIRiT sensitivities (Uecker et al., MRM 2014;71:990-1001) for a 2-D slice.

    1. Calibration matrix: every ``kernel x kernel`` window of the centred
       ``acs x acs`` block (``(a0, a1)`` if a pair; the readout is fully sampled,
       so its centre serves as the second axis) of all coils, flattened
       (coil, k0, k1) into a row: ``(a0 - k + 1)(a1 - k + 1)`` rows of
       ``nc k**2`` columns.
    2. SVD ``A = U Σ V^H``; the rows ``v_j^H`` of ``V^H`` with
       ``σ_j > threshold * σ_max`` span the signal subspace (the kernels).
    3. Image space: ``h_j(x) = ifftc(zero-pad(v_j^H))`` per coil, and per pixel
       ``G(x) = N / k**2 * sum_j h_j(x) h_j(x)^H`` (computed through the
       k-space autocorrelation of the kernels, one FFT per coil pair).
    4. Per pixel: the eigenvector of the largest eigenvalue is the sensitivity
       (unit norm over coils); where that eigenvalue is ``<= eig_threshold`` the
       maps are set to 0. ``method="eigh"``: batched ``numpy.linalg.eigh`` over
       all pixels; ``method="power"``: ``n_iter`` batched power iterations from
       the row sums of ``G`` (as SigPy's ``EspiritCalib``; 4x faster for 16
       coils, same result where the eigenvalue gap is large, i.e. inside the
       mask); ``"auto"`` (default): eigh up to 8 coils, power beyond.
    5. Phase relative to coil 0: ``S_0`` real and non-negative.

    Parameters
    ----------
    kspace : ndarray, shape ``(coil, n0, n1)``
        The ACS block must be fully sampled (other lines may be zero). NumPy or
        CuPy: the results are of the same module. On the GPU, steps 1-2 (the
        calibration block, ``coil x acs x acs``, and its SVD) run on the host;
        step 3's FFTs and step 4's per-pixel eigenproblems on the GPU.
    acs : int or pair of int, optional
        Calibration block size (default 24).
    kernel : int, optional
        Kernel width ``k`` (default 6).
    threshold : float, optional
        Relative singular-value threshold (default 0.02).
    eig_threshold : float, optional
        Eigenvalue threshold of the mask (default 0.95).
    method : {"auto", "eigh", "power"}, optional
    n_iter : int, optional
        Power iterations (``method="power"``; default 30).

    Returns
    -------
    maps : ndarray, complex64, shape ``(coil, n0, n1)``
        Unit norm over coils inside the eigenvalue mask, 0 outside.
    eigenvalues : ndarray, float32, shape ``(n0, n1)``
        The largest eigenvalue per pixel (about 1 where the maps are reliable).
    """
    ksp = _coil_array(kspace, "kspace", ndims=(3,))
    xp = get_array_module(ksp)
    nc, n0, n1 = ksp.shape
    a0, a1 = (acs, acs) if np.ndim(acs) == 0 else tuple(acs)
    k = int(kernel)
    for a, n, ax in ((a0, n0, 0), (a1, n1, 1)):
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool) or a < 1 or a > n:
            raise InvalidParameterError(f"acs along axis {ax} must be an integer in [1, {n}], got {a!r}")
    if k < 1 or k > min(a0, a1) or 2 * k - 1 > min(n0, n1):
        raise InvalidParameterError(f"kernel={kernel} must be >= 1 and at most the ACS size {min(a0, a1)}")
    if not 0 <= threshold < 1:
        raise InvalidParameterError(f"threshold must be in [0, 1), got {threshold}")
    if method not in ("auto", "eigh", "power"):
        raise InvalidParameterError(f"method must be 'auto', 'eigh' or 'power', got {method!r}")
    s0, s1 = n0 // 2 - a0 // 2, n1 // 2 - a1 // 2
    calib = to_numpy(ksp[:, s0 : s0 + a0, s1 : s1 + a1]).astype(np.complex128)
    if not np.any(calib):
        raise InvalidParameterError("the ACS block of kspace is empty")
    win = np.lib.stride_tricks.sliding_window_view(calib, (k, k), axis=(1, 2))  # (nc, w0, w1, k, k)
    mat = win.transpose(1, 2, 0, 3, 4).reshape(-1, nc * k * k)
    _, sv, vh = np.linalg.svd(mat, full_matrices=False)
    kernels = vh[sv > threshold * sv.max()]
    gram = _espirit_gram(kernels, nc, k, (n0, n1), xp)
    if method == "auto":
        method = "eigh" if nc <= 8 else "power"
    tiny = np.float32(np.finfo(np.float32).tiny)
    if method == "eigh":
        evals, evecs = xp.linalg.eigh(gram)
        lam = evals[:, -1]
        vec = evecs[:, :, -1]
    else:
        vec = gram.sum(axis=2)
        nrm = xp.linalg.norm(vec, axis=1, keepdims=True)
        vec /= xp.maximum(nrm, tiny)
        for _ in range(int(n_iter)):  # batched over pixels
            vec = xp.matmul(gram, vec[:, :, None])[:, :, 0]
            nrm = xp.linalg.norm(vec, axis=1, keepdims=True)
            vec /= xp.maximum(nrm, tiny)
        lam = xp.real(xp.sum(vec.conj() * xp.matmul(gram, vec[:, :, None])[:, :, 0], axis=1))
    lam = lam.reshape(n0, n1).astype(np.float32)
    maps = vec.T.reshape(nc, n0, n1)
    maps = _normalise_phase(maps)
    maps = xp.where(lam > eig_threshold, maps, 0).astype(np.complex64)
    return maps, lam
