"""The user-item marts as plain DuckDB SQL, in one place: the validation split, tests and benchmarks.

dbt builds the production marts (``dbt_project/models``). Three callers need the same per-pair
aggregates outside dbt: the validation split (the train period cut again, ``models/validation.py``),
model tests and ``bench.quality`` (real data slices turned into a warehouse without a dbt build).
They all use the SQL below, so "strength", the holdout flags and the cutoff mean the same thing
everywhere. dbt is the source of truth: tests/models/test_marts_match_dbt.py builds both from the
same events of every type and requires equal tables. Event weights are bound as parameters
(``$w_view``...), never pasted into the text; the ``source``/``where`` fragments are code-defined
constants of the callers.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recsys_dagster.resources import RecsysPaths, WarehouseResource

#: dbt's default ``event_weights`` var (dbt_project.yml): view 1, addtocart 3, transaction 5, rating 1.
DEFAULT_EVENT_WEIGHTS = {"w_view": 1.0, "w_addtocart": 3.0, "w_transaction": 5.0, "w_rating": 1.0}
#: Columns strength is a linear function of (the dbt macro user_item_aggregates), in the order of the
#: weights' parameters: strength = sum of ``$<parameter> * <term>`` (``STRENGTH_SQL``).
STRENGTH_TERMS = ("n_views", "n_addtocarts", "n_transactions", "coalesce(last_rating, 0)")
EVENT_WEIGHT_PARAMETERS = tuple(DEFAULT_EVENT_WEIGHTS)
STRENGTH_SQL = " + ".join(f"${weight} * {term}" for weight, term in zip(EVENT_WEIGHT_PARAMETERS, STRENGTH_TERMS))
#: dbt's default ``holdout_fraction``; the test cutoff is the event-time quantile 1 - fraction.
HOLDOUT_FRACTION = 0.2
#: The dbt definition of the holdout cutoff; a benchmark with its own split passes another expression.
QUANTILE_CUTOFF = f"quantile_disc(event_time, {1 - HOLDOUT_FRACTION})"


#: dbt's macro ``latest_rating()``: the rating of the pair's latest rating event, a tie at the same
#: time going to the later file and row (``source_file``, ``source_row``), so a rebuild from the same
#: input yields the same value.
LATEST_RATING = (
    "first(rating ORDER BY event_time DESC, source_file DESC, source_row DESC) FILTER (event_type = 'rating')"
)


def pair_features_sql(source: str, where: str) -> str:
    """Columns of ``fct_train_user_item`` aggregated from the events of ``source`` matching ``where``.

    strength = $w_view * n_views + $w_addtocart * n_addtocarts + $w_transaction * n_transactions
    + $w_rating * last rating (the dbt macro user_item_aggregates)."""
    return f"""
SELECT user_id, item_id,
       count(*) FILTER (event_type = 'view') AS n_views,
       count(*) FILTER (event_type = 'addtocart') AS n_addtocarts,
       count(*) FILTER (event_type = 'transaction') AS n_transactions,
       count(*) FILTER (event_type = 'rating') AS n_ratings,
       {LATEST_RATING} AS last_rating,
       min(event_time) AS first_event_time,
       max(event_time) AS last_event_time,
       CAST({STRENGTH_SQL} AS DOUBLE) AS strength
FROM {source}
WHERE {where}
GROUP BY user_id, item_id
"""


def holdout_pairs_sql(source: str, where: str, train_table: str) -> str:
    """Columns of ``fct_holdout_interactions`` (plus n_views, n_addtocarts) for the window events of
    ``source`` matching ``where``, flagged against ``train_table`` (user known, pair already touched)."""
    return f"""
WITH window_pairs AS (
    SELECT user_id, item_id, count(*) AS n_events,
           count(*) FILTER (event_type = 'transaction') AS n_transactions,
           count(*) FILTER (event_type = 'addtocart') AS n_addtocarts,
           count(*) FILTER (event_type = 'view') AS n_views,
           {LATEST_RATING} AS last_rating,
           min(event_time) AS first_event_time
    FROM {source}
    WHERE {where}
    GROUP BY user_id, item_id
)
SELECT w.*,
       w.user_id IN (SELECT user_id FROM {train_table}) AS user_in_train,
       t.user_id IS NOT NULL AS seen_in_train
