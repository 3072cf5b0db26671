"""Warehouses for the dbt feature tests, built from real shop data in the exact upstream schema.

The dbt project only reads ``main.validated_interactions`` and ``main.raw_items``, so each fixture
writes those two tables (columns and types as in docs/design.md) from a slice of a public dataset
with one DuckDB statement, and points ``RECSYS_DUCKDB_PATH`` (read by dbt's profiles.yml) at it.
The file is always named ``warehouse.duckdb``, the stem the dbt manifest was parsed for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from dagster_dbt import DbtCliResource

from recsys_dagster.resources import build_resources

CREATE_SOURCE_TABLES = """
create table main.validated_interactions (
    user_id VARCHAR, item_id VARCHAR, event_type VARCHAR, rating DOUBLE, event_time TIMESTAMP,
    transaction_id VARCHAR, source_file VARCHAR, source_row BIGINT, source_format VARCHAR
);
create table main.raw_items (
    item_id VARCHAR, name VARCHAR, category VARCHAR, brand VARCHAR, price DOUBLE, available BOOLEAN,
    source_file VARCHAR, source_format VARCHAR, observed_at TIMESTAMP
);
"""

# Online Retail rows as the ingest/validate stages would leave them: purchases only (no "C"
# cancellations, positive quantity) of identified customers; CustomerID "17850.0" -> "17850".
ONLINE_RETAIL_FILE_ROWS = """
select *, row_number() over () as source_row
from read_csv($path, header = true, all_varchar = true)
"""

INSERT_ONLINE_RETAIL_PURCHASES = f"""
insert into main.validated_interactions
select
    cast(cast(CustomerID as double) as bigint)::varchar as user_id,
    trim(StockCode) as item_id,
    'transaction' as event_type,
    null as rating,
    strptime(InvoiceDate, '%Y-%m-%d %H:%M:%S') as event_time,
    InvoiceNo as transaction_id,
    $path as source_file,
    source_row,
    'online_retail' as source_format
from ({ONLINE_RETAIL_FILE_ROWS}) as file_rows
where CustomerID is not null
  and not starts_with(InvoiceNo, 'C')
  and cast(Quantity as integer) > 0
"""

# The file's catalog (every row, identified customer or not): latest description and price per
# StockCode, observed at its latest invoice.
INSERT_ONLINE_RETAIL_CATALOG = f"""
insert into main.raw_items
select
    trim(StockCode) as item_id,
    arg_max(Description, event_time) filter (where Description is not null) as name,
    null as category,
    null as brand,
    arg_max(cast(UnitPrice as double), event_time) as price,
    null as available,
    $path as source_file,
    'online_retail' as source_format,
    max(event_time) as observed_at
from (
    select *, strptime(InvoiceDate, '%Y-%m-%d %H:%M:%S') as event_time
    from ({ONLINE_RETAIL_FILE_ROWS}) as file_rows
) as dated_rows
where trim(StockCode) <> $item_missing_from_catalog
group by trim(StockCode)
"""

REES46_EVENT_TYPES = "map {'view': 'view', 'cart': 'addtocart', 'purchase': 'transaction'}"

INSERT_REES46_EVENTS = f"""
insert into main.validated_interactions
select
    user_id::varchar,
    product_id::varchar as item_id,
    {REES46_EVENT_TYPES}[event_type] as event_type,
    null as rating,
    event_time,
    null as transaction_id,
    $path as source_file,
    row_number() over () as source_row,
    'rees46' as source_format
from read_csv($path, header = true)
"""

INSERT_AMAZON_RATINGS = """
insert into main.validated_interactions
select
    UserId as user_id,
    ItemId as item_id,
    'rating' as event_type,
    rating,
    epoch_ms(timestamp * 1000) as event_time,
    null as transaction_id,
    $path as source_file,
    row_number() over () as source_row,
    'amazon_ratings' as source_format
from read_csv($path, header = true, types = {'ItemId': 'VARCHAR', 'UserId': 'VARCHAR'})
limit $n_rows
"""

#: A real item of the first invoice that the fixture leaves out of raw_items ("seen only in events").
ITEM_MISSING_FROM_CATALOG = "71053"
#: A later, price-only catalog observation of 85123A: the price must win, the older name must stay.
PRICE_UPDATE = {"item_id": "85123A", "price": 2.95, "observed_at": "2010-12-06 00:00:00"}


def create_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    """A new warehouse file holding the two (empty) dbt source tables."""
    con = duckdb.connect(str(path))
    con.execute(CREATE_SOURCE_TABLES)
    return con


@pytest.fixture(scope="module")
def online_retail_csv(shared_datasets: Path) -> Path:
    return shared_datasets / "online_retail" / "online_retail_head10k.csv"


@pytest.fixture(scope="module")
def online_retail_warehouse(tmp_path_factory: pytest.TempPathFactory, online_retail_csv: Path) -> Iterator[Path]:
    """Online Retail purchases + its catalog (one item left out, one later price-only observation)."""
    path = tmp_path_factory.mktemp("online_retail") / "warehouse.duckdb"
    csv = str(online_retail_csv)
    with create_warehouse(path) as con:
        con.execute(INSERT_ONLINE_RETAIL_PURCHASES, {"path": csv})
        con.execute(
            INSERT_ONLINE_RETAIL_CATALOG, {"path": csv, "item_missing_from_catalog": ITEM_MISSING_FROM_CATALOG}
        )
        con.execute(
            "insert into main.raw_items (item_id, price, source_file, source_format, observed_at) "
            "values ($item_id, $price, 'price_update.csv', 'canonical', $observed_at)",
            PRICE_UPDATE,
        )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_DUCKDB_PATH", str(path))
        yield path


@pytest.fixture(scope="module")
def multi_event_warehouse(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Iterator[Path]:
    """REES46 views/carts/purchases + Amazon ratings, and an EMPTY raw_items (no catalog at all)."""
    path = tmp_path_factory.mktemp("multi_event") / "warehouse.duckdb"
    rees46 = shared_datasets / "rees46_multicategory_head" / "2019-Oct_head_0000-0249UTC.csv"
    amazon = shared_datasets / "amazon_electronics_ratings" / "ratings_Electronics_head.csv"
    with create_warehouse(path) as con:
        con.execute(INSERT_REES46_EVENTS, {"path": str(rees46)})
        con.execute(INSERT_AMAZON_RATINGS, {"path": str(amazon), "n_rows": 2000})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_DUCKDB_PATH", str(path))
        yield path


@pytest.fixture(scope="session")
def feature_resources() -> dict[str, object]:
    """The pipeline's own resources; their paths resolve from RECSYS_* when a run starts."""
    return build_resources()


@pytest.fixture(scope="session")
def dbt_resource(feature_resources: dict[str, object]) -> DbtCliResource:
    return feature_resources["dbt"]


def read_rows(path: Path, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
    """Rows of ``sql`` against the warehouse at ``path``, opened read-only and closed again."""
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or {}).fetchall()


@pytest.fixture(scope="session")
def warehouse_rows() -> Callable[..., list[tuple]]:
    """``warehouse_rows(path, sql, params)``: query a test warehouse without holding its lock."""
    return read_rows
