"""Closed-form SENSE on real Cartesian data: λ from the data, the calibration lines put back.

A uniformly undersampled acquisition with a fully sampled calibration (ACS)
block is not a lattice: the pure unfold uses only the lattice lines. :func:`sense`
solves the Tikhonov objective on *all* acquired lines by conjugate gradients
preconditioned by the exact inverse of the lattice's normal operator
(block-diagonal in image space: one R×R matrix per aliasing group), so the
preconditioned system differs from the identity only by what the extra lines
add, and a few iterations converge.

The fast path (NumPy, 1-D acceleration along spatial axis 0, even n0): the
readout axes are fully sampled, so the data are taken once to hybrid space
(inverse FFT along the readout) and every iteration costs one batched 1-D FFT
pair of all coils along the phase-encoding axis (in one FFTW plan of
:mod:`mrirecon.fft`, no shifts: the image rows are kept rolled by n0/2 so that
the centred FFT is the plain one, and the aliasing groups are plain reshapes).
Other cases (2-D/CAIPI acceleration, CuPy, odd sizes) use :class:`SenseUnfolder`
and :class:`SenseOp`.
"""

from __future__ import annotations

import numpy as np

from .. import fft as _fft
from ..errors import InvalidParameterError
from ..solvers import dot_real
from .lam import CRITERIA, lam_curve, select_lam
from .operator import SenseOp, check_mask, check_sens, common_module
from .unfold import SenseUnfolder, _check_kspace

__all__ = ["sense"]

#: groups whose eigendecomposition feeds the automatic λ (a strided subset beyond this)
_MAX_LAM_GROUPS = 8192


def _check_lam_arg(lam):
    if isinstance(lam, str):
        crit = lam.lower()
        if crit == "auto":
            crit = "discrepancy"
        if crit not in CRITERIA:
            raise InvalidParameterError(
                f"lam must be a number >= 0, 'auto' or one of {', '.join(CRITERIA)}, got {lam!r}"
            )
        return None, crit
    if isinstance(lam, bool) or not isinstance(lam, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"lam must be a number >= 0 or 'auto', got {lam!r}")
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise InvalidParameterError(f"lam must be a finite number >= 0, got {lam!r}")
    return lam, None


