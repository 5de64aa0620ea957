"""mrirecon.bench.fft runs end to end at a tiny size (its numbers are not checked, only its tables and JSON)."""

import argparse
import json
import math

import pytest

from mrirecon.cli import main


class _Bench:
    """The benchmark module, with ``main(argv)`` returning the results document."""

    def __init__(self):
        from mrirecon.bench import fft

        self.module = fft

    def __getattr__(self, name):
        return getattr(self.module, name)

    def main(self, argv):
        p = argparse.ArgumentParser()
        self.module.add_arguments(p)
        return self.module.run_benchmark(p.parse_args(argv))


@pytest.fixture(scope="module")
def bench():
    return _Bench()


def test_parse_sizes_and_model(bench):
    assert bench.parse_sizes("16, 200x240x200") == [(16, 16, 16), (200, 240, 200)]
    for bad in ("", "2", "8x8", "0x8x8"):
        with pytest.raises(ValueError):
            bench.parse_sizes(bad)
    m = bench.traffic((16, 16, 16), passes=2)
    r, c = 4 * 16**3, 8 * 16 * 16 * 9
    assert m["fft"] == r + 3 * c and m["bare_pair"] == 2 * m["fft"]
    assert m["bare_pair"] < m["closed_form"] < m["closed_form_masked"]
    mask = bench.ellipsoid_mask((40, 48, 40))
    assert 0.4 < mask.mean() < 0.6
    assert bench.fresh_shape([(128,) * 3, (200, 240, 200), (384,) * 3]) == (200, 240, 200)


def test_bench_fft_cpu_tiny(bench, tmp_path, capsys):
    out = tmp_path / "b.json"
    bench.main(["--sizes", "16", "--repeats", "1", "--naive-repeats", "1", "--no-fresh", "--json", str(out)])
    text = capsys.readouterr().out
    for needle in (
        "## CPU, 16^3",
        "| bare r2c+c2r pair",
        "| naive numpy",
        "## CPU summary",
        "## Peak memory above the inputs",
        "memory model",
        "arithmetic model",
    ):
        assert needle in text
    doc = json.loads(out.read_text())
    assert set(doc) >= {"machine", "model", "sizes", "cpu", "fresh", "gpu"}
    assert doc["gpu"] is None and doc["fresh"] is None
    assert doc["machine"]["threads"] >= 1 and doc["machine"]["backend"] in ("pyfftw", "scipy")
    results = doc["cpu"]["results"]
    assert [r["shape"] for r in results] == [[16, 16, 16]]
    for r in results:
        assert set(r["median_s"]) == {"closed_form", "closed_form_masked", "bare_pair", "scipy", "naive"}
        assert all(t > 0 for t in r["median_s"].values())
        for key in ("bare_pair", "closed_form", "closed_form_masked"):
            f = r["floors_s"][key]
            assert f["lower_bound_s"] == max(f["memory_s"], f["arithmetic_s"]) > 0
        q = r["ratios"]
        assert q["closed_form/bare_pair"] == pytest.approx(
            r["median_s"]["closed_form"] / r["median_s"]["bare_pair"]
        )
        assert q["closed_form/lower_bound"] > 0
        assert r["naive_rel_diff"] < 1e-4
        assert r["bandwidth"]["B_GBps"] > 0
        assert all(v["GFlops"] > 0 for v in r["fft_rates"].values())
        mem = r["memory"]
        assert "error" not in mem, mem
        assert mem["input_bytes"] == 4 * math.prod(r["shape"])
        assert mem["x_input"]["cold_peak"] >= mem["x_input"]["warm_peak"] > 0
        if doc["machine"]["backend"] == "pyfftw":
            assert mem["tracemalloc_sees_fftw_buffers"] is True


def test_bench_fft_skip_naive(bench, capsys):
    doc = bench.main(["--sizes", "12x16x10", "--repeats", "1", "--no-fresh", "--skip-naive", "--no-memory"])
    (r,) = doc["cpu"]["results"]
    assert r["shape"] == [12, 16, 10] and set(r["fft_rates"]) == {"10", "12", "16"}
    assert "naive" not in r["median_s"] and r["memory"] is None
    text = capsys.readouterr().out
    assert "## CPU, 12x16x10" in text and "skipped" in text


def _gpu_usable():
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_gpu_usable(), reason="CuPy and a CUDA device are present")
def test_bench_fft_gpu_without_cupy(bench, capsys):
    assert main(["bench", "fft", "--device", "gpu", "--sizes", "16"]) == 2
    assert "--device gpu needs" in capsys.readouterr().err


@pytest.mark.gpu
def test_bench_fft_gpu_tiny(bench, capsys):
    if not _gpu_usable():
        pytest.skip("needs CuPy and a CUDA device")
    doc = bench.main(
        ["--device", "gpu", "--sizes", "16", "--gpu-repeats", "3", "--h2h-repeats", "1", "--no-fresh"]
    )
    (r,) = doc["gpu"]["results"]
    assert r["on_device"]["closed_form"]["gpu_ms"] > 0
    assert r["closed_form_rel_diff"] < 1e-4
    assert set(r["host_to_host"]) == {"pageable", "pinned", "pageable_transfer_only", "pinned_transfer_only"}
    assert "## GPU:" in capsys.readouterr().out
