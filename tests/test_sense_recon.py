"""The default SENSE path (unfold + preconditioned CG with the ACS lines) and `mrirecon sense`.

The API tests take the ``xp`` fixture (NumPy always, CuPy where a GPU is
present); the command-line tests run on the CPU.
"""

import json

import numpy as np
import pytest

from mrirecon.cli import main
from mrirecon.device import to_numpy
from mrirecon.errors import InvalidParameterError
from mrirecon.fft import fftc
from mrirecon.io import load_nifti
from mrirecon.phantoms import brain_slice
from mrirecon.sense import cg_sense, coils, sampling, sense, unfold
from mrirecon.sense.unfold import SenseUnfolder

N = 48


@pytest.fixture(scope="module")
def data():
    img = brain_slice((N, N))
    sens = coils.simulate_coil_maps((N, N), 8).astype(np.complex128)
    mask = sampling.uniform_mask((N, N), 4, acs=12)
    rng = np.random.default_rng(0)
    k = fftc(sens * img, axes=(-2, -1))
    k = k + 1e-3 * np.abs(k).max() * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return img, sens, mask, k * mask


def test_preconditioned_cg_converges_to_the_full_objective(data, xp, assert_on):
    img, sens, mask, y = data
    lam = 1e-3
    sens, y = xp.asarray(sens), xp.asarray(y)
    ref = to_numpy(cg_sense(y, sens, lam=lam, mask=mask, max_iter=3000, tol=1e-13))
    results = {
        it: sense(y, sens, lam=lam, accel=4, acs_iter=it, tol=1e-12 if it == 100 else 1e-3)
        for it in (0, 2, 5, 100)
    }
    assert_on(*results.values())
    errs = [np.linalg.norm(to_numpy(x) - ref) / np.linalg.norm(ref) for x in results.values()]
    assert errs[0] > errs[1] > errs[2] > errs[3] and errs[3] < 1e-4, errs
    # acs_iter=0 is the pure unfold of the lattice lines
    np.testing.assert_allclose(to_numpy(results[0]), to_numpy(unfold(y, sens, lam=lam, accel=4)), atol=1e-5)
    # an explicit mask (host or device) gives the same answer as the one read from the data
    for m in (mask, xp.asarray(mask)):
        got = sense(y, sens, lam=lam, accel=4, mask=m, acs_iter=5)
        assert_on(got)
        np.testing.assert_allclose(to_numpy(got), to_numpy(results[5]), atol=1e-12)


def test_lattice_only_data_is_the_unfold_and_detection(data, xp, assert_on):
    img, sens, mask, y = data
    lattice = sampling.uniform_mask((N, N), 4)
    y_lat = xp.asarray(y * lattice)
    sens, y = xp.asarray(sens), xp.asarray(y)
    x = sense(y_lat, sens, lam=1e-3)
    assert_on(x)
    np.testing.assert_allclose(to_numpy(x), to_numpy(unfold(y_lat, sens, lam=1e-3, accel=4)), atol=1e-12)
    # accel detected from the data with ACS == accel given
    np.testing.assert_allclose(
        to_numpy(sense(y, sens, lam=1e-3)), to_numpy(sense(y, sens, lam=1e-3, accel=4)), atol=1e-12
    )


@pytest.mark.gpu
@pytest.mark.parametrize("xp", ["cupy"], indirect=True)
def test_host_and_device_agree(data, xp):
    img, sens, mask, y = data
    host = sense(y, sens, lam=1e-3)
    dev = sense(xp.asarray(y), xp.asarray(sens), lam=1e-3)
    np.testing.assert_allclose(to_numpy(dev), host, atol=1e-10 * np.abs(host).max())


def test_preconditioner_inverts_the_lattice_normal_operator(data, xp, assert_on):
    img, sens, mask, y = data
    lam = 1e-2
    sens = xp.asarray(sens)
    unf = SenseUnfolder(sens, 4, lam=lam)
    from mrirecon.sense import SenseOp

    op = SenseOp(sens, unf.mask)
    x = xp.asarray(np.random.default_rng(1).standard_normal((N, N)) + 0j)
    back = unf.precondition(op.normal(x) + lam * x)
    assert_on(back)
    np.testing.assert_allclose(to_numpy(back), to_numpy(x), atol=1e-9)


def test_irregular_sampling_is_refused(data, xp):
    img, sens, mask, y = data
    vd = sampling.variable_density_mask((N, N), 4, acs=8)
    sens_d = xp.asarray(sens)
    with pytest.raises(InvalidParameterError, match="not a uniform lattice"):
        sense(xp.asarray(y * vd), sens_d)
    with pytest.raises(InvalidParameterError, match="acs_iter"):
        sense(xp.asarray(y), sens_d, acs_iter=-1)


