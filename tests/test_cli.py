"""Tests for the ``mrirecon`` command line (run in-process through ``mrirecon.cli.main``)."""

import json
import math

import nibabel as nib
import numpy as np
import pytest

from mrirecon import __version__, io
from mrirecon.cli import main
from mrirecon.metrics import nrmse

GAMMA_BAR = 42.577478  # MHz/T
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHAPE = ("32", "32", "32")

# NRMSE (percent, demeaned, inside the mask) against the phantom's chi.nii.gz on the
# 32^3 phantom (6 mm voxels, default noise 0.003 ppm, seed 0), measured once:
#   l2 --lam auto (gcv): 52.06   tkd: 57.31   l2 --lam 0.01: 55.02
#   oblique phantom (b0 0.3 0 1), B0 from the affine: 54.16; forced --b0-direction 0 0 1: 66.13
# The bounds below are measured + 5 points; all are < 100 (the error of a zero map).
NRMSE_L2_AUTO = 57.0
NRMSE_TKD = 62.5
NRMSE_L2_FIXED = 60.0
NRMSE_OBLIQUE = 59.0


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    d = tmp_path_factory.mktemp("phantom")
    rc = main(["phantom", "qsm", "-o", str(d), "--shape", *SHAPE, "--seed", "0"])
    assert rc == 0
    return d


@pytest.fixture(scope="module")
def oblique(tmp_path_factory):
    d = tmp_path_factory.mktemp("oblique")
    rc = main(
        ["phantom", "qsm", "-o", str(d), "--shape", *SHAPE, "--seed", "0", "--b0-direction", "0.3", "0", "1"]
    )
    assert rc == 0
    return d


@pytest.fixture(scope="module")
def truth(phantom):
    ref = io.load_nifti(phantom / "chi.nii.gz").data
    mask = io.load_nifti(phantom / "mask.nii.gz").data != 0
    return ref, mask


def run_qsm(field, mask, out, *extra):
    return main(["qsm", str(field), "-m", str(mask), "-o", str(out), *extra])


def read_sidecar(out):
    return json.loads(io.sidecar_path(out).read_text())


@pytest.fixture(scope="module")
def l2_default(phantom, tmp_path_factory):
    """Default l2 reconstruction of the axial phantom (auto lambda)."""
    out = tmp_path_factory.mktemp("l2") / "chi_l2.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out) == 0
    return out


def write_like(path, data, ref_path):
    """Save ``data`` on the grid (affine and header) of the NIfTI file ``ref_path``."""
    ref = io.load_nifti(ref_path, ndim=None)
    io.save_nifti(path, data, ref.affine, ref.header)
    return path


# --------------------------------------------------------------------------- phantom command


def test_phantom_files(phantom):
    for name in ("field.nii.gz", "mask.nii.gz", "chi.nii.gz", "labels.nii.gz", "phantom.json"):
        assert (phantom / name).is_file()
    meta = json.loads((phantom / "phantom.json").read_text())
    assert meta["Shape"] == [32, 32, 32]
    assert meta["Seed"] == 0
    field = io.load_nifti(phantom / "field.nii.gz")
    assert field.data.shape == (32, 32, 32)
    assert io.b0_direction_from_affine(field.affine) == (0.0, 0.0, 1.0)


def test_phantom_refuses_overwrite(phantom, capsys):
    before = (phantom / "field.nii.gz").read_bytes()
    capsys.readouterr()
    rc = main(["phantom", "qsm", "-o", str(phantom), "--shape", *SHAPE, "--seed", "5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "exists" in err
    assert (phantom / "field.nii.gz").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--noise-ppm", "-1"], "--noise-ppm"),
        (["--shape", "4", "32", "32"], "--shape"),
        (["--b0-direction", "0", "0", "0"], "b0"),
        (["--noise-ppm", "abc"], "--noise-ppm"),
    ],
)
def test_phantom_bad_input(tmp_path, capsys, args, fragment):
    out = tmp_path / "ph"
    rc = main(["phantom", "qsm", "-o", str(out), "--shape", *SHAPE, *args])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mrirecon phantom qsm: error:")
    assert fragment in lines[0]
    assert not out.exists() or list(out.iterdir()) == []


# --------------------------------------------------------------------------- qsm: end to end


