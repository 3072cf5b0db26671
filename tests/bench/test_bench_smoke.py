"""Smoke test of ``python -m bench.pipeline``: the real pipeline on a small generated log, every stage timed.

Runs the CLI as documented (a subprocess from the project root, scratch folder in tmp_path) without
the reference comparisons (``--no-compare``: they are minutes of work at bench sizes), and checks the
JSON it writes: the run succeeded, every stage of the issue's list has a positive time and memory
figure, and the per-stage times add up to no more than the total.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from recsys_dagster.settings import PROJECT_ROOT

EVENTS = 20_000
STAGES = {
    "ingest", "validate", "dbt", "train als", "train svd", "train popularity", "train item_knn", "evaluate",
    "publish (score + write)",
}


def test_bench_pipeline_writes_every_stage(tmp_path: Path) -> None:
    results = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.pipeline", "--events", str(EVENTS), "--no-compare",
         "--scratch", str(tmp_path / "scratch"), "--results", str(results)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((results / f"pipeline-{EVENTS}.json").read_text())
    pipeline = report["pipeline"]
    by_stage = {stage["stage"]: stage for stage in pipeline["stages"]}
    assert pipeline["success"] is True
    assert STAGES <= set(by_stage), sorted(by_stage)
    assert all(stage["seconds"] > 0 and stage["peak_rss_gib"] > 0 for stage in by_stage.values())
    assert sum(stage["seconds"] for stage in pipeline["stages"]) <= pipeline["wall_seconds"]
    assert 0 < pipeline["peak_rss_gib"] < 6
    assert report["sizes"]["raw_events"] == EVENTS
    assert report["sizes"]["validated_interactions"] == EVENTS
    assert report["load_before"].count(",") == 2
    assert "| **total** |" in (results / f"pipeline-{EVENTS}.md").read_text()
