"""Checks for operators, public so that users can test their own."""

from __future__ import annotations

import numpy as np

from .device import get_array_module

__all__ = ["dot_test"]


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def dot_test(op, *, seed=0, rtol=None, dtype=None, xp=None) -> float:
    """Check ``<A x, y> == <x, Aᴴ y>`` and ``normal(x) == Aᴴ A x`` on random vectors.

    Parameters
    ----------
    op : mrirecon.operators.Operator
    seed : int
    rtol : float, optional
        Tolerance on the relative mismatch (default 1e-4 for single, 1e-10 for
        double precision).
    dtype : dtype, optional
        Precision of the random vectors (default ``op.dtype``).
    xp : module, optional
        Array module to test the operator on (:mod:`numpy`, the default, or
        :mod:`cupy`). The random vectors are drawn with NumPy (the same
        numbers on both) and moved to ``xp``; the operator's results must come
        back in ``xp``.

    Returns
    -------
    float
        The relative mismatch of the dot-product identity.

    Raises
    ------
    AssertionError
        If either identity fails by more than ``rtol``, or a result is not an
        array of ``xp``.
    """
    xp = np if xp is None else xp
    dtype = np.dtype(dtype or op.dtype)
    if rtol is None:
        rtol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-10
    rng = np.random.default_rng(seed)
    x = xp.asarray(_random(rng, op.shape_in, dtype))
    y = xp.asarray(_random(rng, op.shape_out, dtype))
    ax = op.forward(x)
    aty = op.adjoint(y)
    n1 = op.normal(x)
    for what, r in (("forward", ax), ("adjoint", aty), ("normal", n1)):
        if get_array_module(r) is not xp:
            raise AssertionError(
                f"{op!r}: {what} returned a {type(r).__module__}.{type(r).__name__} for {xp.__name__} input"
            )
    lhs = complex(xp.vdot(y.astype(np.complex128), ax.astype(np.complex128)))
    rhs = complex(xp.vdot(aty.astype(np.complex128), x.astype(np.complex128)))
    scale = float(xp.linalg.norm(ax) * xp.linalg.norm(y) + xp.linalg.norm(aty) * xp.linalg.norm(x))
    err = abs(lhs - rhs) / scale
    if err > rtol:
        raise AssertionError(
            f"{op!r}: <Ax, y> = {lhs} but <x, A^H y> = {rhs} (relative {err:.2e} > {rtol:.0e})"
        )
    n2 = op.adjoint(ax)
    nerr = float(xp.linalg.norm(n1 - n2)) / max(float(xp.linalg.norm(n2)), np.finfo(float).tiny)
    if nerr > rtol * 10:
        raise AssertionError(f"{op!r}: normal(x) differs from adjoint(forward(x)) by {nerr:.2e}")
    return err
