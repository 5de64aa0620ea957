"""Brain (object) masks from magnitude images, and erosion by a ball in mm."""

from __future__ import annotations

import numbers

import numpy as np

from .._xp import ndimage
from ..device import get_array_module, to_numpy
from ..errors import InvalidParameterError, ShapeMismatchError
from ..kspace import normalize_voxel_size

__all__ = ["erode", "mask_from_magnitude"]


def _check_magnitude(magnitude):
    xp = get_array_module(magnitude)
    m = xp.asarray(magnitude)
    if xp.iscomplexobj(m):
        raise InvalidParameterError("magnitude must be real, got a complex array; pass np.abs(z)")
    if m.dtype == bool or not np.issubdtype(m.dtype, np.number):
        raise InvalidParameterError(f"magnitude must be a real numeric array, got dtype {m.dtype}")
    if m.ndim not in (3, 4):
        raise ShapeMismatchError(
            f"magnitude must be 3-D (x, y, z) or 4-D (echo, x, y, z), got shape {m.shape}"
        )
    if m.size == 0:
        raise ShapeMismatchError(f"magnitude is empty (shape {m.shape})")
    if np.issubdtype(m.dtype, np.floating) and not bool(xp.isfinite(m).all()):
        bad = int(xp.count_nonzero(~xp.isfinite(m)))
        raise InvalidParameterError(f"magnitude has {bad} NaN/Inf values; it must be finite everywhere")
    return m


def _combine_echoes(m):
    """Root-sum-of-squares over the echo axis (axis 0) of a 4-D magnitude, float32/float64."""
    xp = get_array_module(m)
    dtype = np.float64 if m.dtype == np.float64 else np.float32
    if m.ndim == 3:
        return m.astype(dtype, copy=False)
    acc = xp.zeros(m.shape[1:], dtype=dtype)
    for e in range(m.shape[0]):
        x = m[e].astype(dtype, copy=False)
        acc += x * x
    return xp.sqrt(acc, out=acc)


_SMALL_BALL = 64  # structuring elements up to this many voxels go to binary_erosion


def _bounding_box(mask):
    """Slices of the smallest box holding every True voxel (None for an empty mask)."""
    xp = get_array_module(mask)
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = xp.flatnonzero(mask.any(axis=others))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _ball_erode(mask, radii):
    """Erode by the ellipsoid ``Σ (d_i / r_i)² ≤ 1`` (d in voxels); outside the array counts as background.

    Works on the mask's bounding box. Small elements go to
    :func:`scipy.ndimage.binary_erosion`; larger ones to the Euclidean distance
    transform, whose cost does not depend on the radius: a voxel survives when
    its nearest background voxel, in the metric scaled by ``1 / r_i``, lies
    farther than 1. Both give the same result. CuPy masks use the same
    functions of :mod:`cupyx.scipy.ndimage`.
    """
    xp = get_array_module(mask)
    ndi = ndimage(xp)
    out = xp.zeros(mask.shape, dtype=bool)
    box = _bounding_box(mask)
    if box is None:
        return out
    sub = mask[box]
    half = [int(np.floor(r + 1e-9)) for r in radii]
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij", sparse=True)
    ball = sum((g / r) ** 2 for g, r in zip(grids, radii)) <= 1.0 + 1e-9
    if ball.sum() <= _SMALL_BALL:
        # the structuring element is a small host-side parameter: copied to the device once
        out[box] = ndi.binary_erosion(sub, structure=xp.asarray(ball), border_value=0)
        return out
    padded = xp.pad(sub, 1, constant_values=False)
    dist = ndi.distance_transform_edt(padded, sampling=[1.0 / r for r in radii])
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    out[box] = dist[inner] > 1.0 + 1e-9  # boundary of the ball included, robust to rounding
    return out


def _otsu_threshold(image, nbins=256) -> float:
    """Otsu's threshold: :func:`skimage.filters.threshold_otsu` for NumPy, :func:`_otsu_any` for CuPy."""
    if get_array_module(image) is np:
        from skimage.filters import threshold_otsu

        return float(threshold_otsu(image, nbins=nbins))
    return _otsu_any(image, nbins)


def _otsu_any(image, nbins=256) -> float:
    """Otsu's threshold of a real NumPy or CuPy image, as :func:`skimage.filters.threshold_otsu` computes it.

    The ``nbins``-bin histogram over the image's range is counted in the
    image's module (on the device for CuPy); only the counts and edges come
    back to the host, where the bin centre that maximises the between-class
    variance is picked.
    """
    xp = get_array_module(image)
    lo, hi = float(image.min()), float(image.max())
    if lo == hi:
        return lo
    counts, edges = xp.histogram(image.reshape(-1), bins=nbins)
    counts = to_numpy(counts).astype(np.float64)
    edges = to_numpy(edges)
    centers = (edges[:-1] + edges[1:]) / 2.0
    weight1 = np.cumsum(counts)
    weight2 = np.cumsum(counts[::-1])[::-1]
    mean1 = np.cumsum(counts * centers) / weight1
    mean2 = (np.cumsum((counts * centers)[::-1]) / weight2[::-1])[::-1]
    variance12 = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return float(centers[int(np.argmax(variance12))])


