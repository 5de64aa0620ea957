"""The QSM benchmark runs end to end at a tiny size (its numbers are not timed here)."""

import json

import pytest

from mrirecon.cli import main


def test_bench_qsm_quick(tmp_path, capsys):
    out = tmp_path / "bq"
    assert main(["bench", "qsm", "--sizes", "24", "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    (r,) = doc["results"]
    methods = r["methods"]
    assert set(methods) == {
        "closed-form L2 (sweep λ)",
        "closed-form L2 (GCV λ)",
        "TKD (t = 0.19)",
        "CG-L2",
        "TV-ADMM",
        "TV-NLCG",
    }
    cf = methods["closed-form L2 (sweep λ)"]
    # CG-L2 runs at the closed form's λ on the same objective: same image quality
    assert methods["CG-L2"]["lam"] == cf["lam"]
    assert methods["CG-L2"]["nrmse"] == pytest.approx(cf["nrmse"], abs=1.0)
    for m in methods.values():
        assert 0 < m["nrmse"] < 100 and 0 < m["ssim"] <= 1 and m["time_s"] > 0
    for name in ("CG-L2", "TV-ADMM", "TV-NLCG"):
        m = methods[name]
        assert m["closed_form_speedup"] == pytest.approx(m["time_s"] / cf["time_s"])
        if m["time_to_match_s"] is not None:  # the first recorded time within 1 % of the closed form's NRMSE
            i = r["curves"][name]["times"].index(m["time_to_match_s"])
            assert r["curves"][name]["nrmse"][i] <= 1.01 * cf["nrmse"]
            assert all(e > 1.01 * cf["nrmse"] for e in r["curves"][name]["nrmse"][:i])
        curve = r["curves"][name]
        assert len(curve["times"]) == len(curve["nrmse"]) == methods[name]["iterations"]
        assert curve["times"] == sorted(curve["times"])
    # the sweep's best λ is the one the L2 rows use, and it minimises the swept NRMSE
    sweep = r["sweeps"]["l2"]
    assert sweep["best"] == sweep["lams"][sweep["nrmse"].index(min(sweep["nrmse"]))]
    table = (out / "results.md").read_text()
    assert "| TV-ADMM |" in table and "closed-form speed-up" in table
    for stem in ("qsm_slices", "qsm_errors", "qsm_convergence", "qsm_lcurve"):
        assert (out / f"{stem}_24.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_bad_sizes(capsys):
    assert main(["bench", "qsm", "--sizes", "8"]) == 2
    assert "--sizes" in capsys.readouterr().err
