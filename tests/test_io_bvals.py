"""FSL bval/bvec files: round trip, dipy's reader as the reference, bad files."""

import numpy as np
import pytest

from mrirecon.errors import InputFileError, OutputExistsError, ShapeMismatchError
from mrirecon.io.bvals import bval_bvec_paths, read_bvals_bvecs, write_bvals_bvecs


def test_round_trip_and_dipy_reads_what_we_write(tmp_path):
    from dipy.io.gradients import read_bvals_bvecs as dipy_read

    rng = np.random.default_rng(0)
    g = rng.standard_normal((20, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0
    b = np.round(rng.uniform(0, 4000, 20))
    b[0] = 0
    fb, fg = bval_bvec_paths(tmp_path / "dwi.nii.gz")
    assert fb.name == "dwi.bval" and fg.name == "dwi.bvec"
    write_bvals_bvecs(fb, fg, b, g)
    assert len(fg.read_text().splitlines()) == 3  # FSL: three rows
    b2, g2 = read_bvals_bvecs(fb, fg)
    np.testing.assert_allclose(b2, b)
    np.testing.assert_allclose(g2, g, atol=1e-8)
    b3, g3 = dipy_read(str(fb), str(fg))
    np.testing.assert_allclose(b3, b)
    np.testing.assert_allclose(g3, g, atol=1e-8)
    with pytest.raises(OutputExistsError):
        write_bvals_bvecs(fb, fg, b, g)


def test_n_by_3_bvec_files_are_accepted(tmp_path):
    (tmp_path / "a.bval").write_text("0 1000 1000\n")
    (tmp_path / "a.bvec").write_text("0 0 0\n1 0 0\n0 1 0\n")  # (3, 3): FSL rows = x, y, z
    b, g = read_bvals_bvecs(tmp_path / "a.bval", tmp_path / "a.bvec")
    np.testing.assert_allclose(g, [[0, 1, 0], [0, 0, 1], [0, 0, 0]])  # columns of the file
    (tmp_path / "b.bval").write_text("0\n1000\n1000\n1000\n")
    (tmp_path / "b.bvec").write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n")
    b, g = read_bvals_bvecs(tmp_path / "b.bval", tmp_path / "b.bvec")
    assert g.shape == (4, 3) and np.allclose(g[3], [0, 0, 1])


def test_bad_files(tmp_path):
    with pytest.raises(InputFileError, match="no such"):
        read_bvals_bvecs(tmp_path / "x.bval", tmp_path / "x.bvec")
    (tmp_path / "c.bval").write_text("0 1000 oops\n")
    (tmp_path / "c.bvec").write_text("0 1 0\n0 0 1\n0 0 0\n")
    with pytest.raises(InputFileError, match="numbers"):
        read_bvals_bvecs(tmp_path / "c.bval", tmp_path / "c.bvec")
    (tmp_path / "c.bval").write_text("0 1000\n")
    with pytest.raises(ShapeMismatchError, match="3 rows of 2"):
        read_bvals_bvecs(tmp_path / "c.bval", tmp_path / "c.bvec")
