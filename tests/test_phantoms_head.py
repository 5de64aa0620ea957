"""Tests for mrirecon.phantoms (geometry of the head phantom)."""

import math

import numpy as np
import pytest

from mrirecon.errors import InvalidParameterError, MriReconError
from mrirecon.phantoms import HeadPhantom, head_phantom, load_definition


@pytest.fixture(scope="module")
def definition():
    return load_definition("head")


@pytest.fixture(scope="module")
def ph64():
    return head_phantom((64, 64, 64))


def test_definition_contents(definition):
    assert definition["units"] == "ppm"
    assert definition["reference"] == "CSF"
    assert definition["fov_mm"] == [192.0, 192.0, 192.0]
    names = [t["name"] for t in definition["tissues"]]
    assert len(names) == len(set(names))
    for tissue in definition["tissues"]:
        assert isinstance(tissue["chi_ppm"], float | int)
        assert len(tissue["source"]) > 20
    chi = {t["name"]: t["chi_ppm"] for t in definition["tissues"]}
    assert chi["csf"] == 0.0
    assert chi["white_matter"] < 0 < chi["cortical_grey_matter"]
    assert chi["calcification"] < -0.3
    assert chi["globus_pallidus"] > chi["putamen"]
    assert 0.3 <= chi["vein"] <= 0.45
    # The brain outline is 140 x 170 x 120 mm.
    assert definition["shapes"][0]["name"] == "brain"
    assert definition["shapes"][0]["semi_axes_mm"] == [70, 85, 60]


def test_load_definition_returns_fresh_copy():
    a = load_definition()
    a["tissues"].clear()
    assert load_definition()["tissues"]


def test_shape_dtype_and_fields(ph64):
    assert isinstance(ph64, HeadPhantom)
    assert ph64.chi.shape == ph64.mask.shape == ph64.labels.shape == (64, 64, 64)
    assert ph64.chi.dtype == np.float32
    assert ph64.labels.dtype == np.uint8
    assert ph64.mask.dtype == bool
    assert ph64.voxel_size_mm == (3.0, 3.0, 3.0)
    assert ph64.fov_mm == (192.0, 192.0, 192.0)
    assert ph64.label_names[0] == "background"
    np.testing.assert_array_equal(ph64.mask, ph64.labels > 0)
    assert np.all(ph64.chi[~ph64.mask] == 0)


def test_float64_same_geometry(ph64):
    ph = head_phantom((64, 64, 64), dtype=np.float64)
    assert ph.chi.dtype == np.float64
    np.testing.assert_array_equal(ph.labels, ph64.labels)
    np.testing.assert_allclose(ph.chi, ph64.chi, rtol=1e-7)


def test_labels_carry_json_chi(ph64, definition):
    chi = {t["name"]: t["chi_ppm"] for t in definition["tissues"]}
    assert ph64.label_names[1:] == tuple(chi)
    for value, name in enumerate(ph64.label_names[1:], start=1):
        voxels = ph64.chi[ph64.labels == value]
        assert voxels.size > 0, f"{name} missing at 64^3"
        np.testing.assert_array_equal(voxels, np.float32(chi[name]))


def test_odd_sizes_and_anisotropic_voxels():
    ph = head_phantom((37, 45, 29), voxel_size_mm=(4.5, 4.2, 5.0))
    assert ph.chi.shape == (37, 45, 29)
    assert ph.voxel_size_mm == (4.5, 4.2, 5.0)
    # The brain keeps its size in mm: extent of the mask along each axis.
    for axis, (semi, d) in enumerate(zip((70, 85, 60), ph.voxel_size_mm, strict=True)):
        other = tuple(a for a in range(3) if a != axis)
        n_vox = np.count_nonzero(ph.mask.any(axis=other))
        assert abs(n_vox * d - 2 * semi) <= 2 * d
    # Default voxel size for an anisotropic grid is fov / shape.
    ph2 = head_phantom((48, 40, 33))
    assert ph2.voxel_size_mm == pytest.approx((4.0, 4.8, 192 / 33))
    # An isotropic scalar voxel size is accepted.
    assert head_phantom((40, 40, 40), voxel_size_mm=4.5).voxel_size_mm == (4.5, 4.5, 4.5)


@pytest.mark.parametrize(("shape", "voxel"), [((48, 48, 48), 4.0), ((97, 97, 97), 2.0)])
def test_brain_volume_matches_ellipsoid(shape, voxel):
    ph = head_phantom(shape, voxel_size_mm=voxel)
    volume = np.count_nonzero(ph.mask) * voxel**3
    analytic = 4.0 / 3.0 * math.pi * 70 * 85 * 60
    assert volume == pytest.approx(analytic, rel=0.03)


def test_left_right_symmetry(ph64, definition):
    # Paired nuclei: mirrored in x, the left structure lands on the right one.
    paired = [
        "caudate",
        "putamen",
        "globus_pallidus",
        "thalamus",
        "red_nucleus",
        "substantia_nigra",
        "dentate_nucleus",
    ]
    for name in paired:
        region = ph64.labels == ph64.label_names.index(name)
        np.testing.assert_array_equal(region, region[::-1])
        half = region.shape[0] // 2
        assert np.count_nonzero(region[:half]) == np.count_nonzero(region[half:]) > 0
    # With an odd grid too (the centre voxel lies on the midline).
    ph = head_phantom((41, 50, 41))
    np.testing.assert_array_equal(ph.labels, ph.labels[::-1])
    # The definition itself pairs *_left / *_right shapes mirrored in x.
    shapes = {s["name"]: s for s in definition["shapes"]}
    for name, left in shapes.items():
        if name.endswith("_left") and "centre_mm" in left:
            right = shapes[name[: -len("_left")] + "_right"]
            assert left["centre_mm"][0] == -right["centre_mm"][0] < 0


def test_tissue_layout(ph64):
    names = ph64.label_names
    centre = ph64.labels[32, 32, 32]
    assert names[centre] != "background"
    # Cortical grey matter is the outer shell: the outermost brain voxel along +x.
    row = ph64.labels[:, 32, 32]
    assert names[row[np.flatnonzero(row)[-1]]] == "cortical_grey_matter"
    assert names[row[np.flatnonzero(row)[-1] - 3]] == "white_matter"


def test_errors():
    with pytest.raises(MriReconError, match="unknown phantom 'nosuch'.*head"):
        load_definition("nosuch")
    with pytest.raises(InvalidParameterError):
        load_definition("../phantoms/head")
    with pytest.raises(InvalidParameterError, match="does not fit"):
        head_phantom((64, 64, 64), voxel_size_mm=2.0)  # 128 mm FOV < 170 mm brain
    with pytest.raises(InvalidParameterError, match="does not fit"):
        head_phantom((64, 64, 64), voxel_size_mm=(3.0, 2.5, 3.0))
    with pytest.raises(InvalidParameterError, match="shape"):
        head_phantom((64, 64))
    with pytest.raises(InvalidParameterError, match="shape"):
        head_phantom((64, 64, 0))
    with pytest.raises(InvalidParameterError, match="voxel_size_mm"):
        head_phantom((64, 64, 64), voxel_size_mm=(3.0, -3.0, 3.0))
    with pytest.raises(InvalidParameterError, match="dtype"):
        head_phantom((32, 32, 32), dtype=np.int16)
    # Errors are ValueErrors, as everywhere in mrirecon.
    with pytest.raises(ValueError):
        load_definition("nosuch")
