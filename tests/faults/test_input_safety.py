"""Input safety: hostile strings in file names, paths and configuration stay data, never SQL.

Every value below would break (or drop) a table if it were pasted into SQL text. The pipeline binds
paths as parameters, passes DuckDB settings as connection configuration, and validates the rest
(Config types, the dbt var macros, the memory-limit format), so each is either handled as an
ordinary value or refused with an error that names it -- and no table changes.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, DagsterInstance, RunConfig, materialize
from dagster_dbt import DbtCliResource
from dagster_dbt.errors import DagsterDbtCliRuntimeError
from pydantic import ValidationError

from fault_env import HOSTILE, SAMPLE, FaultEnv, failure_text
from recsys_dagster import settings
from recsys_dagster.definitions import defs
from recsys_dagster.features.dbt import DbtBuildConfig
from recsys_dagster.features.project import DBT_EXECUTABLE, DBT_VAR_DEFAULTS, dbt_project
from recsys_dagster.resources import WarehouseResource
from recsys_dagster.validate.assets import ValidationConfig, validate_interactions
from tests.conftest import isolate_pipeline

HOSTILE_NAMES = [
    "it's; DROP TABLE raw_events; --.csv",
    'say "hi"; DELETE FROM validated_interactions WHERE 1=1.csv',
    "$1 %s \\N ' OR '1'='1.csv",
]
EVENTS = "user_id,item_id,event_type,event_time\nu1,i1,view,2020-01-01T00:00:00\nu2,i2,addtocart,2020-01-02T00:00:00\n"
FEATURE_ASSETS = ["stg_interactions", "int_holdout_cutoff", "fct_user_item_interactions", "fct_train_user_item",
                  "fct_holdout_interactions", "dim_items", "dim_users"]


@pytest.mark.parametrize("configured", [False, True], ids=["scanned", "configured"])
def test_hostile_file_names_are_loaded_as_data(fault_env: FaultEnv, configured: bool) -> None:
    # Glob characters (* ? [ ] { }) are refused by name (tests/data/bad); quotes, semicolons,
    # placeholders and backslashes are legal in file names and must simply work.
    for name in HOSTILE_NAMES:
        (fault_env.inbox / name).write_text(EVENTS)
    before = fault_env.fingerprints()

    result = fault_env.run(files=HOSTILE_NAMES if configured else None)

    assert result.success, failure_text(result)
    loaded = fault_env.query(
        "SELECT file_name, n_rows, status FROM main.ingested_files WHERE file_path <> ? ORDER BY 1",
        [fault_env.baseline.sample_path],
    )
    # Three identical contents: the first name (in path order) loads, the others are duplicates.
    first, *others = sorted(HOSTILE_NAMES, key=lambda name: str((fault_env.inbox / name).resolve()))
    assert loaded == sorted([(first, 2, "loaded")] + [(name, 0, "duplicate_content") for name in others])
    assert fault_env.query(
        "SELECT count(*) FROM main.validated_interactions WHERE source_file = ?",
        [str((fault_env.inbox / first).resolve())],
    ) == [(2,)]
    baseline_rows = "SELECT count(*) FROM main.raw_events WHERE source_file = ?"
    assert fault_env.query(baseline_rows, [fault_env.baseline.sample_path]) == [(before["raw_events"][0],)]


def test_configured_path_traversal_is_refused(fault_env: FaultEnv) -> None:
    (fault_env.outside / "stolen.csv").write_text(EVENTS)
    before = fault_env.fingerprints()

    result = fault_env.run(files=["../outside/stolen.csv"])

    assert not result.success
    assert re.search(r"Refusing to ingest '\.\./outside/stolen\.csv'.*outside the input dir", failure_text(result))
    assert fault_env.fingerprints() == before


@pytest.mark.parametrize("key", ["../outside/stolen.csv", "OUTSIDE/stolen.csv"], ids=["relative", "absolute"])
def test_a_partition_key_leading_out_of_the_inbox_is_refused(fault_env: FaultEnv, key: str) -> None:
    # Partition keys are file names from the sensor, but the UI and the CLI accept any string.
    (fault_env.outside / "stolen.csv").write_text(EVENTS)
    key = key.replace("OUTSIDE", str(fault_env.outside))
    before = fault_env.fingerprints()

    result = fault_env.run_partition(key)

    assert not result.success
    assert key in failure_text(result)  # refused, and the error names the key
    assert fault_env.fingerprints() == before


def test_a_partition_naming_an_inbox_link_that_leaves_the_inbox_is_refused(fault_env: FaultEnv) -> None:
    # The sensor never requests such a link, but the file may be swapped for one after it looked.
    (fault_env.outside / "stolen.csv").write_text(EVENTS)
    (fault_env.inbox / "export.csv").symlink_to(fault_env.outside / "stolen.csv")
    before = fault_env.fingerprints()

    result = fault_env.run_partition("export.csv")

    assert not result.success
    assert re.search(r"Refusing to ingest .*export\.csv'?: it resolves to .*stolen\.csv, which is outside",
                     failure_text(result))
    assert fault_env.fingerprints() == before


def test_sql_in_a_validation_config_value_is_refused(fault_env: FaultEnv) -> None:
    before = fault_env.fingerprints()
    config = RunConfig({"validate_interactions": ValidationConfig(min_event_time=f"2020-01-01{HOSTILE}")})

    result = materialize([validate_interactions], resources=fault_env.resources(), run_config=config,
                         raise_on_error=False)

    assert not result.success
    assert f"Invalid isoformat string: \"2020-01-01{HOSTILE}\"" in failure_text(result)
    assert fault_env.fingerprints() == before


def test_sql_in_a_dbt_event_weight_is_refused_by_the_config_type() -> None:
    with pytest.raises(ValidationError, match="event_weights.view"):
        DbtBuildConfig(event_weights={**DBT_VAR_DEFAULTS["event_weights"], "view": "1; drop table x"})


@pytest.mark.parametrize(
    ("dbt_vars", "message"),
    [
        ({"event_weights": {**DBT_VAR_DEFAULTS["event_weights"], "view": "1; drop table x"}},
         "var event_weights['view'] must be a number >= 0, got: 1; drop table x"),
        ({"holdout_fraction": "0.2) as cutoff_time; drop table x; --"},
         "var holdout_fraction must be a number strictly between 0 and 1, got: 0.2) as cutoff_time; drop table x"),
    ],
    ids=["event_weights", "holdout_fraction"],
)
def test_sql_in_dbt_vars_given_directly_is_a_compilation_error(
    tmp_path: Path, dbt_vars: dict[str, object], message: str
) -> None:
    # Vars passed to dbt without the Dagster Config (e.g. `dbt build --vars ...` by hand) still go
    # through the recsys_event_weights() / recsys_holdout_fraction() macros before any value is
    # rendered into SQL.
    dbt = DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)
    parse = dbt.cli(["parse", "--vars", json.dumps(dbt_vars)], target_path=tmp_path)
    with pytest.raises(DagsterDbtCliRuntimeError, match=re.escape(message)):
        parse.wait()


def test_sql_in_the_memory_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.MEMORY_LIMIT_ENV, f"1GB{HOSTILE}")
    warehouse = WarehouseResource(database=str(tmp_path / "warehouse.duckdb"))
    with pytest.raises(ValueError, match="RECSYS_DUCKDB_MEMORY_LIMIT=.*is not a memory size"):
        with warehouse.get_connection():
            pass
    with pytest.raises(ValueError, match="is not a memory size"):
        settings.apply_env_defaults()  # what dbt's profile would read is checked too
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_memory_limit_and_temp_directory_reach_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.MEMORY_LIMIT_ENV, "512MB")
    monkeypatch.delenv(settings.TEMP_DIR_ENV, raising=False)
    warehouse = WarehouseResource(database=str(tmp_path / "warehouse.duckdb"))
    with warehouse.get_connection() as con:
        limit, temp_dir = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    assert limit == "488.2 MiB"  # DuckDB reports 512 MB in MiB
    assert temp_dir == str(tmp_path / "warehouse.duckdb.tmp")
    monkeypatch.setenv(settings.TEMP_DIR_ENV, str(tmp_path / "spill"))
    with WarehouseResource(database=str(tmp_path / "warehouse.duckdb"), memory_limit="1GiB").get_connection() as con:
        assert con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone() == ("1.0 GiB", str(tmp_path / "spill"))


def test_a_hostile_warehouse_path_works_through_ingest_validation_and_dbt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The folder name carries the SQL; the file keeps its name (dbt-duckdb names the catalog after it).
    root = tmp_path / f"shop{HOSTILE}"
    root.mkdir()
    isolate_pipeline(root, monkeypatch)
    shutil.copy(SAMPLE, root / "input_dir" / SAMPLE.name)
    keys = ["raw_events", "raw_items", "validated_interactions", "quarantined_events", *FEATURE_ASSETS]

    result = defs.resolve_job_def("refresh_recommendations").execute_in_process(
        instance=DagsterInstance.ephemeral(), asset_selection=[AssetKey(key) for key in keys], raise_on_error=False
    )

    assert result.success, failure_text(result)
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        raw, validated, quarantined, pairs = con.execute(
            "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM validated_interactions), "
            "(SELECT count(*) FROM quarantined_events), (SELECT count(*) FROM fct_user_item_interactions)"
        ).fetchone()
    assert raw == 10_000 and raw == validated + quarantined and pairs > 0
