"""bench.quality's targets table: each verdict is read from the population the row says it is judged on."""

from __future__ import annotations

import pandas as pd

from bench.quality import ONLINE_RETAIL, PLAIN_NAME, TAOBAO, DatasetResult, all_metrics_table, dataset_target_rows

MODELS = ("repeat_aware_model", PLAIN_NAME, "als_model", "item_knn_bm25_model", "popularity_model",
          "popularity_recent_model")


def result(dataset, all_users: dict[str, float], warm_users: dict[str, float], gain=(0.002, -0.008, 0.012)):
    """A DatasetResult whose table holds the given all-users / warm-users NDCG@10 (new items: 0.05 each)."""
    table = pd.DataFrame({"ndcg@10": pd.Series(all_users), "warm ndcg@10": pd.Series(warm_users)}).reindex(MODELS)
    table["ndcg@10_new_items"] = table["warm ndcg@10_new_items"] = 0.05
    facts = {"n_holdout_users": 250, "n_warm_users": 134, "new-item holdout pairs whose item is unseen in train": 0.3}
    return DatasetResult(dataset, table, "repeat_aware_model", facts, {}, 1.0, [], gain)


def row(lines: list[str], starts: str) -> list[str]:
    (line,) = [line for line in lines if line.startswith(f"| {starts}")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def scores(champion: float, plain: float, popularity: float) -> dict[str, float]:
    return {"repeat_aware_model": champion, PLAIN_NAME: plain, "als_model": 0.1, "item_knn_bm25_model": 0.1,
            "popularity_model": popularity, "popularity_recent_model": popularity / 2}


def test_ratio_target_is_judged_on_warm_users_and_shows_both() -> None:
    # all users 0.19 / 0.10 = 1.90x (below 2x), warm users 0.28 / 0.11 = 2.55x (above)
    lines = dataset_target_rows(result(ONLINE_RETAIL, scores(0.19, 0.18, 0.10), scores(0.28, 0.27, 0.11)))
    ratio = row(lines, "Online Retail: champion >= 2x")
    assert ratio[1] == "repeat_aware_model 0.1900 / 0.1000 = 1.90x (250 users)"
    assert ratio[2] == "repeat_aware_model 0.2800 / 0.1100 = 2.55x (134 users)"
    assert ratio[3:] == ["warm", "met"]
    reference = row(lines, "Online Retail: the issue's reference")
    assert reference[1:] == ["0.1800 / 0.1000 = 1.80x (250 users)", "0.2700 / 0.1100 = 2.45x (134 users)", "warm",
                             "shown"]


def test_ratio_target_fails_when_warm_users_miss_it() -> None:
    lines = dataset_target_rows(result(ONLINE_RETAIL, scores(0.25, 0.2, 0.10), scores(0.21, 0.2, 0.11)))
    assert row(lines, "Online Retail: champion >= 2x")[3:] == ["warm", "**not met**"]


def test_plain_list_and_blend_rows_keep_their_populations() -> None:
    # the champion is below the plain list on all users (not met) but above it on warm users
    lines = dataset_target_rows(result(ONLINE_RETAIL, scores(0.19, 0.20, 0.10), scores(0.28, 0.27, 0.11)))
    assert row(lines, "Online Retail: champion never below")[3:] == ["all", "**not met**"]
    assert row(lines, "Online Retail: repeat-aware blend")[2:] == ["+0.0020 [-0.0080, +0.0120] (134 users)", "warm",
                                                                    "**not met**"]
    taobao = dataset_target_rows(result(TAOBAO, scores(0.13, 0.12, 0.05), scores(0.13, 0.12, 0.05)))
    assert row(taobao, "Taobao UserBehavior: repeat-aware blend")[3:] == ["warm", "met"]  # "never below 0"
    assert not [line for line in taobao if "x the better popularity" in line]


def test_every_test_metric_is_a_row_and_every_model_a_column() -> None:
    table = pd.DataFrame({"val_ndcg@10_served": {"a": 0.1, "b": 0.3}, "ndcg@10": {"a": 0.2, "b": 0.4},
                          "recall@20_new_items": {"a": 0.5, "b": 0.6}, "rmse": {"a": 1.2, "b": None},
                          "not_a_test_metric": {"a": 9.0, "b": 9.0}})
    lines = all_metrics_table(table).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["", "b", "a"]  # best validation first
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["ndcg@10", "recall@20_new_items", "rmse"]
    assert [cell.strip() for cell in lines[3].strip("|").split("|")] == ["recall@20_new_items", "0.6", "0.5"]
    assert lines[4].replace(" ", "") == "|rmse||1.2|"
