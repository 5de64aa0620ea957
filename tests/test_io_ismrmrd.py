"""ISMRMRD: a file written by the ismrmrd package itself reads back into the package's layout."""

import json

import numpy as np
import pytest

ismrmrd = pytest.importorskip("ismrmrd")

from mrirecon.cli import main  # noqa: E402
from mrirecon.errors import InputFileError  # noqa: E402
from mrirecon.fft import fftc  # noqa: E402
from mrirecon.io.kspace import load_kspace, write_ismrmrd  # noqa: E402
from mrirecon.phantoms import brain_slice  # noqa: E402
from mrirecon.sense import coils, sampling  # noqa: E402


def _slice(n=32, nc=4, seed=0):
    rng = np.random.default_rng(seed)
    sens = coils.simulate_coil_maps((n, n), nc)
    img = brain_slice((n, n))
    mask = sampling.uniform_mask((n, n), 4, acs=8 if n < 64 else 24)
    k = (fftc(sens * img, axes=(-2, -1)) * mask).astype(np.complex64)
    noise = 1e-3 * (rng.standard_normal((nc, 300)) + 1j * rng.standard_normal((nc, 300))).astype(np.complex64)
    return k, noise, sens


def test_roundtrip_with_oversampling_noise_and_acs(tmp_path):
    k, noise, _ = _slice()
    path = tmp_path / "scan.h5"
    acs = list(range(12, 20))
    write_ismrmrd(path, k, accel=4, acs_rows=acs, noise=noise, oversampling=2)
    # the file is the ismrmrd package's own: 2x readout in the encoded space, flags set
    dset = ismrmrd.Dataset(str(path), "dataset", mode="r")
    header = ismrmrd.xsd.CreateFromDocument(dset.read_xml_header())
    assert header.encoding[0].encodedSpace.matrixSize.x == 2 * k.shape[-1]
    first = dset.read_acquisition(0)
    assert first.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    n_cal = sum(
        dset.read_acquisition(i).is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        for i in range(dset.number_of_acquisitions())
    )
    dset.close()
    assert n_cal == 6  # 8 ACS lines, 2 of them on the R = 4 lattice (flagged ..._AND_IMAGING)
    out = load_kspace(path)
    np.testing.assert_allclose(out["kspace"], k, atol=1e-5 * np.abs(k).max())
    np.testing.assert_array_equal(out["noise"], noise)
    assert out["accel"] == 4 and list(out["acs_rows"]) == acs
    assert out["readout_oversampling"] == 2.0


def test_truncated_file_is_one_line_exit_2(tmp_path, capsys):
    k, noise, _ = _slice()
    path = tmp_path / "scan.h5"
    write_ismrmrd(path, k, accel=4, acs_rows=range(12, 20), noise=noise)
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(path.read_bytes()[:4000])
    with pytest.raises(InputFileError):
        load_kspace(bad)
    rc = main(["sense", str(bad), "--espirit", "-o", str(tmp_path / "x.nii.gz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert not (tmp_path / "x.nii.gz").exists()


def test_cli_reconstructs_ismrmrd_like_arrays(tmp_path):
    k, noise, sens = _slice(n=64, nc=8)
    path = tmp_path / "scan.h5"
    write_ismrmrd(path, k, accel=4, acs_rows=range(20, 44), noise=noise)
    npz = tmp_path / "k.npz"
    np.savez(npz, kspace=k, sens=sens, noise=noise)
    for src, extra in ((path, ["--espirit"]), (npz, ["--espirit"])):
        out = tmp_path / f"{src.stem}.nii.gz"
        assert main(["sense", str(src), *extra, "-o", str(out), "--complex"]) == 0
    import nibabel as nib

    a = nib.load(tmp_path / "scan.nii.gz").get_fdata()
    b = nib.load(tmp_path / "k.nii.gz").get_fdata()
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-3
    meta = json.loads((tmp_path / "scan.json").read_text())
    assert meta["DetectedAcceleration"] == 4 and meta["Prewhitened"] == "noise scan"
    assert meta["LambdaSelection"].startswith("discrepancy") and meta["Command"].startswith("mrirecon sense")
