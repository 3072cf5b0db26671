"""The whole asset graph, materialized in-process on real data of three input shapes.

Each case runs the real job (ingest, GX validation, dbt build, four models, evaluation, publish)
into temporary DuckDB files and then checks, with SQL, what downstream readers rely on.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from recsys_dagster.definitions import defs
from recsys_dagster.models.registry import MODEL_NAMES
from recsys_dagster.settings import DATA_DIR
from tests.conftest import isolate_pipeline

METRICS = {"precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10"}
MODELS = set(MODEL_NAMES)


def _head(source: Path, target: Path, lines: int) -> None:
    with source.open(encoding="utf-8") as src, target.open("w", encoding="utf-8") as dst:
        for _, line in zip(range(lines), src):
            dst.write(line)


def online_retail(input_dir: Path, shared: Path) -> None:
    shutil.copy(DATA_DIR / "sample" / "online_retail.csv", input_dir / "online_retail.csv")


def taobao(input_dir: Path, shared: Path) -> None:
    shutil.copy(shared / "taobao_userbehavior" / "UserBehavior_tail10k_114users_fullhistory.csv",
                input_dir / "UserBehavior.csv")


def amazon(input_dir: Path, shared: Path) -> None:
    _head(shared / "amazon_electronics_ratings" / "ratings_Electronics_head.csv",
          input_dir / "ratings_Electronics.csv", 30_001)


def run_refresh() -> None:
    result = defs.resolve_job_def("refresh_recommendations").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    failures = [e.message for e in result.all_events if e.is_failure]
    assert result.success, failures


@pytest.fixture(scope="module", params=[online_retail, taobao, amazon], ids=lambda f: f.__name__)
def published(request, tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Iterator[Path]:
    """One real refresh per input shape, shared by the tests that read its results."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = isolate_pipeline(tmp_path_factory.mktemp(request.param.__name__), monkeypatch)
        request.param(root / "input_dir", shared_datasets)
        run_refresh()
        yield root


def test_every_raw_row_is_accounted_for(published: Path) -> None:
    with duckdb.connect(str(published / "warehouse.duckdb"), read_only=True) as con:
        raw, validated, quarantined = con.execute(
            "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM validated_interactions),"
            " (SELECT count(*) FROM quarantined_events)"
        ).fetchall()[0]
        unexplained = con.execute("SELECT count(*) FROM quarantined_events WHERE reason IS NULL").fetchall()[0][0]
    assert raw > 0 and validated > 0
    assert raw == validated + quarantined
    assert unexplained == 0


def test_recommendations_honour_the_sql_contract(published: Path) -> None:
    with duckdb.connect(str(published / "serving.duckdb"), read_only=True) as con:
        con.execute("ATTACH $path AS wh (READ_ONLY)", {"path": str(published / "warehouse.duckdb")})
        users_without_recs = con.execute(
            "SELECT count(*) FROM wh.main.dim_users u ANTI JOIN recs.user_recommendations r USING (user_id)"
        ).fetchall()[0][0]
        bad_rank_users = con.execute(
            """SELECT count(*) FROM (SELECT user_id FROM recs.user_recommendations GROUP BY user_id
               HAVING min(rank) <> 1 OR max(rank) <> count(*) OR count(DISTINCT item_id) <> count(*))"""
        ).fetchall()[0][0]
        purchased_recommended = con.execute(
            """SELECT count(*) FROM recs.user_recommendations r
               JOIN wh.main.fct_user_item_interactions f USING (user_id, item_id)
               WHERE f.n_transactions > 0"""
        ).fetchall()[0][0]
        per_user = con.execute(
            "SELECT max(n), min(n) FROM (SELECT count(*) n FROM recs.user_recommendations GROUP BY user_id)"
        ).fetchall()[0]
        catalog_items = con.execute("SELECT count(*) FROM wh.main.dim_items").fetchall()[0][0]
        versions = con.execute("SELECT count(DISTINCT model_version) FROM recs.user_recommendations").fetchall()[0][0]
        self_similar = con.execute("SELECT count(*) FROM recs.similar_items WHERE item_id = similar_item_id").fetchall()[0][0]
        popular_ranks = con.execute("SELECT min(rank), max(rank), count(*) FROM recs.popular_items").fetchall()[0]
        types = dict(con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_catalog = 'serving' AND table_name = 'user_recommendations'"
        ).fetchall())
    assert users_without_recs == 0
    assert bad_rank_users == 0
    assert purchased_recommended == 0
    assert per_user[0] == 20 or per_user[0] == catalog_items
    assert versions == 1
    assert self_similar == 0
    assert popular_ranks[0] == 1 and popular_ranks[1] == popular_ranks[2]
    assert types["user_id"] == "VARCHAR" and types["item_id"] == "VARCHAR"
    for table in ("user_recommendations", "similar_items", "popular_items"):
        assert (published / "published_dir" / f"{table}.parquet").is_file()


def test_every_model_is_evaluated_with_metrics_in_range(published: Path) -> None:
    with duckdb.connect(str(published / "serving.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT model, metric, value FROM ml.evaluation_runs").fetchall()
    by_model: dict[str, dict[str, float]] = {}
    for model, metric, value in rows:
        by_model.setdefault(model, {})[metric] = value
    assert set(by_model) == MODELS
    for model, metrics in by_model.items():
        assert METRICS <= set(metrics), model
        assert all(0.0 <= metrics[m] <= 1.0 for m in METRICS), (model, metrics)
        assert metrics["val_n_judged_users"] > 1, "the champion must not be chosen on one user's NDCG"
    assert {"rmse", "mae"} <= set(by_model["svd_model"])
    assert by_model["svd_model"]["rmse"] > 0
