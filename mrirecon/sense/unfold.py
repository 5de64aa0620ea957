"""Closed-form Tikhonov SENSE unfolding of uniformly undersampled Cartesian k-space, and g-factors.

Uniform undersampling by R (1-D, along spatial axis 0) or Ry×Rz (2-D, along
spatial axes 0 and 1, optionally with a CAIPIRINHA shift) folds R pixels of
the image onto one pixel of a grid R times smaller. The objective

    min_x ‖M F S x − y‖² + λ‖x‖²

then splits into one R-unknown least-squares problem per folded pixel, solved
here for all pixels at once as batched R×R systems: one inverse FFT per coil on
the reduced grid and one batched matrix-vector product per call.

The sampling lattice (the contract with :mod:`mrirecon.sense`): k-space array
index ``k0`` along spatial axis 0 is sampled when ``k0 % Ry == o0``; for 2-D
acceleration, in sampled row number ``q = (k0 - o0) // Ry``, index ``k1`` along
spatial axis 1 is sampled when ``k1 % Rz == (o1 + shift·q) % Rz``. Indices are
array indices of the centred k-space (DC at ``n // 2``).

Devices: everything here follows the coil maps' array module. NumPy maps
factorise and unfold on the CPU; CuPy maps factorise (batched cuSOLVER/cuBLAS)
and unfold (cuFFT) on the GPU, and k-space must then be a CuPy array too. The
lattice geometry (index tables, a few integers) is computed on the host and
copied to the device once per unfolder; a CuPy sampling mask whose lattice is
to be inferred is read on the host (a spatial-size bool array).
"""

from __future__ import annotations

import collections
import threading
import weakref

import numpy as np

from ..device import get_array_module, to_numpy
from ..errors import InvalidParameterError, ShapeMismatchError
from ..fft import ifftn
from .operator import check_kspace_values, check_mask, check_sens, common_module

__all__ = ["SenseUnfolder", "gfactor", "gfactor_pseudo_replica", "lattice_mask", "unfold"]

_CACHE_SIZE = 4
_cache: collections.OrderedDict = collections.OrderedDict()
_cache_lock = threading.Lock()


# --------------------------------------------------------------------------
# sampling lattice
# --------------------------------------------------------------------------
def _as_int(value, what) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _parse_lattice(spatial, accel, offset, shift):
    """Validate ``accel``/``offset``/``shift`` against ``spatial``; return (ry, rz, o0, o1, shift)."""
    spatial = tuple(int(n) for n in spatial)
    if np.ndim(accel) == 0:
        accel = (accel,)
    accel = tuple(accel)
    if len(accel) not in (1, 2):
        raise InvalidParameterError(f"accel must be R or (Ry, Rz), got {accel!r}")
    accel = tuple(_as_int(a, "accel") for a in accel)
    if min(accel) < 1:
        raise InvalidParameterError(f"acceleration factors must be >= 1, got {accel!r}")
    ry, rz = accel if len(accel) == 2 else (accel[0], 1)
    offset = 0 if offset is None else offset
    if np.ndim(offset) == 0:
        offset = (offset, 0)
    offset = tuple(offset)
    if len(offset) not in (1, 2):
        raise InvalidParameterError(f"offset must be o or (o0, o1), got {offset!r}")
    offset = tuple(_as_int(o, "offset") for o in offset) + ((0,) if len(offset) == 1 else ())
    o0, o1 = offset
    shift = _as_int(0 if shift is None else shift, "shift")
    if spatial[0] % ry:
        raise InvalidParameterError(
            f"acceleration Ry={ry} must divide the size {spatial[0]} of spatial axis 0 (phase encoding)"
        )
    if not 0 <= o0 < ry:
        raise InvalidParameterError(f"offset along axis 0 must be in [0, {ry}), got {o0}")
    if rz > 1:
        if len(spatial) < 2:
            raise InvalidParameterError("2-D acceleration needs at least two spatial axes")
        if spatial[1] % rz:
            raise InvalidParameterError(
                f"acceleration Rz={rz} must divide the size {spatial[1]} of spatial axis 1 (phase encoding)"
            )
        if not 0 <= o1 < rz:
            raise InvalidParameterError(f"offset along axis 1 must be in [0, {rz}), got {o1}")
        if (shift * (spatial[0] // ry)) % rz:
            raise InvalidParameterError(
                f"CAIPI shift {shift} is not periodic over k-space: shift·n0/Ry = "
                f"{shift * (spatial[0] // ry)} must be a multiple of Rz={rz}"
            )
        shift %= rz
    else:
        if o1 != 0:
            raise InvalidParameterError(f"offset along axis 1 must be 0 for 1-D acceleration, got {o1}")
        shift = 0
    return ry, rz, o0, o1, shift


def lattice_mask(shape, accel, *, offset=0, shift=0):
    """Boolean mask of the uniform (or CAIPI) sampling lattice used by :func:`unfold`.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape (2-D or 3-D).
    accel : int or (int, int)
        R along spatial axis 0, or (Ry, Rz) along spatial axes 0 and 1.
    offset : int or (int, int)
        First sampled index along axis 0 (and axis 1).
    shift : int
        CAIPI shift: each sampled row along axis 0 moves the axis-1 pattern by ``shift``.

    Returns
    -------
    ndarray of bool, shape ``shape`` (constant along the remaining, readout axes).
    """
    ry, rz, o0, o1, shift = _parse_lattice(shape, accel, offset, shift)
    shape = tuple(int(n) for n in shape)
    k0 = np.arange(shape[0])
    rows = (k0 % ry) == o0
    mask = np.zeros(shape[:2], dtype=bool)
    if rz == 1:
        mask[rows, :] = True
    else:
        q = (k0 - o0) // ry
        k1 = np.arange(shape[1])
        mask = rows[:, None] & ((k1[None, :] % rz) == ((o1 + shift * q[:, None]) % rz))
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (len(shape) - 2)), shape).copy()


