"""Multi-coil k-space readers: NumPy, BART cfl/hdr, fastMRI HDF5."""

import shutil
import subprocess

import numpy as np
import pytest

from mrirecon import io
from mrirecon.errors import InputFileError, OutputExistsError
from mrirecon.phantoms import brain_slice


@pytest.fixture
def kspace():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4, 16, 12)) + 1j * rng.standard_normal((4, 16, 12))).astype(np.complex64)


def test_npy_and_npz(tmp_path, kspace):
    np.save(tmp_path / "k.npy", kspace)
    assert np.array_equal(io.load_kspace(tmp_path / "k.npy")["kspace"], kspace)
    mask = np.zeros((16, 12), bool)
    mask[::2] = True
    np.savez(tmp_path / "k.npz", kspace=kspace, sens=kspace, mask=mask)
    out = io.load_kspace(tmp_path / "k.npz")
    assert np.array_equal(out["kspace"], kspace) and np.array_equal(out["mask"], mask) and "sens" in out
    np.savez(tmp_path / "bad.npz", data=kspace)
    with pytest.raises(InputFileError, match="no array 'kspace'"):
        io.load_kspace(tmp_path / "bad.npz")


def test_cfl_round_trip_in_bart_order(tmp_path, kspace):
    # ours (coil, phs1, read) -> BART (read, phs1, phs2=1, coil)
    bart = np.transpose(kspace, (2, 1, 0))[:, :, None, :]
    io.write_cfl(tmp_path / "k", bart)
    assert np.array_equal(io.load_kspace(tmp_path / "k.cfl")["kspace"], kspace)
    assert np.array_equal(io.read_cfl(tmp_path / "k.hdr").reshape(12, 16, 1, 4), bart)
    with pytest.raises(OutputExistsError):
        io.write_cfl(tmp_path / "k", bart)


@pytest.mark.skipif(shutil.which("bart") is None, reason="BART not installed")
def test_bart_reads_what_we_write(tmp_path, kspace):
    bart = np.transpose(kspace, (2, 1, 0))[:, :, None, :]
    io.write_cfl(tmp_path / "k", bart)
    out = subprocess.run(
        ["bart", "show", "-m", str(tmp_path / "k")], capture_output=True, text=True, check=True
    )
    assert "12\t16\t1\t4" in out.stdout
    # and a BART-computed transform comes back right: BART's centred unitary FFT (fft -u) over
    # READ and PHS1 equals mrirecon's centred orthonormal fftc, the convention of the SENSE code
    from mrirecon.fft import fftc

    subprocess.run(["bart", "fft", "-u", "3", str(tmp_path / "k"), str(tmp_path / "f")], check=True)
    f = io.read_cfl(tmp_path / "f").reshape(12, 16, 1, 4)
    ref = fftc(bart, axes=(0, 1))
    assert np.abs(f - ref).max() < 1e-4 * np.abs(ref).max()


def test_fastmri_hdf5(tmp_path):
    import h5py

    img = brain_slice((32, 24))
    k = np.stack([np.fft.fft2(img * (c + 1)) for c in range(3)])  # (coil, 32, 24)
    stored = np.swapaxes(k, -1, -2)[None].repeat(2, axis=0)  # fastMRI: (slices, coil, H, W) with PE along W
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["kspace"] = stored
    out = io.load_kspace(tmp_path / "f.h5", slice_index=1)["kspace"]
    assert out.shape == (3, 32, 24) and np.allclose(out, k, rtol=1e-5, atol=1e-3)
    assert io.load_kspace(tmp_path / "f.h5")["kspace"].shape == (2, 3, 32, 24)


def test_reader_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        io.load_kspace(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputFileError, match="unknown k-space format"):
        io.load_kspace(tmp_path / "x.txt")
    np.save(tmp_path / "real.npy", np.zeros((4, 8, 8)))
    with pytest.raises(InputFileError, match="complex"):
        io.load_kspace(tmp_path / "real.npy")
    np.save(tmp_path / "flat.npy", np.zeros((8, 8), np.complex64))
    with pytest.raises(InputFileError, match="coil"):
        io.load_kspace(tmp_path / "flat.npy")
    (tmp_path / "g.npy").write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="cannot be read"):
        io.load_kspace(tmp_path / "g.npy")
