"""SVD's numpy scoring against scikit-surprise itself, on Amazon Electronics star ratings."""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys_dagster.models.svd import (
    SvdConfig,
    fit_svd,
    holdout_ratings,
    predict_svd,
    score_svd,
    surprise_arrays,
    train_surprise,
    training_ratings,
)

CONFIG = SvdConfig(n_factors=20, n_epochs=15, random_state=7)


@pytest.fixture(scope="module")
def fitted(amazon_db: Path):
    with duckdb.connect(str(amazon_db), read_only=True) as con:
        ratings = training_ratings(con, "fct_train_user_item")
    model, trainset = train_surprise(ratings, CONFIG)
    return model, surprise_arrays(model, trainset), ratings


def sample_pairs(ratings: pd.DataFrame, arrays) -> pd.DataFrame:
    """Known pairs, unseen combinations of known ids, and unknown users and items."""
    rng = np.random.default_rng(0)
    known = ratings.sample(200, random_state=0)[["user_id", "item_id"]]
    crossed = pd.DataFrame(
        {"user_id": rng.choice(arrays.user_ids, 200), "item_id": rng.choice(arrays.item_ids, 200)}
    )
    unknown = pd.DataFrame(
        {
            "user_id": ["nobody", arrays.user_ids[0], "nobody"],
            "item_id": [arrays.item_ids[0], "B000NOTREAL", "B000NOTREAL"],
        }
    )
    return pd.concat([known, crossed, unknown], ignore_index=True)


def test_numpy_predictions_equal_surprise_predict_including_clipping(fitted) -> None:
    model, arrays, ratings = fitted
    pairs = sample_pairs(ratings, arrays)
    users = arrays.user_index.get_indexer(pairs["user_id"])
    best_item = np.argmax(score_svd(arrays, users[users >= 0][:50]), axis=1)
    pairs = pd.concat(
        [pairs, pd.DataFrame({"user_id": pairs["user_id"][users >= 0][:50], "item_id": arrays.item_ids[best_item]})],
        ignore_index=True,
    )

    ours = predict_svd(arrays, pairs)
    theirs = np.array([model.predict(u, i).est for u, i in pairs.itertuples(index=False)])
    unclipped = np.array([model.predict(u, i, clip=False).est for u, i in pairs.itertuples(index=False)])

    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert (unclipped > 5).any(), "the sample must exercise clipping at the top of the scale"
    assert ours.max() == 5.0 and ours.min() >= 1.0
    mean, bu, bi = float(arrays.dense["global_mean"]), arrays.dense["bu"], arrays.dense["bi"]
    assert ours[400:403] == pytest.approx(np.clip([mean + bi[0], mean + bu[0], mean], 1, 5), abs=1e-12)


def test_ranking_scores_are_surprises_unclipped_estimates(fitted) -> None:
    model, arrays, _ = fitted
    rows = np.arange(3)
    scores = score_svd(arrays, rows)
    for row in rows:
        expected = [model.predict(arrays.user_ids[row], item, clip=False).est for item in arrays.item_ids[:100]]
        np.testing.assert_allclose(scores[row, :100], expected, rtol=0, atol=1e-12)


def test_fit_svd_keeps_surprises_numbers_and_sizes(amazon_db: Path, fitted) -> None:
    _, arrays, ratings = fitted
    with duckdb.connect(str(amazon_db), read_only=True) as con:
        stored = fit_svd(con, "fct_train_user_item", CONFIG)
    assert stored.stats == {
        "n_users": ratings["user_id"].nunique(), "n_items": ratings["item_id"].nunique(), "nnz": len(ratings)
    }
    assert float(stored.dense["global_mean"]) == pytest.approx(ratings["rating"].mean())
    np.testing.assert_array_equal(stored.dense["pu"], arrays.dense["pu"])
    assert set(stored.user_ids) == set(ratings["user_id"])


def test_star_ratings_are_used_where_present(amazon_db: Path) -> None:
    with duckdb.connect(str(amazon_db), read_only=True) as con:
        train = training_ratings(con, "fct_train_user_item")
        holdout = holdout_ratings(con)
        expected = con.execute("SELECT user_id, item_id, last_rating FROM fct_holdout_interactions ORDER BY ALL").df()
    assert set(train["rating"]) <= {1.0, 2.0, 3.0, 4.0, 5.0} and len(set(train["rating"])) == 5
    assert holdout[["user_id", "item_id"]].equals(expected[["user_id", "item_id"]])
    np.testing.assert_array_equal(holdout["rating"], expected["last_rating"])


def test_ratings_are_derived_from_the_strongest_event_without_stars(tmp_path: Path) -> None:
    """view -> 3, addtocart -> 4, transaction -> 5, a star rating wins; in holdout, the event
    counts come from all events minus train."""
    columns = "user_id, item_id, n_views, n_addtocarts, n_transactions, n_ratings, last_rating"
    with duckdb.connect(str(tmp_path / "derived.duckdb")) as con:
        con.execute(
            f"""
            CREATE TABLE fct_train_user_item AS SELECT * FROM (VALUES
                ('u', 'viewed', 2, 0, 0, 0, NULL), ('u', 'carted', 5, 1, 0, 0, NULL),
                ('u', 'bought', 1, 1, 1, 0, NULL), ('u', 'starred', 1, 0, 1, 1, 2.0)
            ) AS t({columns});
            CREATE TABLE fct_user_item_interactions AS SELECT * FROM (VALUES
                ('u', 'viewed', 2, 1, 0, 0, NULL), ('u', 'carted', 7, 1, 0, 0, NULL), ('v', 'new', 1, 0, 0, 0, NULL)
            ) AS t({columns});
            CREATE TABLE fct_holdout_interactions AS SELECT * FROM (VALUES
                ('u', 'viewed', 1, 0, NULL), ('u', 'carted', 2, 0, NULL), ('v', 'new', 1, 0, NULL)
            ) AS t(user_id, item_id, n_events, n_transactions, last_rating);
            """
        )
        train = training_ratings(con, "fct_train_user_item").set_index("item_id")["rating"]
        holdout = holdout_ratings(con).set_index("item_id")["rating"]
    assert train.to_dict() == {"bought": 5.0, "carted": 4.0, "starred": 2.0, "viewed": 3.0}
    assert holdout.to_dict() == {"carted": 3.0, "new": 3.0, "viewed": 4.0}