def _infer_lattice(mask):
    """(accel, offset, shift) of a mask that is exactly a uniform/CAIPI lattice, else an error."""
    mask = to_numpy(mask)
    spatial = mask.shape
    n0 = spatial[0]
    rows = np.flatnonzero(mask.reshape(n0, -1).any(axis=1))
    if rows.size == 0:
        raise InvalidParameterError("sampling is empty: no k-space sample is acquired")
    not_uniform = InvalidParameterError(
        "the sampling pattern is not a uniform (or CAIPI) lattice along the leading spatial axes; "
        "pass accel=/offset= to use the lattice lines only, or use cg_sense for arbitrary sampling"
    )
    ry = int(rows[1] - rows[0]) if rows.size > 1 else n0
    if ry < 1 or n0 % ry or rows.size != n0 // ry:
        raise not_uniform
    o0 = int(rows[0])
    if o0 >= ry:
        raise not_uniform
    sub = mask[rows]
    if len(spatial) > 2:
        sub = sub.any(axis=tuple(range(2, len(spatial))))
    accel, offset, shift = ry, o0, 0
    if not sub.all():
        n1 = spatial[1]
        cols = np.flatnonzero(sub[0])
        rz = int(cols[1] - cols[0]) if cols.size > 1 else n1
        if rz < 1 or n1 % rz or cols.size != n1 // rz or cols[0] >= rz:
            raise not_uniform
        o1 = int(cols[0])
        shift = 0
        if rows.size > 1:
            c1 = np.flatnonzero(sub[1])
            if c1.size == 0:
                raise not_uniform
            shift = int((c1[0] - o1) % rz)
        accel, offset = (ry, rz), (o0, o1)
        if (shift * (n0 // ry)) % rz:
            raise not_uniform
    expected = lattice_mask(spatial, accel, offset=offset, shift=shift)
    if not np.array_equal(expected, mask):
        raise not_uniform
    return accel, offset, shift


# --------------------------------------------------------------------------
# the unfolder
# --------------------------------------------------------------------------
class SenseUnfolder:
    """Closed-form Tikhonov SENSE for fixed coil maps and sampling lattice, factorised once.

    Parameters
    ----------
    sens : ndarray, complex, shape (coil, *spatial)
        Coil maps (after noise prewhitening), spatial 2-D or 3-D. NumPy or CuPy:
        the unfolder lives on the maps' device, and so do its attributes,
        the k-space it takes and the images it returns.
    accel : int or (int, int)
        R along spatial axis 0, or (Ry, Rz) along spatial axes 0 and 1 (CAIPI with ``shift``).
    lam : float
        λ ≥ 0 of the objective (see Notes).
    offset : int or (int, int)
        Index of the first sampled k-space line along axis 0 (and axis 1), in ``[0, R)``.
    shift : int
        CAIPI shift along axis 1 per sampled line along axis 0 (2-D acceleration only);
        ``shift·n0/Ry`` must be a multiple of Rz.
    dtype : complex dtype, optional
        Precision of the result (default: complex128 for complex128/float64 maps, else complex64).
        The factorisation is always computed in double precision.

    Attributes
    ----------
    mask : ndarray of bool, spatial shape
        The sampling lattice (see :func:`lattice_mask`), on the maps' device.
    unmix : ndarray, shape (P, R, coil)
        Per folded pixel, the matrix taking the coil values of the reduced-grid
        images to the R unfolded pixels (P = N / R pixel groups).
    index : ndarray of int, shape (P, R)
        Flat (C-order) spatial index of each unfolded pixel.

    Notes
    -----
    Minimises ``‖M F S x − y‖² + λ‖x‖²`` exactly, with F the centred orthonormal
    FFT over the spatial axes, S the coil maps and M the lattice mask (the λ
    scale of BART ``pics -l2`` and SigPy ``SenseRecon``). Derivation: keep the
    sampled samples on the reduced grid (``n0/Ry × n1/Rz``) and apply the
    unitary inverse DFT there (for CAIPI: along axis 1, a phase
    ``exp(2πi(κ(q) − c1)p1/n1)`` per sampled row q, then along axis 0). Being
    unitary, this keeps the data term's value; each reduced-grid pixel p of
    coil c then reads ``b_c(p) = s Σ_r W_r(p) S_c(j_r) x(j_r)`` with
    ``s = 1/sqrt(R)`` and unit-modulus replica phases ``W_r`` set by the
    sampling offset (``exp(−2πi (o0 − c0) d0 / n0)``, ``d0`` the replica's
    distance to the centre along axis 0, and the analogue along axis 1). Every
    image pixel belongs to exactly one group, so the objective is a sum of
    per-group terms ``‖E_p x_p − b_p‖² + λ‖x_p‖²`` with ``E_p = s S_p W_p``
    (coil × R), whose minimiser is
    ``x_p = (E_pᴴE_p + λI)⁻¹ E_pᴴ b_p = W_pᴴ (s² S_pᴴS_p + λI)⁻¹ s S_pᴴ b_p``.
    The matrices ``(E_pᴴE_p + λI)⁻¹E_pᴴ`` are computed once (batched
    ``inv``; for λ = 0 the batched pseudo-inverse, i.e. the
    minimum-norm least-squares solution where a group is rank deficient, such
    as pixels without coil sensitivity) and stored, so :meth:`__call__` costs one
    FFT per coil on the reduced grid and one batched matrix-vector product.
    K-space samples outside the lattice are ignored. On CuPy, λ = 0 uses
    ``pinv(E_pᴴE_p) E_pᴴ`` (the same minimiser: batched SVDs of R×R matrices
    instead of coil×R ones, which cuSOLVER batches only up to 32 rows).
    """

    def __init__(self, sens, accel, *, lam=0.0, offset=0, shift=0, dtype=None):
        sens = check_sens(sens)
        xp = get_array_module(sens)
        #: the array module (numpy or cupy) of the maps, the data and the results
        self.xp = xp
        lam = _check_lam(lam)
        self.spatial = tuple(sens.shape[1:])
        self.n_coils = int(sens.shape[0])
        self.ry, self.rz, self.o0, self.o1, self.shift = _parse_lattice(self.spatial, accel, offset, shift)
        self.lam = lam
        self.dtype = np.dtype(dtype) if dtype is not None else sens.dtype
        if self.dtype.kind != "c":
            raise InvalidParameterError(f"dtype must be complex, got {self.dtype}")
        self.R = self.ry * self.rz
        self.scale = float(1.0 / np.sqrt(self.R))
        self.mask = xp.asarray(
            lattice_mask(self.spatial, self.accel, offset=(self.o0, self.o1), shift=self.shift)
        )
        self._build_groups()
        enc = self._encoding(sens)  # (P, coil, R), complex128
        normal = xp.einsum("pcr,pcs->prs", enc.conj(), enc)
        enc_h = xp.conj(xp.swapaxes(enc, 1, 2))
        if lam > 0:
            normal += lam * xp.eye(self.R, dtype=normal.dtype)
            inverse = xp.linalg.inv(normal)
            unmix = inverse @ enc_h
        else:
            inverse = _pinv_hermitian(normal)
            unmix = np.linalg.pinv(enc) if xp is np else inverse @ enc_h
        self.unmix = unmix.astype(self.dtype)
        #: per group ``(E_pᴴE_p + λI)⁻¹`` (pseudo-inverse for λ = 0): the inverse of the
        #: lattice's normal operator, block-diagonal in image space (a preconditioner)
        self.normal_inverse = inverse.astype(self.dtype)
        self._enc = None

    def precondition(self, image):
        """Apply ``(A_latᴴA_lat + λI)⁻¹`` to an image ``(..., *spatial)`` (block-diagonal: no FFT)."""
        xp = self.xp
        flat = image.reshape(*image.shape[: image.ndim - len(self.spatial)], -1)
        groups = xp.einsum("prs,...ps->...pr", self.normal_inverse, flat[..., self.index])
        out = xp.empty_like(flat)
        out[..., self.index] = groups
        return out.reshape(image.shape)

    @property
    def accel(self):
        return self.ry if self.rz == 1 else (self.ry, self.rz)

    def __repr__(self):
        return (
            f"SenseUnfolder(spatial={self.spatial}, coils={self.n_coils}, accel={self.accel}, "
            f"offset={(self.o0, self.o1) if self.rz > 1 else self.o0}, shift={self.shift}, lam={self.lam})"
        )

    # ---- geometry -------------------------------------------------------
    def _build_groups(self):
        sp = self.spatial
        n0 = sp[0]
        m0 = n0 // self.ry
        c0 = n0 // 2
        u = np.arange(self.ry)
        if self.rz == 1:
            # reduced grid (m0, n1, ...): axis 0 plain DFT, other axes centred
            p0 = np.arange(m0)[:, None]
            d0 = p0 + m0 * u[None, :]  # (m0, R)
            j0 = (c0 + d0) % n0
            phase = np.exp(-2j * np.pi * (self.o0 - c0) * d0 / n0)
            rest = sp[1:]
            rest_idx = np.arange(int(np.prod(rest)))
            flat = j0[:, None, :] * len(rest_idx) + rest_idx[None, :, None]  # (m0, nrest, R)
            w = np.broadcast_to(phase[:, None, :], flat.shape)
            self.reduced_shape = (m0, *rest)
            self._demod = None
        else:
            n1 = sp[1]
            m1 = n1 // self.rz
            c1 = n1 // 2
            t = np.arange(self.rz)
            p0 = np.arange(m0)[:, None, None, None]
            p1 = np.arange(m1)[None, :, None, None]
            uu = u[None, None, :, None]
            tt = t[None, None, None, :]
            d0 = p0 - (self.shift * m0 * tt) // self.rz + m0 * uu  # (m0, 1, Ry, Rz)
            d1 = p1 + m1 * tt  # (1, m1, 1, Rz)
            j0 = (c0 + d0) % n0
            j1 = (c1 + d1) % n1
            phase = np.exp(-2j * np.pi * (self.o0 - c0) * d0 / n0) * np.exp(
                -2j * np.pi * (self.o1 - c1) * tt / self.rz
            )
            shape4 = (m0, m1, self.ry, self.rz)
            j01 = np.broadcast_to(j0 * n1 + j1, shape4).reshape(m0, m1, self.R)
            ph = np.broadcast_to(phase, shape4).reshape(m0, m1, self.R)
            rest = sp[2:]
            nrest = int(np.prod(rest)) if rest else 1
            rest_idx = np.arange(nrest)
            flat = j01[:, :, None, :] * nrest + rest_idx[None, None, :, None]  # (m0, m1, nrest, R)
            w = np.broadcast_to(ph[:, :, None, :], flat.shape)
            self.reduced_shape = (m0, m1, *rest)
            q0 = np.arange(m0)
            kappa = (self.o1 + self.shift * q0) % self.rz
            pp1 = np.arange(m1)
            demod = np.exp(2j * np.pi * (kappa[:, None] - c1) * pp1[None, :] / n1)  # (m0, m1)
            self._demod = demod.reshape((m0, m1) + (1,) * len(rest))
            self._demod_rows_constant = self.shift == 0
            self._k1 = kappa[:, None] + self.rz * pp1[None, :]  # sampled columns per sampled row
            self._rows = (self.o0 + self.ry * np.arange(m0))[:, None]  # sampled rows
        index = flat.reshape(-1, self.R)
        counts = np.bincount(index.ravel(), minlength=int(np.prod(sp)))
        if counts.size != int(np.prod(sp)) or not np.all(counts == 1):  # pragma: no cover - guarded above
            raise InvalidParameterError("internal error: the aliasing groups do not partition the image")
        # the tables live where the maps live (one host-to-device copy per unfolder)
        xp = self.xp
        self.index = xp.asarray(np.ascontiguousarray(index))
        self._phase = xp.asarray(np.ascontiguousarray(w.reshape(-1, self.R)))
        if self._demod is not None:
            self._demod = xp.asarray(self._demod)
            self._k1 = xp.asarray(self._k1)
            self._rows = xp.asarray(self._rows)

    def _encoding(self, sens):
        """``E_p = s S_p W_p`` for every group: (P, coil, R), complex128."""
        s_flat = sens.reshape(self.n_coils, -1).astype(np.complex128)
        enc = s_flat[:, self.index]  # (coil, P, R)
        enc = self.xp.moveaxis(enc, 0, 1)  # (P, coil, R)
        enc = enc * (self.scale * self._phase)[:, None, :]
        return enc

    # ---- data path ------------------------------------------------------
    def reduce(self, kspace):
        """Reduced-grid coil images ``b`` (``(..., coil, *reduced_shape)``) of zero-filled k-space."""
        nsp = len(self.spatial)
        if self.rz == 1:
            sel = (Ellipsis, slice(self.o0, None, self.ry)) + (slice(None),) * (nsp - 1)
            data = kspace[sel]
            return _unitary_ifft(data, plain=(-nsp,), centred=tuple(range(-nsp + 1, 0)))
        sel = (Ellipsis, self._rows, self._k1) + (slice(None),) * (nsp - 2)
        data = kspace[sel]
        rest = tuple(range(-nsp + 2, 0))
        if self._demod_rows_constant:
            out = _unitary_ifft(data, plain=(-nsp, -nsp + 1), centred=rest)
            out *= self._demod.astype(out.dtype)
            return out
        out = _unitary_ifft(data, plain=(-nsp + 1,), centred=rest)
        out *= self._demod.astype(out.dtype)
        return _unitary_ifft(out, plain=(-nsp,), centred=())

    def __call__(self, kspace):
        """Unfold zero-filled k-space ``(..., coil, *spatial)`` to images ``(..., *spatial)``.

        Leading extra axes (slices, frames, replicas) share the maps and are
        unfolded together. Samples outside the lattice are ignored. The k-space
        must be on the maps' device (NumPy or CuPy, as ``sens`` was).
        """
        xp = self.xp
        kspace = _check_kspace(kspace, self.n_coils, self.spatial, xp)
        dtype = np.result_type(self.dtype, kspace.dtype)
        b = self.reduce(kspace.astype(dtype, copy=False))
        batch = b.shape[: b.ndim - 1 - len(self.spatial)]
        b = b.reshape(*batch, self.n_coils, -1)
        groups = xp.einsum("prc,...cp->...pr", self.unmix, b)
        out = xp.empty((*batch, int(np.prod(self.spatial))), dtype=dtype)
        out[..., self.index] = groups
        return out.reshape(*batch, *self.spatial)


def _unitary_ifft(x, *, plain, centred):
    """Unitary inverse DFT: non-centred along ``plain`` axes, centred (as ``ifftc``) along ``centred``."""
    axes = tuple(plain) + tuple(centred)
    if not axes:
        return x
    xp = get_array_module(x)
    if centred:
        x = xp.fft.ifftshift(x, axes=centred)
    y = ifftn(x, axes=axes)
    n = float(np.prod([x.shape[a] for a in axes]))
    y *= float(np.sqrt(n))
    if centred:
        y = xp.fft.fftshift(y, axes=centred)
    return y


def _pinv_hermitian(a):
    """Batched pseudo-inverse of Hermitian matrices (NumPy: eigh-based; CuPy: batched SVD)."""
    xp = get_array_module(a)
    if xp is np:
        return np.linalg.pinv(a, hermitian=True)
    return xp.linalg.pinv(a)


def _check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"lam must be a non-negative number, got {lam!r}")
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise InvalidParameterError(f"lam must be a finite number >= 0, got {lam!r}")
    return lam


def _check_kspace(kspace, n_coils, spatial, xp=np):
    mod = get_array_module(kspace)
    if mod is not xp:
        raise InvalidParameterError(
            f"k-space is a {mod.__name__} array but the coil maps are {xp.__name__} arrays: move both "
            "to one device with mrirecon.device.to_device(x, 'gpu' or 'cpu')"
        )
    kspace = xp.asarray(kspace)
    nsp = len(spatial)
    if kspace.ndim < nsp + 1 or tuple(kspace.shape[-nsp - 1 :]) != (n_coils, *spatial):
        raise ShapeMismatchError(
            f"k-space must have shape (..., coil, *spatial) = (..., {n_coils}, "
            f"{', '.join(map(str, spatial))}) to match the coil maps, got {tuple(kspace.shape)}"
        )
    check_kspace_values(kspace, xp)
    if kspace.dtype.kind != "c":
        kspace = kspace.astype(np.complex128 if kspace.dtype == np.float64 else np.complex64)
    return kspace


def _cached_unfolder(sens_in, sens, accel, lam, offset, shift, dtype):
    """Build (or reuse, for read-only maps) a :class:`SenseUnfolder`."""
    cacheable = isinstance(sens_in, np.ndarray) and not sens_in.flags.writeable
    if not cacheable:
        return SenseUnfolder(sens, accel, lam=lam, offset=offset, shift=shift, dtype=dtype)
    key = (id(sens_in), sens_in.shape, sens_in.dtype.str, accel, lam, offset, shift, np.dtype(dtype).str)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0]() is sens_in:
            _cache.move_to_end(key)
            return hit[1]
    unf = SenseUnfolder(sens, accel, lam=lam, offset=offset, shift=shift, dtype=dtype)
    with _cache_lock:
        _cache[key] = (weakref.ref(sens_in), unf)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return unf


