"""4-D local-field series: every volume inverted with one kernel and one plan, one λ for the series."""

import numpy as np
import pytest

from mrirecon import qsm
from mrirecon.errors import ShapeMismatchError
from mrirecon.phantoms import head_phantom, simulate_field


@pytest.fixture(scope="module")
def series():
    ph = head_phantom((32, 32, 32))
    field = simulate_field(ph.chi, voxel_size_mm=ph.voxel_size_mm, mask=ph.mask)
    rng = np.random.default_rng(3)
    # a BOLD-like series: the same anatomy scaled a little per volume, plus noise
    scale = 1.0 + 0.05 * np.sin(np.linspace(0, np.pi, 6))
    vols = field[..., None] * scale + 0.002 * rng.standard_normal((*field.shape, 6)) * ph.mask[..., None]
    return ph, vols.astype(np.float32), scale


@pytest.mark.parametrize("method", ["l2", "tkd"])
def test_series_equals_volume_by_volume(series, method):
    ph, vols, _ = series
    kw = {"voxel_size_mm": ph.voxel_size_mm}
    invert = (
        (lambda f: qsm.closed_form_l2(f, ph.mask, lam=0.01, **kw))
        if method == "l2"
        else (lambda f: qsm.tkd(f, ph.mask, **kw))
    )
    chi = invert(vols)
    assert chi.shape == vols.shape and chi.dtype == np.float32
    for t in range(vols.shape[3]):
        np.testing.assert_allclose(chi[..., t], invert(np.ascontiguousarray(vols[..., t])), rtol=0, atol=1e-6)


def test_series_is_linear_in_each_volume(series):
    """Volume t scaled by c_t gives χ scaled by c_t (no cross-talk between volumes)."""
    ph, vols, _ = series
    base = np.repeat(vols[..., :1], 4, axis=3)
    c = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    chi = qsm.closed_form_l2(base * c, ph.mask, lam=0.02, voxel_size_mm=ph.voxel_size_mm)
    ref = qsm.closed_form_l2(
        np.ascontiguousarray(base[..., 0]), ph.mask, lam=0.02, voxel_size_mm=ph.voxel_size_mm
    )
    for t in range(4):
        np.testing.assert_allclose(chi[..., t], c[t] * ref, rtol=1e-4, atol=1e-6)


def test_auto_lambda_is_one_lambda_for_the_series(series):
    ph, vols, _ = series
    lam = qsm.lcurve(np.ascontiguousarray(vols[..., 0]), ph.mask, voxel_size_mm=ph.voxel_size_mm).lam
    auto = qsm.closed_form_l2(vols, ph.mask, lam="auto", voxel_size_mm=ph.voxel_size_mm)
    fixed = qsm.closed_form_l2(vols, ph.mask, lam=lam, voxel_size_mm=ph.voxel_size_mm)
    np.testing.assert_array_equal(auto, fixed)


def test_series_with_a_4d_mask_and_bad_shapes(series):
    ph, vols, _ = series
    m4 = np.repeat(ph.mask[..., None], vols.shape[3], axis=3)
    np.testing.assert_array_equal(
        qsm.closed_form_l2(vols, m4, lam=0.01, voxel_size_mm=ph.voxel_size_mm),
        qsm.closed_form_l2(vols, ph.mask, lam=0.01, voxel_size_mm=ph.voxel_size_mm),
    )
    with pytest.raises(ShapeMismatchError):
        qsm.closed_form_l2(vols, m4[..., :2], lam=0.01)
    with pytest.raises(ShapeMismatchError):
        qsm.closed_form_l2(vols[..., :0], ph.mask, lam=0.01)


def _write(path, data, vox=(2.0, 2.0, 2.0)):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), np.diag([*vox, 1.0])), str(path))
    return str(path)


def test_cli_inverts_a_4d_series_like_each_volume(series, tmp_path, capsys):
    """``mrirecon qsm`` on a 4-D field: one λ for the series, each volume equal to a 3-D run with it."""
    import json

    import nibabel as nib

    from mrirecon.cli import main

    ph, vols, _ = series
    vox = ph.voxel_size_mm
    f4 = _write(tmp_path / "f4.nii.gz", vols[..., :3], vox)
    m = _write(tmp_path / "m.nii.gz", ph.mask.astype(np.uint8), vox)
    assert main(["qsm", f4, "-m", m, "-o", str(tmp_path / "chi4.nii.gz")]) == 0
    meta = json.loads((tmp_path / "chi4.json").read_text())
    assert meta["Volumes"] == 3 and meta["LambdaChosenOnVolume"] == 0
    chi4 = np.asarray(nib.load(str(tmp_path / "chi4.nii.gz")).dataobj)
    assert chi4.shape == vols[..., :3].shape
    lam = meta["Lambda"]
    # the first volume alone picks the same λ; every volume matches a 3-D run at that λ
    f0 = _write(tmp_path / "f0.nii.gz", vols[..., 0], vox)
    assert main(["qsm", f0, "-m", m, "-o", str(tmp_path / "chi0.nii.gz")]) == 0
    assert json.loads((tmp_path / "chi0.json").read_text())["Lambda"] == pytest.approx(lam)
    for t in range(3):
        ft = _write(tmp_path / f"f{t}_.nii.gz", vols[..., t], vox)
        out = tmp_path / f"chi{t}_.nii.gz"
        assert main(["qsm", ft, "-m", m, "-o", str(out), "--lam", repr(lam)]) == 0
        np.testing.assert_allclose(chi4[..., t], np.asarray(nib.load(str(out)).dataobj), rtol=0, atol=1e-6)


def test_cli_4d_series_errors(series, tmp_path, capsys):
    from mrirecon.cli import main

    ph, vols, _ = series
    vox = ph.voxel_size_mm
    f4 = _write(tmp_path / "f4.nii.gz", vols[..., :2], vox)
    m = _write(tmp_path / "m.nii.gz", ph.mask.astype(np.uint8), vox)
    capsys.readouterr()
    assert main(["qsm", f4, "-m", m, "-o", str(tmp_path / "a.nii.gz"), "--method", "tv", "--lam", "1"]) == 2
    assert "4-D series" in capsys.readouterr().err
    m4 = _write(tmp_path / "m4.nii.gz", np.ones((*ph.mask.shape, 3), np.uint8), vox)
    assert main(["qsm", f4, "-m", m4, "-o", str(tmp_path / "b.nii.gz")]) == 2
    assert "3-D mask" in capsys.readouterr().err
    f5 = _write(tmp_path / "f5.nii.gz", np.zeros((4, 4, 4, 2, 2), np.float32), vox)
    assert main(["qsm", f5, "-m", m, "-o", str(tmp_path / "c.nii.gz")]) == 2
    assert "4-D series" in capsys.readouterr().err
    assert not any(tmp_path.glob("[abc].*"))
