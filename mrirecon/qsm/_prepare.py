"""Input checks and padding shared by the QSM inversions."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from .._parallel import elementwise, fused
from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import get_array_module
from ..kspace import normalize_direction, normalize_voxel_size


@dataclass
class Prepared:
    """A validated (and possibly zero-padded) field with its mask."""

    field: object  # real array, float32 or float64, on the input's device
    mask: object  # bool array of the same shape, or None
    shape: tuple  # the original shape
    user_mask: object  # the mask at the original shape, or None
    voxel_size_mm: tuple
    b0_dir: tuple

    def crop(self, x):
        """Cut a padded result back to the original shape."""
        if x.shape == self.shape:
            return x
        return x[tuple(slice(0, n) for n in self.shape)].copy()


def check_reference(reference) -> None:
    if reference is not None and reference != "mask_mean":
        raise InvalidParameterError(f"reference must be 'mask_mean' or None, got {reference!r}")


def finish(prep: Prepared, chi, reference):
    """Crop to the original shape and subtract the reference value.

    ``chi`` is already zero outside the mask, so the mask mean is its sum over
    the voxel count, and the subtraction is restricted to the mask.
    """
    chi = prep.crop(chi)
    if reference == "mask_mean":
        xp = get_array_module(chi)
        m = prep.user_mask
        if m is None:
            mean = chi.mean(dtype=xp.float64).astype(chi.dtype)
        else:
            mean = (chi.sum(dtype=xp.float64) / xp.count_nonzero(m)).astype(chi.dtype)
        if xp is not np:  # stays on the device: a 0-d array, no host round trip
            if m is None:
                chi -= mean
            else:
                from ..fft import _cupy_kernels

                _cupy_kernels()["centre"](mean, m, chi)
        elif m is None:
            elementwise(np.subtract, chi, chi, chi.dtype.type(mean))
        else:
            mean = chi.dtype.type(mean)

            def centre(o, c, mm):
                np.subtract(c, mean, out=o)
                o *= mm

            fused(centre, chi, chi, m)
    return chi


def filter_checked(prep: Prepared, kernel, *, spectrum=None):
    """``real_filter`` of the prepared field, with the NaN/Inf check.

    A NaN or Inf anywhere in the transformed input makes every output voxel
    non-finite, so one output voxel tells whether the input was clean; the
    full diagnosis (and zeroing of non-finite values outside the mask) runs
    only then.
    """
    from ..fft import real_filter

    out = real_filter(prep.field, kernel, mask=prep.mask, spectrum=spectrum)
    if not bool(get_array_module(out).isfinite(out.reshape(-1)[0])):
        if not check_finite_or_sanitize(prep):
            raise InvalidParameterError("the reconstruction is not finite; check the field and parameters")
        out = real_filter(prep.field, kernel, mask=prep.mask)
    return out


def real_dtype(x):
    return np.float64 if x.dtype == np.float64 else np.float32


def check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not np.isfinite(lam) or lam <= 0:
        raise InvalidParameterError(f"lam must be a positive finite number (or 'auto'), got {lam!r}")
    return float(lam)


def padded_shape(shape, pad) -> tuple[int, ...]:
    """Shape after adding ``pad`` voxels per axis, rounded up to FFT-friendly sizes."""
    from ..fft import next_fast_len

    if isinstance(pad, int) and not isinstance(pad, bool) and pad == 0:
        return tuple(shape)
    p = np.atleast_1d(np.asarray(pad))
    if p.size == 1:
        p = np.repeat(p, len(shape))
    if p.shape != (len(shape),) or not np.issubdtype(p.dtype, np.integer) or np.any(p < 0):
        raise InvalidParameterError(f"pad must be a non-negative integer or 3 of them (voxels), got {pad!r}")
    if not np.any(p):
        return tuple(shape)
    return tuple(int(next_fast_len(int(n + q))) for n, q in zip(shape, p, strict=True))


def prepare(field, mask, *, voxel_size_mm, b0_dir, pad) -> Prepared:
    """Validate the inputs; zero outside the mask; pad if asked."""
    xp = get_array_module(field)
    field = xp.asarray(field)
    if field.ndim != 3:
        raise ShapeMismatchError(f"field must be a 3-D volume (x, y, z), got shape {field.shape}")
    if xp.iscomplexobj(field):
        raise InvalidParameterError("field must be real (a field map in ppm), got a complex array")
    field = field.astype(real_dtype(field), copy=False)
    if mask is not None:
        mask = xp.asarray(mask)
        if mask.shape != field.shape:
            raise ShapeMismatchError(f"mask shape {mask.shape} does not match field shape {field.shape}")
        mask = mask.astype(bool, copy=False)
        if not bool(mask.any()):
            raise InvalidParameterError("mask is empty: it must select at least one voxel")
    vox = normalize_voxel_size(voxel_size_mm, 3)
    b = normalize_direction(b0_dir)
    shape = tuple(field.shape)
    user_mask = mask
    pshape = padded_shape(shape, pad)
    if pshape != shape:
        region = tuple(slice(0, n) for n in shape)
        big = xp.zeros(pshape, dtype=field.dtype)
        big[region] = field if mask is None else xp.where(mask, field, 0)
        if mask is not None:
            bigmask = xp.zeros(pshape, dtype=bool)
            bigmask[region] = mask
            mask = bigmask
        field = big
    return Prepared(field, mask, shape, user_mask, vox, b)


def check_finite_or_sanitize(prep: Prepared) -> bool:
    """Raise if the field is not finite inside the mask; zero non-finite values outside.

    Returns True when the field had to be changed (a slow path, taken only
    after a result came out non-finite).
    """
    xp = get_array_module(prep.field)
    bad = ~xp.isfinite(prep.field)
    if prep.mask is None:
        if bool(bad.any()):
            raise InvalidParameterError(
                f"field has {int(bad.sum())} NaN/Inf voxels; give a mask that excludes them"
            )
        return False
    inside = int((bad & prep.mask).sum())
    if inside:
        raise InvalidParameterError(f"field has {inside} NaN/Inf voxels inside the mask")
    if bool(bad.any()):
        prep.field = xp.where(prep.mask, prep.field, 0)
        return True
    return False
