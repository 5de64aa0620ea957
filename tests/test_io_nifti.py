"""Tests for mrirecon.io: B0 direction from the affine, NIfTI round trips, atomic writes."""

import math

import nibabel as nib
import numpy as np
import pytest

from mrirecon import io
from mrirecon.errors import (
    InputFileError,
    InvalidParameterError,
    MriReconError,
    OutputExistsError,
    ShapeMismatchError,
)

# --------------------------------------------------------------------------- helpers


def rot_x(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(theta):
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_affine(rotation, zooms, offset=(-10.0, 20.0, 5.0)):
    """4x4 affine with 3x3 block ``rotation @ diag(zooms)``."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(rotation, dtype=float) @ np.diag(zooms)
    a[:3, 3] = offset
    return a


ANISO = (0.8, 1.0, 2.5)
THETA = math.radians(20.0)


def assert_unit(b):
    assert len(b) == 3
    assert all(isinstance(v, float) for v in b)
    assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-12)


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------- B0 direction


def test_b0_axial_identity():
    b = io.b0_direction_from_affine(np.eye(4))
    assert b == (0.0, 0.0, 1.0)


def test_b0_anisotropic_no_rotation_is_exactly_z():
    affine = make_affine(np.eye(3), ANISO)
    b = io.b0_direction_from_affine(affine)
    assert_unit(b)
    assert b == (0.0, 0.0, 1.0)
    # A naive inverse of the scaled affine gives a vector of length 1/2.5, not a unit one.
    naive = np.linalg.inv(affine[:3, :3]) @ np.array([0.0, 0.0, 1.0])
    assert np.linalg.norm(naive) == pytest.approx(1 / 2.5)


def test_b0_oblique_rotation_about_x_anisotropic():
    # R = rot_x(theta): b = R^T z = (0, sin theta, cos theta)
    b = io.b0_direction_from_affine(make_affine(rot_x(THETA), ANISO))
    assert_unit(b)
    np.testing.assert_allclose(b, (0.0, math.sin(THETA), math.cos(THETA)), atol=1e-12)
    # the naive inverse of the scaled affine gets the direction wrong with anisotropic voxels
    naive = np.linalg.inv(make_affine(rot_x(THETA), ANISO)[:3, :3]) @ np.array([0.0, 0.0, 1.0])
    naive /= np.linalg.norm(naive)
    assert not np.allclose(naive, b, atol=1e-3)


def test_b0_oblique_rotation_about_y():
    beta = math.radians(-15.0)
    # R = rot_y(beta): b = R^T z = (-sin beta, 0, cos beta)
    b = io.b0_direction_from_affine(make_affine(rot_y(beta), ANISO))
    assert_unit(b)
    np.testing.assert_allclose(b, (-math.sin(beta), 0.0, math.cos(beta)), atol=1e-12)


def test_b0_combined_rotation():
    beta, gamma = math.radians(12.0), math.radians(-25.0)
    # R = rot_y(beta) @ rot_x(gamma): R^T z = rot_x(gamma)^T (-sin b, 0, cos b)
    expected = (
        -math.sin(beta),
        math.sin(gamma) * math.cos(beta),
        math.cos(gamma) * math.cos(beta),
    )
    b = io.b0_direction_from_affine(make_affine(rot_y(beta) @ rot_x(gamma), ANISO))
    assert_unit(b)
    np.testing.assert_allclose(b, expected, atol=1e-12)
    # an in-plane rotation about scanner z (applied last) does not move B0 in voxel axes
    b2 = io.b0_direction_from_affine(
        make_affine(rot_z(math.radians(33.0)) @ rot_y(beta) @ rot_x(gamma), ANISO)
    )
    np.testing.assert_allclose(b2, expected, atol=1e-12)


def test_b0_left_handed_las():
    flip = np.diag([-1.0, 1.0, 1.0])
    # LAS without rotation: B0 still along voxel z
    b = io.b0_direction_from_affine(make_affine(flip, ANISO))
    assert_unit(b)
    np.testing.assert_allclose(b, (0.0, 0.0, 1.0), atol=1e-12)
    # LAS after a rotation about y: R = rot_y(beta) @ flip, R^T z = flip (-sin b, 0, cos b)
    beta = math.radians(20.0)
    b = io.b0_direction_from_affine(make_affine(rot_y(beta) @ flip, ANISO))
    np.testing.assert_allclose(b, (math.sin(beta), 0.0, math.cos(beta)), atol=1e-12)
    # LAS with a rotation about x: the flip of x does not change (0, sin, cos)
    b = io.b0_direction_from_affine(make_affine(flip @ rot_x(THETA), ANISO))
    np.testing.assert_allclose(b, (0.0, math.sin(THETA), math.cos(THETA)), atol=1e-12)


@pytest.mark.parametrize("zooms", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.5), (3.0, 0.5, 0.7), (0.2, 6.0, 1.1)])
def test_b0_independent_of_voxel_size(zooms):
    r = rot_z(0.4) @ rot_y(0.3) @ rot_x(-0.5)
    ref = io.b0_direction_from_affine(make_affine(r, (1.0, 1.0, 1.0)))
    b = io.b0_direction_from_affine(make_affine(r, zooms))
    np.testing.assert_allclose(b, ref, atol=1e-12)
    np.testing.assert_allclose(b, r.T @ np.array([0.0, 0.0, 1.0]), atol=1e-12)


def test_b0_accepts_3x3():
    b = io.b0_direction_from_affine(rot_x(THETA) @ np.diag(ANISO))
    np.testing.assert_allclose(b, (0.0, math.sin(THETA), math.cos(THETA)), atol=1e-12)


@pytest.mark.parametrize(
    "affine",
    [np.diag([1.0, 0.0, 1.0, 1.0]), np.full((4, 4), np.nan), np.eye(2), np.eye(4)[:3]],
    ids=["singular", "nan", "2x2", "3x4"],
)
def test_b0_bad_affine(affine):
    with pytest.raises(InvalidParameterError):
        io.b0_direction_from_affine(affine)


# --------------------------------------------------------------------------- save / load


def _ref_header(affine, shape):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_sform(affine, code=1)  # scanner
    hdr.set_qform(affine, code=1)
    hdr.set_xyzt_units("mm", "sec")
    return hdr


@pytest.mark.parametrize("name", ["vol.nii.gz", "vol.nii"])
def test_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    data = rng.standard_normal((6, 5, 4)).astype(np.float32)
    affine = make_affine(rot_x(THETA), ANISO)
    hdr = _ref_header(affine, data.shape)
    path = tmp_path / name
    assert io.save_nifti(path, data, affine, hdr) == path
    vol = io.load_nifti(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-5)
    assert vol.voxel_size_mm == pytest.approx(ANISO, abs=1e-6)
    assert int(vol.header["sform_code"]) == 1
    assert int(vol.header["qform_code"]) == 1
    assert vol.path == path
    np.testing.assert_allclose(
        io.b0_direction_from_affine(vol.affine), (0, math.sin(THETA), math.cos(THETA)), atol=1e-6
    )
    assert files_in(tmp_path) == [name]


def test_round_trip_bool_and_float64(tmp_path):
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    io.save_nifti(tmp_path / "m.nii.gz", mask, np.eye(4))
    vol = io.load_nifti(tmp_path / "m.nii.gz", dtype=None)
    np.testing.assert_array_equal(vol.data != 0, mask)
    x = np.linspace(0, 1, 64).reshape(4, 4, 4)
    io.save_nifti(tmp_path / "x.nii", x, np.eye(4))
    vol = io.load_nifti(tmp_path / "x.nii", dtype=np.float64)
    assert vol.data.dtype == np.float64
    np.testing.assert_allclose(vol.data, x, rtol=1e-7)  # stored as float32


def test_load_scaled_int16(tmp_path):
    raw = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    img = nib.Nifti1Image(raw, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_slope_inter(2.0, 1.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, str(path))
    vol = io.load_nifti(path)
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, 2.0 * raw + 1.0)
    assert vol.voxel_size_mm == (2.0, 2.0, 3.0)


def test_save_refuses_overwrite_without_force(tmp_path):
    path = tmp_path / "out.nii.gz"
    io.save_nifti(path, np.ones((3, 3, 3)), np.eye(4))
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="exists"):
        io.save_nifti(path, np.zeros((3, 3, 3)), np.eye(4))
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["out.nii.gz"]
    io.save_nifti(path, np.full((3, 3, 3), 7.0), np.eye(4), force=True)
    np.testing.assert_array_equal(io.load_nifti(path).data, 7.0)
    assert files_in(tmp_path) == ["out.nii.gz"]


def test_save_bad_name(tmp_path):
    with pytest.raises(InvalidParameterError, match=r"\.nii"):
        io.save_nifti(tmp_path / "out.img", np.ones((3, 3, 3)), np.eye(4))
    assert files_in(tmp_path) == []


def test_atomic_path_failure_leaves_nothing(tmp_path):
    path = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_path(path) as tmp:
            assert tmp.parent == tmp_path
            assert tmp.name.endswith(".nii.gz")
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert files_in(tmp_path) == []


def test_atomic_path_success_replaces(tmp_path):
    path = tmp_path / "a.json"
    with io.atomic_path(path) as tmp:
        tmp.write_text("one")
    assert path.read_text() == "one"
    with pytest.raises(OutputExistsError):
        io.atomic_path(path)
    with io.atomic_path(path, force=True) as tmp:
        tmp.write_text("two")
    assert path.read_text() == "two"
    assert files_in(tmp_path) == ["a.json"]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_save_failed_write_leaves_no_output(tmp_path, monkeypatch, suffix):
    def bad_save(img, filename):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    def bad_stream(img, f, **kw):  # the ISA-L path of .nii.gz
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", bad_save)
    monkeypatch.setattr(nib.Nifti1Image, "to_stream", bad_stream)
    path = tmp_path / f"out{suffix}"
    with pytest.raises(OSError, match="disk full"):
        io.save_nifti(path, np.ones((3, 3, 3)), np.eye(4))
    assert files_in(tmp_path) == []


def test_save_failed_overwrite_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.nii"
    io.save_nifti(path, np.ones((3, 3, 3)), np.eye(4))
    before = path.read_bytes()

    def bad_save(img, filename):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", bad_save)
    with pytest.raises(OSError):
        io.save_nifti(path, np.zeros((3, 3, 3)), np.eye(4), force=True)
    assert path.read_bytes() == before
    assert files_in(tmp_path) == ["out.nii"]


def test_write_json(tmp_path):
    import json

    path = io.write_json(tmp_path / "s.json", {"a": 1, "b": [1.5, None]})
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, None]}
    with pytest.raises(OutputExistsError):
        io.write_json(path, {})
    io.write_json(path, {"c": 2}, force=True)
    assert json.loads(path.read_text()) == {"c": 2}
    assert files_in(tmp_path) == ["s.json"]


# --------------------------------------------------------------------------- load errors


def _check_error(exc_info, cls, path):
    assert isinstance(exc_info.value, cls)
    assert isinstance(exc_info.value, MriReconError)
    assert isinstance(exc_info.value, ValueError)
    assert str(path) in str(exc_info.value)


def test_load_missing(tmp_path):
    path = tmp_path / "nope.nii.gz"
    with pytest.raises(InputFileError) as ei:
        io.load_nifti(path)
    _check_error(ei, InputFileError, path)


def test_load_directory(tmp_path):
    path = tmp_path / "dir.nii"
    path.mkdir()
    with pytest.raises(InputFileError) as ei:
        io.load_nifti(path)
    _check_error(ei, InputFileError, path)


def test_load_txt(tmp_path):
    path = tmp_path / "field.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(InputFileError) as ei:
        io.load_nifti(path)
    _check_error(ei, InputFileError, path)


@pytest.mark.parametrize(
    ("name", "content"), [("g.nii", b"garbage" * 100), ("g.nii.gz", b"garbage" * 100), ("e.nii", b"")]
)
def test_load_garbage(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputFileError) as ei:
        io.load_nifti(path)
    _check_error(ei, InputFileError, path)


def test_load_4d_rejected(tmp_path):
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), str(path))
    with pytest.raises(ShapeMismatchError) as ei:
        io.load_nifti(path)
    _check_error(ei, ShapeMismatchError, path)
    assert "3-D" in str(ei.value)
    # ndim=None accepts it
    assert io.load_nifti(path, ndim=None).data.shape == (4, 4, 4, 2)


def test_load_2d_rejected(tmp_path):
    path = tmp_path / "two.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(path))
    with pytest.raises(ShapeMismatchError) as ei:
        io.load_nifti(path)
    _check_error(ei, ShapeMismatchError, path)


def test_load_trailing_singleton_squeezed(tmp_path):
    path = tmp_path / "single.nii.gz"
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6, 1)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), str(path))
    vol = io.load_nifti(path)
    assert vol.data.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.data, data[..., 0])
    assert vol.voxel_size_mm == (1.0, 2.0, 3.0)


# --------------------------------------------------------------------------- grid checks, paths


def _vol(shape=(4, 4, 4), affine=None, name="v.nii"):
    from pathlib import Path

    return io.Volume(np.zeros(shape, np.float32), np.eye(4) if affine is None else affine, None, Path(name))


def test_check_same_grid():
    io.check_same_grid(_vol(), _vol())
    with pytest.raises(ShapeMismatchError, match="shape"):
        io.check_same_grid(_vol(name="a.nii"), _vol((4, 4, 5), name="b.nii"))
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    with pytest.raises(ShapeMismatchError, match="affine"):
        io.check_same_grid(_vol(), _vol(affine=shifted))
    tiny = np.eye(4)
    tiny[0, 3] = 1e-5  # below the 1e-3 mm tolerance
    io.check_same_grid(_vol(), _vol(affine=tiny))


def test_check_writable(tmp_path):
    assert io.check_writable(tmp_path / "new.nii", force=False) == tmp_path / "new.nii"
    existing = tmp_path / "old.nii"
    existing.write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="--force"):
        io.check_writable(existing, force=False)
    io.check_writable(existing, force=True)
    with pytest.raises(OutputExistsError):
        io.check_writable(tmp_path, force=True)
    with pytest.raises(InputFileError, match="does not exist"):
        io.check_writable(tmp_path / "missing" / "x.nii", force=False)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("out.nii.gz", "out.json"),
        ("out.nii", "out.json"),
        ("OUT.NII.GZ", "OUT.json"),
        ("sub-01_chi.v2.nii.gz", "sub-01_chi.v2.json"),
        ("fig.png", "fig.json"),
    ],
)
def test_sidecar_path(tmp_path, name, expected):
    assert io.sidecar_path(tmp_path / name) == tmp_path / expected
    assert str(io.sidecar_path(name)) == expected


def test_load_complex_rejected(tmp_path):
    import warnings

    path = tmp_path / "complex.nii"
    data = (np.ones((4, 4, 4)) * (1 + 2j)).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MriReconError) as ei:
            io.load_nifti(path)
    assert str(path) in str(ei.value)


def test_saved_files_get_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = io.save_nifti(tmp_path / "p.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4))
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_load_nifti_reads_a_run_of_volumes(tmp_path):
    """volumes=(t0, t1) gives the same numbers as slicing the whole series (scaled integers too)."""
    import nibabel as nib

    from mrirecon.errors import ShapeMismatchError
    from mrirecon.io import load_nifti

    rng = np.random.default_rng(0)
    data = rng.integers(-500, 500, (5, 6, 4, 7)).astype(np.int16)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(0.5, 3.0)
    for name in ("s.nii", "s.nii.gz"):
        nib.save(img, str(tmp_path / name))
        full = load_nifti(tmp_path / name, ndim=None).data
        part = load_nifti(tmp_path / name, ndim=None, volumes=(2, 5)).data
        assert part.dtype == np.float32 and part.shape == (5, 6, 4, 3)
        np.testing.assert_array_equal(part, full[..., 2:5])
        np.testing.assert_allclose(part, 0.5 * data[..., 2:5] + 3.0)
        with pytest.raises(ShapeMismatchError, match="no volumes"):
            load_nifti(tmp_path / name, ndim=None, volumes=(6, 9))


# ------------------------------------------------------- gzip through ISA-L, against nibabel's zlib


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
def test_gz_written_by_nibabel_reads_the_same(tmp_path, klass):
    rng = np.random.default_rng(1)
    data = rng.standard_normal((7, 6, 5)).astype(np.float32)
    path = tmp_path / "ref.nii.gz"
    nib.save(klass(data, np.diag([1.5, 1.5, 2.0, 1.0])), str(path))  # nibabel's own zlib writer
    vol = io.load_nifti(path)
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, np.diag([1.5, 1.5, 2.0, 1.0]))


def test_gz_written_by_save_nifti_is_plain_gzip(tmp_path):
    import gzip

    data = np.random.default_rng(2).standard_normal((8, 7, 6)).astype(np.float32)
    path = io.save_nifti(tmp_path / "out.nii.gz", data, np.eye(4))
    raw = gzip.decompress(path.read_bytes())  # the standard library's gzip reads it
    img = nib.Nifti1Image.from_bytes(raw)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj), data)
    assert path.read_bytes()[4:8] == b"\0\0\0\0"  # mtime 0: the same data give the same file


def test_truncated_gz_is_an_input_error(tmp_path):
    path = io.save_nifti(tmp_path / "out.nii.gz", np.ones((9, 9, 9)), np.eye(4))
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputFileError, match="cut.nii.gz"):
        io.load_nifti(cut)
    bad = tmp_path / "bad.nii.gz"
    import gzip

    bad.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(InputFileError, match="bad.nii.gz"):
        io.load_nifti(bad)


def test_large_gz_falls_back_to_the_streamed_read(tmp_path, monkeypatch):
    from mrirecon.io import nifti

    data = np.random.default_rng(4).standard_normal((6, 5, 4, 3)).astype(np.float32)
    path = io.save_nifti(tmp_path / "series.nii.gz", data, np.eye(4))
    whole = io.load_nifti(path, ndim=None).data
    monkeypatch.setattr(nifti, "_WHOLE_GZ_MAX_BYTES", 0)
    assert nifti._load_gz_whole(path) is None  # over the limit: nibabel reads it
    np.testing.assert_array_equal(io.load_nifti(path, ndim=None).data, whole)
    np.testing.assert_array_equal(whole, data)