def sense(
    kspace,
    sens,
    *,
    lam="auto",
    accel=None,
    offset=None,
    shift=None,
    acs_iter=4,
    tol=1e-3,
    mask=None,
    noise_sd=None,
    return_info=False,
):
    """Tikhonov SENSE of Cartesian k-space: closed form on the lattice, PCG with the ACS lines.

    Parameters
    ----------
    kspace : ndarray, (coil, *spatial), zero where not sampled
        Prewhitened (if the noise is correlated) centred k-space.
    sens : ndarray, (coil, *spatial)
        Coil sensitivities (prewhitened with the data). k-space and maps are
        both NumPy (CPU) or both CuPy (GPU).
    lam : float or str
        λ ≥ 0 of ``||M F S x − y||² + λ||x||²`` (the scale of BART ``pics -l2``
        and SigPy ``SenseRecon``; orthonormal centred FFT). ``"auto"``
        (default) = ``"discrepancy"``: the discrepancy principle on the full
        problem (lattice and ACS lines), ``‖M F S x_λ − y‖² = n σ²`` (n the
        acquired complex samples of all coils), found by a secant search of
        warm-started PCG solves (typically 1–4; ``info["lam_solves"]``);
        σ from ``noise_sd``, else estimated from the lattice's λ → 0 residual
        (needs more coils than R). ``"gcv"``, ``"upre"``, ``"sure"``: criteria
        on the lattice's closed form (:mod:`mrirecon.sense.lam`; free, but
        they pick a λ 5–25× too small when ACS lines are added: measured
        1.4–2.1× the optimum's NRMSE).
    accel, offset, shift
        The uniform lattice (detected from the data when None: see
        :func:`mrirecon.sense.sampling.detect_pattern`). An ``accel`` that
        contradicts the detected pattern is an error.
    acs_iter : int
        Most PCG iterations on all acquired lines (0: the pure unfold, ACS
        lines beyond the lattice unused).
    tol : float
        Stop when the preconditioned residual norm falls below ``tol`` times its start.
    mask : ndarray of bool, spatial, optional
        The acquired samples (default: where the k-space is nonzero).
    noise_sd : float, optional
        Noise standard deviation per complex k-space sample (``E|n|² = σ²``),
        e.g. 1 after prewhitening with a noise scan; for the discrepancy/UPRE criteria.
    return_info : bool
        Also return a dict: λ, how it was chosen, the lattice, ACS block, PCG iterations.

    Returns
    -------
    ndarray, complex64 (complex128 for double input), spatial shape; and the dict if asked.

    Notes
    -----
    Minimises ``‖M F S x − y‖² + λ‖x‖²`` (M the acquired samples, lattice and
    ACS). λ is absolute: scaling the data by c with λ fixed scales the image
    by c; scaling the maps by c is matched by λ·c². The automatic λ
    (discrepancy) scales the same way: data × c gives the same λ. It starts
    from the same principle on the lattice's closed form
    (:func:`mrirecon.sense.lam.lam_curve`, every λ of a grid at once) and
    refines on the full problem; measured within 0.97–1.15× the NRMSE of the
    best λ of a sweep (2 slices × 2 coil geometries × 16/32 coils × 2 noise
    levels; ``mrirecon bench sense``). The discrepancy principle
    over-regularises mildly (λ about 2× the NRMSE optimum).
    """
    if isinstance(acs_iter, bool) or not isinstance(acs_iter, (int, np.integer)) or acs_iter < 0:
        raise InvalidParameterError(f"acs_iter must be a non-negative integer, got {acs_iter!r}")
    lam_value, criterion = _check_lam_arg(lam)
    if noise_sd is not None and (not np.isfinite(noise_sd) or noise_sd <= 0):
        raise InvalidParameterError(f"noise_sd must be a positive number, got {noise_sd!r}")
    xp = common_module(kspace=kspace, sens=sens)
    sens = check_sens(sens)
    spatial = tuple(sens.shape[1:])
    k = _check_kspace(kspace, sens.shape[0], spatial, xp)
    if k.ndim != len(spatial) + 1:
        raise InvalidParameterError(f"k-space must be (coil, *spatial) = {tuple(sens.shape)}, got {k.shape}")
    full = xp.any(k != 0, axis=0) if mask is None else check_mask(mask, spatial, xp)
    from .sampling import detect_pattern

    pat = detect_pattern(full)
    if pat.kind == "irregular":
        raise InvalidParameterError(
            "the sampling is not a uniform lattice (plus an ACS block): use cg_sense, l1_wavelet or tv"
        )
    det_accel, det_offset, det_shift = (1, 0, 0) if pat.kind == "full" else (pat.accel, pat.offset, pat.shift)
    if accel is not None:
        given = tuple(accel) if np.ndim(accel) else (int(accel),)
        det = tuple(det_accel) if np.ndim(det_accel) else (int(det_accel),)
        if given != det and given + (1,) != det and given != det + (1,):
            raise InvalidParameterError(
                f"accel={accel!r} contradicts the sampling detected in the data: R={det_accel!r}, "
                f"offset {det_offset!r}, ACS {pat.acs_lines!r} lines"
            )
    if (
        offset is not None
        and np.ndim(offset) == np.ndim(det_offset)
        and np.any(np.asarray(offset) != det_offset)
    ):
        raise InvalidParameterError(f"offset={offset!r} contradicts the detected offset {det_offset!r}")
    accel, offset, shift = det_accel, det_offset, det_shift
    info = {
        "accel": accel,
        "offset": offset,
        "shift": shift,
        "acs_lines": pat.acs_lines,
        "acs_start": pat.acs_start,
        "pattern": pat.kind,
    }
    rows_only = xp is np and np.ndim(accel) == 0 and spatial[0] % 2 == 0
    if rows_only:
        pe = full.reshape(spatial[0], -1)
        rows_only = bool(np.all(pe == pe[:, :1]))
    if rows_only:
        x = _sense_rows(
            k, sens, int(accel), int(offset), pe[:, 0], lam_value, criterion, noise_sd, acs_iter, tol, info
        )
    else:
        x = _sense_general(
            k, sens, accel, offset, shift, full, lam_value, criterion, noise_sd, acs_iter, tol, info
        )
    return (x, info) if return_info else x


