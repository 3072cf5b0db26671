"""The evaluation history as a picture for the Dagster UI: each model's NDCG@10 over the last runs."""

from __future__ import annotations

import base64
import io

import duckdb
import matplotlib

matplotlib.use("Agg")  # no display on the pipeline's machines

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import pandas as pd  # noqa: E402

HISTORY_RUNS = 20


def metric_history(con: duckdb.DuckDBPyConnection, metric: str, runs: int = HISTORY_RUNS) -> pd.DataFrame:
    """Wide frame: one row per run (oldest first, the last ``runs``), one column per model."""
    long = con.execute(
        """
        WITH recent AS (
            SELECT run_id, max(evaluated_at) AS evaluated_at FROM ml.evaluation_runs
            GROUP BY run_id ORDER BY evaluated_at DESC LIMIT $runs
        )
        SELECT r.evaluated_at, e.model, e.value
        FROM ml.evaluation_runs e JOIN recent r USING (run_id)
        WHERE e.metric = $metric
        ORDER BY r.evaluated_at
        """,
        {"runs": runs, "metric": metric},
    ).df()
    return long.pivot_table(index="evaluated_at", columns="model", values="value", aggfunc="max")


def history_png(history: pd.DataFrame, metric: str) -> bytes:
    figure, axes = plt.subplots(figsize=(8, 4), dpi=80)
    try:
        for model in history.columns:
            axes.plot(range(1, len(history) + 1), history[model], marker="o", label=model)
        axes.set_xlabel("evaluation run (oldest to newest)")
        axes.set_ylabel(metric)
        axes.set_title(f"{metric} per model, last {len(history)} runs")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def history_markdown(con: duckdb.DuckDBPyConnection, metric: str) -> str:
    """Markdown with the PNG embedded as a data URI (the Dagster UI renders it inline)."""
    history = metric_history(con, metric)
    if history.empty:
        return f"_(no {metric} rows yet)_"
    encoded = base64.b64encode(history_png(history, metric)).decode("ascii")
    return f"![{metric} over the last runs](data:image/png;base64,{encoded})"