def erode(mask, *, radius_mm, voxel_size_mm=(1.0, 1.0, 1.0)):
    """Erode a mask by a ball of a radius given in mm.

    Parameters
    ----------
    mask : ndarray of bool, shape (x, y, z)
    radius_mm : float
        Ball radius in mm (≥ 0; 0 returns a copy).
    voxel_size_mm : float or 3 floats
        Voxel size in mm along x, y, z (anisotropic voxels give an ellipsoid
        in voxel units).

    Returns
    -------
    ndarray of bool, shape (x, y, z)
        The voxels whose whole ball (centres within ``radius_mm``, boundary
        included) lies inside the mask; voxels outside the array count as
        outside the mask.

    Notes
    -----
    Equivalent to :func:`scipy.ndimage.binary_erosion` with the structuring
    element ``{d : Σ_i (d_i Δ_i)² ≤ r²}`` and ``border_value=0``, computed with
    the exact Euclidean distance transform
    (:func:`scipy.ndimage.distance_transform_edt` with ``sampling`` = voxel
    size) when the element has more than 64 voxels, so the cost does not grow
    with the radius; only the mask's bounding box is processed. A CuPy mask is
    eroded on its device (:mod:`cupyx.scipy.ndimage`) and comes back as CuPy.
    """
    xp = get_array_module(mask)
    m = xp.asarray(mask)
    if m.ndim != 3:
        raise ShapeMismatchError(f"mask must be 3-D (x, y, z), got shape {m.shape}")
    if isinstance(radius_mm, bool) or not isinstance(radius_mm, numbers.Real) or not np.isfinite(radius_mm):
        raise InvalidParameterError(f"radius_mm must be a non-negative number (mm), got {radius_mm!r}")
    if radius_mm < 0:
        raise InvalidParameterError(f"radius_mm must be a non-negative number (mm), got {radius_mm!r}")
    vox = normalize_voxel_size(voxel_size_mm, 3)
    m = m.astype(bool, copy=False)
    if radius_mm == 0:
        return m.copy()
    return _ball_erode(m, [float(radius_mm) / v for v in vox])


def mask_from_magnitude(
    magnitude, *, threshold=None, fill_holes=True, erode_voxels=1, largest_component=True
):
    """Object (brain) mask from a magnitude image.

    Parameters
    ----------
    magnitude : ndarray, real, shape (x, y, z) or (echo, x, y, z)
        A 4-D (echo-first) magnitude is combined by root-sum-of-squares over
        the echoes (the SNR-optimal combination for equal noise per echo).
    threshold : None or float in (0, 1)
        None (default): Otsu's threshold of the (combined) magnitude.
        A float: that fraction of the 99.9th percentile of the magnitude
        (robust to a few bright voxels).
    fill_holes : bool
        Fill enclosed holes (e.g. dark ventricles, sinuses) in the mask.
    erode_voxels : int ≥ 0
        Erode the result by a ball of this radius in voxels (1: the 6-neighbour
        cross). Erosion removes the unreliable phase at the object's edge.
    largest_component : bool
        Keep only the largest 6-connected component (drops noise specks and
        detached structures).

    Returns
    -------
    ndarray of bool, shape (x, y, z)

    Raises
    ------
    InvalidParameterError
        Non-finite or constant magnitude, a threshold outside (0, 1), a bad
        ``erode_voxels``, or an empty mask (nothing above the threshold, or
        nothing left after erosion).

    Notes
    -----
    Steps, in order: ``magnitude > threshold``; largest connected component
    (:func:`scipy.ndimage.label`, 6-connectivity); hole filling
    (:func:`scipy.ndimage.binary_fill_holes`); erosion by a ball of radius
    ``erode_voxels`` voxels (see :func:`erode`; voxels outside the array count
    as background). Otsu's threshold maximises the between-class variance of
    the 256-bin histogram (:func:`skimage.filters.threshold_otsu`).

    A CuPy magnitude runs on its device with :mod:`cupyx.scipy.ndimage` and
    the same Otsu algorithm (the 256 histogram counts are the only data that
    come back to the host); the mask is returned as a CuPy array.

    References
    ----------
    Otsu N. A threshold selection method from gray-level histograms.
    IEEE Trans Syst Man Cybern 1979;9:62-66.
    """
    m = _combine_echoes(_check_magnitude(magnitude))
    xp = get_array_module(m)
    ndi = ndimage(xp)
    if isinstance(erode_voxels, bool) or not isinstance(erode_voxels, numbers.Integral) or erode_voxels < 0:
        raise InvalidParameterError(f"erode_voxels must be a non-negative integer, got {erode_voxels!r}")
    lo, hi = float(m.min()), float(m.max())
    if not hi > lo:
        raise InvalidParameterError(f"magnitude is constant ({hi:g}): no object to mask")
    if threshold is None:
        thr = _otsu_threshold(m)
        how = f"Otsu's threshold {thr:g}"
    else:
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not np.isfinite(threshold)
            or not 0 < threshold < 1
        ):
            raise InvalidParameterError(
                f"threshold must be None (Otsu) or a fraction in (0, 1) of the 99.9th percentile, got {threshold!r}"
            )
        thr = float(threshold) * float(xp.percentile(m, 99.9))
        how = f"threshold {thr:g} ({threshold:g} of the 99.9th percentile)"
    mask = m > thr
    if not bool(mask.any()):
        raise InvalidParameterError(f"no voxel above the {how}; lower the threshold")
    if largest_component:
        labels, n = ndi.label(mask)
        n = int(n)
        if n > 1:
            sizes = xp.bincount(labels.reshape(-1), minlength=n + 1)
            sizes[0] = 0
            mask = labels == int(xp.argmax(sizes))
        del labels
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    if erode_voxels:
        mask = _ball_erode(mask, [float(erode_voxels)] * 3)
        if not bool(mask.any()):
            raise InvalidParameterError(
                f"eroding by {erode_voxels} voxels removed the whole mask; use a smaller erode_voxels"
            )
    return mask
