"""Warehouses holding the dbt marts the models read, built from real data slices by the shared mart
SQL (``recsys_dagster.models.marts``), so these tests do not depend on the dbt project being built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import materialize

from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.models.assets import MODEL_ASSETS, validation_split
from recsys_dagster.models.marts import build_marts, pipeline_resources

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


@pytest.fixture(scope="session")
def retail_db(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_datasets / "online_retail" / "online_retail_head10k.csv"
    return build_marts(tmp_path_factory.mktemp("retail") / "warehouse.duckdb", ONLINE_RETAIL_EVENTS, source)


@pytest.fixture(scope="session")
def amazon_db(shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_datasets / "amazon_electronics_ratings" / "ratings_Electronics_head.csv"
    return build_marts(tmp_path_factory.mktemp("amazon") / "warehouse.duckdb", AMAZON_RATING_EVENTS, source)


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