def test_qsm_default_l2(phantom, l2_default, truth, capsys):
    out = l2_default
    field = io.load_nifti(phantom / "field.nii.gz")
    chi = io.load_nifti(out)
    ref, mask = truth
    assert chi.data.shape == field.data.shape
    np.testing.assert_allclose(chi.affine, field.affine, atol=1e-6)
    assert chi.voxel_size_mm == pytest.approx(field.voxel_size_mm)
    assert int(chi.header["sform_code"]) == int(field.header["sform_code"])
    assert int(chi.header["qform_code"]) == int(field.header["qform_code"])
    assert np.all(np.isfinite(chi.data))
    assert np.all(chi.data[~mask] == 0)
    assert abs(float(chi.data[mask].mean())) < 1e-6
    assert float(np.abs(chi.data[mask]).max()) > 1e-3  # not trivially zero

    meta = read_sidecar(out)
    assert io.sidecar_path(out).name == "chi_l2.json"
    assert "L2" in meta["Method"]
    assert meta["Lambda"] > 0
    assert meta["LambdaSelection"] == "GCV minimum"
    assert meta["B0Direction"] == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    assert meta["B0DirectionSource"] == "affine"
    assert meta["VoxelSize_mm"] == pytest.approx(list(field.voxel_size_mm))
    assert meta["Units"] == "ppm"
    assert meta["FieldUnits"] == "ppm"
    assert set(meta["Inputs"]) == {"field", "mask"}
    assert meta["Inputs"]["field"] == str((phantom / "field.nii.gz").resolve())
    assert meta["Inputs"]["mask"] == str((phantom / "mask.nii.gz").resolve())
    assert meta["Software"] == {"name": "mrirecon", "version": __version__}
    assert "LCurve" in meta

    err = nrmse(chi.data, ref, mask=mask)
    assert err < NRMSE_L2_AUTO < 100, err
    # nothing but the map and its sidecar in the output directory
    assert sorted(p.name for p in out.parent.iterdir()) == ["chi_l2.json", "chi_l2.nii.gz"]


def test_qsm_tkd(phantom, truth, tmp_path):
    out = tmp_path / "chi_tkd.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--method", "tkd") == 0
    ref, mask = truth
    chi = io.load_nifti(out).data
    assert np.all(np.isfinite(chi)) and np.all(chi[~mask] == 0)
    assert abs(float(chi[mask].mean())) < 1e-6
    meta = read_sidecar(out)
    assert meta["Method"] == "TKD"
    assert meta["TKDThreshold"] == pytest.approx(0.19)
    assert "Lambda" not in meta
    assert nrmse(chi, ref, mask=mask) < NRMSE_TKD


def test_qsm_fixed_lambda(phantom, truth, tmp_path):
    out = tmp_path / "chi.nii"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.01") == 0
    ref, mask = truth
    chi = io.load_nifti(out).data
    meta = read_sidecar(out)
    assert (tmp_path / "chi.json").is_file()
    assert meta["Lambda"] == 0.01
    assert meta["LambdaSelection"] == "given"
    assert "LCurve" not in meta
    assert nrmse(chi, ref, mask=mask) < NRMSE_L2_FIXED


def test_qsm_corner_criterion(phantom, tmp_path):
    out = tmp_path / "chi.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam-criterion", "corner") == 0
    meta = read_sidecar(out)
    assert meta["LambdaSelection"] == "L-curve corner"
    assert meta["Lambda"] > 0


def test_qsm_figures(phantom, tmp_path):
    out = tmp_path / "chi.nii.gz"
    fig = tmp_path / "chi.png"
    lc = tmp_path / "lcurve.png"
    rc = run_qsm(
        phantom / "field.nii.gz",
        phantom / "mask.nii.gz",
        out,
        "--figure",
        str(fig),
        "--lcurve-figure",
        str(lc),
    )
    assert rc == 0
    for path in (fig, lc):
        assert path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chi.json", "chi.nii.gz", "chi.png", "lcurve.png"]


def test_qsm_field_units_hz_and_rad(phantom, l2_default, tmp_path):
    field_path = phantom / "field.nii.gz"
    mask_path = phantom / "mask.nii.gz"
    field = io.load_nifti(field_path, dtype=np.float64).data
    chi_ppm = io.load_nifti(l2_default).data
    lam_ppm = read_sidecar(l2_default)["Lambda"]
    scale = float(np.abs(chi_ppm).max())

    hz_path = write_like(tmp_path / "field_hz.nii.gz", field * GAMMA_BAR * 3.0, field_path)
    out_hz = tmp_path / "chi_hz.nii.gz"
    assert run_qsm(hz_path, mask_path, out_hz, "--field-units", "hz", "--b0-tesla", "3") == 0
    meta = read_sidecar(out_hz)
    assert meta["FieldUnits"] == "hz" and meta["MagneticFieldStrength_T"] == 3.0
    assert meta["Lambda"] == pytest.approx(lam_ppm, rel=1e-3)
    np.testing.assert_allclose(io.load_nifti(out_hz).data, chi_ppm, rtol=1e-4, atol=1e-4 * scale)

    te = 0.02
    rad = field * GAMMA_BAR * 3.0 * 2 * math.pi * te
    rad_path = write_like(tmp_path / "field_rad.nii.gz", rad, field_path)
    out_rad = tmp_path / "chi_rad.nii.gz"
    rc = run_qsm(rad_path, mask_path, out_rad, "--field-units", "rad", "--b0-tesla", "3", "--te-s", str(te))
    assert rc == 0
    meta = read_sidecar(out_rad)
    assert meta["FieldUnits"] == "rad" and meta["EchoTime_s"] == te
    np.testing.assert_allclose(io.load_nifti(out_rad).data, chi_ppm, rtol=1e-4, atol=1e-4 * scale)


