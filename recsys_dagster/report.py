"""Print what a downstream reader sees: evaluation figures and a few users' top recommendations.

``make run`` ends with this. It reads only the published serving file, with plain SQL, exactly as a
BI tool or a service would (read-only, so it never blocks the pipeline).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb
import pandas as pd

from recsys_dagster import settings
from recsys_dagster.evaluate.assets import SUMMARY_METRICS

LATEST_EVALUATION_SQL = """
SELECT model, model_version, metric, value
FROM ml.evaluation_runs
WHERE run_id = (SELECT run_id FROM ml.evaluation_runs ORDER BY evaluated_at DESC LIMIT 1)
"""

SAMPLE_USERS_SQL = """
SELECT user_id FROM recs.user_recommendations
GROUP BY user_id ORDER BY max(score) DESC NULLS LAST, user_id LIMIT $n_users
"""

TOP_RECOMMENDATIONS_SQL = """
SELECT r.user_id, r.rank, r.item_id, i.name, round(r.score, 4) AS score, r.model
FROM recs.user_recommendations r LEFT JOIN recs.items i USING (item_id)
WHERE r.user_id IN (SELECT * FROM unnest($users)) AND r.rank <= $top
ORDER BY r.user_id, r.rank
"""


def evaluation_table(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The latest evaluation run as a models x summary-metrics table, best validation NDCG@10 first."""
    latest = con.execute(LATEST_EVALUATION_SQL).df()
    table = latest.pivot_table(index="model", columns="metric", values="value")
    table = table.reindex(columns=[m for m in SUMMARY_METRICS if m in table.columns])
    return table.sort_values(SUMMARY_METRICS[0], ascending=False).round(4)


def sample_recommendations(con: duckdb.DuckDBPyConnection, n_users: int, top: int) -> pd.DataFrame:
    """The top ``top`` recommendations, with product names, of ``n_users`` users."""
    users = [row[0] for row in con.execute(SAMPLE_USERS_SQL, {"n_users": n_users}).fetchall()]
    return con.execute(TOP_RECOMMENDATIONS_SQL, {"users": users, "top": top}).df()


def print_report(serving_path: Path, n_users: int = 3, top: int = 5) -> None:
    with duckdb.connect(str(serving_path), read_only=True) as con:
        print(f"Published tables in {serving_path}\n")
        champion = con.execute("SELECT DISTINCT model, model_version FROM recs.user_recommendations").fetchall()
        print(f"Published champion: {', '.join(f'{m} {v}' for m, v in champion)}\n")
        print("Model evaluation (latest run, time-based holdout):")
        print(evaluation_table(con).to_string(), "\n")
        print(f"Top {top} recommendations for {n_users} users:")
        print(sample_recommendations(con, n_users, top).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-path", type=Path, default=settings.serving_path())
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    print_report(args.serving_path, args.users, args.top)


if __name__ == "__main__":
    main()