# --------------------------------------------------------------------------
# the fast path: 1-D acceleration, hybrid space, rolled rows
# --------------------------------------------------------------------------
class _RowFFT:
    """Batched in-place 1-D FFT pair along the last axis of (coil, ..., n0) through mrirecon.fft's plan cache.

    The transformed axis is the contiguous one: FFTW's cheap (FFTW_ESTIMATE)
    plan of a strided axis is about 12× slower than its measured one, while
    along the contiguous axis the two are within 2× — a first run on a new
    grid does not pay for want of wisdom.
    """

    def __init__(self, shape, dtype):
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.plan = None
        self.axis = len(shape) - 1
        if _fft.backend() == "pyfftw":
            self.plan = _fft._get_plan("complex", shape, self.dtype, (self.axis,))

    def filter(self, s, x, weight, sc):
        """``Σ_c sc_c · ifft(weight · fft(s_c · x))`` (weight holds the 1/n0 of the pair)."""
        if self.plan is not None:
            p = self.plan
            with p.lock:
                np.multiply(s, x[None], out=p.buf)
                p.forward.execute()
                p.buf *= weight
                p.inverse.execute()
                return np.einsum("c...,c...->...", sc, p.buf)
        y = _fft.fftn(s * x[None], axes=(self.axis,))
        y *= weight * self.shape[-1]
        return np.einsum("c...,c...->...", sc, _fft.ifftn(y, axes=(self.axis,)))

    def adjoint(self, y, weight, sc):
        """``Σ_c sc_c · ifft(weight · y_c)`` with ``weight`` including √n0 / n0 scaling."""
        if self.plan is not None:
            p = self.plan
            with p.lock:
                np.multiply(y, weight, out=p.buf)
                p.inverse.execute()
                return np.einsum("c...,c...->...", sc, p.buf)
        return np.einsum("c...,c...->...", sc, _fft.ifftn(y * weight, axes=(self.axis,)) * self.shape[-1])


def _group_layout(inv, R, m0):
    """Per-group matrices (G, R, R), G = (rest, p), as (rest, u, v, p): p contiguous for :func:`_group_solve`."""
    return np.ascontiguousarray(inv.reshape(-1, m0, R, R).transpose(0, 2, 3, 1))


def _group_solve(inv_t, r, R):
    """Apply the per-group R×R matrices (laid out by :func:`_group_layout`) to a rolled image (..., n0).

    Row ``u·m0 + p`` of the last axis is member u of group (rest, p).
    """
    rg = r.reshape(inv_t.shape[0], R, -1)
    out = inv_t[:, :, 0, :] * rg[:, None, 0, :]
    for v in range(1, R):  # R terms, each over every group at once
        out += inv_t[:, :, v, :] * rg[:, None, v, :]
    return out.reshape(r.shape)