FROM window_pairs w LEFT JOIN {train_table} t USING (user_id, item_id)
"""


AFTER_CUTOFF = "event_time >= (SELECT cutoff_time FROM int_holdout_cutoff)"
BEFORE_CUTOFF = "event_time < (SELECT cutoff_time FROM int_holdout_cutoff)"

#: The table ``events`` from ``{events}`` (a caller's SQL reading the file ``$path``) with
#: stg_interactions' provenance columns: kept when the SQL gives them, else the file and the row's
#: position in it, the tie-break of ``LATEST_RATING``.
EVENT_STATEMENTS = (
    "CREATE TABLE events AS {events}",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS source_file VARCHAR",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS source_row BIGINT",
    "UPDATE events SET source_file = coalesce(source_file, $path), source_row = coalesce(source_row, rowid + 1)",
)

#: The marts every model reads, from a table ``events`` (stg_interactions' columns); ``{cutoff}`` is
#: replaced by a code-defined SQL expression over ``events``.
MART_STATEMENTS = (
    """CREATE TABLE int_holdout_cutoff AS
       SELECT {cutoff} AS cutoff_time, min(event_time) AS min_event_time, max(event_time) AS max_event_time
       FROM events""",
    f"CREATE TABLE fct_user_item_interactions AS {pair_features_sql('events', 'true')}",
    f"CREATE TABLE fct_train_user_item AS {pair_features_sql('events', BEFORE_CUTOFF)}",
    f"CREATE TABLE fct_holdout_interactions AS {holdout_pairs_sql('events', AFTER_CUTOFF, 'fct_train_user_item')}",
    """CREATE TABLE dim_items AS
       SELECT item_id, CAST(NULL AS VARCHAR) AS name, CAST(NULL AS VARCHAR) AS category,
              CAST(NULL AS VARCHAR) AS brand, CAST(NULL AS DOUBLE) AS price, CAST(NULL AS BOOLEAN) AS available,
              count(DISTINCT user_id) AS n_users, count(*) AS n_events,
              count(*) FILTER (event_type = 'transaction') AS n_transactions,
              min(event_time) AS first_event_time, max(event_time) AS last_event_time, false AS in_catalog
       FROM events GROUP BY item_id""",
    """CREATE TABLE dim_users AS
       SELECT user_id, count(DISTINCT item_id) AS n_items, count(*) AS n_events,
              count(*) FILTER (event_type = 'transaction') AS n_transactions,
              min(event_time) AS first_event_time, max(event_time) AS last_event_time
       FROM events GROUP BY user_id""",
    "ALTER TABLE events RENAME TO stg_interactions",
)


def execute_with_parameters(con: duckdb.DuckDBPyConnection, statement: str, parameters: dict[str, object]) -> None:
    """Run one statement with the named parameters it uses (DuckDB refuses unused ones)."""
    con.execute(statement, {name: value for name, value in parameters.items() if f"${name}" in statement})


def build_marts(database: Path, events_sql: str, source: Path, cutoff_sql: str = QUANTILE_CUTOFF) -> Path:
    """A DuckDB file with the dbt marts computed from ``events_sql`` (which reads ``$path`` = ``source``),
    with dbt's default event weights; ``cutoff_sql`` gives the holdout cutoff."""
    with duckdb.connect(str(database)) as con:
        con.execute("SET TimeZone = 'UTC'")  # as the pipeline's WarehouseResource does
        for statement in EVENT_STATEMENTS:
            execute_with_parameters(con, statement.replace("{events}", events_sql), {"path": str(source)})
        for statement in MART_STATEMENTS:
            execute_with_parameters(con, statement.replace("{cutoff}", cutoff_sql), DEFAULT_EVENT_WEIGHTS)
    return database


def pipeline_resources(database: Path, models_dir: Path) -> dict[str, object]:
    """The resources the model and evaluation assets need around a warehouse built by ``build_marts``
    (every other path in a folder beside ``models_dir``)."""
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
