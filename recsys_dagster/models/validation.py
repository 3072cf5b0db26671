"""The validation window: the train period split again, so tuning and champion choice never see the test window.

Timeline: ``[ validation train | validation window | test window ]``. The test cutoff comes from
dbt (``int_holdout_cutoff``); the validation cutoff is the same quantile taken again inside the
train period (events before the test cutoff), so the validation window holds about the same share
of the train period as the test window holds of all events.

The validation marts have the columns of their dbt counterparts (``fct_train_user_item``,
``fct_holdout_interactions``), so every model fits and every metric runs on them unchanged. The
strength of a pair uses the event weights the dbt build actually used, recovered exactly from
``fct_train_user_item`` by least squares (strength is linear in the event counts), so a run-time
change of the dbt var ``event_weights`` reaches the validation fit without a second copy of it.
"""

from __future__ import annotations

import duckdb
import numpy as np

from recsys_dagster.models.marts import (
    EVENT_WEIGHT_PARAMETERS,
    STRENGTH_TERMS,
    execute_with_parameters,
    holdout_pairs_sql,
    pair_features_sql,
)

VALIDATION_TRAIN_TABLE = "ml.validation_train_user_item"
VALIDATION_HOLDOUT_TABLE = "ml.validation_holdout_interactions"
VALIDATION_CUTOFF_TABLE = "ml.validation_cutoff"


def recovered_event_weights(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Weights (view, addtocart, transaction, rating) that reproduce ``fct_train_user_item.strength``.

    Solved from the 4x4 normal equations summed in SQL; ``lstsq`` gives the minimum-norm solution,
    so an event type absent from the data (whose weight cannot matter) gets 0.
    """
    products = [f"sum(CAST({a} AS DOUBLE) * {b})" for a in STRENGTH_TERMS for b in STRENGTH_TERMS]
    targets = [f"sum(CAST({a} AS DOUBLE) * strength)" for a in STRENGTH_TERMS]
    sums = con.execute(f"SELECT {', '.join(products + targets)} FROM fct_train_user_item").fetchone()
    values = np.nan_to_num(np.asarray(sums, dtype=np.float64))
    gram, moments = values[:16].reshape(4, 4), values[16:]
    return np.round(np.linalg.lstsq(gram, moments, rcond=None)[0], 9)


VALIDATION_STATEMENTS = (
    "CREATE SCHEMA IF NOT EXISTS ml",
    f"""
CREATE OR REPLACE TABLE {VALIDATION_CUTOFF_TABLE} AS
WITH test AS (SELECT max(cutoff_time) AS test_cutoff FROM int_holdout_cutoff),
train_events AS (SELECT event_time FROM stg_interactions WHERE event_time < (SELECT test_cutoff FROM test))
SELECT quantile_disc(event_time, CAST($train_share AS DOUBLE)) AS validation_cutoff,
       (SELECT test_cutoff FROM test) AS test_cutoff,
       min(event_time) AS min_event_time
FROM train_events
""",
    f"""
CREATE OR REPLACE TEMP VIEW validation_events AS
SELECT e.*, e.event_time < c.validation_cutoff AS in_validation_train
FROM stg_interactions e, {VALIDATION_CUTOFF_TABLE} c
WHERE e.event_time < c.test_cutoff
""",
    f"CREATE OR REPLACE TABLE {VALIDATION_TRAIN_TABLE} AS {pair_features_sql('validation_events', 'in_validation_train')}",
    f"CREATE OR REPLACE TABLE {VALIDATION_HOLDOUT_TABLE} AS "
    f"{holdout_pairs_sql('validation_events', 'NOT in_validation_train', VALIDATION_TRAIN_TABLE)}",
    "DROP VIEW validation_events",
)


def train_share(con: duckdb.DuckDBPyConnection) -> float:
    """Share of all events before the test cutoff: the quantile at which the train period is split again
    (computed first because ``quantile_disc`` needs a constant)."""
    share = con.execute(
        """
        SELECT count(*) FILTER (event_time < (SELECT max(cutoff_time) FROM int_holdout_cutoff)) / greatest(count(*), 1)
        FROM stg_interactions
        """
    ).fetchone()[0]
    return float(share)


def build_validation_split(con: duckdb.DuckDBPyConnection) -> dict[str, object]:
    """(Re)build the three validation tables; returns their sizes and the cutoffs."""
    weights = recovered_event_weights(con)
    parameters = dict(zip(EVENT_WEIGHT_PARAMETERS, weights.tolist()))
    parameters["train_share"] = train_share(con)
    for statement in VALIDATION_STATEMENTS:  # DuckDB binds parameters for one statement at a time
        execute_with_parameters(con, statement, parameters)
    validation_cutoff, test_cutoff = con.execute(
        f"SELECT validation_cutoff, test_cutoff FROM {VALIDATION_CUTOFF_TABLE}"
    ).fetchone()
    n_train, n_window = con.execute(
        f"SELECT (SELECT count(*) FROM {VALIDATION_TRAIN_TABLE}), (SELECT count(*) FROM {VALIDATION_HOLDOUT_TABLE})"
    ).fetchone()
    return {
        "validation_cutoff": str(validation_cutoff),
        "test_cutoff": str(test_cutoff),
        "n_train_pairs": int(n_train),
        "n_window_pairs": int(n_window),
        "event_weights": dict(zip(("view", "addtocart", "transaction", "rating"), weights.tolist())),
    }
