"""The pipeline benchmark runs end to end at a tiny size (numbers not timed here)."""

import json

from mrirecon.bench.pipeline import run


def test_bench_pipeline_tiny(tmp_path):
    doc = run(shape=(48, 56, 46), repeats=1, out=tmp_path, backgrounds=("resharp", "lbv"), log=lambda *a: None)
    assert {"mask", "unwrapping", "background removal", "dipole inversion"} <= set(doc["steps_s"])
    assert len(doc["rows"]) == 4  # 2 masks × 2 background removals
    for r in doc["rows"]:
        assert 0 < r["chi_nrmse"] < 300 and r["best_chi_nrmse"] <= r["chi_nrmse"] + 1e-9
    saved = json.loads((tmp_path / "pipeline_results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(doc["rows"]))
    assert "| echoes | resharp" in (tmp_path / "pipeline_results.md").read_text()
