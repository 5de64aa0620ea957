"""λ selection for closed-form Tikhonov SENSE from the data: GCV, discrepancy principle, UPRE.

Per aliasing group g of the uniform lattice the data term is ``‖E_g x_g − b_g‖²``
(coil × R system). With ``E_gᴴE_g = V Λ Vᴴ`` and ``c = Vᴴ E_gᴴ b_g`` every
quantity the criteria need is a sum over groups of closed-form functions of λ:

    x(λ)        = V c / (Λ + λ)
    res(λ)      = ‖b‖² − Σ |c_i|² (Λ_i + 2λ) / (Λ_i + λ)²
    T(λ)        = Σ Λ_i / (Λ_i + λ)                  (trace of the hat operator)

so a whole curve over a λ grid costs O(groups · R · grid) after one batched
eigendecomposition. The criteria (``n`` data samples, σ² the noise variance per
complex sample):

* ``"gcv"``: minimise ``n·res(λ) / (n − T(λ))²`` (needs no σ);
* ``"discrepancy"``: the largest λ with ``res(λ) ≤ τ·(n − T(λ))·σ²`` (τ = 1);
* ``"upre"``: minimise ``res(λ) + 2σ²T(λ)`` (unbiased predictive risk).
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameterError

__all__ = ["CRITERIA", "LamCurve", "lam_curve", "select_lam"]

CRITERIA = ("sure", "gcv", "discrepancy", "upre")

#: default λ grid relative to the median lattice eigenvalue (covers under- to over-regularised)
_GRID = np.logspace(-7, 1, 81)


class LamCurve:
    """Residual and hat-operator trace of every λ of a grid (see the module docstring)."""

    def __init__(self, lams, res, trace, n_data, scale, risk_bias=None, risk_var=None):
        #: image-domain SURE terms: Σ|c|²λ²/(Λ²(Λ+λ)²) and Σ 1/(Λ+λ) per λ
        self.risk_bias = risk_bias
        self.risk_var = risk_var
        self.lams = lams
        self.res = res
        self.trace = trace
        self.n_data = float(n_data)
        #: the median positive lattice eigenvalue (the natural scale of λ)
        self.scale = scale

    def gcv(self):
        return self.n_data * self.res / np.maximum(self.n_data - self.trace, 1e-12) ** 2

    def sigma2_from_data(self):
        """σ² estimated from the λ → 0 residual: ``res(0) / (n − rank)``."""
        return float(self.res[0] / max(self.n_data - self.trace[0], 1.0))


def lam_curve(gram, proj_energy, b_energy, n_data, *, lams=None):
    """Curves of :class:`LamCurve` from batched R×R normal matrices.

    Parameters
    ----------
    gram : ndarray (G, R, R), Hermitian PSD: ``E_gᴴE_g`` of the groups used
    proj_energy : callable
        ``proj_energy(V)`` → ``|Vᴴ E_gᴴ b_g|²`` per group and eigenvector, (G, R).
    b_energy : float
        ``Σ_g ‖b_g‖²`` over the same groups.
    n_data : float
        Number of complex data samples of the same groups.
    lams : array, optional
        The grid (default: 81 values from 1e-7 to 10 times the median eigenvalue).
    """
    evals, evecs = np.linalg.eigh(gram.astype(np.complex128))
    evals = np.clip(evals.real, 0.0, None)
    pos = evals[evals > 1e-12 * max(float(evals.max()), 1e-300)]
    scale = float(np.median(pos)) if pos.size else 1.0
    lams = _GRID * scale if lams is None else np.asarray(lams, dtype=float)
    c2 = proj_energy(evecs)  # (G, R)
    lam_b = lams[:, None]
    ev = evals.reshape(-1)[None, :]
    c2 = c2.reshape(-1)[None, :]
    keep = ev > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        res = b_energy - np.sum(np.where(keep, c2 * (ev + 2 * lam_b) / (ev + lam_b) ** 2, 0.0), axis=1)
        trace = np.sum(np.where(keep, ev / (ev + lam_b), 0.0), axis=1)
        bias = np.sum(np.where(keep, c2 * lam_b**2 / (ev**2 * (ev + lam_b) ** 2), 0.0), axis=1)
        var = np.sum(np.where(keep, 1.0 / (ev + lam_b), 0.0), axis=1)
        xnorm = np.sum(np.where(keep, c2 / (ev + lam_b) ** 2, 0.0), axis=1)
    res = np.clip(res, 0.0, None)
    curve = LamCurve(lams, res, trace, n_data, scale, bias, var)
    curve.xnorm = xnorm
    return curve


def select_lam(curve, *, criterion="gcv", sigma2=None, tau=1.0):
    """λ of ``curve`` by ``criterion`` (see the module docstring); returns (λ, σ² used or None)."""
    if criterion not in CRITERIA:
        raise InvalidParameterError(f"lam criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    if criterion == "gcv":
        return float(curve.lams[int(np.argmin(curve.gcv()))]), None
    if sigma2 is None:
        sigma2 = curve.sigma2_from_data()
    if criterion == "sure":
        return float(curve.lams[int(np.argmin(curve.risk_bias + 2 * sigma2 * curve.risk_var))]), sigma2
    if criterion == "upre":
        return float(curve.lams[int(np.argmin(curve.res + 2 * sigma2 * curve.trace))]), sigma2
    ok = curve.res <= tau * (curve.n_data - curve.trace) * sigma2
    idx = np.flatnonzero(ok)
    return float(curve.lams[idx[-1] if idx.size else 0]), sigma2
