"""Closed-form SENSE on real Cartesian data: the unfold, then the calibration lines put back.

A uniformly undersampled acquisition with a fully sampled calibration (ACS)
block is not a lattice: the pure unfold uses only the lattice lines and drops
the ACS lines beyond them. :func:`sense` solves the same Tikhonov objective on
*all* the acquired lines by conjugate gradients started from the unfold and
preconditioned by it: the lattice's normal operator is block-diagonal in image
space and the unfolder already holds its inverse, so the preconditioned system
differs from the identity only by what the extra lines add, and a few
iterations converge.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError
from ..solvers import dot_real
from .operator import SenseOp, check_mask, check_sens, common_module
from .unfold import SenseUnfolder, _check_kspace

__all__ = ["sense"]


def sense(kspace, sens, *, lam=0.0, accel=None, offset=None, shift=None, acs_iter=5, mask=None):
    """Tikhonov SENSE of Cartesian k-space, closed form plus the ACS lines.

    Parameters
    ----------
    kspace : ndarray, (coil, *spatial), zero where not sampled
    sens : ndarray, (coil, *spatial)
        Coil sensitivities (prewhitened with the data, if the noise is correlated).
        k-space and maps are both NumPy (CPU) or both CuPy (GPU; the image is
        then a CuPy array and every step runs on the GPU).
    lam : float
        λ ≥ 0 of ``||M F S x − y||² + λ||x||²`` (the scale of BART ``pics -l2`` and
        SigPy ``SenseRecon``; orthonormal centred FFT).
    accel, offset, shift
        The uniform lattice (detected from the data when None: see
        :func:`mrirecon.sense.sampling.detect_pattern`).
    acs_iter : int
        Preconditioned CG iterations on all the acquired lines, started from the
        unfold (0: the pure unfold, ACS lines beyond the lattice unused).
    mask : ndarray of bool, spatial, optional
        The acquired samples (default: where the k-space is nonzero); a NumPy
        mask is copied to the device for CuPy data.

    Returns
    -------
    ndarray, complex, spatial shape
        The image.

    Notes
    -----
    The unfold is the exact minimiser of the objective restricted to the
    lattice lines. The full objective's normal operator is the lattice's
    (block-diagonal in image space, inverted per aliasing group by the
    unfolder) plus that of the extra lines; preconditioned by the former, CG
    converges in a few iterations. ``scripts/bench_sense.py`` measures how many.
    The lattice is detected on the host from the spatial-size sampling mask
    (for CuPy data, that mask is the one array copied off the GPU).
    """
    if isinstance(acs_iter, bool) or not isinstance(acs_iter, (int, np.integer)) or acs_iter < 0:
        raise InvalidParameterError(f"acs_iter must be a non-negative integer, got {acs_iter!r}")
    xp = common_module(kspace=kspace, sens=sens)
    sens = check_sens(sens)
    k = _check_kspace(kspace, sens.shape[0], tuple(sens.shape[1:]), xp)
    if mask is None:
        full = xp.any(k != 0, axis=0)
    else:
        full = check_mask(mask, tuple(sens.shape[1:]), xp)
    if accel is None:
        from .sampling import detect_pattern

        pat = detect_pattern(full)
        if pat.kind == "full":
            accel, offset, shift = 1, 0, 0
        elif pat.kind == "irregular":
            raise InvalidParameterError(
                "the sampling is not a uniform lattice (plus an ACS block): use cg_sense, l1_wavelet or tv"
            )
        else:
            accel, offset, shift = pat.accel, pat.offset, pat.shift
    if lam < 0 or not np.isfinite(lam):
        raise InvalidParameterError(f"lam must be >= 0, got {lam!r}")
    unf = SenseUnfolder(sens, accel, lam=lam, offset=offset or 0, shift=shift or 0)
    x = unf(k)
    if acs_iter == 0 or not bool((full & ~unf.mask).any()):
        return x
    return _pcg(SenseOp(sens, full), k, lam, x, unf.precondition, acs_iter)


def _pcg(op, y, lam, x, precondition, n_iter):
    """Preconditioned CG on ``(AᴴA + λI) x = Aᴴ y`` from ``x``."""
    lam_t = float(lam)

    def normal(v):
        out = op.normal(v)
        if lam_t:
            out += lam_t * v
        return out

    r = op.adjoint(y * op.mask) - normal(x)
    z = precondition(r)
    p = z.copy()
    rz = dot_real(r, z)
    for _ in range(n_iter):
        q = normal(p)
        pq = dot_real(p, q)
        if pq <= 0 or rz <= 0:
            break
        alpha = rz / pq
        x = x + alpha * p
        r -= alpha * q
        z = precondition(r)
        rz_new = dot_real(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x
