"""File partitions of the ingest assets, materialized for real (in-process and through the CLI):
a partition re-run replaces exactly that file's rows, a range backfill re-reads every file of the
range in one run, and validation downstream always consumes every partition."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from recsys_dagster.ingest.assets import INPUT_FILES, ingest
from recsys_dagster.resources import build_resources
from recsys_dagster.settings import DATA_DIR, PROJECT_ROOT
from recsys_dagster.validate.assets import validate_interactions

SAMPLE = DATA_DIR / "sample" / "online_retail.csv"
STAGES = [ingest, validate_interactions]


def write_slice(target: Path, start: int, stop: int) -> int:
    """Header + data rows ``start``..``stop`` (0-based, exclusive) of the bundled Online Retail sample."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text(lines[0] + "".join(lines[1 + start : 1 + stop]), encoding="utf-8")
    return stop - start


def per_file(warehouse: Path) -> dict[str, tuple]:
    """file name -> (rows, content hash of its rows, ingested_at) in raw_events."""
    sql = """SELECT parse_filename(source_file), count(*),
                    md5(string_agg(concat_ws('|', source_row, user_id, item_id, event_time), ',' ORDER BY source_row)),
                    max(ingested_at)
             FROM main.raw_events GROUP BY 1"""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {name: rest for name, *rest in con.execute(sql).fetchall()}


def accounted(warehouse: Path) -> tuple[int, int]:
    """(raw rows, validated + quarantined rows)."""
    sql = """SELECT (SELECT count(*) FROM raw_events),
                    (SELECT count(*) FROM validated_interactions) + (SELECT count(*) FROM quarantined_events)"""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchone()


@pytest.fixture()
def loaded(pipeline_env: Path) -> tuple[Path, DagsterInstance]:
    """Two files loaded by a run without partition into a persistent instance under the test dir."""
    (pipeline_env / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(tempdir=str(pipeline_env / "dagster_home"))
    write_slice(pipeline_env / "input_dir" / "a.csv", 0, 300)
    write_slice(pipeline_env / "input_dir" / "b.csv", 300, 600)
    assert materialize(STAGES, resources=build_resources(), instance=instance).success
    return pipeline_env, instance


def test_a_run_without_partition_lists_every_loaded_file_as_a_partition(loaded) -> None:
    root, instance = loaded
    assert instance.get_dynamic_partitions(INPUT_FILES.name) == ["a.csv", "b.csv"]
    assert {name: rows for name, (rows, *_) in per_file(root / "warehouse.duckdb").items()} == {"a.csv": 300,
                                                                                               "b.csv": 300}


def test_rerunning_a_partition_replaces_exactly_its_rows(loaded) -> None:
    root, instance = loaded
    warehouse = root / "warehouse.duckdb"
    before = per_file(warehouse)
    n_new = write_slice(root / "input_dir" / "b.csv", 600, 800)  # a corrected export under the same name

    result = materialize(STAGES, resources=build_resources(), instance=instance, partition_key="b.csv")

    assert result.success
    after = per_file(warehouse)
    assert after["a.csv"] == before["a.csv"]  # untouched, not even reloaded
    assert after["b.csv"][0] == n_new and after["b.csv"][1] != before["b.csv"][1]
    raw, routed = accounted(warehouse)
    assert raw == 300 + n_new == routed  # validation consumed every partition


def test_rerunning_an_unchanged_partition_reads_it_again(loaded) -> None:
    root, instance = loaded
    warehouse = root / "warehouse.duckdb"
    before = per_file(warehouse)
    assert materialize(STAGES, resources=build_resources(), instance=instance, partition_key="a.csv").success
    after = per_file(warehouse)
    assert after["a.csv"][:2] == before["a.csv"][:2] and after["a.csv"][2] > before["a.csv"][2]
    assert after["b.csv"] == before["b.csv"]


def test_a_partition_naming_no_file_fails_the_run(loaded) -> None:
    root, instance = loaded
    instance.add_dynamic_partitions(INPUT_FILES.name, ["gone.csv"])
    result = materialize(STAGES, resources=build_resources(), instance=instance, partition_key="gone.csv",
                         raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "partition 'gone.csv' must name one file" in failure.step_failure_data.error.cause.message


def test_cli_backfills_a_range_of_partitions_in_one_run(loaded) -> None:
    root, instance = loaded
    warehouse = root / "warehouse.duckdb"
    before = per_file(warehouse)
    completed = subprocess.run(
        [str(PROJECT_ROOT / ".venv" / "bin" / "dagster"), "asset", "materialize", "-m", "recsys_dagster.definitions",
         "--select", "raw_events,raw_items", "--partition-range", "a.csv...b.csv"],
        cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(root / "dagster_home")},
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    after = per_file(warehouse)
    for name in ("a.csv", "b.csv"):
        assert after[name][:2] == before[name][:2] and after[name][2] > before[name][2]
    [run] = instance.get_run_records()[:1]
    assert run.dagster_run.tags["dagster/asset_partition_range_start"] == "a.csv"
    assert run.dagster_run.tags["dagster/asset_partition_range_end"] == "b.csv"
