"""Warehouses holding the dbt marts the models read, built with plain DuckDB SQL from real data.

The marts (fct_user_item_interactions, fct_train_user_item, fct_holdout_interactions, dim_items,
dim_users, int_holdout_cutoff, and stg_interactions with the event columns the models read) get exactly the columns of docs/design.md, computed the way the dbt
models define them, so these tests do not depend on the dbt project being built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.models.assets import MODEL_ASSETS, validation_split
from recsys_dagster.resources import RecsysPaths, WarehouseResource

HOLDOUT_FRACTION = 0.2


#: Online Retail purchases: one transaction event per invoice line with a customer (cancellations
#: and returns dropped), ids normalised as the ingest stage does ("17850.0" -> "17850").
ONLINE_RETAIL_EVENTS = """
SELECT CAST(CAST(CAST(CustomerID AS DOUBLE) AS BIGINT) AS VARCHAR) AS user_id,
       trim(StockCode) AS item_id, 'transaction' AS event_type, CAST(NULL AS DOUBLE) AS rating,
       CAST(InvoiceDate AS TIMESTAMP) AS event_time
FROM read_csv($path, header = true, all_varchar = true)
WHERE CustomerID IS NOT NULL AND NOT starts_with(InvoiceNo, 'C') AND CAST(Quantity AS INTEGER) > 0
"""

#: Amazon Electronics star ratings (ASINs kept as text: they have leading zeros).
AMAZON_RATING_EVENTS = """
SELECT UserId AS user_id, ItemId AS item_id, 'rating' AS event_type, CAST(rating AS DOUBLE) AS rating,
       to_timestamp(CAST("timestamp" AS BIGINT))::TIMESTAMP AS event_time
FROM read_csv($path, header = true, all_varchar = true)
"""

PAIR_FEATURES = """
SELECT user_id, item_id,
       count(*) FILTER (event_type = 'view') AS n_views,
       count(*) FILTER (event_type = 'addtocart') AS n_addtocarts,
       count(*) FILTER (event_type = 'transaction') AS n_transactions,
       count(*) FILTER (event_type = 'rating') AS n_ratings,
       arg_max(rating, event_time) FILTER (event_type = 'rating') AS last_rating,
       min(event_time) AS first_event_time,
       max(event_time) AS last_event_time,
       CAST(1 * n_views + 3 * n_addtocarts + 5 * n_transactions + 1 * coalesce(last_rating, 0) AS DOUBLE) AS strength
FROM events
WHERE {where}
GROUP BY user_id, item_id
"""

MART_TABLES_SQL = f"""
CREATE TABLE int_holdout_cutoff AS
SELECT {{cutoff}} AS cutoff_time,
       min(event_time) AS min_event_time, max(event_time) AS max_event_time
FROM events;

CREATE TABLE fct_user_item_interactions AS {PAIR_FEATURES.format(where="true")};

CREATE TABLE fct_train_user_item AS
{PAIR_FEATURES.format(where="event_time < (SELECT cutoff_time FROM int_holdout_cutoff)")};

CREATE TABLE fct_holdout_interactions AS
WITH holdout AS (
    SELECT user_id, item_id, count(*) AS n_events,
           count(*) FILTER (event_type = 'transaction') AS n_transactions,
           arg_max(rating, event_time) FILTER (event_type = 'rating') AS last_rating,
           min(event_time) AS first_event_time
    FROM events
    WHERE event_time >= (SELECT cutoff_time FROM int_holdout_cutoff)
    GROUP BY user_id, item_id
)
SELECT h.*,
       h.user_id IN (SELECT user_id FROM fct_train_user_item) AS user_in_train,
       t.user_id IS NOT NULL AS seen_in_train
FROM holdout h LEFT JOIN fct_train_user_item t USING (user_id, item_id);

CREATE TABLE dim_items AS
SELECT item_id, CAST(NULL AS VARCHAR) AS name, CAST(NULL AS VARCHAR) AS category, CAST(NULL AS VARCHAR) AS brand,
       CAST(NULL AS DOUBLE) AS price, CAST(NULL AS BOOLEAN) AS available,
       count(DISTINCT user_id) AS n_users, count(*) AS n_events,
       count(*) FILTER (event_type = 'transaction') AS n_transactions,
       min(event_time) AS first_event_time, max(event_time) AS last_event_time, false AS in_catalog
FROM events GROUP BY item_id;

CREATE TABLE dim_users AS
SELECT user_id, count(DISTINCT item_id) AS n_items, count(*) AS n_events,
       count(*) FILTER (event_type = 'transaction') AS n_transactions,
       min(event_time) AS first_event_time, max(event_time) AS last_event_time
FROM events GROUP BY user_id;

ALTER TABLE events RENAME TO stg_interactions;
"""


#: The dbt definition of the holdout cutoff; a benchmark with its own split passes another expression.
QUANTILE_CUTOFF = f"quantile_disc(event_time, {1 - HOLDOUT_FRACTION})"


def build_marts(database: Path, events_sql: str, source: Path, cutoff_sql: str = QUANTILE_CUTOFF) -> Path:
    """A DuckDB file with the marts computed from ``events_sql`` (read from ``source``).

    ``cutoff_sql``: a code-defined SQL expression over ``events`` giving the holdout cutoff."""
    with duckdb.connect(str(database)) as con:
        con.execute("SET TimeZone = 'UTC'")  # as the pipeline's WarehouseResource does
        con.execute(f"CREATE TABLE events AS {events_sql}", {"path": str(source)})
        con.execute(MART_TABLES_SQL.replace("{cutoff}", cutoff_sql))
    return database


@pytest.fixture(scope="session")
def retail_db(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_datasets / "online_retail" / "online_retail_head10k.csv"
    return build_marts(tmp_path_factory.mktemp("retail") / "warehouse.duckdb", ONLINE_RETAIL_EVENTS, source)


@pytest.fixture(scope="session")
def amazon_db(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_datasets / "amazon_electronics_ratings" / "ratings_Electronics_head.csv"
    return build_marts(tmp_path_factory.mktemp("amazon") / "warehouse.duckdb", AMAZON_RATING_EVENTS, source)


def pipeline_resources(database: Path, models_dir: Path) -> dict[str, object]:
    folder = models_dir.parent
    return {
        "warehouse": WarehouseResource(database=str(database)),
        "paths": RecsysPaths(
            input_dir=str(folder / "input"),
            inbox_dir=str(folder / "inbox"),
            models_dir=str(models_dir),
            serving_path=str(folder / "serving.duckdb"),
            published_dir=str(folder / "published"),
        ),
    }


@pytest.fixture(scope="session")
def make_resources() -> Callable[[Path, Path], dict[str, object]]:
    return pipeline_resources


@pytest.fixture(scope="session")
def trained_retail(retail_db: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The validation split, every model and one evaluation materialized on Online Retail, once per session."""
    resources = pipeline_resources(retail_db, tmp_path_factory.mktemp("retail_artifacts") / "models")
    result = materialize([validation_split, *MODEL_ASSETS, model_evaluation], resources=resources)
    assert result.success
    return {"result": result, "database": retail_db, "models_dir": resources["paths"].models_path()}


@pytest.fixture()
def retail_con(trained_retail: dict[str, object]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the trained Online Retail warehouse."""
    with duckdb.connect(str(trained_retail["database"]), read_only=True) as con:
        yield con
