"""`mrirecon fft-wisdom` writes wisdom that a fresh process state loads."""

import pickle

import pytest

from mrirecon import fft
from mrirecon.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    pytest.importorskip("pyfftw")
    monkeypatch.setenv("MRIRECON_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(fft._state, "backend", "pyfftw")
    monkeypatch.delitem(fft._state, "wisdom_loaded", raising=False)
    yield tmp_path
    fft.clear_plan_cache()


def test_builds_and_shows_wisdom(cache, capsys):
    assert (
        main(["fft-wisdom", "--shape", "12", "10", "8", "--shape", "9", "7", "--complex", "--coils", "2"])
        == 0
    )
    out = capsys.readouterr().out
    assert "12x10x8: r2c/c2r float32" in out and "c2c x2 coils" in out
    path = fft.wisdom_path()
    assert path.parent == cache and path.exists()
    single = pickle.loads(path.read_bytes())[1]
    assert single.count(b"fftw") > 1  # plans recorded in single precision
    assert main(["fft-wisdom", "--show"]) == 0
    assert str(path) in capsys.readouterr().out
    assert main(["fft-wisdom", "--shape", "8", "8", "--remeasure"]) == 0
    assert path.exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [([], "--shape"), (["--shape", "0", "4"], "positive"), (["--shape", "8", "--coils", "4"], "--complex")],
)
def test_bad_arguments(cache, capsys, args, fragment):
    assert main(["fft-wisdom", *args]) == 2
    assert fragment in capsys.readouterr().err


def test_wisdom_disabled(cache, capsys, monkeypatch):
    monkeypatch.setenv("MRIRECON_FFTW_WISDOM", "0")
    assert main(["fft-wisdom", "--shape", "8", "8"]) == 2
    assert "MRIRECON_FFTW_WISDOM" in capsys.readouterr().err