def _sense_rows(k, sens, R, o0, rows, lam, criterion, noise_sd, max_iter, tol, info):
    nc, n0 = sens.shape[:2]
    rest = sens.shape[2:]
    c0 = n0 // 2
    dtype = np.result_type(sens.dtype, k.dtype, np.complex64)
    real = np.float64 if dtype == np.complex128 else np.float32
    m0 = n0 // R
    # hybrid space, phase encoding last (contiguous FFTs): inverse centred FFT along the readout
    # axes, rows rolled by n0/2 (a plain FFT along the last axis)
    raxes = tuple(range(2, 2 + len(rest)))  # the readout axes, contiguous in the input
    yh = _fft.ifftc(k.astype(dtype, copy=False), axes=raxes) if raxes else k.astype(dtype)
    yh = np.ascontiguousarray(np.roll(np.moveaxis(yh, 1, -1), -c0, axis=-1))
    s = np.ascontiguousarray(np.roll(np.moveaxis(sens.astype(dtype, copy=False), 1, -1), -c0, axis=-1))
    sc = np.conj(s)
    rows_p = np.roll(np.asarray(rows, dtype=bool), -c0)
    lat = np.zeros(n0, dtype=bool)
    op = (o0 - c0) % R
    lat[op::R] = True
    bshape = (1,) * len(rest) + (n0,)
    fft = _RowFFT(s.shape, dtype)
    w_full = (rows_p / n0).astype(real).reshape(bshape)
    # adjoint of the unitary model: Σ conj(s) · ifft(y) · √n0 = Σ conj(s) · (unnormalised ifft) / √n0
    sq = real(1.0 / np.sqrt(n0))
    rhs = fft.adjoint(yh, (rows_p * sq).astype(real).reshape(bshape), sc)

    # lattice normal per group: L[u, v] = (1/R) ω^(u−v) Σ_c conj(s_c(u)) s_c(v), ω = exp(2πi op / R)
    sg = s.reshape(nc, -1, R, m0)  # (coil, rest, u, p): group g = (rest, p) holds rows u·m0 + p
    st = np.ascontiguousarray(sg.transpose(1, 3, 0, 2)).reshape(-1, nc, R)  # (G, coil, R)
    gram = np.matmul(np.swapaxes(np.conj(st), 1, 2), st) / real(R)  # (G, R, R)
    omega = np.exp(2j * np.pi * op * np.arange(R) / R).astype(dtype)
    gram *= omega[None, :, None] * np.conj(omega)[None, None, :]
    ng = gram.shape[0]
    extra = bool(np.any(rows_p & ~lat))
    lam_auto = lam is None
    if lam_auto:
        rhs_lat = fft.adjoint(yh, (lat * sq).astype(real).reshape(bshape), sc)
        stride = max(1, ng // _MAX_LAM_GROUPS)
        sel = slice(0, None, stride)
        # (Gs, R): E_gᴴ b_g, groups (rest, p) in the order of ``gram``
        h = rhs_lat.reshape(-1, R, m0).transpose(0, 2, 1).reshape(-1, R)[sel].astype(np.complex128)
        # ‖b_g‖² of the same groups: the reduced-grid coil images (one length-m0 FFT of the lattice rows)
        ylat = np.ascontiguousarray(yh[..., op::R])  # (coil, *rest, m0)
        bred = _fft.ifftn(ylat.reshape(nc, -1, m0), axes=(2,)) * np.sqrt(m0)
        b_energy = float(np.sum(np.abs(bred.reshape(nc, -1)[:, sel]) ** 2))
        n_data = nc * h.shape[0]

        def proj(v):
            return np.abs(np.einsum("gru,gr->gu", np.conj(v), h)) ** 2

        curve = lam_curve(gram[sel], proj, b_energy, n_data)
        sigma2 = None if noise_sd is None else float(noise_sd) ** 2
        lam, sigma2_used = select_lam(curve, criterion=criterion, sigma2=sigma2)
        info["lam_curve"] = curve
        if sigma2_used is not None:
            _check_sigma_estimable(curve, sigma2)
            info["noise_sd"] = float(np.sqrt(sigma2_used))
        src = (
            ""
            if criterion == "gcv"
            else (" (noise_sd given)" if sigma2 else " (σ from the lattice residual)")
        )
        info["lam_selection"] = (
            criterion + (" (lattice)" if criterion != "discrepancy" or not extra else "") + src
        )
    else:
        info["lam_selection"] = "given"
    rhs_l = rhs_lat if lam_auto else fft.adjoint(yh, (lat * sq).astype(real).reshape(bshape), sc)
    eye = np.eye(R, dtype=dtype)

    def group_inverse(lam_):
        if lam_ > 0:
            inv = np.linalg.inv(gram + real(lam_) * eye)
        else:
            inv = np.linalg.pinv(gram.astype(np.complex128), hermitian=True).astype(dtype)
        return _group_layout(inv, R, m0)

    if max_iter == 0 or not extra:
        if lam_auto and criterion == "discrepancy" and extra:
            info["lam_selection"] += " (lattice)"
        inv = group_inverse(lam)
        x = _group_solve(inv, rhs if not extra else rhs_l, R)
        info["pcg_iterations"] = 0
        info["lam"] = float(lam)
        return _unrolled(x, c0)

    def gram_full(v):  # AᴴA v
        return fft.filter(s, v, w_full, sc)

    def solve(lam_, x0=None, r0=None):
        """PCG on (AᴴA + λ)x = Aᴴy, from the lattice unfold (or x0 with residual r0); (x, it)."""
        inv = group_inverse(lam_)
        lam_t = real(lam_)

        def normal(v):
            out = gram_full(v)
            if lam_t:
                out += lam_t * v
            return out

        if x0 is None:
            x0 = _group_solve(inv, rhs_l, R)
        return _pcg_from_zero(normal, rhs, lambda r: _group_solve(inv, r, R), max_iter, tol, x0=x0, r0=r0)

    if lam_auto and criterion == "discrepancy":
        y_energy = float(np.vdot(yh, yh * rows_p.reshape((1,) + bshape)).real)
        n_full = nc * int(rows_p.sum()) * int(np.prod(rest, dtype=np.int64))
        # start: the same principle on the lattice's own data (closed form, every λ of the grid)
        ok = np.flatnonzero(curve.res <= curve.n_data * sigma2_used)
        lam_start = float(curve.lams[ok[-1]]) if ok.size else lam
        # the λ → 0 residual: (samples − unknowns) σ², unknowns the pixels any coil sees
        rank = int(np.count_nonzero(np.sum(np.abs(s) ** 2, axis=0) > 0))
        x, lam, it, n_solves, ratio = _discrepancy_search(
            solve,
            gram_full,
            rhs,
            y_energy,
            n_full * sigma2_used,
            max(n_full - rank, 0) * sigma2_used,
            lam_start,
            dot=dot_real,
        )
        info["lam_solves"] = n_solves
        info["lam_residual_ratio"] = float(ratio)
    else:
        x, it = solve(lam)
    info["lam"] = float(lam)
    info["pcg_iterations"] = it
    return _unrolled(x, c0)


def _unrolled(x, c0):
    """An image of the rows path, (..., n0) rolled by −n0/2, back to (n0, ...) in place order."""
    return np.ascontiguousarray(np.moveaxis(np.roll(x, c0, axis=-1), -1, 0))


def _check_sigma_estimable(curve, sigma2):
    """σ estimated from the lattice residual needs more coils than the acceleration."""
    if sigma2 is None and curve.n_data - curve.trace[0] < 0.05 * curve.n_data:
        raise InvalidParameterError(
            "cannot estimate the noise level from the data (coils <= acceleration): give noise_sd "
            "(e.g. 1 after prewhitening with a noise scan) or a number for lam"
        )


def _discrepancy_search(
    solve, gram_full, rhs, y_energy, target, floor, lam0, *, dot, max_solves=8, rtol=0.03
):
    """λ with ``‖A x_λ − y‖² = target`` (the discrepancy principle on the full problem).

    ``solve(λ, x0, r0)`` returns (x_λ, PCG iterations). The residual of a solution
    costs one application of AᴴA, which also gives the warm start of the next
    solve. The residual rises from ``floor`` (its λ → 0 value, (n − rank)σ²) as
    λ² for small λ, so the search is a secant method on
    ``h(log λ) = log(res − floor) − log(target − floor)`` (nearly linear, slope
    2), its first step taking that slope, kept inside the bracket once one is found.
    Returns (x, λ, PCG iterations of that solve, solves, residual / target).
    """
    floor = min(float(floor), 0.9 * target)
    lt = np.log(target - floor)
    tiny = 1e-6 * (target - floor)

    def evaluate(lam_, near):
        x0 = r0 = None
        if near is not None:
            x0 = near[0].copy()
            r0 = rhs - near[1] - lam_ * near[0]
        x, it = solve(lam_, x0, r0)
        ax = gram_full(x)
        res = y_energy - 2 * dot(x, rhs) + dot(x, ax)
        return x, ax, it, res, np.log(max(res - floor, tiny)) - lt

    t = np.log(max(float(lam0), 1e-30))
    x, ax, it, res, h = evaluate(np.exp(t), None)
    pts = [(t, h, x, ax, it, res)]
    if res > target:
        # is the target reachable? Maps that do not explain the data (ESPIRiT's
        # support, a coil's model error) raise the λ → 0 residual above
        # (n − rank)σ²; measure that floor and ask the noise part of the
        # residual, not the model error, to rise by rank·σ² above it
        t_s = t - 4 * np.log(10.0)
        xs, axs, its, res_s, _ = evaluate(np.exp(t_s), (x, ax))
        if res_s > floor + 0.5 * (target - floor):
            target += res_s - floor
            floor = res_s
            lt = np.log(target - floor)
            tiny = 1e-6 * (target - floor)
            pts = [
                (tq, np.log(max(rq - floor, tiny)) - lt, *rest, rq)
                for tq, rest, rq in ((t, (x, ax, it), res), (t_s, (xs, axs, its), res_s))
            ]
            t, h = pts[0][0], pts[0][1]
    lo, hi = -np.inf, np.inf
    while len(pts) < max_solves and abs(res / target - 1) > rtol:
        if h < 0:
            lo = max(lo, t)
        else:
            hi = min(hi, t)
        if len(pts) == 1:
            slope = 2.0
        else:
            (ta, ha), (tb, hb) = pts[-2][:2], pts[-1][:2]
            slope = (hb - ha) / (tb - ta) if tb != ta else 2.0
            slope = float(np.clip(slope, 0.5, 4.0)) if np.isfinite(slope) else 2.0
        t_new = t - h / slope
        t_new = float(np.clip(t_new, t - 3 * np.log(10.0), t + 3 * np.log(10.0)))
        if np.isfinite(lo) and np.isfinite(hi) and not lo < t_new < hi:
            t_new = 0.5 * (lo + hi)
        near = min(pts, key=lambda q: abs(q[0] - t_new))
        t = t_new
        x, ax, it, res, h = evaluate(np.exp(t), (near[2], near[3]))
        pts.append((t, h, x, ax, it, res))
    best = min(pts, key=lambda q: abs(q[5] / target - 1))
    return best[2], float(np.exp(best[0])), best[4], len(pts), best[5] / target


def _pcg_from_zero(normal, rhs, precondition, max_iter, tol, x0=None, r0=None):
    """Preconditioned CG on ``N x = rhs`` from x0 (default 0; r0 its residual if known); returns (x, iterations)."""
    if x0 is None:
        r = rhs.copy()
        x = np.zeros_like(rhs)
    else:
        x = x0
        r = rhs - normal(x0) if r0 is None else r0
    z = precondition(r)
    p = z.copy()
    rz = dot_real(r, z)
    rz0 = rz
    it = 0
    for it in range(1, max_iter + 1):
        q = normal(p)
        pq = dot_real(p, q)
        if pq <= 0 or rz <= 0:
            break
        alpha = rz / pq
        x += alpha * p
        if it == max_iter:
            break
        r -= alpha * q
        z = precondition(r)
        rz_new = dot_real(r, z)
        if rz_new <= (tol**2) * rz0:
            break
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it


# --------------------------------------------------------------------------
# the general path (2-D / CAIPI acceleration, CuPy, odd sizes)
# --------------------------------------------------------------------------
def _sense_general(k, sens, accel, offset, shift, full, lam, criterion, noise_sd, max_iter, tol, info):
    xp = (
        np if isinstance(k, np.ndarray) else __import__("mrirecon.device", fromlist=["x"]).get_array_module(k)
    )
    if lam is None:
        geo = SenseUnfolder(sens, accel, lam=1.0, offset=offset or 0, shift=shift or 0)
        enc = geo._encoding(sens)
        gram = xp.einsum("pcr,pcs->prs", enc.conj(), enc)
        b = geo.reduce(k.astype(np.complex64)).reshape(sens.shape[0], -1).T.astype(np.complex128)  # (P, coil)
        h = xp.einsum("pcr,pc->pr", enc.conj(), b)
        from ..device import to_numpy

        gram, h, b = to_numpy(gram), to_numpy(h), to_numpy(b)

        def proj(v):
            return np.abs(np.einsum("gru,gr->gu", np.conj(v), h)) ** 2

        curve = lam_curve(gram, proj, float(np.sum(np.abs(b) ** 2)), b.size)
        sigma2 = None if noise_sd is None else float(noise_sd) ** 2
        lam, _ = select_lam(curve, criterion=criterion, sigma2=sigma2)
        info["lam_selection"] = criterion + " (lattice)"
        info["lam_curve"] = curve
    else:
        info["lam_selection"] = "given"
    info["lam"] = float(lam)
    unf = SenseUnfolder(sens, accel, lam=lam, offset=offset or 0, shift=shift or 0)
    x = unf(k)
    if max_iter == 0 or not bool((full & ~unf.mask).any()):
        info["pcg_iterations"] = 0
        return x
    x, it = _pcg(SenseOp(sens, full), k, lam, x, unf.precondition, max_iter, tol)
    info["pcg_iterations"] = it
    return x


def _pcg(op, y, lam, x, precondition, n_iter, tol=0.0):
    """Preconditioned CG on ``(AᴴA + λI) x = Aᴴ y`` from ``x``; returns (x, iterations)."""
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
    rz0 = rz
    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 (the count is returned)
        q = normal(p)
        pq = dot_real(p, q)
        if pq <= 0 or rz <= 0:
            break
        alpha = rz / pq
        x = x + alpha * p
        r -= alpha * q
        z = precondition(r)
        rz_new = dot_real(r, z)
        if rz_new <= (tol**2) * rz0:
            break
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it
