"""``mrirecon phantom mrsi`` then ``mrirecon mrsi``: output keeps header; bad inputs exit 2 and write nothing."""

import numpy as np
import pytest

from mrirecon.cli import main
from mrirecon.io.nifti_mrs import load_nifti_mrs, save_nifti_mrs


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    assert main(["phantom", "mrsi", "-o", str(d), "--shape", "16", "--points", "256"]) == 0
    return d


def test_cli_runs_and_keeps_header(phantom_dir, tmp_path):
    out = tmp_path / "out.nii.gz"
    fig = tmp_path / "f.png"
    args = [
        "mrsi",
        str(phantom_dir / "mrsi.nii.gz"),
        "--lipid-mask",
        str(phantom_dir / "lipid_mask.nii.gz"),
        "--brain-mask",
        str(phantom_dir / "brain_mask.nii.gz"),
        "-o",
        str(out),
        "--figure",
        str(fig),
    ]
    assert main(args) == 0
    a, b = load_nifti_mrs(phantom_dir / "mrsi.nii.gz"), load_nifti_mrs(out)
    assert a.data.shape == b.data.shape and fig.exists()
    assert b.spectrometer_frequency_mhz == a.spectrometer_frequency_mhz and b.dwell_time_s == a.dwell_time_s
    assert b.header_extension["ProcessingApplied"][-1]["Method"] == "Lipid suppression"
    assert main(args) == 2  # exists, no --force


def test_cli_bad_inputs(phantom_dir, tmp_path, capsys):
    lipid = str(phantom_dir / "lipid_mask.nii.gz")
    mrs = str(phantom_dir / "mrsi.nii.gz")
    out = tmp_path / "o.nii.gz"
    import nibabel as nib

    other = tmp_path / "other_grid.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 1), np.uint8), np.eye(4)), str(other))
    empty = tmp_path / "empty.nii.gz"
    img = nib.load(lipid)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), str(empty))
    real = tmp_path / "real.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 1, 8), np.float32), img.affine), str(real))
    m = load_nifti_mrs(mrs)
    nan = tmp_path / "nan.nii.gz"
    d = m.data.copy()
    d[8, 8, 0, 3] = np.nan
    save_nifti_mrs(nan, d, dwell_time_s=m.dwell_time_s, affine=m.affine, header_extension=m.header_extension)
    for inp, lip in ((mrs, str(other)), (str(real), lipid), (mrs, str(empty)), (str(nan), lipid)):
        assert main(["mrsi", inp, "--lipid-mask", lip, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err
        assert not out.exists()
