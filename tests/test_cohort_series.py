"""Multi-volume MEGRE in ``mrirecon run``: every volume through the pipeline with the first's mask and λ."""

import dataclasses
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from mrirecon import cohort
from mrirecon.io import bids
from mrirecon.phantoms import simulate_megre

SHAPE = (32, 32, 32)
NT = 3


def _params(lam):
    return {
        "b0_tesla": None,
        "device": "cpu",
        "pipeline": {"background": "sharp", "method": "l2", "lam": lam},
    }


@pytest.fixture(scope="module")
def volumes():
    """Three volumes of one head: the same anatomy, independent noise."""
    return [simulate_megre(SHAPE, snr=80.0, seed=s, air_cavities=False) for s in range(NT)]


def _dataset(root, volumes, *, series, write_mask):
    if series:
        data = dataclasses.replace(
            volumes[0],
            magnitude=np.stack([v.magnitude for v in volumes], axis=-1),
            phase=np.stack([v.phase for v in volumes], axis=-1),
        )
        bids.write_megre_dataset(root, "01", data, write_mask=write_mask)
    else:
        for t, v in enumerate(volumes):
            bids.write_megre_dataset(root, f"v{t}", v, write_mask=write_mask)
    return bids.find_series(root)


def _chi(out, stem):
    sub = stem.split("_")[0]
    path = out / sub / "anat" / f"{stem}_Chimap.nii.gz"
    return np.asarray(nib.load(str(path)).dataobj), json.loads(
        path.with_name(f"{stem}_Chimap.json").read_text()
    )


@pytest.mark.parametrize("lam", [0.01, "auto"])
def test_a_4d_series_equals_its_volumes_run_alone(volumes, tmp_path, lam):
    (s4,) = _dataset(tmp_path / "bids4", volumes, series=True, write_mask=True)
    singles = _dataset(tmp_path / "bids3", volumes, series=False, write_mask=True)
    (r,) = cohort.run_cohort([s4], tmp_path / "out4", _params(lam), progress=False, log=lambda *a: None)
    assert r.status == "done" and r.volumes == NT, r.error
    chi4, meta = _chi(tmp_path / "out4", s4.stem)
    assert chi4.shape == (*SHAPE, NT) and meta["Volumes"] == NT
    lam_series = meta["Inversion"]["lam"]
    # volume 0 alone (same λ rule) picks the series' λ; every volume with that λ gives the series' χ
    (r0,) = cohort.run_cohort(
        singles[:1], tmp_path / "out0", _params(lam), progress=False, log=lambda *a: None
    )
    assert _chi(tmp_path / "out0", singles[0].stem)[1]["Inversion"]["lam"] == pytest.approx(lam_series)
    res = cohort.run_cohort(
        singles, tmp_path / "out3", _params(lam_series), progress=False, log=lambda *a: None
    )
    assert all(x.status == "done" for x in res)
    for t, s in enumerate(singles):
        chi, _ = _chi(tmp_path / "out3", s.stem)
        np.testing.assert_allclose(chi4[..., t], chi, rtol=0, atol=2e-6)
    assert not np.allclose(chi4[..., 0], chi4[..., 1])  # the volumes differ (their noise)


def test_a_4d_series_without_a_mask_uses_the_first_volumes_brain_mask(volumes, tmp_path):
    (s4,) = _dataset(tmp_path / "bids4", volumes, series=True, write_mask=False)
    (r,) = cohort.run_cohort([s4], tmp_path / "out", _params(0.01), progress=False, log=lambda *a: None)
    assert r.status == "done", r.error
    chi4, meta = _chi(tmp_path / "out", s4.stem)
    mask = np.asarray(nib.load(str(tmp_path / "out/sub-01/anat/sub-01_desc-brain_mask.nii.gz")).dataobj) != 0
    assert mask.ndim == 3 and mask.any()
    assert np.all(chi4[~mask] == 0) and np.all(np.any(chi4[mask] != 0, axis=-1))
    assert "first volume" in meta["Series"]


def test_echoes_of_different_lengths_are_an_error(volumes, tmp_path):
    (s4,) = _dataset(tmp_path / "bids", volumes, series=True, write_mask=True)
    bad = s4.phase[1]
    img = nib.load(str(bad))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :2], img.affine), str(bad))
    (r,) = cohort.run_cohort([s4], tmp_path / "out", _params(0.01), progress=False, log=lambda *a: None)
    assert r.status == "failed" and bad.name in r.error and "shape" in r.error
    shutil.rmtree(tmp_path / "bids")


def test_a_long_series_is_chunked_over_local_workers_and_equals_in_process(volumes, tmp_path):
    """--workers 2 splits a 5-volume series into runs of volumes: the same χ, nothing left behind."""
    pytest.importorskip("distributed")
    vols = [*volumes, volumes[0], volumes[1]]  # 5 volumes
    (s4,) = _dataset(tmp_path / "bids", vols, series=True, write_mask=False)
    (r_in,) = cohort.run_cohort([s4], tmp_path / "in", _params("auto"), progress=False, log=lambda *a: None)
    assert cohort._chunks(5, 2) == [(1, 2), (2, 3), (3, 4), (4, 5)]
    (r_dk,) = cohort.run_cohort(
        [s4], tmp_path / "dask", _params("auto"), workers=2, progress=False, log=lambda *a: None
    )
    assert r_in.status == r_dk.status == "done", (r_in.error, r_dk.error)
    assert r_dk.volumes == 5
    chi_in, meta_in = _chi(tmp_path / "in", s4.stem)
    chi_dk, meta_dk = _chi(tmp_path / "dask", s4.stem)
    assert meta_dk["Chunks"] == 5 and meta_dk["Inversion"]["lam"] == pytest.approx(
        meta_in["Inversion"]["lam"]
    )
    np.testing.assert_allclose(chi_dk, chi_in, rtol=0, atol=1e-6)
    assert not (tmp_path / "dask" / cohort.PARTIAL_DIR).exists()
    # a rerun skips it; a broken echo fails it with its name, and leaves no parts behind
    (again,) = cohort.run_cohort(
        [s4], tmp_path / "dask", _params("auto"), workers=2, progress=False, log=lambda *a: None
    )
    assert again.status == "skipped"
    bad = s4.phase[2]
    bad.write_bytes(b"not a nifti")
    (broken,) = cohort.run_cohort(
        [s4], tmp_path / "dask2", _params("auto"), workers=2, progress=False, log=lambda *a: None
    )
    assert broken.status == "failed" and bad.name in broken.error
    assert not (tmp_path / "dask2" / cohort.PARTIAL_DIR).exists()
