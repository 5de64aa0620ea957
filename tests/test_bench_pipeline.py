"""The pipeline benchmark runs end to end at a tiny size (numbers not timed here)."""

import json

from mrirecon.bench.pipeline import run


def test_bench_pipeline_tiny(tmp_path):
    doc = run(size=32, repeats=1, out=tmp_path, log=lambda *a: None)
    assert set(doc["steps_s"]) == {
        "phase scaling",
        "mask",
        "unwrapping",
        "echo fit",
        "background removal",
        "dipole inversion",
    }
    assert doc["total_s"] >= sum(doc["steps_s"].values()) * 0.99
    pairs = doc["pairs"]
    assert len(pairs) == 12  # 3 background removals × 4 inversions
    for v in pairs.values():
        assert 0 < v["nrmse"] < 300 and v["mask_voxels"] > 0
    saved = json.loads((tmp_path / "pipeline_results.json").read_text())
    assert saved["pairs"].keys() == pairs.keys()
    assert "| V-SHARP" in (tmp_path / "pipeline_results.md").read_text()