def _norm_tuple(v):
    return tuple(int(a) for a in v) if np.ndim(v) else int(v)


def unfold(kspace, sens, *, lam=0.0, accel=None, offset=None, shift=None, mask=None):
    """Closed-form Tikhonov SENSE reconstruction of uniformly undersampled Cartesian k-space.

    Parameters
    ----------
    kspace : ndarray, complex, shape (..., coil, *spatial)
        Zero-filled k-space (centred, as :func:`mrirecon.fft.fftc` makes it);
        leading extra axes (slices, frames) share the maps.
    sens : ndarray, complex, shape (coil, *spatial)
        Coil maps, spatial 2-D ``(n0, n1)`` or 3-D ``(n0, n1, n2)``. k-space and
        maps are both NumPy (CPU) or both CuPy (GPU: the result is a CuPy array).
    lam : float
        λ ≥ 0 (see Notes). λ = 0 gives the (minimum-norm) least-squares solution.
    accel : int or (int, int), optional
        R along spatial axis 0, or (Ry, Rz) along axes 0 and 1. None: inferred
        from ``mask``, or from the non-zero pattern of ``kspace`` (any coil, any
        batch entry), which must then be exactly a uniform/CAIPI lattice.
    offset : int or (int, int), optional
        First sampled index along axis 0 (and 1); default 0 (or inferred with ``accel``).
    shift : int, optional
        CAIPI shift for 2-D acceleration (see :func:`lattice_mask`); default 0 (or inferred).
    mask : ndarray of bool, spatial shape, optional
        The sampling mask (a NumPy mask is copied to the device for CuPy data). With
        ``accel`` given it must contain the lattice; samples outside the
        lattice (e.g. calibration lines) are ignored.

    Returns
    -------
    ndarray, shape (..., *spatial), complex64 (complex128 if the maps or k-space are double),
    on the data's device.

    Raises
    ------
    ShapeMismatchError
        k-space and maps do not match, or the mask has the wrong shape.
    InvalidParameterError
        λ < 0, NaN/inf in the inputs, R not dividing the phase-encoding size,
        empty sampling, a sampling pattern that is not a uniform lattice, or
        k-space and maps on different devices.

    Notes
    -----
    Returns the exact minimiser of

    .. math:: \\min_x \\|M F S x - y\\|_2^2 + \\lambda \\|x\\|_2^2

    with F the centred orthonormal FFT over the spatial axes, S the coil maps
    and M the lattice mask: the λ scale of BART ``pics -l2`` and SigPy
    ``SenseRecon`` (and of :func:`mrirecon.sense.cg_sense`). Each call builds a
    :class:`SenseUnfolder` (see there for the algorithm); when the maps are a
    read-only NumPy array (``sens.setflags(write=False)``) the last few
    unfolders are cached on the maps' identity and the parameters, so repeated
    calls skip the factorisation. For many slices with the same maps, build a
    :class:`SenseUnfolder` once or pass them as leading axes.
    """
    sens_in = sens
    xp = common_module(kspace=kspace, sens=sens)
    sens = check_sens(sens)
    lam = _check_lam(lam)
    spatial = tuple(sens.shape[1:])
    kspace = _check_kspace(kspace, sens.shape[0], spatial, xp)
    if mask is not None:
        mask = check_mask(mask, spatial, xp)
    if accel is None:
        if mask is None:
            axes = tuple(range(kspace.ndim - len(spatial)))
            mask = xp.any(kspace != 0, axis=axes)
            if not bool(mask.any()):
                raise InvalidParameterError("k-space is all zero: no sampled k-space sample to unfold")
        accel, inferred_offset, inferred_shift = _infer_lattice(mask)
        if offset is not None and _norm_tuple(offset) != _norm_tuple(inferred_offset):
            raise InvalidParameterError(f"offset={offset!r} does not match the sampling ({inferred_offset})")
        offset = inferred_offset
        shift = inferred_shift if shift is None else shift
    else:
        offset = 0 if offset is None else offset
        shift = 0 if shift is None else shift
        if mask is not None:
            lattice = xp.asarray(lattice_mask(spatial, accel, offset=offset, shift=shift))
            if not bool(xp.all(mask | ~lattice)):
                raise InvalidParameterError(
                    f"mask does not contain the sampling lattice accel={accel!r}, offset={offset!r}, "
                    f"shift={shift!r}"
                )
    dtype = np.result_type(sens.dtype, kspace.dtype, np.complex64)
    unf = _cached_unfolder(sens_in, sens, _norm_tuple(accel), lam, _norm_tuple(offset), int(shift), dtype)
    return unf(kspace)


