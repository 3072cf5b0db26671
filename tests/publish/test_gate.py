"""The publishing gate and the catalog rules, on real Taobao histories run through the real assets.

A first run publishes; a second run -- on the same data, or on the next night's -- whose only candidate is a deliberately degraded
ALS (1 factor, 0 iterations: random factors) must be refused by the blocking ``champion_gate`` check,
leave the serving file byte-for-byte untouched and say why in the check, the decision table and the
run's tags.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, materialize

from recsys_dagster.evaluate.assets import model_evaluation
from recsys_dagster.models.assets import MODEL_ASSETS, validation_split
from recsys_dagster.publish.assets import GATE_TAG, champion_gate, publish_recommendations
from recsys_dagster.models.marts import DEFAULT_EVENT_WEIGHTS, MART_STATEMENTS, QUANTILE_CUTOFF, execute_with_parameters
from tests.models.conftest import build_marts, pipeline_resources

#: Taobao UserBehavior (header-less: user, item, category, behaviour, unix seconds) as canonical events.
TAOBAO_EVENTS = """
SELECT column0 AS user_id, column1 AS item_id,
       CASE column3 WHEN 'pv' THEN 'view' WHEN 'buy' THEN 'transaction' ELSE 'addtocart' END AS event_type,
       CAST(NULL AS DOUBLE) AS rating, to_timestamp(CAST(column4 AS BIGINT))::TIMESTAMP AS event_time