def test_qsm_oblique_b0_from_affine(oblique, tmp_path):
    field_path, mask_path = oblique / "field.nii.gz", oblique / "mask.nii.gz"
    expected = np.array([0.3, 0.0, 1.0]) / math.hypot(0.3, 1.0)
    np.testing.assert_allclose(
        io.b0_direction_from_affine(io.load_nifti(field_path).affine), expected, atol=1e-6
    )
    ref = io.load_nifti(oblique / "chi.nii.gz").data
    mask = io.load_nifti(mask_path).data != 0

    out = tmp_path / "chi.nii.gz"
    assert run_qsm(field_path, mask_path, out) == 0
    meta = read_sidecar(out)
    np.testing.assert_allclose(meta["B0Direction"], expected, atol=1e-6)
    assert meta["B0DirectionSource"] == "affine"
    err_affine = nrmse(io.load_nifti(out).data, ref, mask=mask)
    assert err_affine < NRMSE_OBLIQUE

    # the command line overrides the affine (here with the wrong, axial direction)
    out2 = tmp_path / "chi_axial.nii.gz"
    assert run_qsm(field_path, mask_path, out2, "--b0-direction", "0", "0", "2") == 0
    meta2 = read_sidecar(out2)
    assert meta2["B0Direction"] == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    assert meta2["B0DirectionSource"] == "command line"
    err_wrong = nrmse(io.load_nifti(out2).data, ref, mask=mask)
    assert err_wrong > err_affine + 5  # measured 66.1 vs 54.2


def test_qsm_nan_outside_mask_accepted(phantom, truth, tmp_path):
    _, mask = truth
    field = io.load_nifti(phantom / "field.nii.gz").data.copy()
    field[~mask] = np.nan
    field[0, 0, 0] = np.inf
    field_path = write_like(tmp_path / "field_nan.nii.gz", field, phantom / "field.nii.gz")
    out = tmp_path / "out" / "chi.nii.gz"
    out.parent.mkdir()
    assert run_qsm(field_path, phantom / "mask.nii.gz", out) == 0
    chi = io.load_nifti(out).data
    assert np.all(np.isfinite(chi)) and np.all(chi[~mask] == 0)


def test_qsm_force_overwrites(phantom, tmp_path, capsys):
    out = tmp_path / "chi.nii.gz"
    out.write_bytes(b"old")
    capsys.readouterr()
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.01", "--force") == 0
    assert "wrote" in capsys.readouterr().out
    assert io.load_nifti(out).data.shape == (32, 32, 32)
    assert read_sidecar(out)["Lambda"] == 0.01


def test_qsm_failed_figure_writes_nothing(phantom, tmp_path, monkeypatch):
    import matplotlib.figure

    def broken_savefig(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken_savefig)
    out = tmp_path / "chi.nii.gz"
    with pytest.raises(OSError, match="disk full"):
        run_qsm(
            phantom / "field.nii.gz",
            phantom / "mask.nii.gz",
            out,
            "--lam",
            "0.01",
            "--figure",
            str(tmp_path / "f.png"),
        )
    assert list(tmp_path.iterdir()) == []


def test_qsm_unsupported_figure_format(phantom, tmp_path, capsys):
    out = tmp_path / "chi.nii.gz"
    capsys.readouterr()
    rc = run_qsm(
        phantom / "field.nii.gz",
        phantom / "mask.nii.gz",
        out,
        "--lam",
        "0.01",
        "--figure",
        str(tmp_path / "chi.xyz"),
    )
    assert_rejected(capsys, rc, "--figure", tmp_path)


