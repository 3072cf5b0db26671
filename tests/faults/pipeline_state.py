"""What a whole-graph run leaves behind, reduced to comparable fingerprints and checked invariants.

Shared by the idempotence and crash tests: both run the real ``refresh_recommendations`` job and then
ask "are the tables identical?" and "do the tables keep their contracts?".

What must be identical between two runs on the same input (``DETERMINISTIC_COLUMNS``): every column
of the ingestion and validation tables except the time a row was quarantined, every column of the dbt
marts, and every column of the published tables except the run-specific ``model_version`` and
``generated_at``. Models are refitted on every run, so the recommendations being identical means the
fits are deterministic (ALS: fixed ``random_state``; its per-user solves do not depend on threading).
Evaluation figures are compared to 12 digits (see ``LATEST_EVALUATION_SQL``).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recsys_dagster.models.registry import TRAINING_FITS
from recsys_dagster.publish.serving import INVARIANTS

#: Warehouse table -> the columns that must be identical after a re-run on the same input.
WAREHOUSE_COLUMNS = {
    "main.ingested_files": "*",
    "main.rejected_files": "*",
    "main.raw_events": "*",
    "main.raw_items": "*",
    "main.validated_interactions": "*",
    "main.quarantined_events": "* EXCLUDE (quarantined_at)",
    "main.int_holdout_cutoff": "*",
    "main.fct_user_item_interactions": "*",
    "main.fct_train_user_item": "*",
    "main.fct_holdout_interactions": "*",
    "main.dim_items": "*",
    "main.dim_users": "*",
}
#: Serving table -> the columns that must be identical after a re-run (run ids and times excluded).
SERVING_COLUMNS = {
    "recs.user_recommendations": "user_id, rank, item_id, score, model",
    "recs.similar_items": "item_id, rank, similar_item_id, score",
    "recs.popular_items": "rank, item_id, score",
    "recs.items": "*",
}
#: The latest evaluation's figures per model (the run id and times differ per run). Rounded to 12
#: digits: the metrics are means over users summed in the (unordered) order of a DuckDB result, so
#: identical recommendations can differ in the last bit of a mean between runs.
LATEST_EVALUATION_SQL = """
    SELECT model, metric, round(value, 12) FROM ml.evaluation_runs
    WHERE run_id = (SELECT run_id FROM ml.evaluation_runs ORDER BY evaluated_at DESC LIMIT 1)
"""


def fingerprint(con: duckdb.DuckDBPyConnection, relation: str, columns: str = "*") -> tuple[int, str]:
    """Row count and an order-independent md5 of the rows' text (``relation`` is a test constant)."""
    return con.execute(
        f"SELECT count(*), md5(coalesce(string_agg(r::VARCHAR, '\n' ORDER BY r::VARCHAR), '')) "
        f"FROM (SELECT {columns} FROM {relation}) r"
    ).fetchone()


def warehouse_fingerprints(warehouse: Path, tables: dict[str, str] = WAREHOUSE_COLUMNS) -> dict[str, tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {table: fingerprint(con, table, columns) for table, columns in tables.items()}


def serving_fingerprints(serving: Path) -> dict[str, tuple]:
    with duckdb.connect(str(serving), read_only=True) as con:
        found = {table: fingerprint(con, table, columns) for table, columns in SERVING_COLUMNS.items()}
        found["ml.evaluation_runs (latest)"] = fingerprint(con, f"({LATEST_EVALUATION_SQL})")
    return found


def parquet_fingerprints(published_dir: Path) -> dict[str, tuple]:
    found = {}
    with duckdb.connect() as con:
        for table, columns in SERVING_COLUMNS.items():
            path = published_dir / f"{table.split('.')[1]}.parquet"
            if path.exists():
                con.execute("CREATE OR REPLACE TEMP TABLE exported AS SELECT * FROM read_parquet(?)", [str(path)])
                found[table] = fingerprint(con, "exported", columns)
    return found


def row_accounting(warehouse: Path) -> dict[str, int]:
    """raw / validated / quarantined counts and the rows found in both outputs (must be 0)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        raw, validated, quarantined, both = con.execute(
            """SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM validated_interactions),
                      (SELECT count(*) FROM quarantined_events),
                      (SELECT count(*) FROM validated_interactions v
                       JOIN quarantined_events q USING (source_file, source_row))"""
        ).fetchone()
    return {"raw": raw, "validated": validated, "quarantined": quarantined, "in_both": both}


def assert_rows_accounted(warehouse: Path) -> None:
    counts = row_accounting(warehouse)
    assert counts["raw"] > 0, counts
    assert counts["raw"] == counts["validated"] + counts["quarantined"], counts
    assert counts["in_both"] == 0, counts


def serving_state(serving: Path) -> tuple[tuple[str, ...], int, str]:
    """(model_versions of user_recommendations, rows, md5 of the file's bytes)."""
    import hashlib

    digest = hashlib.md5(serving.read_bytes()).hexdigest()
    with duckdb.connect(str(serving), read_only=True) as con:
        versions = tuple(v for (v,) in con.execute(
            "SELECT DISTINCT model_version FROM recs.user_recommendations ORDER BY 1").fetchall())
        rows = con.execute("SELECT count(*) FROM recs.user_recommendations").fetchone()[0]
    return versions, rows, digest


def broken_serving_invariants(serving: Path, warehouse: Path) -> dict[str, int]:
    """The publish invariants (serving.INVARIANTS), re-checked on the live file against the warehouse."""
    with duckdb.connect(str(serving), read_only=True) as con:
        con.execute("ATTACH $path AS wh (READ_ONLY)", {"path": str(warehouse)})
        con.execute(
            "CREATE TEMP VIEW purchased AS SELECT user_id, item_id FROM wh.main.fct_user_item_interactions "
            "WHERE n_transactions > 0 OR n_ratings > 0"
        )
        con.execute("CREATE TEMP VIEW unavailable AS SELECT item_id FROM wh.main.dim_items WHERE available = false")
        counts = {name: con.execute(sql).fetchone()[0] for name, sql in INVARIANTS.items()}
        counts["users_without_recommendations"] = con.execute(
            "SELECT count(*) FROM wh.main.dim_users ANTI JOIN recs.user_recommendations USING (user_id)"
        ).fetchone()[0]
    return {name: count for name, count in counts.items() if count}


def registry_problems(warehouse: Path) -> list[str]:
    """Registered artifacts whose folder is incomplete (a registry row must follow a complete save).

    The model assets save the validation and holdout fits; a serving fit is made later, only for what
    publishing reads (registry.ensure_fit), so it may be absent, but a present one must be complete.
    """
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT model, model_version, artifact_dir FROM ml.model_registry").fetchall()
    problems = []
    for model, version, artifact_dir in rows:
        folder = Path(artifact_dir)
        fits = [*TRAINING_FITS, *(["serving"] if (folder / "serving").exists() else [])]
        needed = [folder / "params.json"] + [folder / fit / name for fit in fits for name in ("ids.npz", "arrays.npz")]
        problems += [f"{model} {version}: {path.name} missing in {path.parent}" for path in needed if not path.is_file()]
    return problems
