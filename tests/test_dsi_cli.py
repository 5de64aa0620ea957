"""``mrirecon phantom dsi`` and ``mrirecon dsi``: files written, dipy reads them, bad inputs exit 2 and write nothing."""

import numpy as np
import pytest

from mrirecon.cli import main


@pytest.fixture(scope="module")
def phdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dsi") / "ph"
    assert main(["phantom", "dsi", "-o", str(d), "--shape", "12", "12"]) == 0
    return d


def test_phantom_then_reconstruction_round_trip(phdir, tmp_path):
    import nibabel as nib
    from dipy.core.gradients import gradient_table
    from dipy.io.gradients import read_bvals_bvecs
    from dipy.reconst.dsi import DiffusionSpectrumModel

    out = tmp_path / "full.nii.gz"
    args = [
        "dsi",
        str(phdir / "dwi_R3.nii.gz"),
        "--bvals",
        str(phdir / "dwi_R3.bval"),
        "--bvecs",
        str(phdir / "dwi_R3.bvec"),
        "-m",
        str(phdir / "mask.nii.gz"),
        "-o",
        str(out),
        "--gfa",
        str(tmp_path / "gfa.nii.gz"),
        "--pdf",
        str(tmp_path / "pdf.nii.gz"),
    ]
    assert main(args) == 0
    img = nib.load(out)
    assert img.shape == (12, 12, 1, 515)
    b, g = read_bvals_bvecs(str(tmp_path / "full.bval"), str(tmp_path / "full.bvec"))
    gtab = gradient_table(b, bvecs=g)
    data = np.asarray(img.dataobj)
    truth = np.asarray(nib.load(phdir / "truth.nii.gz").dataobj)
    mask = np.asarray(nib.load(phdir / "mask.nii.gz").dataobj) > 0
    v = tuple(np.argwhere(mask)[0])
    DiffusionSpectrumModel(gtab).fit(data[v]).pdf()  # dipy takes it from there
    err = np.linalg.norm(data[mask] - truth[mask]) / np.linalg.norm(truth[mask])
    assert err < 0.25
    assert nib.load(tmp_path / "pdf.nii.gz").shape == (12, 12, 1, 11**3)
    assert (tmp_path / "full.json").exists()
    assert main(args) == 2  # exists, no --force
    assert main([*args, "--force"]) == 0


def _write(d, name, data, bvals, bvecs):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4)), d / f"{name}.nii.gz")
    np.savetxt(d / f"{name}.bval", np.asarray(bvals)[None])
    np.savetxt(d / f"{name}.bvec", np.asarray(bvecs).T)


@pytest.mark.parametrize("case", ["count", "no-b0", "not-lattice", "nan"])
def test_bad_inputs_exit_2_and_write_nothing(phdir, tmp_path, case, capsys):
    import nibabel as nib

    data = np.asarray(nib.load(phdir / "dwi_R3.nii.gz").dataobj)
    b = np.loadtxt(phdir / "dwi_R3.bval")
    g = np.loadtxt(phdir / "dwi_R3.bvec").T
    if case == "count":
        data = data[..., :-1]
    elif case == "no-b0":
        data, b, g = data[..., 1:], b[1:], g[1:]
    elif case == "not-lattice":
        g = g + np.random.default_rng(0).normal(0, 0.05, g.shape)
        g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)
        g[b == 0] = 0
    else:
        data = data.copy()
        data[0, 0, 0, 3] = np.nan
    _write(tmp_path, "bad", data, b, g)
    out = tmp_path / "out.nii.gz"
    rc = main(
        [
            "dsi",
            str(tmp_path / "bad.nii.gz"),
            "--bvals",
            str(tmp_path / "bad.bval"),
            "--bvecs",
            str(tmp_path / "bad.bvec"),
            "-o",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "out.bval").exists() and not (tmp_path / "out.json").exists()