def test_phantom_negative_seed(tmp_path, capsys):
    out = tmp_path / "ph"
    rc = main(["phantom", "qsm", "-o", str(out), "--shape", "16", "16", "16", "--seed", "-1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "--seed" in err
    assert not out.exists()


def test_phantom_bad_voxel_size_creates_nothing(tmp_path, capsys):
    out = tmp_path / "ph"
    rc = main(
        ["phantom", "qsm", "-o", str(out), "--shape", "16", "16", "16", "--voxel-size-mm", "0", "1", "1"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "voxel_size_mm" in err
    assert not out.exists()


# --------------------------------------------------------------------------- qsm: bad input


def assert_rejected(capsys, rc, fragment, outdir, prog="mrirecon qsm"):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error:"), lines[0]
    assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in outdir.iterdir()) == [], "nothing may be written"


@pytest.fixture
def outdir(tmp_path):
    d = tmp_path / "out"
    d.mkdir()
    return d


def _bad_field(kind, phantom, tmp_path):
    """Build a bad (field, mask) pair of the given kind; return (field, mask, fragment)."""
    field_path, mask_path = phantom / "field.nii.gz", phantom / "mask.nii.gz"
    if kind == "missing":
        return tmp_path / "nope.nii.gz", mask_path, "no such file"
    if kind == "txt":
        p = tmp_path / "field.txt"
        p.write_text("0 0 0\n")
        return p, mask_path, "not a NIfTI"
    if kind == "garbage":
        p = tmp_path / "field.nii.gz"
        p.write_bytes(b"not a nifti" * 50)
        return p, mask_path, "cannot be read as NIfTI"
    if kind == "5d":  # a 4-D series is valid (tests/test_qsm_series.py); five dimensions are not
        f = io.load_nifti(field_path)
        p = tmp_path / "field5d.nii.gz"
        five = np.stack([f.data, f.data], axis=-1)[..., None].repeat(2, axis=-1)
        nib.save(nib.Nifti1Image(five, f.affine), str(p))
        return p, mask_path, "or a 4-D series (x, y, z, t)"
    if kind == "shape":
        m = io.load_nifti(mask_path)
        p = tmp_path / "mask_small.nii.gz"
        io.save_nifti(p, m.data[:-2], m.affine)
        return field_path, p, "shape"
    if kind == "affine":
        m = io.load_nifti(mask_path)
        shifted = m.affine.copy()
        shifted[:3, 3] += (1.5, 0.0, 0.0)
        p = tmp_path / "mask_shifted.nii.gz"
        io.save_nifti(p, m.data, shifted)
        return field_path, p, "affine"
    if kind == "empty":
        m = io.load_nifti(mask_path)
        p = tmp_path / "mask_empty.nii.gz"
        io.save_nifti(p, np.zeros_like(m.data), m.affine, m.header)
        return field_path, p, "mask is empty"
    if kind == "nan":
        f = io.load_nifti(field_path)
        mask = io.load_nifti(mask_path).data != 0
        data = f.data.copy()
        idx = tuple(np.argwhere(mask)[len(np.argwhere(mask)) // 2])
        data[idx] = np.nan
        p = tmp_path / "field_nan.nii.gz"
        io.save_nifti(p, data, f.affine, f.header)
        return p, mask_path, "NaN"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "txt", "garbage", "5d", "shape", "affine", "empty", "nan"])
def test_qsm_bad_files(phantom, tmp_path, outdir, capsys, kind):
    field, mask, fragment = _bad_field(kind, phantom, tmp_path)
    out = outdir / "chi.nii.gz"
    capsys.readouterr()
    rc = run_qsm(field, mask, out)
    assert_rejected(capsys, rc, fragment, outdir)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--lam", "0"], "lambda must be a positive"),
        (["--lam", "-1"], "lambda must be a positive"),
        (["--lam", "abc"], "expected a positive number or 'auto'"),
        (["--lam", "nan"], "lambda must be a positive"),
        (["--b0-direction", "0", "0", "0"], "--b0-direction"),
        (["--b0-direction", "0", "0"], "--b0-direction"),
        (["--field-units", "hz"], "--b0-tesla"),
        (["--field-units", "hz", "--b0-tesla", "-3"], "b0_tesla"),
        (["--field-units", "rad", "--b0-tesla", "3"], "--te-s"),
        (["--field-units", "rad"], "--b0-tesla"),
        (["--field-units", "gauss"], "--field-units"),
        (["--method", "tv"], "--method"),
        (["--lam", "0.01", "--lcurve-figure", "LC"], "--lcurve-figure"),
        (["--method", "tkd", "--lcurve-figure", "LC"], "--lcurve-figure"),
        (["--method", "tkd", "--tkd-threshold", "0.9"], "--tkd-threshold"),
        (["--pad", "-1"], "--pad"),
        (["--figure", "OUT"], "must all differ"),
    ],
)
def test_qsm_bad_options(phantom, outdir, capsys, args, fragment):
    out = outdir / "chi.nii.gz"
    args = [str(outdir / "lc.png") if a == "LC" else str(out) if a == "OUT" else a for a in args]
    capsys.readouterr()
    rc = run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, *args)
    assert_rejected(capsys, rc, fragment, outdir)