FROM read_csv($path, header = false, all_varchar = true)
"""
CATEGORIES = """
UPDATE dim_items SET category = c.category
FROM (SELECT DISTINCT column1 AS item_id, column2 AS category FROM read_csv($path, header = false, all_varchar = true)) c
WHERE dim_items.item_id = c.item_id
"""
NEW_ITEM = "new-item-without-events"
ALL_ASSETS = [validation_split, *MODEL_ASSETS, model_evaluation, champion_gate, publish_recommendations]


@pytest.fixture()
def taobao_db(shared_datasets: Path, tmp_path: Path) -> Path:
    """Taobao marts plus a catalog: categories, one brand-new item, and the most popular item unavailable."""
    source = shared_datasets / "taobao_userbehavior" / "UserBehavior_tail10k_114users_fullhistory.csv"
    database = build_marts(tmp_path / "warehouse.duckdb", TAOBAO_EVENTS, source)
    with duckdb.connect(str(database)) as con:
        con.execute(CATEGORIES, {"path": str(source)})
        category = con.execute("SELECT category FROM dim_items ORDER BY n_users DESC, item_id LIMIT 1").fetchone()[0]
        con.execute(
            "INSERT INTO dim_items (item_id, category, n_users, n_events, n_transactions, in_catalog) "
            "VALUES (?, ?, 0, 0, 0, true)",
            [NEW_ITEM, category],
        )
    return database


def run(database: Path, tmp_path: Path, instance: DagsterInstance, run_config: dict | None = None):
    resources = pipeline_resources(database, tmp_path / "models")
    return materialize(ALL_ASSETS, resources=resources, run_config=run_config, instance=instance, raise_on_error=False)


def only_als(**als_config) -> dict:
    return {
        "ops": {
            "model_evaluation": {"config": {"champion_candidates": ["als_model"]}},
            "als_model": {"config": {"use_tuned": False, **als_config}},
        }
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_evaluation(result, name: str):
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.asset_check_key.name == name
    ]
    return evaluation


def same_data(database: Path) -> None:
    """A re-run on the warehouse as it is."""


def next_night(database: Path) -> None:
    """The next night: one more user's events arrived (every mart rebuilt, so both cutoffs and the
    content hash of the interactions change): the gate must still compare like for like."""
    with duckdb.connect(str(database)) as con:
        con.execute("ALTER TABLE stg_interactions RENAME TO events")  # what MART_STATEMENTS read (and rename back)
        con.execute(
            "INSERT INTO events SELECT * REPLACE ('newcomer' AS user_id, event_time + INTERVAL 1 DAY AS event_time) "
            "FROM events WHERE user_id = (SELECT min(user_id) FROM events)"
        )
        for statement in MART_STATEMENTS:
            if statement.startswith("CREATE TABLE "):
                con.execute(f"DROP TABLE {statement.split()[2]}")
            execute_with_parameters(con, statement.replace("{cutoff}", QUANTILE_CUTOFF), DEFAULT_EVENT_WEIGHTS)


@pytest.mark.parametrize("between_runs", [same_data, next_night])
def test_gate_refuses_a_degraded_champion_and_keeps_the_published_file(
    taobao_db: Path, tmp_path: Path, between_runs
) -> None:
    instance = DagsterInstance.ephemeral()
    first = run(taobao_db, tmp_path, instance, only_als())
    assert first.success
    assert check_evaluation(first, "champion_gate").passed
    serving = tmp_path / "serving.duckdb"
    before = digest(serving)
    with duckdb.connect(str(taobao_db), read_only=True) as con:
        published_value = con.execute("SELECT value FROM ml.published_runs").fetchall()
        first_window = con.execute("SELECT data_window FROM ml.published_runs").fetchone()[0]
    assert len(published_value) == 1 and published_value[0][0] > 0
    between_runs(taobao_db)

    second = run(taobao_db, tmp_path, instance, only_als(factors=1, iterations=0))

    assert not second.success
    gate = check_evaluation(second, "champion_gate")
    assert not gate.passed
    assert "below the last published run" in gate.metadata["reason"].value
    assert "publish_recommendations" not in {e.step_key for e in second.all_events if e.is_step_success}
    assert digest(serving) == before
    assert GATE_TAG in instance.get_run_by_id(second.run_id).tags
    with duckdb.connect(str(taobao_db), read_only=True) as con:
        decisions = con.execute(
            "SELECT passed, value, baseline_value, baseline_run_id FROM ml.champion_decisions ORDER BY decided_at"
        ).fetchall()
        windows = [row[0] for row in con.execute("SELECT data_window FROM ml.champion_decisions ORDER BY decided_at").fetchall()]
        n_published = con.execute("SELECT count(*) FROM ml.published_runs").fetchone()[0]
    assert [row[0] for row in decisions] == [True, False]
    assert decisions[1][1] < 0.8 * decisions[1][2] and decisions[1][3] == first.run_id
    assert n_published == 1
    # the baseline is the published ALS scored on the second run's own validation window
    assert (windows[1] == first_window) is (between_runs is same_data)
    if between_runs is same_data:
        assert decisions[1][2] == pytest.approx(published_value[0][0])


def test_catalog_rules_and_the_repurchase_policy(
    taobao_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unavailable items are never published, brand-new items get category neighbours, and with the
    shop's repurchase policy on, bought items may come back (the purchase invariant is then off)."""
    with duckdb.connect(str(taobao_db)) as con:
        top_item = con.execute("SELECT item_id FROM dim_items ORDER BY n_users DESC, item_id LIMIT 1").fetchone()[0]
        con.execute("UPDATE dim_items SET available = false WHERE item_id = ?", [top_item])
        same_category = con.execute(
            "SELECT count(*) FROM dim_items WHERE category = (SELECT category FROM dim_items WHERE item_id = ?) "
            "AND n_users > 0 AND item_id <> ?",
            [NEW_ITEM, top_item],
        ).fetchone()[0]

    monkeypatch.setenv("RECSYS_REPURCHASE", "true")
    result = run(taobao_db, tmp_path, DagsterInstance.ephemeral())

    assert result.success
    invariants = check_evaluation(result, "contract_invariants")
    assert invariants.passed and invariants.metadata["banned_items"].value == 1  # checked against that item
    with duckdb.connect(str(tmp_path / "serving.duckdb"), read_only=True) as con:
        uses = con.execute(
            "SELECT (SELECT count(*) FROM recs.user_recommendations WHERE item_id = $i)"
            " + (SELECT count(*) FROM recs.similar_items WHERE similar_item_id = $i)"
            " + (SELECT count(*) FROM recs.popular_items WHERE item_id = $i)",
            {"i": top_item},
        ).fetchone()[0]
        con.execute("ATTACH ? AS wh (READ_ONLY)", [str(taobao_db)])
        repurchased = con.execute(
            "SELECT count(*) FROM recs.user_recommendations JOIN wh.main.fct_user_item_interactions f"
            " USING (user_id, item_id) WHERE f.n_transactions > 0"
        ).fetchone()[0]
        recorded_policy = con.execute("SELECT repurchase FROM wh.ml.champion_decisions").fetchall()
        neighbours = con.execute(
            "SELECT rank, similar_item_id, score FROM recs.similar_items WHERE item_id = ? ORDER BY rank", [NEW_ITEM]
        ).fetchall()
    assert uses == 0
    assert repurchased > 0 and recorded_policy == [(True,)]
    assert len(neighbours) == min(20, same_category) > 0
    assert [rank for rank, _, _ in neighbours] == list(range(1, len(neighbours) + 1))
    scores = [score for _, _, score in neighbours]
    assert scores == sorted(scores, reverse=True) and top_item not in {item for _, item, _ in neighbours}
