from pathlib import Path

import duckdb
from dagster import materialize

from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.resources import WarehouseResource

HOLDOUT_COLUMNS = """user_id VARCHAR, item_id VARCHAR, n_events BIGINT, n_transactions BIGINT, last_rating DOUBLE,
    first_event_time TIMESTAMP, user_in_train BOOLEAN, seen_in_train BOOLEAN"""


def failure_message(result) -> str:
    failure = result.get_step_failure_events()[0].step_failure_data.error
    return failure.message + "".join(cause.message for cause in [failure.cause] if cause)


def test_empty_holdout_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE TABLE fct_holdout_interactions ({HOLDOUT_COLUMNS})")

    result = materialize(
        [model_evaluation], resources={"warehouse": WarehouseResource(database=str(database))}, raise_on_error=False
    )

    assert not result.success
    assert "fct_holdout_interactions is empty" in failure_message(result)
    with duckdb.connect(str(database)) as con:
        ml_tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml'")
        assert ml_tables.fetchone()[0] == 0


def test_no_registered_model_fails_clearly(tmp_path: Path) -> None:
    database = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as con:
        con.execute(f"CREATE TABLE fct_holdout_interactions ({HOLDOUT_COLUMNS})")
        con.execute("INSERT INTO fct_holdout_interactions VALUES ('u', 'i', 1, 1, NULL, now(), false, false)")

    result = materialize(
        [model_evaluation], resources={"warehouse": WarehouseResource(database=str(database))}, raise_on_error=False
    )

    assert not result.success
    assert "no model in ml.model_registry" in failure_message(result)