# --------------------------------------------------------------------------
# g-factor
# --------------------------------------------------------------------------
def gfactor(sens, accel, *, lam=0.0, offset=0, shift=0):
    """Closed-form SENSE g-factor map.

    Parameters
    ----------
    sens : ndarray, complex, shape (coil, *spatial)
        NumPy or CuPy; the map is computed on, and returned to, the maps' device.
    accel : int or (int, int)
        As in :class:`SenseUnfolder`.
    lam : float
        λ ≥ 0 on the scale of :func:`unfold`.
    offset, shift
        As in :class:`SenseUnfolder`; the offset only changes phases and does
        not change g.

    Returns
    -------
    ndarray, real, spatial shape (float32, float64 for double-precision maps).

    Notes
    -----
    Per pixel group, with ``E = s S W`` as in :class:`SenseUnfolder`
    (``s = 1/sqrt(R)``),

    .. math:: g_r = \\sqrt{[(E^H E + \\lambda I)^{-1}]_{rr} \\, [E^H E]_{rr}}

    which for λ = 0 is the classic ``sqrt([(SᴴS)⁻¹]_rr [SᴴS]_rr)`` (≥ 1, and 1
    at R = 1); the noise standard deviation of the unfolded pixel is then
    ``g·sqrt(R)`` times that of the fully sampled reconstruction
    (:func:`gfactor_pseudo_replica` measures exactly this ratio). For λ > 0 the
    same formula (the regularised g-factor of the design contract) is returned;
    it is not the pseudo-replica noise ratio (it is below 1 at R = 1), and is
    meant for comparing regularisation strengths. Pixels whose coil maps are
    all zero (no signal: ``[EᴴE]_rr = 0``) get g = 1. For λ = 0 and a
    rank-deficient group the pseudo-inverse is used.
    """
    sens = check_sens(sens)
    xp = get_array_module(sens)
    lam = _check_lam(lam)
    unf = _Geometry(sens, accel, offset, shift)
    enc = unf._encoding(sens)
    normal = xp.einsum("pcr,pcs->prs", enc.conj(), enc)
    # a copy: the diagonal is a view of `normal`, which λ changes below
    diag = xp.real(xp.diagonal(normal, axis1=1, axis2=2)).copy()
    if lam > 0:
        normal += lam * xp.eye(unf.R, dtype=normal.dtype)
        inv = xp.linalg.inv(normal)
    else:
        inv = _pinv_hermitian(normal)
    inv_diag = xp.real(xp.diagonal(inv, axis1=1, axis2=2))
    g = xp.sqrt(xp.clip(inv_diag * diag, 0.0, None))
    tiny = np.finfo(np.float64).eps * max(float(diag.max()), np.finfo(np.float64).tiny)
    g[diag <= tiny] = 1.0
    out = xp.empty(int(np.prod(unf.spatial)), dtype=np.float64)
    out[unf.index] = g
    real = np.float64 if sens.dtype == np.complex128 else np.float32
    return out.reshape(unf.spatial).astype(real)


