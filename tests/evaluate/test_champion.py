from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from recsys_dagster.evaluate.assets import EVALUATION_DDL
from recsys_dagster.evaluate.champion import select_champion

ROWS = [
    # run_id, model, model_version, metric, value, evaluated_at
    ("old", "als_model", "v-als-1", "ndcg@10", 0.40, datetime(2024, 1, 1)),
    ("old", "popularity_model", "v-pop-1", "ndcg@10", 0.10, datetime(2024, 1, 1)),
    ("new", "als_model", "v-als-2", "ndcg@10", 0.20, datetime(2024, 2, 1)),
    ("new", "svd_model", "v-svd-2", "ndcg@10", 0.25, datetime(2024, 2, 1)),
    ("new", "svd_model", "v-svd-2", "precision@10", 0.90, datetime(2024, 2, 1)),
    ("new", "item_knn_model", "v-knn-2", "ndcg@10", 0.25, datetime(2024, 2, 1)),
    ("new", "some_experiment", "v-x", "ndcg@10", 0.99, datetime(2024, 2, 1)),
    ("tie", "popularity_model", "v-pop-3", "ndcg@10", 0.30, datetime(2023, 1, 1)),
    ("tie", "als_model", "v-als-3", "ndcg@10", 0.30, datetime(2023, 1, 1)),
    ("no-ndcg", "als_model", "v-als-4", "recall@10", 0.30, datetime(2022, 1, 1)),
]


@pytest.fixture()
def con(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as connection:
        connection.execute(EVALUATION_DDL)
        connection.executemany("INSERT INTO ml.evaluation_runs VALUES (?, ?, ?, ?, ?, ?)", ROWS)
        yield connection


def test_latest_run_best_ndcg_among_the_four_models(con) -> None:
    # svd and item_knn tie at 0.25 in the latest run: svd comes first in the candidate order;
    # the experiment's 0.99 is not a candidate and precision rows do not count.
    assert select_champion(con) == ("svd_model", "v-svd-2")


def test_a_given_run(con) -> None:
    assert select_champion(con, "old") == ("als_model", "v-als-1")
    assert select_champion(con, "tie") == ("als_model", "v-als-3")


def test_clear_errors_without_a_usable_run(con, tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="ndcg@10"):
        select_champion(con, "no-ndcg")
    with pytest.raises(LookupError, match="ndcg@10"):
        select_champion(con, "never-ran")
    with duckdb.connect(str(tmp_path / "empty.duckdb")) as empty, pytest.raises(LookupError, match="model_evaluation"):
        select_champion(empty)
