"""User x item matrices read from the dbt marts, with the id <-> index maps that go with them.

The heavy lifting (dense ids, aggregation) happens in DuckDB with ``dense_rank``; Python only
hands the resulting integer columns to scipy. Row and column order is the sorted order of the ids,
so two loads of the same table give the same matrix, and index maps can be rebuilt from the
stored id arrays alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix

from recsys_dagster.models.marts import EVENT_WEIGHT_PARAMETERS, STRENGTH_SQL

#: The three fits of every model and the table each is trained on: "validation" picks the champion
#: and tunes (events before the validation cutoff), "holdout" is what the test-window evaluation
#: judges (events before the holdout cutoff), "serving" is what gets published (every event).
Fit = Literal["validation", "holdout", "serving"]
FIT_TABLES: dict[str, str] = {
    "validation": "ml.validation_train_user_item",
    "holdout": "fct_train_user_item",
    "serving": "fct_user_item_interactions",
}


@dataclass(frozen=True)
class InteractionMatrix:
    """A CSR matrix (users as rows, items as columns) and the ids of its rows and columns."""

    matrix: csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)


def checked_table(table: str) -> str:
    """``table`` if it is one of the marts models are trained on; identifiers can't be bound."""
    if table not in FIT_TABLES.values():
        raise ValueError(f"unknown training table {table!r}; expected one of {sorted(FIT_TABLES.values())}")
    return table


def id_array(ids: object) -> np.ndarray:
    """Ids as a fixed-width unicode array: saves to ``.npz`` without pickling and compares fast."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "U":
        return ids
    values = np.asarray(ids, dtype=object)
    return values.astype(str) if len(values) else np.array([], dtype="<U1")


def ids_by_index(ids: pd.Series, index: np.ndarray, size: int) -> np.ndarray:
    """The id of every index ``0..size-1`` from parallel (id, index) columns, without a loop."""
    ordered = np.empty(size, dtype=object)
    ordered[index] = ids.to_numpy(dtype=object)
    return id_array(ordered)


def pair_value_sql(event_weights: Sequence[float] | None) -> tuple[str, dict[str, float]]:
    """SQL for a pair's matrix value over a mart's columns, and the parameters it binds: the mart's
    ``strength`` (None), or the same sum of event counts and rating (``STRENGTH_SQL``) with the given
    weights (view, addtocart, transaction, rating) instead of dbt's, so a model can weigh events its
    own way without a dbt rebuild."""
    if event_weights is None:
        return "strength", {}
    if len(event_weights) != len(EVENT_WEIGHT_PARAMETERS):
        raise ValueError(f"expected {len(EVENT_WEIGHT_PARAMETERS)} event weights, got {list(event_weights)}")
    return f"CAST({STRENGTH_SQL} AS DOUBLE)", dict(zip(EVENT_WEIGHT_PARAMETERS, map(float, event_weights)))


def load_matrix(
    con: duckdb.DuckDBPyConnection, table: str, event_weights: Sequence[float] | None = None
) -> InteractionMatrix:
    """The float32 user x item matrix of ``table``'s pair values (``pair_value_sql``), positive ones only.

    Zero-valued pairs are dropped because implicit's ALS treats a stored entry as a positive
    observation whatever its value; an event type that weighs nothing must not become one.
    """
    value, parameters = pair_value_sql(event_weights)
    frame = con.execute(
        f"""
        WITH pairs AS (SELECT user_id, item_id, {value} AS value FROM {checked_table(table)})
        SELECT user_id, item_id, CAST(value AS FLOAT) AS value,
               CAST(dense_rank() OVER (ORDER BY user_id) - 1 AS INTEGER) AS row_index,
               CAST(dense_rank() OVER (ORDER BY item_id) - 1 AS INTEGER) AS col_index
        FROM pairs
        WHERE value > 0
        """,
        parameters,
    ).df()
    n_users = int(frame["row_index"].max()) + 1 if len(frame) else 0
    n_items = int(frame["col_index"].max()) + 1 if len(frame) else 0
    matrix = csr_matrix(
        (frame["value"].to_numpy(np.float32), (frame["row_index"].to_numpy(), frame["col_index"].to_numpy())),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    matrix.sort_indices()
    return InteractionMatrix(
        matrix=matrix,
        user_ids=ids_by_index(frame["user_id"], frame["row_index"].to_numpy(), n_users),
        item_ids=ids_by_index(frame["item_id"], frame["col_index"].to_numpy(), n_items),
    )


def pairs_matrix(pairs: pd.DataFrame, user_index: pd.Index, item_index: pd.Index) -> csr_matrix:
    """A boolean CSR of (user_id, item_id) ``pairs`` over the given row and column ids.

    Pairs whose user or item is not in the index are dropped: they cannot be scored anyway.
    """
    rows = user_index.get_indexer(pairs["user_id"].astype(str))
    cols = item_index.get_indexer(pairs["item_id"].astype(str))
    known = (rows >= 0) & (cols >= 0)
    matrix = csr_matrix(
        (np.ones(int(known.sum()), dtype=bool), (rows[known], cols[known])),
        shape=(len(user_index), len(item_index)),
    )
    matrix.sum_duplicates()
    return matrix


def table_fingerprint(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """A cheap content hash of a training table, so a model version names the data it saw."""
    n_rows, digest = con.execute(
        f"""
        SELECT count(*), coalesce(sum(hash(user_id, item_id, strength, last_rating, last_event_time)), 0)::VARCHAR
        FROM {checked_table(table)}
        """
    ).fetchone()
    return f"{n_rows}:{digest}"
