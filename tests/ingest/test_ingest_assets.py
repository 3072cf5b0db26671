"""The ingest multi_asset, materialized in-process by Dagster into a real DuckDB file."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, RunConfig, materialize

from recsys_dagster.ingest.assets import IngestConfig, ingest
from recsys_dagster.ingest.files import FileOutsideAllowedDirsError
from recsys_dagster.ingest.formats import UnrecognisedFileError

RETAIL = "online_retail/online_retail_head10k.csv"
TAOBAO = "taobao_userbehavior/UserBehavior_tail10k_114users_fullhistory.csv"
REES46 = "rees46_multicategory_head/2019-Oct_head_0000-0249UTC.csv"


def run(resources: dict, files: list[str] | None = None):
    config = RunConfig({"ingest": IngestConfig(files=files or [])})
    return materialize([ingest], resources=resources, run_config=config)


def query(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


def metadata_of(result, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def ledger(warehouse: Path) -> list[tuple]:
    sql = "SELECT file_name, source_format, n_rows, status FROM main.ingested_files ORDER BY file_name"
    return query(warehouse, sql)


def test_materialize_scans_input_and_inbox_into_raw_tables(shared_datasets, head, dirs, resources):
    head(shared_datasets / RETAIL, dirs["input"] / "online_retail.csv", n_lines=1001)
    head(shared_datasets / TAOBAO, dirs["inbox"] / "UserBehavior.csv.gz", n_lines=500)
    (dirs["inbox"] / "notes.md").write_text("not a data file")

    result = run(resources)

    assert result.success
    assert {spec.key for spec in ingest.specs} == {AssetKey("raw_events"), AssetKey("raw_items")}
    assert {ingest.group_names_by_key[k] for k in ingest.keys} == {"ingest"}
    assert query(dirs["warehouse"], "SELECT source_format, count(*), min(source_row), max(source_row) "
                 "FROM main.raw_events GROUP BY ALL ORDER BY 1") == [("online_retail", 1000, 1, 1000),
                                                                    ("taobao", 500, 1, 500)]
    first = query(dirs["warehouse"], "SELECT source_file, user_id, item_id, event_type, transaction_id "
                  "FROM main.raw_events WHERE source_row = 1 AND source_format = 'online_retail'")
    assert first == [(str((dirs["input"] / "online_retail.csv").resolve()), "17850", "85123A", "transaction", "536365")]
    assert ledger(dirs["warehouse"]) == [("UserBehavior.csv.gz", "taobao", 500, "loaded"),
                                         ("online_retail.csv", "online_retail", 1000, "loaded")]
    n_items = query(dirs["warehouse"], "SELECT count(*), count(DISTINCT (source_file, item_id)) FROM main.raw_items")[0]
    assert n_items[0] == n_items[1] > 0

    events_md = metadata_of(result, "raw_events")
    assert events_md["dagster/row_count"] == 1500 and events_md["rows_added"] == 1500
    assert events_md["files_loaded"] == 2 and events_md["files_skipped_duplicate"] == 0
    assert "UserBehavior.csv.gz" in events_md["files"] and "taobao" in events_md["files"]
    assert "999477" in events_md["preview"] and events_md["duration_s"] >= 0  # first taobao user
    items_md = metadata_of(result, "raw_items")
    assert items_md["dagster/row_count"] == items_md["rows_added"] == n_items[0]


def test_rerun_and_renamed_copy_load_no_duplicate_rows(shared_datasets, head, dirs, resources):
    original = head(shared_datasets / RETAIL, dirs["input"] / "online_retail.csv", n_lines=201)
    assert run(resources).success

    shutil.copy(original, dirs["inbox"] / "retail_copy_renamed.csv")
    result = run(resources)

    assert query(dirs["warehouse"], "SELECT count(*) FROM main.raw_events") == [(200,)]
    assert ledger(dirs["warehouse"]) == [("online_retail.csv", "online_retail", 200, "loaded"),
                                         ("retail_copy_renamed.csv", "online_retail", 0, "duplicate_content")]
    md = metadata_of(result, "raw_events")
    assert (md["rows_added"], md["files_skipped_duplicate"], md["files_unchanged"]) == (0, 1, 1)
    assert "duplicate_content" in md["files"]

    assert run(resources).success  # third run: nothing new, ledger unchanged
    assert query(dirs["warehouse"], "SELECT count(*) FROM main.raw_events") == [(200,)]
    assert len(ledger(dirs["warehouse"])) == 2


def test_new_content_at_same_path_replaces_its_rows(shared_datasets, head, dirs, resources):
    path = head(shared_datasets / RETAIL, dirs["inbox"] / "retail.csv", n_lines=301)
    assert run(resources).success
    head(shared_datasets / RETAIL, path, n_lines=101)

    result = run(resources)

    assert query(dirs["warehouse"], "SELECT count(*), max(source_row) FROM main.raw_events") == [(100, 100)]
    assert ledger(dirs["warehouse"]) == [("retail.csv", "online_retail", 100, "loaded")]
    md = metadata_of(result, "raw_events")
    assert (md["rows_added"], md["rows_removed_replaced"]) == (100, 300)
    assert "replaced" in md["files"]
    items = query(dirs["warehouse"], "SELECT count(*) FROM main.raw_items WHERE source_file = "
                  f"'{path.resolve()}'")[0][0]
    assert items == metadata_of(result, "raw_items")["dagster/row_count"]


def test_copy_of_replaced_content_takes_over_in_the_same_run(shared_datasets, head, dirs, resources):
    original = head(shared_datasets / REES46, dirs["input"] / "a_rees46.csv", n_lines=51)
    copy = dirs["input"] / "b_rees46_copy.csv"
    shutil.copy(original, copy)
    assert run(resources).success
    assert [row[3] for row in ledger(dirs["warehouse"])] == ["loaded", "duplicate_content"]

    head(shared_datasets / REES46, original, n_lines=11)  # the loaded copy changes
    assert run(resources).success

    assert query(dirs["warehouse"], "SELECT source_file, count(*) FROM main.raw_events GROUP BY 1 ORDER BY 1") == [
        (str(original.resolve()), 10),
        (str(copy.resolve()), 50),
    ]
    assert [row[3] for row in ledger(dirs["warehouse"])] == ["loaded", "loaded"]


def test_configured_files_limit_the_run_and_must_stay_inside_the_dirs(shared_datasets, head, dirs, resources, tmp_path):
    head(shared_datasets / RETAIL, dirs["input"] / "retail.csv", n_lines=11)
    head(shared_datasets / TAOBAO, dirs["inbox"] / "taobao.csv", n_lines=7)
    outside = head(shared_datasets / TAOBAO, tmp_path / "elsewhere" / "taobao.csv", n_lines=5)
    (dirs["inbox"] / "link.csv").symlink_to(outside)

    assert run(resources, files=["taobao.csv"]).success  # relative to the inbox
    assert query(dirs["warehouse"], "SELECT source_format, count(*) FROM main.raw_events GROUP BY 1") == [("taobao", 7)]

    for refused in ["link.csv", str(outside), "../elsewhere/taobao.csv"]:
        with pytest.raises(FileOutsideAllowedDirsError, match="outside the input dir"):
            run(resources, files=[refused])
    assert query(dirs["warehouse"], "SELECT count(*) FROM main.raw_events") == [(7,)]


def test_unrecognised_file_fails_the_run_and_writes_nothing(shared_datasets, head, dirs, resources):
    head(shared_datasets / RETAIL, dirs["input"] / "retail.csv", n_lines=11)
    head(shared_datasets / "retailrocket/category_tree.csv", dirs["inbox"] / "category_tree.csv", n_lines=10)

    with pytest.raises(UnrecognisedFileError, match="category_tree.csv"):
        run(resources)
    assert not dirs["warehouse"].exists() or query(
        dirs["warehouse"], "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'raw_events'"
    ) == [(0,)]


def test_failure_mid_run_rolls_back_every_write(shared_datasets, head, dirs, resources):
    retail = head(shared_datasets / RETAIL, dirs["input"] / "retail.csv", n_lines=201)
    assert run(resources).success
    before = query(dirs["warehouse"], "SELECT count(*), max(source_row) FROM main.raw_events")

    head(shared_datasets / RETAIL, retail, n_lines=51)  # would replace the 200 rows
    full = head(shared_datasets / TAOBAO, dirs["inbox"] / "taobao.csv.gz")
    truncated = full.read_bytes()
    full.write_bytes(truncated[: len(truncated) // 2])  # a gzip cut in the middle fails while loading

    with pytest.raises(EOFError):
        run(resources)
    assert query(dirs["warehouse"], "SELECT count(*), max(source_row) FROM main.raw_events") == before == [(200, 200)]
    assert ledger(dirs["warehouse"]) == [("retail.csv", "online_retail", 200, "loaded")]


def test_empty_directories_give_empty_tables(resources, dirs):
    result = run(resources)

    assert result.success
    assert query(dirs["warehouse"], "SELECT count(*) FROM main.raw_events") == [(0,)]
    md = metadata_of(result, "raw_items")
    assert (md["dagster/row_count"], md["rows_added"], md["files"]) == (0, 0, "_(no rows)_")