def test_qsm_bad_output_name(phantom, outdir, capsys):
    capsys.readouterr()
    rc = run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", outdir / "chi.img")
    assert_rejected(capsys, rc, ".nii", outdir)


def test_qsm_output_dir_missing(phantom, outdir, capsys):
    capsys.readouterr()
    rc = run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", outdir / "sub" / "chi.nii.gz")
    assert_rejected(capsys, rc, "does not exist", outdir)


def test_qsm_missing_mask_option(phantom, outdir, capsys):
    capsys.readouterr()
    rc = main(["qsm", str(phantom / "field.nii.gz"), "-o", str(outdir / "chi.nii.gz")])
    assert_rejected(capsys, rc, "-m/--mask", outdir)


def test_qsm_existing_output_kept(phantom, outdir, capsys):
    out = outdir / "chi.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.01") == 0
    before = {p.name: p.read_bytes() for p in outdir.iterdir()}
    assert sorted(before) == ["chi.json", "chi.nii.gz"]
    capsys.readouterr()
    rc = run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.02")
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "exists" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in outdir.iterdir()} == before
    # only the sidecar exists: still refused, and the map is not written
    out.unlink()
    rc = run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.02")
    assert rc == 2
    assert "chi.json" in capsys.readouterr().err
    assert not out.exists()
    assert (outdir / "chi.json").read_bytes() == before["chi.json"]
    # with --force both are replaced
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--lam", "0.02", "--force") == 0
    assert read_sidecar(out)["Lambda"] == 0.02


def test_qsm_output_is_input(phantom, tmp_path, capsys):
    field = io.load_nifti(phantom / "field.nii.gz")
    field_path = write_like(tmp_path / "field.nii.gz", field.data, phantom / "field.nii.gz")
    before = field_path.read_bytes()
    capsys.readouterr()
    rc = run_qsm(field_path, phantom / "mask.nii.gz", field_path, "--force")
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1
    assert "input" in err
    assert field_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["field.nii.gz"]


# --------------------------------------------------------------------------- help, version, usage


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "qsm" in out and "phantom" in out


def test_qsm_help_mentions_every_option(capsys):
    assert main(["qsm", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in (
        "--mask",
        "--output",
        "--method",
        "--lam",
        "--lam-criterion",
        "--b0-direction",
        "--field-units",
        "--b0-tesla",
        "--te-s",
        "--pad",
        "--figure",
        "--lcurve-figure",
        "--force",
    ):
        assert opt in out, opt


def test_phantom_help(capsys):
    from mrirecon.cli.phantom import KINDS

    assert main(["phantom", "--help"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert kind in out, kind
    assert main(["phantom", "qsm", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in ("--shape", "--noise-ppm", "--seed", "--b0-direction", "--force"):
        assert opt in out, opt


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["qsm"]])
def test_usage_errors(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err


# --------------------------------------------------------------------------- --device


def test_device_gpu_without_cuda_is_one_line_error(phantom, tmp_path, capsys, monkeypatch):
    import mrirecon.cli._device as dev

    monkeypatch.setattr(dev, "cupy_available", lambda: False)
    out = tmp_path / "chi.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", out, "--device", "gpu") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--device gpu needs CuPy" in err
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.parametrize("method", [("l2",), ("tkd",), ("cg-l2", "--lam", "0.01", "--max-iter", "20")])
def test_device_gpu_matches_cpu(phantom, tmp_path, method):
    from mrirecon.device import cupy_available

    if not cupy_available():
        pytest.skip("no CuPy/CUDA device")
    args = ["--method", *method]
    cpu, gpu = tmp_path / "cpu.nii.gz", tmp_path / "gpu.nii.gz"
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", cpu, *args) == 0
    assert run_qsm(phantom / "field.nii.gz", phantom / "mask.nii.gz", gpu, *args, "--device", "gpu") == 0
    a, b = io.load_nifti(cpu).data, io.load_nifti(gpu).data
    assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(a)
    meta = json.loads((tmp_path / "gpu.json").read_text())
    assert meta["Device"].startswith("gpu (")
