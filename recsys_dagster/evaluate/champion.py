"""Which model gets published: the best NDCG@10 of one evaluation run."""

from __future__ import annotations

import duckdb

from recsys_dagster.evaluate.assets import EVAL_K

#: Candidates in tie-break order: on equal NDCG the earlier one wins (personalised before popularity).
CHAMPION_CANDIDATES = ("als_model", "svd_model", "item_knn_model", "popularity_model")
CHAMPION_METRIC = f"ndcg@{EVAL_K}"


def select_champion(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> tuple[str, str]:
    """(model, model_version) with the best NDCG@10 in run ``run_id`` (default: the latest run)."""
    if not con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' AND table_name = 'evaluation_runs'"
    ).fetchone()[0]:
        raise LookupError("ml.evaluation_runs does not exist: materialize model_evaluation first")
    row = con.execute(
        """
        WITH chosen_run AS (
            SELECT coalesce(
                CAST($run_id AS VARCHAR),
                (SELECT run_id FROM ml.evaluation_runs GROUP BY run_id ORDER BY max(evaluated_at) DESC LIMIT 1)
            ) AS run_id
        )
        SELECT model, model_version
        FROM ml.evaluation_runs
        WHERE run_id = (SELECT run_id FROM chosen_run)
          AND metric = $metric
          AND list_contains($candidates, model)
        ORDER BY value DESC, list_position($candidates, model)
        LIMIT 1
        """,
        {"run_id": run_id, "metric": CHAMPION_METRIC, "candidates": list(CHAMPION_CANDIDATES)},
    ).fetchone()
    if row is None:
        which = f"run {run_id!r}" if run_id else "the latest evaluation run"
        raise LookupError(f"no {CHAMPION_METRIC} row for {CHAMPION_CANDIDATES} in {which} of ml.evaluation_runs")
    return row[0], row[1]
