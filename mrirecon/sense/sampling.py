"""Cartesian sampling patterns for parallel imaging, and their detection.

Conventions (shared by all of :mod:`mrirecon.sense`): a sampling mask has the
*spatial* shape of the k-space it describes, ``(n0, n1)`` for a slice or
``(n0, n1, n2)`` for a volume, and is boolean. The phase-encoding axes are the
leading spatial axes: 1-D acceleration ``R`` acts along axis 0, 2-D acceleration
``Ry x Rz`` along axes 0 and 1; the last axis is the readout, always fully
sampled, so every mask is constant along it.

Index ``k`` along an axis of ``n`` samples is k-space position ``k - n // 2``
(the layout of :func:`mrirecon.fft.fftc`): the centre of k-space is index
``n // 2``. A centred block of ``a`` lines covers indices
``[n // 2 - a // 2, n // 2 - a // 2 + a)``.

Devices: the mask generators make masks from shapes and return NumPy arrays
(the functions of :mod:`mrirecon.sense` move a NumPy mask to their data's
device). :func:`detect_pattern` also takes CuPy masks and k-space: it reduces
them to the phase-encoding positions on the GPU and reads that small array on
the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..device import get_array_module, to_numpy
from ..errors import InvalidParameterError, ShapeMismatchError

__all__ = [
    "Pattern",
    "caipi_mask",
    "detect_pattern",
    "uniform_mask",
    "variable_density_mask",
]


# --------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------
def _spatial_shape(shape, *, ndims=(2, 3), what="shape") -> tuple[int, ...]:
    try:
        dims = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        dims = ()
    if len(dims) not in ndims or any(n < 1 for n in dims):
        want = " or ".join(f"{d}" for d in ndims)
        raise InvalidParameterError(
            f"{what} must be {want} positive integers (the spatial k-space shape), got {shape!r}"
        )
    return dims


def _positive_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _nonneg_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidParameterError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def _centred_block(n: int, a: int) -> slice:
    start = n // 2 - a // 2
    return slice(start, start + a)


def _check_acs(a: int, n: int, name: str) -> int:
    if a > n:
        raise InvalidParameterError(f"{name}={a} exceeds the {n} lines along its axis")
    return a


# --------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------
def uniform_mask(shape, accel, *, acs=0, offset=0) -> np.ndarray:
    """Uniform 1-D undersampling along spatial axis 0, with a centred ACS block.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape ``(n0, n1)`` or ``(n0, n1, n2)``; axis 0 is phase-encoded.
    accel : int
        Acceleration ``R >= 1``; must divide ``n0``.
    acs : int, optional
        Number of fully sampled autocalibration lines: the centred block of
        indices ``[n0 // 2 - acs // 2, n0 // 2 - acs // 2 + acs)`` (default 0).
    offset : int, optional
        Index of the first sampled line, ``0 <= offset < R`` (default 0).

    Returns
    -------
    ndarray of bool, shape ``shape``
        True on lines ``offset, offset + R, ...`` along axis 0 and on the ACS
        block; constant along every other axis.

    Raises
    ------
    InvalidParameterError
        If ``R`` does not divide ``n0``, or an argument is out of range.
    """
    dims = _spatial_shape(shape)
    r = _positive_int(accel, "accel")
    n0 = dims[0]
    if n0 % r:
        raise InvalidParameterError(f"R={r} does not divide {n0} phase-encoding lines")
    offset = _nonneg_int(offset, "offset")
    if offset >= r:
        raise InvalidParameterError(f"offset must satisfy 0 <= offset < R={r}, got {offset}")
    acs = _check_acs(_nonneg_int(acs, "acs"), n0, "acs")
    lines = np.zeros(n0, dtype=bool)
    lines[offset::r] = True
    lines[_centred_block(n0, acs)] = True
    return np.broadcast_to(lines.reshape((n0,) + (1,) * (len(dims) - 1)), dims).copy()


def _pair(value, name: str, *, positive: bool) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a pair of integers, got {value!r}") from None
    check = _positive_int if positive else _nonneg_int
    return check(a, f"{name}[0]"), check(b, f"{name}[1]")


def caipi_mask(shape, accel, *, shift=None, acs=(0, 0)) -> np.ndarray:
    """2-D (CAIPIRINHA) undersampling over the two phase-encoding axes of a volume.

    Parameters
    ----------
    shape : tuple of 3 int
        Spatial shape ``(n0, n1, n2)``: axes 0 and 1 are phase-encoded, axis 2 is
        the readout.
    accel : pair of int
        ``(ry, rz)``: acceleration along axis 0 and axis 1 (total ``ry * rz``).
        ``ry`` must divide ``n0`` and ``rz`` must divide ``n1``.
    shift : int, optional
        CAIPIRINHA shift ``0 <= shift < ry`` (default 1 if ``ry > 1`` else 0).
    acs : pair of int, optional
        Size ``(a0, a1)`` of the centred, fully sampled calibration block in the
        phase-encoding plane (each axis as in :func:`uniform_mask`; default none).

    Returns
    -------
    ndarray of bool, shape ``shape``
        True at ``(k0, k1)`` with ``k1 % rz == 0`` and
        ``k0 % ry == (shift * (k1 // rz)) % ry``, and on the ACS block; constant
        along axis 2.

    Raises
    ------
    InvalidParameterError
        If a size does not divide its axis, the shift is out of range, or the
        pattern does not wrap periodically (``shift * n1 / rz`` must be a
        multiple of ``ry``, so that the aliasing is a clean fold of
        ``ry * rz`` pixels).
    """
    dims = _spatial_shape(shape, ndims=(3,), what="shape (n0, n1, n2) of a volume")
    ry, rz = _pair(accel, "accel", positive=True)
    n0, n1 = dims[0], dims[1]
    if n0 % ry:
        raise InvalidParameterError(f"Ry={ry} does not divide {n0} phase-encoding lines along axis 0")
    if n1 % rz:
        raise InvalidParameterError(f"Rz={rz} does not divide {n1} phase-encoding lines along axis 1")
    if shift is None:
        shift = 1 if ry > 1 else 0
    shift = _nonneg_int(shift, "shift")
    if shift >= max(ry, 1) and not (ry == 1 and shift == 0):
        raise InvalidParameterError(f"shift must satisfy 0 <= shift < Ry={ry}, got {shift}")
    if (shift * (n1 // rz)) % ry:
        raise InvalidParameterError(
            f"CAIPI shift {shift} with Ry={ry}, Rz={rz} does not wrap periodically over "
            f"{n1} lines along axis 1 (shift * n1 / Rz must be a multiple of Ry)"
        )
    a0, a1 = _pair(acs, "acs", positive=False)
    _check_acs(a0, n0, "acs[0]")
    _check_acs(a1, n1, "acs[1]")
    k0 = np.arange(n0)[:, None]
    k1 = np.arange(n1)[None, :]
    plane = (k1 % rz == 0) & (k0 % ry == (shift * (k1 // rz)) % ry)
    plane[_centred_block(n0, a0), _centred_block(n1, a1)] = True
    return np.broadcast_to(plane[:, :, None], dims).copy()


def variable_density_mask(shape, accel, *, acs=24, seed=0, power=2.0) -> np.ndarray:
    """Random variable-density undersampling with a centred ACS block.

    For a slice ``(n0, n1)`` whole lines along axis 0 are drawn; for a volume
    ``(n0, n1, n2)`` points of the phase-encoding plane (axes 0 and 1). Either way
    the mask is constant along the readout (last axis).

    Parameters
    ----------
    shape : tuple of int
        Spatial shape.
    accel : float
        Target acceleration (> 1 allowed fractional). Exactly
        ``round(N / accel)`` phase-encoding positions are sampled, ``N`` being
        ``n0`` (slice) or ``n0 * n1`` (volume).
    acs : int or pair of int, optional
        Centred fully sampled block: ``acs`` lines (slice), or ``acs x acs`` (an
        int) / ``a0 x a1`` (a pair) points (volume). Default 24.
    seed : int, optional
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same mask.
    power : float, optional
        Density exponent: outside the ACS block, positions are drawn without
        replacement with probability proportional to ``(1 - |k| / kmax) ** power``,
        where ``k`` is the position relative to the centre in units of each
        axis's half width (``(k_i - n_i // 2) / (n_i / 2)``) and ``kmax`` is
        slightly larger than the largest ``|k|`` on the grid (every position
        keeps a nonzero probability).

    Returns
    -------
    ndarray of bool, shape ``shape``

    Raises
    ------
    InvalidParameterError
        If ``accel < 1``, the ACS block alone exceeds the sample budget, or an
        argument is malformed.
    """
    dims = _spatial_shape(shape)
    try:
        accel = float(accel)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"accel must be a number >= 1, got {accel!r}") from None
    if not math.isfinite(accel) or accel < 1:
        raise InvalidParameterError(f"accel must be a number >= 1, got {accel!r}")
    try:
        power = float(power)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"power must be a number >= 0, got {power!r}") from None
    if not math.isfinite(power) or power < 0:
        raise InvalidParameterError(f"power must be a number >= 0, got {power!r}")
    pe = dims[:1] if len(dims) == 2 else dims[:2]
    if len(pe) == 1:
        acs_sizes = (_check_acs(_nonneg_int(acs, "acs"), pe[0], "acs"),)
    else:
        a0, a1 = _pair(acs, "acs", positive=False)
        acs_sizes = (_check_acs(a0, pe[0], "acs[0]"), _check_acs(a1, pe[1], "acs[1]"))
    n_total = int(np.prod(pe))
    n_target = max(1, int(round(n_total / accel)))
    plane = np.zeros(pe, dtype=bool)
    plane[tuple(_centred_block(n, a) for n, a in zip(pe, acs_sizes))] = True
    n_acs = int(plane.sum())
    if n_acs > n_target:
        raise InvalidParameterError(
            f"the ACS block ({n_acs} positions) exceeds the {n_target} positions that "
            f"accel={accel:g} allows out of {n_total}; use a smaller acs or accel"
        )
    grids = np.meshgrid(*[(np.arange(n) - n // 2) / (n / 2.0) for n in pe], indexing="ij")
    radius = np.sqrt(sum(g**2 for g in grids)).ravel()
    kmax = radius.max() * (1.0 + 1.0 / max(pe)) + 1e-12
    weight = (1.0 - radius / kmax) ** power
    candidates = np.flatnonzero(~plane.ravel())
    n_draw = n_target - n_acs
    if n_draw > 0:
        rng = np.random.default_rng(seed)
        p = weight[candidates]
        chosen = rng.choice(candidates, size=n_draw, replace=False, p=p / p.sum())
        plane.ravel()[chosen] = True
    shape_b = pe + (1,) * (len(dims) - len(pe))
    return np.broadcast_to(plane.reshape(shape_b), dims).copy()


# --------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """A detected Cartesian sampling pattern (see :func:`detect_pattern`).

    Attributes
    ----------
    accel : int or tuple of int or float
        ``R`` (1-D pattern along axis 0), ``(ry, rz)`` (2-D pattern over axes 0
        and 1), or for ``kind == "irregular"`` the effective acceleration
        (phase-encoding positions / sampled positions), a float.
    offset : int or tuple of int
        Index of the first regular line along axis 0 (1-D), or ``(o0, o1)``: the
        regular positions are ``k1 = o1 (mod rz)`` and
        ``k0 = o0 + shift * ((k1 - o1) // rz) (mod ry)`` (2-D). 0 when irregular.
    acs_lines : int or tuple of int
        Size of the fully sampled block around the k-space centre (``(a0, a1)``
        for 2-D patterns); 0 when there is none.
    kind : str
        ``"uniform"`` (1-D regular), ``"caipi"`` (2-D lattice, any shift,
        including 0), ``"irregular"`` (no regular spacing) or ``"full"``.
    shift : int
        CAIPIRINHA shift of a 2-D pattern (0 otherwise).
    acs_start : int or tuple of int
        First index of the ACS block along axis 0 (or along axes 0 and 1).
    """

    accel: int | tuple[int, int] | float
    offset: int | tuple[int, int]
    acs_lines: int | tuple[int, int]
    kind: str
    shift: int = 0
    acs_start: int | tuple[int, int] = 0


def _run_around(values: np.ndarray, centre: int) -> tuple[int, int]:
    """[start, stop) of the run of True in a 1-D bool array containing ``centre``."""
    if not values[centre]:
        return centre, centre
    false_idx = np.flatnonzero(~values)
    left = false_idx[false_idx < centre]
    right = false_idx[false_idx > centre]
    start = int(left[-1]) + 1 if left.size else 0
    stop = int(right[0]) if right.size else values.size
    return start, stop


def _sampled_positions(x) -> np.ndarray:
    """Bool sampling of the phase-encoding positions: (n0,) for a slice, (n0, n1) for a volume.

    Reduced in the array's own module; the result is always a NumPy array.
    """
    xp = get_array_module(x)
    arr = xp.asarray(x)
    if arr.dtype == bool:
        if arr.ndim not in (2, 3):
            raise ShapeMismatchError(
                f"a sampling mask must have the spatial shape (n0, n1) or (n0, n1, n2), got {arr.shape}"
            )
        sampled = arr
    else:
        if arr.ndim not in (3, 4):
            raise ShapeMismatchError(
                "k-space must have the shape (coil, n0, n1) or (coil, n0, n1, n2) "
                f"(a bool array is read as a mask), got {arr.shape}"
            )
        sampled = xp.any(arr != 0, axis=0)
    return to_numpy(xp.any(sampled, axis=-1))


def _detect_1d(lines: np.ndarray) -> Pattern:
    n0 = lines.size
    n_sampled = int(lines.sum())
    if n_sampled == n0:
        return Pattern(accel=1, offset=0, acs_lines=n0, kind="full", acs_start=0)
    start, stop = _run_around(lines, n0 // 2)
    outside = lines.copy()
    outside[start:stop] = False
    pos = np.flatnonzero(outside)
    regular = None
    if pos.size >= 2:
        r = int(np.gcd.reduce(np.diff(pos)))
        off = int(pos[0] % r)
        expected = np.zeros(n0, dtype=bool)
        expected[off::r] = True
        expected[start:stop] = False
        if r > 1 and np.array_equal(expected, outside):
            regular = (r, off)
    if regular is None:
        return Pattern(
            accel=n0 / n_sampled, offset=0, acs_lines=stop - start, kind="irregular", acs_start=start
        )
    r, off = regular
    if stop - start == 1 and start % r == off:
        start = stop = n0 // 2  # a lone lattice line at the centre is no ACS block
    return Pattern(accel=r, offset=off, acs_lines=stop - start, kind="uniform", acs_start=start)


def _grow_block(plane: np.ndarray, s0: int, e0: int, s1: int, e1: int) -> tuple[int, int, int, int]:
    """Grow a fully sampled rectangle by whole sampled rows/columns on each side (loop over lines)."""
    n0, n1 = plane.shape
    changed = True
    while changed:
        changed = False
        if s0 > 0 and plane[s0 - 1, s1:e1].all():
            s0, changed = s0 - 1, True
        if e0 < n0 and plane[e0, s1:e1].all():
            e0, changed = e0 + 1, True
        if s1 > 0 and plane[s0:e0, s1 - 1].all():
            s1, changed = s1 - 1, True
        if e1 < n1 and plane[s0:e0, e1].all():
            e1, changed = e1 + 1, True
    return s0, e0, s1, e1


def _lattice(shape, ry, rz, shift, o0, o1) -> np.ndarray:
    k0 = np.arange(shape[0])[:, None]
    k1 = np.arange(shape[1])[None, :]
    on_col = (k1 - o1) % rz == 0
    return on_col & ((k0 - o0 - shift * ((k1 - o1) // rz)) % ry == 0)


def _fit_lattice(points: np.ndarray, n0: int):
    """(ry, rz, shift, o0, o1) of the lattice spanned by the True points of ``points``, or None."""
    rows, cols = np.nonzero(points)
    if rows.size < 2:
        return None
    ucols = np.unique(cols)
    rz = int(np.gcd.reduce(np.diff(ucols))) if ucols.size >= 2 else points.shape[1]
    o1 = int(ucols[0] % rz)
    order = np.lexsort((rows, cols))
    r_s, c_s = rows[order], cols[order]
    same = c_s[1:] == c_s[:-1]
    diffs = (r_s[1:] - r_s[:-1])[same]
    ry = math.gcd(int(np.gcd.reduce(diffs)), n0) if diffs.size else n0
    col_m = (cols - o1) // rz
    m0 = int(col_m.min())
    o_first = int(rows[col_m == m0][0] % ry)
    nxt = rows[col_m == m0 + 1]
    shift = int((nxt[0] % ry - o_first) % ry) if nxt.size else 0
    o0 = int((o_first - shift * m0) % ry)
    return ry, rz, shift, o0, o1


def _detect_2d(plane: np.ndarray) -> Pattern:
    n0, n1 = plane.shape
    c0, c1 = n0 // 2, n1 // 2
    n_sampled = int(plane.sum())
    if n_sampled == plane.size:
        return Pattern(accel=(1, 1), offset=(0, 0), acs_lines=(n0, n1), kind="caipi", acs_start=(0, 0))
    # an upper bound of the ACS block: the sampled runs through the centre row and column
    s1, e1 = _run_around(plane[c0], c1)
    s0, e0 = _run_around(plane[:, c1], c0)
    outside = plane.copy()
    outside[s0:e0, s1:e1] = False
    fit = _fit_lattice(outside, n0)
    if fit is not None:
        ry, rz, shift, o0, o1 = fit
        lattice = _lattice(plane.shape, ry, rz, shift, o0, o1)
        extra = plane & ~lattice
        if extra.any():
            r_idx, c_idx = np.nonzero(extra)
            b = _grow_block(
                plane, int(r_idx.min()), int(r_idx.max()) + 1, int(c_idx.min()), int(c_idx.max()) + 1
            )
        else:
            b = (c0, c0, c1, c1)
        block = np.zeros_like(plane)
        block[b[0] : b[1], b[2] : b[3]] = True
        if ry * rz > 1 and np.array_equal(plane, lattice | block):
            return Pattern(
                accel=(ry, rz),
                offset=(o0, o1),
                acs_lines=(b[1] - b[0], b[3] - b[2]),
                kind="caipi",
                shift=shift,
                acs_start=(b[0], b[2]),
            )
    # irregular: report the largest fully sampled block around the centre, if any
    if plane[c0, c1]:
        b = _grow_block(plane, c0, c0 + 1, c1, c1 + 1)
    else:
        b = (c0, c0, c1, c1)
    return Pattern(
        accel=plane.size / n_sampled,
        offset=(0, 0),
        acs_lines=(b[1] - b[0], b[3] - b[2]),
        kind="irregular",
        acs_start=(b[0], b[2]),
    )


def detect_pattern(mask_or_kspace) -> Pattern:
    """Detect the Cartesian sampling pattern of a mask or of zero-filled k-space.

    Parameters
    ----------
    mask_or_kspace : ndarray
        A **bool** mask of the spatial shape ``(n0, n1)`` / ``(n0, n1, n2)``, or
        k-space ``(coil, n0, n1)`` / ``(coil, n0, n1, n2)`` with zeros at the
        unsampled positions (any non-bool array is read as k-space). A
        phase-encoding position counts as sampled if any coil or readout sample
        there is nonzero (or True). NumPy or CuPy: a CuPy array is reduced on
        the GPU to the phase-encoding positions, which are read on the host.

    Returns
    -------
    Pattern
        For a slice, or a volume whose phase-encoding plane is constant along
        axis 1, a 1-D pattern along axis 0: the ACS block is the run of
        consecutive sampled lines containing the centre line ``n0 // 2`` (the
        largest block consistent with the mask: a regular line touching the
        block counts as ACS), and the lines outside it must be exactly
        ``offset, offset + R, ...`` for ``kind == "uniform"``. For a volume, a
        2-D pattern: the ACS block is the largest fully sampled rectangle
        around the centre grown from the centre row and column, and the points
        outside it must form the lattice described in :class:`Pattern`
        (``kind == "caipi"``). Otherwise ``kind == "irregular"`` with the
        effective acceleration; everything sampled gives ``kind == "full"``
        (``accel == 1``; for a volume sampled everywhere ``"caipi"`` with
        ``(1, 1)``).

    Raises
    ------
    InvalidParameterError
        If nothing is sampled ("no sampled k-space line").
    ShapeMismatchError
        If the array has the wrong number of dimensions.
    """
    pe = _sampled_positions(mask_or_kspace)
    if not pe.any():
        raise InvalidParameterError("no sampled k-space line")
    if pe.ndim == 1:
        return _detect_1d(pe)
    rows_const = np.all(pe == pe[:, :1], axis=1)
    if rows_const.all():
        p = _detect_1d(pe[:, 0])
        if p.kind == "full":
            return _detect_2d(pe)
        return p
    return _detect_2d(pe)