def test_cli_sense(tmp_path, data, capsys):
    img, sens, mask, y = data
    np.savez(tmp_path / "scan.npz", kspace=y.astype(np.complex64), sens=sens.astype(np.complex64))
    out = tmp_path / "img.nii.gz"
    assert (
        main(
            [
                "sense",
                str(tmp_path / "scan.npz"),
                "-o",
                str(out),
                "--lam",
                "1e-3",
                "--gfactor",
                str(tmp_path / "g.nii.gz"),
                "--complex",
            ]
        )
        == 0
    )
    mag = load_nifti(out).data[..., 0] if load_nifti(out, ndim=None).data.ndim == 3 else load_nifti(out).data
    obj = np.abs(img) > 0.05
    ref = np.abs(sense(y, sens, lam=1e-3))
    assert np.allclose(mag, ref, atol=1e-4)
    assert np.linalg.norm((mag - np.abs(img))[obj]) / np.linalg.norm(np.abs(img)[obj]) < 0.15
    g = load_nifti(tmp_path / "g.nii.gz", ndim=None).data
    assert g.max() > 1 and np.isfinite(g).all()
    meta = json.loads((tmp_path / "img.json").read_text())
    assert meta["Method"] == "unfold" and meta["ACSIterations"] == 4
    assert (tmp_path / "img_real.nii.gz").exists() and (tmp_path / "img_imag.nii.gz").exists()
    for method in ("cg", "l1-wavelet", "tv"):
        assert (
            main(
                [
                    "sense",
                    str(tmp_path / "scan.npz"),
                    "-o",
                    str(tmp_path / f"{method}.nii.gz"),
                    "--method",
                    method,
                    "--max-iter",
                    "5",
                ]
            )
            == 0
        )


def test_cli_virtual_coils_is_the_compressed_problem(tmp_path, data):
    """--virtual-coils N: the image of sense() on SVD-compressed data and maps; N = coils changes nothing."""
    img, sens, mask, y = data
    y32, s32 = y.astype(np.complex64), sens.astype(np.complex64)
    np.savez(tmp_path / "scan.npz", kspace=y32, sens=s32)

    def run(name, *extra):
        out = tmp_path / f"{name}.nii.gz"
        assert main(["sense", str(tmp_path / "scan.npz"), "-o", str(out), "--lam", "1e-3", *extra]) == 0
        return load_nifti(out, ndim=None).data.squeeze(), json.loads((tmp_path / f"{name}.json").read_text())

    full, meta = run("full")
    assert meta["CoilCompression"] is None
    same, meta8 = run("same", "--virtual-coils", "8")
    np.testing.assert_allclose(same, full, atol=1e-4 * np.abs(full).max())
    assert meta8["CoilCompression"]["to"] == 8 and meta8["CoilCompression"]["EnergyKept"] == pytest.approx(
        1, abs=1e-5
    )
    small, meta5 = run("small", "--virtual-coils", "5")
    c0 = N // 2 - 6
    yc, m = coils.coil_compress(y32, 5, calib=y32[:, c0 : c0 + 12])
    ref = np.abs(sense(yc, coils.apply_coil_matrix(m, s32), lam=1e-3))
    np.testing.assert_allclose(small, ref, atol=1e-4 * ref.max())
    assert 0 < meta5["CoilCompression"]["EnergyKept"] < 1 and meta5["CoilCompression"]["from"] == 8


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--virtual-coils", "9"], "--virtual-coils must be in [1, 8]"),
        (["--accel", "5"], "does not divide"),
        (["--lam", "-1"], "--lam"),
        (["-s", "MAPS"], "coil maps have shape"),
    ],
)
def test_cli_sense_bad_input(tmp_path, data, capsys, args, fragment):
    img, sens, mask, y = data
    np.savez(tmp_path / "scan.npz", kspace=y.astype(np.complex64), sens=sens.astype(np.complex64))
    np.save(tmp_path / "maps.npy", sens[:4].astype(np.complex64))
    args = [str(tmp_path / "maps.npy") if a == "MAPS" else a for a in args]
    out = tmp_path / "img.nii.gz"
    assert main(["sense", str(tmp_path / "scan.npz"), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not out.exists()


def test_cli_sense_nan_and_empty(tmp_path, data, capsys):
    img, sens, mask, y = data
    bad = y.astype(np.complex64).copy()
    bad[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", kspace=bad, sens=sens.astype(np.complex64))
    np.savez(tmp_path / "zero.npz", kspace=np.zeros_like(bad), sens=sens.astype(np.complex64))
    assert main(["sense", str(tmp_path / "nan.npz"), "-o", str(tmp_path / "a.nii.gz")]) == 2
    assert "NaN" in capsys.readouterr().err
    assert main(["sense", str(tmp_path / "zero.npz"), "-o", str(tmp_path / "b.nii.gz")]) == 2
    assert "no sampled" in capsys.readouterr().err
