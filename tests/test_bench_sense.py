"""The SENSE benchmark runs end to end at a tiny size (numbers not timed here)."""

import json

import pytest

from mrirecon.bench.sense import run


def test_bench_sense_tiny(tmp_path):
    res = run(size=48, n_coils=(6,), accel=4, acs=8, slices=2, repeats=1, out=tmp_path, log=lambda *a: None)
    r = res["coils"][6]
    names = set(r["methods"])
    assert "CG-SENSE (mrirecon, 30 it.)" in names and "closed-form unfold (lattice lines only)" in names
    cg = r["methods"]["CG-SENSE (mrirecon, 30 it.)"]
    for m in r["methods"].values():
        assert 0 < m["nrmse"] < 100 and m["time_s"] > 0
    # peers that are installed agree with mrirecon's CG on the same objective at their best λ
    for peer in ("SigPy SenseRecon (30 it.)", "BART pics -l2 (30 it.)"):
        if peer in r["methods"]:
            assert r["methods"][peer]["nrmse"] == pytest.approx(cg["nrmse"], rel=0.1)
    its = r["acs_iterations_nrmse"]
    assert its[30] < its[0]  # the ACS lines help
    assert json.loads((tmp_path / "sense_results.json").read_text())["accel"] == 4
    assert (tmp_path / "sense_6coils.png").read_bytes()[:4] == b"\x89PNG"