class _Geometry(SenseUnfolder):
    """The group geometry of a :class:`SenseUnfolder` without its factorisation."""

    def __init__(self, sens, accel, offset, shift):
        self.xp = get_array_module(sens)
        self.spatial = tuple(sens.shape[1:])
        self.n_coils = int(sens.shape[0])
        self.ry, self.rz, self.o0, self.o1, self.shift = _parse_lattice(self.spatial, accel, offset, shift)
        self.R = self.ry * self.rz
        self.scale = float(1.0 / np.sqrt(self.R))
        self._build_groups()


def gfactor_pseudo_replica(
    sens, accel, *, lam=0.0, n_replicas=100, seed=0, offset=0, shift=0, batch_size=None
):
    """Monte-Carlo (pseudo-replica) g-factor of :func:`unfold`.

    Parameters
    ----------
    sens : ndarray, complex, shape (coil, *spatial)
        NumPy or CuPy (noise drawn, unfolded and reduced on the maps' device).
    accel : int or (int, int)
    lam : float
        λ ≥ 0, used for both the accelerated and the fully sampled reconstruction.
    n_replicas : int
        Number of noise replicas (≥ 2). The relative standard error of g per
        pixel is about ``1/sqrt(2 n_replicas)``.
    seed : int
        Seed of the noise generator (``numpy.random.default_rng`` for NumPy maps,
        ``cupy.random.default_rng`` on the GPU: the same seed draws different
        noise on the two devices, so the estimates agree statistically only).
    offset, shift
        Sampling lattice, as in :class:`SenseUnfolder`.
    batch_size : int, optional
        Replicas unfolded together (default: as many as fit ~16 M complex samples).

    Returns
    -------
    ndarray, real, spatial shape.

    Notes
    -----
    Noise-only k-space (white, complex Gaussian, ``E|n|² = 1`` per sample and
    coil) is unfolded with :class:`SenseUnfolder` at the given acceleration and
    at R = 1 (fully sampled, same λ); the same noise arrays feed both (the
    accelerated reconstruction keeps the lattice samples only). Then
    ``g = std_R / (std_1 · sqrt(R))`` per pixel, the standard deviations taken
    over the replicas. With λ = 0 this estimates :func:`gfactor`. Pixels with
    ``std_1 = 0`` (no coil sensitivity) get g = 1.
    """
    sens = check_sens(sens)
    lam = _check_lam(lam)
    n_replicas = _as_int(n_replicas, "n_replicas")
    if n_replicas < 2:
        raise InvalidParameterError(f"n_replicas must be >= 2, got {n_replicas}")
    xp = get_array_module(sens)
    unf_r = SenseUnfolder(sens, accel, lam=lam, offset=offset, shift=shift)
    unf_1 = SenseUnfolder(sens, 1, lam=lam)
    rng = xp.random.default_rng(seed)
    per = sens.size
    if batch_size is None:
        batch_size = max(1, min(n_replicas, (1 << 24) // max(per, 1)))
    batch_size = _as_int(batch_size, "batch_size")
    real = np.float64 if sens.dtype == np.complex128 else np.float32
    sums = {k: xp.zeros(unf_r.spatial, dtype=np.complex128) for k in ("r", "1")}
    sq = {k: xp.zeros(unf_r.spatial, dtype=np.float64) for k in ("r", "1")}
    done = 0
    while done < n_replicas:
        nb = min(batch_size, n_replicas - done)
        shape = (nb, *sens.shape)
        noise = (
            rng.standard_normal(shape, dtype=real) + 1j * rng.standard_normal(shape, dtype=real)
        ) / float(np.sqrt(2.0))
        noise = noise.astype(sens.dtype, copy=False)
        for key, unf in (("r", unf_r), ("1", unf_1)):
            x = unf(noise)
            sums[key] += x.sum(axis=0)
            sq[key] += (x.real.astype(np.float64) ** 2 + x.imag.astype(np.float64) ** 2).sum(axis=0)
        done += nb
    std = {}
    for key in ("r", "1"):
        mean = sums[key] / n_replicas
        var = (sq[key] - n_replicas * xp.abs(mean) ** 2) / (n_replicas - 1)
        std[key] = xp.sqrt(xp.clip(var, 0.0, None))
    s1 = std["1"]
    tiny = np.finfo(np.float64).eps * max(float(s1.max()), np.finfo(np.float64).tiny)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = std["r"] / (s1 * float(np.sqrt(unf_r.R)))
    g[s1 <= tiny] = 1.0
    return g.astype(real)
