"""User-kNN, the repeat-aware blend and the validation split on hand-computable inputs and real data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest
from dagster import materialize
from scipy.sparse import csr_matrix

from recsys_dagster.evaluate.assets import FALLBACK_MODEL, WINDOWS, load_window, recommendations_with_fallback
from recsys_dagster.models.als import fit_als
from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.assets import als_model, model_tuning, repeat_aware_model
from recsys_dagster.models.baselines import UserKnnConfig, fit_user_knn, score_user_knn
from recsys_dagster.models.registry import load_latest
from recsys_dagster.models.repeat import (
    OWN_FIRST_WITH_RELATED,
    best_cells_per_row,
    own_history,
    related_evidence,
    score_repeat_aware,
)
from recsys_dagster.models.scoring import ranked_cells
from recsys_dagster.models.tuning import (
    ALS_GRID,
    REPEAT_GRID,
    paired_errors,
    TuningConfig,
    als_search_trials,
    reference_margin_for,
    selected_trial,
    warm_validation_ndcg,
)
from recsys_dagster.models.validation import VALIDATION_TRAIN_TABLE, recovered_event_weights
from recsys_dagster.settings import MIN_ITEMS_ENV

PAIRS = [("a", "x", 1), ("a", "y", 1), ("b", "x", 1), ("b", "y", 1), ("b", "z", 2), ("c", "z", 1), ("d", "x", 1)]


@pytest.fixture()
def small_con():
    with duckdb.connect() as con:
        con.execute("CREATE TABLE fct_train_user_item (user_id VARCHAR, item_id VARCHAR, strength DOUBLE)")
        con.executemany("INSERT INTO fct_train_user_item VALUES (?, ?, ?)", PAIRS)
        yield con


def test_user_knn_is_the_similarity_weighted_average_of_the_top_neighbours(small_con) -> None:
    # a = (1,1,0); cosine with b = (1,1,2): 2/sqrt(12); with d = (1,0,0): 1/sqrt(2); with c = (0,0,1): 0.
    sim_b, sim_d = 2 / math.sqrt(12), 1 / math.sqrt(2)
    everyone = fit_user_knn(small_con, "fct_train_user_item", UserKnnConfig(neighbours=20))
    nearest = fit_user_knn(small_con, "fct_train_user_item", UserKnnConfig(neighbours=1))

    total = sim_b + sim_d
    assert score_user_knn(everyone, np.array([0]))[0] == pytest.approx([1.0, sim_b / total, 2 * sim_b / total])
    only_d = score_user_knn(nearest, np.array([0]))[0]
    assert only_d[0] == pytest.approx(1.0) and np.isneginf(only_d[1:]).all()


def test_user_knn_never_counts_the_user_as_their_own_neighbour(small_con) -> None:
    fit = fit_user_knn(small_con, "fct_train_user_item", UserKnnConfig(neighbours=20))
    # c's only item is z, shared with b alone: the average over the one neighbour is b's row, and c's
    # own strength on z (1) does not leak in.
    assert score_user_knn(fit, np.array([2]))[0] == pytest.approx([1.0, 1.0, 2.0])


def repeat_fit(repeat_weight: float, own_cap: int, related_weight: float = 0.0) -> FitArrays:
    """One user, items x, y, z, w: ALS scores 0.2, 0.6, 1.0, 0.0; own history 4 on x, 2 on z;
    co-occurrence evidence 3 on w, 1.5 on y."""
    return FitArrays(
        user_ids=np.array(["u"]),
        item_ids=np.array(["x", "y", "z", "w"]),
        dense={
            "user_factors": np.array([[1.0]], dtype=np.float32),
            "item_factors": np.array([[0.2], [0.6], [1.0], [0.0]], dtype=np.float32),
            "repeat_weight": np.array(repeat_weight),
            "own_cap": np.array(own_cap),
            "related_weight": np.array(related_weight),
        },
        sparse={
            "own": csr_matrix(np.array([[4.0, 0.0, 2.0, 0.0]])),
            "related": csr_matrix(np.array([[0.0, 1.5, 0.0, 3.0]])),
        },
    )


def test_repeat_aware_blends_scaled_own_history_with_scaled_als() -> None:
    # als scaled to [0.2, 0.6, 1, 0], history scaled to [1, 0, 0.5, 0], blended half and half.
    assert score_repeat_aware(repeat_fit(0.5, own_cap=0), np.array([0]))[0] == pytest.approx([0.6, 0.3, 0.75, 0.0])


def test_repeat_aware_puts_the_capped_best_own_items_first() -> None:
    # weight 0.2: blend = [0.36, 0.48, 0.9, 0]; cap 1 lifts the own item with the best blend (z) above
    # everything, x stays in the blend below y; cap 2 lifts x too.
    one = score_repeat_aware(repeat_fit(0.2, own_cap=1), np.array([0]))[0]
    assert one == pytest.approx([0.36, 0.48, 2.9, 0.0])
    two = score_repeat_aware(repeat_fit(0.2, own_cap=2), np.array([0]))[0]
    assert two == pytest.approx([2.36, 0.48, 2.9, 0.0])
    assert list(np.argsort(-two)) == [2, 0, 1, 3]


def test_repeat_aware_mixes_co_occurrence_into_the_model_part() -> None:
    # related scaled to [0, 0.5, 0, 1]; model = 0.5 * als [0.2, 0.6, 1, 0] + 0.5 * related = [0.1, 0.55, 0.5, 0.5];
    # weight 0.5 with own [1, 0, 0.5, 0]: blend [0.55, 0.275, 0.5, 0.25]; cap 1 lifts x (the best own blend).
    scores = score_repeat_aware(repeat_fit(0.5, own_cap=1, related_weight=0.5), np.array([0]))[0]
    assert scores == pytest.approx([2.55, 0.275, 0.5, 0.25])


def test_related_evidence_keeps_each_users_strongest_co_occurring_items() -> None:
    # u owns x (2) and y (1); x ~ z 0.5, x ~ w 0.1, y ~ z 1.0, y ~ x 0.4: z = 2*0.5 + 1*1.0 = 2, x = 0.4, w = 0.2.
    own = csr_matrix(np.array([[2.0, 1.0, 0.0, 0.0]]))
    similarity = csr_matrix(np.array([[0, 0, 0.5, 0.1], [0.4, 0, 1.0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    assert related_evidence(own, similarity, per_user=4).toarray()[0] == pytest.approx([0.4, 0, 2.0, 0.2])
    assert related_evidence(own, similarity, per_user=2).toarray()[0] == pytest.approx([0.4, 0, 2.0, 0])


def test_best_cells_per_row_equal_the_scoring_modules_ranked_cells_ties_included() -> None:
    rng = np.random.default_rng(0)
    matrix = csr_matrix(rng.integers(0, 4, size=(50, 40)) * (rng.random((50, 40)) < 0.3), dtype=np.float64)
    kept = best_cells_per_row(matrix, 5).tocoo()
    coo = matrix.tocoo()
    rows, cols, values = ranked_cells(coo.row, coo.col, coo.data, 5)
    assert sorted(zip(kept.row, kept.col, kept.data)) == sorted(zip(rows, cols, values))


@pytest.mark.parametrize(
    ("own_ranking", "expected"),
    [
        ("intensity", [[4.0, 3.0], [2.0, 0.0]]),
        ("recency", [[1.0, 0.25], [0.5, 0.0]]),
        ("both", [[4.0, 3.0 * 0.25], [2.0 * 0.5, 0.0]]),
        ("sequence", [[4.0, 3.0 / 2], [2.0, 0.0]]),  # u's y is one step behind x; v's x is v's latest
        ("sequence_steep", [[4.0, 3.0 / 4], [2.0, 0.0]]),  # the step back squared
    ],
)
def test_own_history_scores_intensity_recency_or_both(own_ranking: str, expected: list) -> None:
    # recency halves per half-life (14 days) before the newest event: x 0 days old, v's x 14, u's y 28.
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE fct_train_user_item AS SELECT * FROM (VALUES "
            "('u', 'x', 4.0, TIMESTAMP '2024-01-29'), ('u', 'y', 3.0, TIMESTAMP '2024-01-01'),"
            "('v', 'x', 2.0, TIMESTAMP '2024-01-15')) t(user_id, item_id, strength, last_event_time)"
        )
        fit = FitArrays(user_ids=np.array(["u", "v"]), item_ids=np.array(["x", "y"]))
        history = own_history(con, "fct_train_user_item", fit, own_ranking, half_life_days=14.0).toarray()
    assert history == pytest.approx(np.array(expected))


def test_event_weights_are_recovered_exactly_from_the_train_mart() -> None:
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE fct_train_user_item AS SELECT *, 1 * n_views + 3 * n_addtocarts + 5 * n_transactions"
            " + 1 * coalesce(last_rating, 0) AS strength FROM (VALUES (2, 0, 0, NULL), (1, 1, 0, NULL),"
            " (0, 2, 1, NULL), (3, 0, 1, NULL), (0, 0, 0, 4.0)) t(n_views, n_addtocarts, n_transactions, last_rating)"
        )
        assert recovered_event_weights(con) == pytest.approx([1.0, 3.0, 5.0, 1.0])


def test_validation_window_lies_before_the_test_window(retail_con, trained_retail) -> None:
    validation_cutoff, test_cutoff = retail_con.execute(
        "SELECT validation_cutoff, test_cutoff FROM ml.validation_cutoff"
    ).fetchone()
    latest_train, first_window, last_window = retail_con.execute(
        "SELECT (SELECT max(last_event_time) FROM ml.validation_train_user_item),"
        " (SELECT min(first_event_time) FROM ml.validation_holdout_interactions),"
        " (SELECT max(first_event_time) FROM ml.validation_holdout_interactions)"
    ).fetchone()
    assert latest_train < validation_cutoff <= first_window <= last_window < test_cutoff
    mismatched = retail_con.execute(
        "SELECT count(*) FROM ml.validation_train_user_item WHERE strength <> 5 * n_transactions"
    ).fetchone()[0]
    assert mismatched == 0  # Online Retail has purchases only: weight 5 recovered from the dbt mart


@pytest.mark.parametrize(
    ("values", "errors", "higher_is_better", "expected"),
    [
        ([0.30, 0.32, 0.35], [0.01, 0.01, 0.04], True, 1),  # 0.35 - 0.04 = 0.31: trial 1 is within noise
        ([0.30, 0.32, 0.35], [0.0, 0.0, 0.0], True, 2),  # no noise: strictly the best
        ([0.90, 0.95, 0.91], [0.0, 0.0, 0.02], False, 0),  # RMSE: lower is better, 0.90 best
        ([float("nan"), float("nan")], [0.0, 0.0], True, -1),
    ],
)
def test_tuning_keeps_the_earliest_trial_within_one_standard_error(values, errors, higher_is_better, expected) -> None:
    assert selected_trial(np.array(values), np.array(errors), higher_is_better) == expected


def test_the_reference_is_kept_unless_the_best_point_leads_beyond_the_multiple_comparison_margin() -> None:
    # Bonferroni, one-sided at 5%: z(0.95) for one challenger, z(1 - 0.05 / 23) for 23
    assert reference_margin_for(1) == pytest.approx(1.6449, abs=1e-4)
    assert reference_margin_for(23) == pytest.approx(2.8518, abs=1e-4)
    values, errors = np.array([0.30, 0.313, 0.32]), np.array([0.0, 0.004, 0.008])
    # the best leads by 0.02 = 2.5 standard errors (0.008): enough for one challenger, not for 23
    assert selected_trial(values, errors, True, reference_margin_for(1)) == 1  # 0.32 - 0.008 <= 0.313: within noise of the best
    assert selected_trial(values, errors, True, reference_margin_for(23)) == 0


def test_paired_errors_measure_the_noise_of_each_trials_differences_to_the_reference() -> None:
    # per-user differences to trial 0: [0.1, 0, 0.2], a constant 0.05 (no noise), [0.3, 0, -0.1].
    # 30 users (three repeated ten times): SE = sqrt(sum of squared deviations / 29 / 30); the squared
    # deviations of [0.1, 0, 0.2] sum to 0.02 per three users, of [0.3, 0, -0.1] to 0.26 / 3.
    reference = np.tile([0.1, 0.2, 0.3], 10)
    trials = [reference, np.tile([0.2, 0.2, 0.5], 10), reference + 0.05, np.tile([0.4, 0.2, 0.2], 10)]
    errors = paired_errors(trials)
    assert errors == pytest.approx([0.0, np.sqrt(0.2 / 29 / 30), 0.0, np.sqrt(2.6 / 3 / 29 / 30)])
    means = np.array([trial.mean() for trial in trials])
    # trial 1 leads by 0.1 > 0.015 and trial 3 by 0.067 > 0.032: both beyond noise
    assert selected_trial(means[[0, 1]], errors[[0, 1]], True) == 1
    assert selected_trial(means[[0, 3]], errors[[0, 3]], True) == 1
    # the same three users alone are too few to measure noise: the reference stays
    few = paired_errors([trial[:3] for trial in trials])
    assert np.isinf(few).all() and selected_trial(means, few, True) == 0


def test_als_tuning_objective_counts_only_items_new_to_warm_users(retail_con, trained_retail) -> None:
    fit = load_latest(retail_con, "als_model").fit_arrays("validation")
    new_items = warm_validation_ndcg(retail_con, "als_model", fit, repurchase=True, new_items_only=True)
    window = retail_con.execute(
        "SELECT user_id, item_id, seen_in_train FROM ml.validation_holdout_interactions WHERE user_in_train"
    ).df()
    fresh = window[~window["seen_in_train"]]
    assert len(new_items) == fresh["user_id"].nunique() >= 1
    # the same lists, NDCG@10 by hand on the new items only: hits at their ranks over the ideal
    recs = load_latest(retail_con, "als_model").recommend(fresh["user_id"].unique(), 10, fit="validation")
    expected = []
    for user, wanted in fresh.groupby("user_id", sort=False)["item_id"]:
        ranks = recs.loc[(recs["user_id"] == user) & recs["item_id"].isin(set(wanted)), "rank"]
        ideal = sum(1 / math.log2(r + 1) for r in range(1, min(10, wanted.nunique()) + 1))
        expected.append(sum(1 / math.log2(r + 1) for r in ranks) / ideal)
    assert new_items == pytest.approx(expected)


@pytest.mark.parametrize(
    ("window_edit", "repurchase", "metric"),
    [
        # every item the warm users do not own becomes a new item they touch: a list without their
        # purchases (repurchase off) is all hits
        ("INSERT INTO ml.validation_holdout_interactions (user_id, item_id, user_in_train, seen_in_train)"
         " SELECT u.user_id, i.item_id, true, false"
         " FROM (SELECT DISTINCT user_id FROM ml.validation_holdout_interactions WHERE user_in_train) u"
         " CROSS JOIN (SELECT DISTINCT item_id FROM ml.validation_train_user_item) i"
         " WHERE NOT EXISTS (SELECT 1 FROM ml.validation_train_user_item t"
         "                   WHERE t.user_id = u.user_id AND t.item_id = i.item_id)"
         " AND NOT EXISTS (SELECT 1 FROM ml.validation_holdout_interactions h"
         "                 WHERE h.user_id = u.user_id AND h.item_id = i.item_id)",
         False, "val_ndcg@10_new_items_warm"),
        # only new items no model can know remain (unseen in the validation train): Taobao's case
        ("DELETE FROM ml.validation_holdout_interactions WHERE NOT seen_in_train"
         " AND item_id IN (SELECT item_id FROM ml.validation_train_user_item)",
         True, "val_ndcg@10_warm"),
    ],
)
def test_als_is_judged_on_new_items_unless_no_point_can_find_one(
    trained_retail, tmp_path: Path, window_edit: str, repurchase: bool, metric: str
) -> None:
    database = tmp_path / "warehouse.duckdb"
    database.write_bytes(Path(trained_retail["database"]).read_bytes())
    with duckdb.connect(str(database)) as con:
        con.execute(window_edit)
        trials = als_search_trials(con, "run", TuningConfig(als_trials=2), repurchase)
    assert (trials["metric"] == metric).all() and len(trials) == 2
    assert (trials["value"] > 0).any() and trials.loc[trials["value"].idxmax(), "selected"]


def test_tuning_selects_on_validation_and_sets_the_next_runs_defaults(
    trained_retail, make_resources, tmp_path: Path
) -> None:
    database = tmp_path / "warehouse.duckdb"
    database.write_bytes(Path(trained_retail["database"]).read_bytes())
    resources = make_resources(database, tmp_path / "models")
    tuning_config = {"ops": {"model_tuning": {"config": {"als_trials": 2, "svd_trials": 2, "repeat_trials": 3}}}}

    assert materialize([model_tuning], resources=resources, run_config=tuning_config).success
    assert materialize([als_model, repeat_aware_model], resources=resources).success

    with duckdb.connect(str(database), read_only=True) as con:
        trials = con.execute("SELECT model, params_json, metric, value, selected FROM ml.tuning_runs").df()
        als, repeat = load_latest(con, "als_model"), load_latest(con, "repeat_aware_model")
    assert sorted(trials.groupby("model").size().items()) == [("als_model", 2), ("repeat_aware_model", 4), ("svd_model", 2)]
    assert trials.groupby("model")["selected"].sum().eq(1).all()
    als_trials = trials[trials["model"] == "als_model"]
    best = als_trials.loc[als_trials["value"].idxmax()]
    # one warm validation user whose new item no ALS point finds: judged on every item (see above)
    assert best["selected"] and best["metric"] == "val_ndcg@10_warm"
    svd_trials = trials[trials["model"] == "svd_model"]
    assert svd_trials.loc[svd_trials["value"].idxmin(), "selected"]
    assert {k: als.params[k] for k in json.loads(best["params_json"])} == json.loads(best["params_json"])
    assert all(set(json.loads(params)) == set(ALS_GRID) for params in als_trials["params_json"])
    # the seed's two points: TF-IDF on every event weighed alike, both away from AlsConfig's defaults
    assert (als.params["weighting"], als.params["event_weights"]) == ("tfidf", [1.0, 1.0, 1.0, 1.0])
    config = als.spec.config_class(**als.params)  # as ensure_fit and the incremental refit rebuild it
    assert (config.weighting, config.event_weights) == ("tfidf", [1.0, 1.0, 1.0, 1.0])
    with duckdb.connect(str(database), read_only=True) as con:  # and the fits were made with them
        weighted, as_strength = (fit_als(con, VALIDATION_TRAIN_TABLE, c) for c in (config, config.model_copy(
            update={"event_weights": None})))
    np.testing.assert_array_equal(als.fit_arrays("validation").dense["item_factors"], weighted.dense["item_factors"])
    assert not np.allclose(weighted.dense["item_factors"], as_strength.dense["item_factors"])
    repeat_trials = trials[trials["model"] == "repeat_aware_model"]
    assert json.loads(repeat_trials["params_json"].iloc[0]) == {**json.loads(best["params_json"]), **OWN_FIRST_WITH_RELATED}
    chosen = json.loads(repeat_trials.loc[repeat_trials["selected"], "params_json"].iloc[0])
    assert chosen == {**json.loads(best["params_json"]), **{k: chosen[k] for k in REPEAT_GRID}}  # on ALS's choice
    assert {k: repeat.params[k] for k in chosen} == chosen


@pytest.mark.parametrize("min_items", [1, 2, 3])
def test_the_test_window_gives_the_models_list_only_to_the_users_publishing_serves(
    retail_con, monkeypatch: pytest.MonkeyPatch, min_items: int
) -> None:
    """Test-window figures are those of the published lists: below ``RECSYS_MIN_ITEMS_FOR_MODEL`` items
    a user gets the fallback list (score NULL), as publishing serves them; the validation window
    judges the model on every user it knows."""
    monkeypatch.setenv(MIN_ITEMS_ENV, str(min_items))
    als, fallback = load_latest(retail_con, "als_model"), load_latest(retail_con, FALLBACK_MODEL)
    for window in WINDOWS:
        data = load_window(retail_con, window, repurchase=False)
        known = data.relevant.loc[data.relevant["user_id"].isin(data.train_users), "user_id"].unique().astype(str)
        lists = recommendations_with_fallback(retail_con, als, fallback, known, data, 10)
        scored = lists.groupby("user_id")["score"].apply(lambda scores: scores.notna().any())
        n_items = retail_con.execute(
            f"SELECT user_id, count(*) AS n FROM {window.train_table} GROUP BY user_id"
        ).df().set_index("user_id")["n"]
        expected = n_items.reindex(scored.index) >= min_items if window.as_published else scored.index.notna()
        assert scored.to_numpy().tolist() == list(expected), window.prefix
        if window.as_published and min_items == 3:  # the sample's warm test users have 2 items or more
            assert not scored.all() and scored.any()  # both kinds of user occur in this window
