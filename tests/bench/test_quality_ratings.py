"""bench.quality's Amazon RMSE table: every row says what it is, on the evaluated run's own split."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from surprise import SVD, BaselineOnly, Dataset, Reader, accuracy

from bench.quality import AMAZON, BASELINE_ONLY, DatasetResult, amazon_rating_errors, markdown, warehouse_path

TUNED = {"lr_all": 0.005, "max_ratings": 500000, "n_epochs": 40, "n_factors": 200, "random_state": 42,
         "reg_all": 0.1, "use_tuned": True}
EVALUATED_RMSE = 1.5


def write_warehouse(path: Path) -> None:
    """Train: u1 rates i1 5 and i2 4, u2 rates i1 3 and i2 2 (mean 3.5). Test: u1 rates the unseen i3 5,
    the unseen u3 rates i1 1."""
    path.parent.mkdir(parents=True)
    with duckdb.connect(str(path)) as con:
        con.execute(
            """
            CREATE TABLE fct_train_user_item AS SELECT * FROM (VALUES ('u1', 'i1', 5.0), ('u1', 'i2', 4.0),
                ('u2', 'i1', 3.0), ('u2', 'i2', 2.0)) t(user_id, item_id, last_rating);
            ALTER TABLE fct_train_user_item ADD COLUMN n_transactions INTEGER DEFAULT 0;
            ALTER TABLE fct_train_user_item ADD COLUMN n_addtocarts INTEGER DEFAULT 0;
            ALTER TABLE fct_train_user_item ADD COLUMN n_views INTEGER DEFAULT 0;
            CREATE TABLE fct_holdout_interactions AS SELECT *, 0 AS n_transactions FROM (VALUES ('u1', 'i3', 5.0),
                ('u3', 'i1', 1.0)) t(user_id, item_id, last_rating);
            CREATE TABLE fct_user_item_interactions AS
                SELECT user_id, item_id, n_addtocarts, n_views FROM fct_train_user_item
                UNION ALL SELECT user_id, item_id, 0, 0 FROM fct_holdout_interactions;
            """
        )


@pytest.fixture()
def errors(tmp_path: Path):
    write_warehouse(warehouse_path(tmp_path, AMAZON))
    table = pd.DataFrame({"rmse": [EVALUATED_RMSE, np.nan]}, index=["svd_model", "popularity_model"])
    result = DatasetResult(AMAZON, table, "repeat_aware_model", {}, {"svd_model": TUNED}, 1.0, [], (0.0, 0.0, 0.0))
    return amazon_rating_errors(result, tmp_path)


def test_each_row_is_labelled_with_its_model_and_parameters(errors) -> None:
    assert list(errors.rmse) == [
        "svd_model as evaluated (tuned: lr_all=0.005, n_epochs=40, n_factors=200, random_state=42, reg_all=0.1)",
        "SvdConfig() defaults (lr_all=0.005, n_epochs=20, n_factors=50, random_state=42, reg_all=0.02)",
        BASELINE_ONLY,
        "global mean of the train ratings (3.5000)",
    ]


def test_the_ranked_svd_is_the_evaluated_row_and_the_others_are_fitted_on_the_same_split(errors) -> None:
    rmse = list(errors.rmse.values())
    assert rmse[0] == EVALUATED_RMSE  # model_evaluation's own test-window rmse row, not a refit
    assert rmse[3] == pytest.approx(np.sqrt(((5 - 3.5) ** 2 + (1 - 3.5) ** 2) / 2))
    assert errors.svd_minus_baseline == pytest.approx(EVALUATED_RMSE - errors.rmse[BASELINE_ONLY])
    assert (errors.n_test_ratings, errors.unseen_user_share, errors.unseen_item_share) == (2, 0.5, 0.5)
    assert rmse[1:3] == pytest.approx([surprise_rmse(SVD(n_factors=50, n_epochs=20, lr_all=0.005, reg_all=0.02,
                                                          random_state=42)), surprise_rmse(BaselineOnly(verbose=False))])
    assert rmse[1] != pytest.approx(surprise_rmse(SVD(random_state=42)))  # not surprise's own defaults (100 factors)


def surprise_rmse(algo) -> float:
    """RMSE of ``algo`` fitted by surprise itself on the train ratings of ``write_warehouse``, on its test ratings."""
    train = pd.DataFrame({"u": ["u1", "u1", "u2", "u2"], "i": ["i1", "i2", "i1", "i2"], "r": [5.0, 4.0, 3.0, 2.0]})
    trainset = Dataset.load_from_df(train, Reader(rating_scale=(1, 5))).build_full_trainset()
    return accuracy.rmse(algo.fit(trainset).test([("u1", "i3", 5.0), ("u3", "i1", 1.0)]), verbose=False)


def test_the_report_shows_the_rows_and_the_evaluated_gap(errors) -> None:
    text = markdown([], errors, None, None, [])
    for label, value in errors.rmse.items():
        assert f"| {label} | {value:.4f} |" in text
    assert f"svd_model as evaluated minus BaselineOnly {errors.svd_minus_baseline:+.4f}" in text
    assert "2 test ratings; 50% have a user and 50% an item without a train rating" in text
