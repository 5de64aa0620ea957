"""PDF, ODF and GFA against dipy's DiffusionSpectrumModel, and the PDF against the analytic multi-tensor PDF."""

import numpy as np
import pytest

from mrirecon import dsi

EVALS = np.array([[1.7e-3, 0.3e-3, 0.3e-3], [1.7e-3, 0.3e-3, 0.3e-3]])
ANGLES = [(90, 0), (90, 60)]  # two fibres in the xy-plane crossing at 60°


def _dipy_signal(lat):
    from dipy.core.gradients import gradient_table
    from dipy.sims.voxel import multi_tensor

    gtab = gradient_table(lat.bvals(), bvecs=lat.bvecs())
    s, _ = multi_tensor(gtab, EVALS, S0=1.0, angles=ANGLES, fractions=[50, 50], snr=None)
    return gtab, s


def test_multi_tensor_signal_matches_dipy():
    lat = dsi.q_lattice()
    _, ref = _dipy_signal(lat)
    th = np.deg2rad([0.0, 60.0])
    dirs = np.stack([np.cos(th), np.sin(th), np.zeros(2)], -1)
    mine = dsi.multi_tensor_signal(
        lat.bvals(),
        lat.bvecs(),
        d_par_mm2_s=EVALS[:, 0],
        d_perp_mm2_s=EVALS[:, 1],
        directions=dirs,
        fractions=[0.5, 0.5],
    )
    np.testing.assert_allclose(mine, ref, atol=1e-12)


def test_pdf_odf_gfa_match_dipy_dsi_model():
    from dipy.core.sphere import Sphere
    from dipy.reconst.dsi import DiffusionSpectrumModel
    from dipy.reconst.odf import gfa as dipy_gfa

    lat = dsi.q_lattice()
    gtab, s = _dipy_signal(lat)
    fit = DiffusionSpectrumModel(gtab).fit(s)
    mine = dsi.pdf(s[None], lat, clip=True, normalize=True)[0]
    np.testing.assert_allclose(mine, fit.pdf(), rtol=1e-4, atol=1e-7)
    sphere = dsi.hemisphere()
    ref_odf = fit.odf(Sphere(xyz=sphere))
    my_odf = dsi.odf(s[None], lat)[0]
    np.testing.assert_allclose(my_odf, ref_odf, rtol=1e-3, atol=1e-6 * ref_odf.max())
    assert dsi.gfa(my_odf) == pytest.approx(dipy_gfa(ref_odf), rel=1e-3)


def test_pdf_sums_to_the_b0_signal_and_is_linear():
    lat = dsi.q_lattice()
    rng = np.random.default_rng(0)
    s = rng.random((3, lat.size)) + 0.5
    p = dsi.pdf(s.astype(np.float64), lat)
    np.testing.assert_allclose(p.sum(axis=(1, 2, 3)), s[:, 0], rtol=1e-10)
    np.testing.assert_allclose(dsi.pdf(2 * s[:1] - s[1:2], lat)[0], 2 * p[0] - p[1], atol=1e-10)


def test_pdf_equals_a_dense_dft_sum():
    lat = dsi.q_lattice(9)  # 123 points, 7³ grid
    s = np.random.default_rng(1).random(lat.size)
    n = 9
    p = dsi.pdf(s[None].astype(np.float64), lat, grid_size=n, filter_width=None)[0]
    r = np.arange(n) - n // 2
    rr = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    ref = (np.cos(2 * np.pi * rr @ lat.points.T / n) @ s / n**3).reshape(n, n, n)
    np.testing.assert_allclose(p, ref, atol=1e-12)


def test_pdf_matches_the_analytic_multi_tensor_pdf():
    """The DFT of the truncated lattice approximates the continuous propagator.

    The error is truncation of q-space at q_max: measured 35 % / 10 % / 3 % at
    b_max 4000 / 8000 / 12000 s/mm² (the radial signal at the edge is
    exp(−b_max d⊥): 0.30 / 0.09 / 0.03). At 12000, with dipy's τ = 1/(4π²)
    (q = √b) and Δr = r_max / (N q_max), the measured 2.9 % on the 17³ grid
    passes a 5 % bound, while a Δr off by 10 % gives 17 %.
    """
    from dipy.sims.voxel import multi_tensor_pdf

    lat = dsi.q_lattice(b_max_s_mm2=12000)
    _, s = _dipy_signal(lat)
    n = 17
    p = dsi.pdf(s[None].astype(np.float64), lat, grid_size=n, filter_width=None)[0]
    dr = 5.0 / (n * np.sqrt(12000.0))
    r = (np.arange(n) - n // 2) * dr
    pts = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    ref = multi_tensor_pdf(pts, EVALS, ANGLES, [50, 50]).reshape(n, n, n) * dr**3
    err = np.linalg.norm(p - ref) / np.linalg.norm(ref)
    assert err < 0.05, err
