"""NIfTI-MRS: round trip keeps header and values; files of the nifti-mrs library read back equal."""

import numpy as np
import pytest

from mrirecon.errors import InputFileError, OutputExistsError
from mrirecon.io.nifti_mrs import load_nifti_mrs, save_nifti_mrs


def _data():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 3, 1, 64)) + 1j * rng.standard_normal((4, 3, 1, 64))).astype(np.complex64)


def test_round_trip_and_provenance(tmp_path):
    x = _data()
    aff = np.diag([3.75, 3.75, 10.0, 1.0])
    p = tmp_path / "a.nii.gz"
    save_nifti_mrs(
        p, x, dwell_time_s=5e-4, spectrometer_frequency_mhz=123.2, affine=aff, provenance={"Method": "A"}
    )
    m = load_nifti_mrs(p)
    np.testing.assert_array_equal(m.data, x)
    assert m.dwell_time_s == pytest.approx(5e-4) and m.spectrometer_frequency_mhz == pytest.approx(123.2)
    assert m.nucleus == "1H"
    np.testing.assert_allclose(m.affine, aff)
    q = tmp_path / "b.nii.gz"
    save_nifti_mrs(
        q,
        2 * m.data,
        dwell_time_s=m.dwell_time_s,
        affine=m.affine,
        header_extension=m.header_extension,
        provenance={"Method": "B"},
    )
    m2 = load_nifti_mrs(q)
    assert [e["Method"] for e in m2.header_extension["ProcessingApplied"]] == ["A", "B"]
    np.testing.assert_array_equal(m2.data, 2 * x)
    with pytest.raises(OutputExistsError):
        save_nifti_mrs(q, x, dwell_time_s=5e-4, spectrometer_frequency_mhz=123.2)


def test_agrees_with_the_nifti_mrs_library(tmp_path):
    from nifti_mrs.create_nmrs import gen_nifti_mrs
    from nifti_mrs.nifti_mrs import NIFTI_MRS

    x = _data()
    p = tmp_path / "lib.nii.gz"
    gen_nifti_mrs(x, 4e-4, 297.2, nucleus="1H").save(str(p))
    m = load_nifti_mrs(p)
    np.testing.assert_array_equal(m.data, x)
    assert m.spectrometer_frequency_mhz == pytest.approx(297.2) and m.dwell_time_s == pytest.approx(4e-4)
    q = tmp_path / "ours.nii.gz"
    save_nifti_mrs(q, x, dwell_time_s=4e-4, spectrometer_frequency_mhz=297.2)
    np.testing.assert_array_equal(NIFTI_MRS(str(q))[:], x)


def test_not_nifti_mrs(tmp_path):
    import nibabel as nib

    p = tmp_path / "plain.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(p))
    with pytest.raises(InputFileError):
        load_nifti_mrs(p)
    with pytest.raises(InputFileError):
        load_nifti_mrs(tmp_path / "missing.nii.gz")
