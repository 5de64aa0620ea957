"""mrirecon.bench.cohort runs end to end at a tiny size (its tables and JSON; no timing checked)."""

import json

from mrirecon.bench.cohort import run


def test_bench_cohort_tiny(tmp_path):
    doc = run(
        size=32,
        subjects=2,
        volumes=3,
        series_size=24,
        repeats=1,
        workers=(2,),
        out=tmp_path,
        log=lambda _: None,
    )
    assert set(doc["engines"]) == {"in process", "Dask, 2 workers"}
    for r in doc["engines"].values():
        assert len(r["series_s"]) == 2 and r["wall_s"] > 0
    assert doc["engines"]["Dask, 2 workers"]["startup_s"] > 0
    s4 = doc["series_4d"]
    assert s4["volumes"] == 3 and s4["per_volume_s"] > 0 and s4["ratio"] > 0
    saved = json.loads((tmp_path / "cohort_results.json").read_text())
    assert saved["subjects"] == 2
    text = (tmp_path / "cohort_results.md").read_text()
    assert "| Dask, 2 workers |" in text and "| 24³ × 3 |" in text
