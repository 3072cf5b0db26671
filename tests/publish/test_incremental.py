"""The incremental refresh, materialized for real: a full refresh of a slice of the bundled Online
Retail sample, then one new day's file through the sensor's choice of job and ``incremental_refresh``.

Checks what readers rely on: the users who acted got new lists by the full publish's rules (a bought
item is gone, a brand-new user with two items gets the champion's list), every other user's rows are
byte-identical, the table keeps its columns and invariants, and the Parquet copy says the same. Between
the two, the champion is retrained twice keeping one version (``RECSYS_KEEP_MODEL_VERSIONS=1``): model
retention must keep the published version the increment scores with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult, build_sensor_context

from recsys_dagster.automation.jobs import INCREMENTAL_JOB_NAME, REFRESH_JOB_NAME
from recsys_dagster.automation.sensors import inbox_sensor
from recsys_dagster.definitions import defs
from recsys_dagster.ingest.assets import INPUT_FILES
from recsys_dagster.publish.incremental import (
    current_rows,
    Publication,
    live_publication,
    published_champion,
    recalculated_user_factors,
    replace_user_rows,
)
from recsys_dagster.publish.serving import Forbidden, PublishInvariantError, check_invariants
from recsys_dagster.settings import DATA_DIR, KEEP_MODEL_VERSIONS_ENV
from tests.conftest import isolate_pipeline

SAMPLE = DATA_DIR / "sample" / "online_retail.csv"
BASE_ROWS = 4000
DAY_FILE = "day-2010-12-06.csv"
NEW_USER = "99999"
ROW = "999001,{item},ITEM {item},1,2010-12-06 10:{minute:02d}:00,1.00,{user}.0,United Kingdom\n"
ALL_COLUMNS = "user_id, rank, item_id, score, model, model_version, generated_at"


def serving_rows(root: Path) -> pd.DataFrame:
    with duckdb.connect(str(root / "serving.duckdb"), read_only=True) as con:
        return con.execute(f"SELECT {ALL_COLUMNS} FROM recs.user_recommendations ORDER BY user_id, rank").df()


def forbidden(root: Path, unavailable: list[str] | None = None) -> Forbidden:
    """The warehouse's bought pairs and unavailable items (``unavailable``, if given, instead of the latter)."""
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        purchased = con.execute(
            "SELECT user_id, item_id FROM fct_user_item_interactions WHERE n_transactions > 0 OR n_ratings > 0"
        ).df()
        marked = con.execute("SELECT item_id FROM dim_items WHERE available = false").df()["item_id"].tolist()
    return Forbidden(purchased, marked if unavailable is None else unavailable)


def run_job(
    name: str, instance: DagsterInstance, partition_key: str | None = None, assets: list[AssetKey] | None = None
) -> ExecuteInProcessResult:
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, partition_key=partition_key, asset_selection=assets, raise_on_error=False
    )
    errors = [
        (event.step_failure_data.error.cause or event.step_failure_data.error).to_string()
        for event in result.all_events if event.is_step_failure
    ]
    assert result.success, errors
    return result


@dataclass
class Increment:
    root: Path
    before: pd.DataFrame
    after: pd.DataFrame
    requested_job: str
    warm_user: str
    bought: str
    single_item_user: str
    new_user_items: list[str]
    metadata: dict
    published: Publication
    #: The champion's versions after the publication: those trained since, and those on disk.
    retrained: list[str]
    on_disk: list[str]


def retrain(model: str, instance: DagsterInstance) -> str:
    """Train ``model`` again (no evaluation, no publication); its new version back."""
    result = run_job(REFRESH_JOB_NAME, instance, assets=[AssetKey(model)])
    [materialization] = result.asset_materializations_for_node(model)
    return materialization.metadata["model_version"].value


@pytest.fixture(scope="module")
def increment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Increment]:
    """A full refresh of the sample's first rows, then a new day's file handled as the sensor decides."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = isolate_pipeline(tmp_path_factory.mktemp("incremental"), monkeypatch)
        lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "input_dir" / "base.csv").write_text("".join(lines[: 1 + BASE_ROWS]), encoding="utf-8")
        instance = DagsterInstance.ephemeral()
        run_job(REFRESH_JOB_NAME, instance)
        before = serving_rows(root)
        published = live_publication(root / "serving.duckdb")
        monkeypatch.setenv(KEEP_MODEL_VERSIONS_ENV, "1")
        retrained = [retrain(published.model, instance) for _ in range(2)]
        on_disk = sorted(path.name for path in (root / "models_dir" / published.model).iterdir())

        model_rows = before[before["score"].notna()]
        warm_user = model_rows["user_id"].iloc[0]
        bought = model_rows[model_rows["user_id"] == warm_user]["item_id"].iloc[0]  # their top item
        with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
            single_item_user = con.execute("SELECT min(user_id) FROM dim_users WHERE n_items = 1").fetchone()[0]
        popular = before["item_id"].value_counts().index
        second_item = next(item for item in popular if item not in set(before[before["user_id"] == single_item_user]["item_id"]))
        new_user_items = [item for item in popular[:4] if item != second_item][:2]
        rows = [(warm_user, bought), (single_item_user, second_item), *((NEW_USER, item) for item in new_user_items)]
        day = root / "inbox_dir" / DAY_FILE
        day.write_text(lines[0] + "".join(ROW.format(item=i, user=u, minute=m) for m, (u, i) in enumerate(rows)))
        past = time.time() - 60
        os.utime(day, (past, past))

        [request] = inbox_sensor(build_sensor_context(instance=instance)).run_requests
        instance.add_dynamic_partitions(INPUT_FILES.name, [DAY_FILE])
        result = run_job(request.job_name, instance, request.partition_key)
        [materialization] = result.asset_materializations_for_node("recommendations_increment")
        yield Increment(
            root, before, serving_rows(root), request.job_name, warm_user, bought, single_item_user, new_user_items,
            {name: value.value for name, value in materialization.metadata.items()}, published, retrained, on_disk,
        )


def test_the_sensor_sends_a_file_after_a_publication_to_the_incremental_job(increment: Increment) -> None:
    assert increment.requested_job == INCREMENTAL_JOB_NAME


def test_retention_keeps_the_published_champion_the_increment_scores_with(increment: Increment) -> None:
    """Keeping one version, the first retraining's version went; the published one, older, stayed."""
    assert increment.on_disk == sorted([increment.published.model_version, increment.retrained[-1]])
    assert increment.published.model_version not in increment.retrained
    assert (increment.metadata["model"], increment.metadata["model_version"]) == (
        increment.published.model, increment.published.model_version
    )


def test_a_bought_item_leaves_the_buyers_list(increment: Increment) -> None:
    before = increment.before[increment.before["user_id"] == increment.warm_user]
    after = increment.after[increment.after["user_id"] == increment.warm_user]
    assert increment.bought in set(before["item_id"]) and increment.bought not in set(after["item_id"])
    assert len(after) == 20 and after["rank"].tolist() == list(range(1, 21))
    assert after["generated_at"].min() > before["generated_at"].max()


def test_new_and_grown_users_get_the_champions_list(increment: Increment) -> None:
    champion = increment.before["model"].iloc[0]
    new = increment.after[increment.after["user_id"] == NEW_USER]
    assert NEW_USER not in set(increment.before["user_id"])
    assert len(new) == 20 and new["score"].notna().any() and set(new["model"]) == {champion}
    assert not set(increment.new_user_items) & set(new["item_id"])  # bought: never recommended
    grown = increment.after[increment.after["user_id"] == increment.single_item_user]
    was = increment.before[increment.before["user_id"] == increment.single_item_user]
    assert was["score"].isna().all() and grown["score"].notna().any()  # fallback before, model now


def test_every_other_user_is_byte_identical(increment: Increment) -> None:
    acting = {increment.warm_user, increment.single_item_user, NEW_USER}
    untouched_before = increment.before[~increment.before["user_id"].isin(acting)].reset_index(drop=True)
    untouched_after = increment.after[~increment.after["user_id"].isin(acting)].reset_index(drop=True)
    pd.testing.assert_frame_equal(untouched_before, untouched_after)
    assert increment.metadata["users_updated"] == 3
    assert increment.metadata["rows_deleted"] == 40 and increment.metadata["rows_inserted"] == 60
    assert len(increment.after) == len(increment.before) + 20 == increment.metadata["dagster/row_count"]


def test_the_contract_and_parquet_copy_hold_after_the_increment(increment: Increment) -> None:
    root = increment.root
    with duckdb.connect(str(root / "serving.duckdb"), read_only=True) as con:
        assert check_invariants(con, forbidden(root)) == []
        columns = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'user_recommendations' "
            "ORDER BY ordinal_position"
        ).fetchall()
    assert [name for name, _ in columns] == ALL_COLUMNS.split(", ")
    parquet = duckdb.sql(
        f"SELECT {ALL_COLUMNS} FROM read_parquet($path) ORDER BY user_id, rank",
        params={"path": str(root / "published_dir" / "user_recommendations.parquet")},
    ).df()
    pd.testing.assert_frame_equal(parquet, increment.after)


def duplicated(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([rows, rows])


def other_version(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(model_version="another-version")


def unchanged(rows: pd.DataFrame) -> pd.DataFrame:
    return rows


def nothing_unavailable(rows: pd.DataFrame) -> list[str] | None:
    return None  # the warehouse's catalog


def top_item_unavailable(rows: pd.DataFrame) -> list[str]:
    """The catalog marks the rows' rank-1 item unavailable (after the lists were made)."""
    return rows.loc[rows["rank"] == 1, "item_id"].tolist()


@pytest.mark.parametrize(
    ("breakage", "unavailable", "invariant"),
    [
        (duplicated, nothing_unavailable, "no_duplicate_items_per_user"),
        (other_version, nothing_unavailable, "single_model_version"),
        (unchanged, top_item_unavailable, r"never_an_unavailable_item \(1 rows\)$"),
    ],
)
def test_a_broken_increment_leaves_the_live_file_alone(
    increment: Increment, tmp_path: Path, breakage, unavailable, invariant
) -> None:
    live = tmp_path / "serving.duckdb"
    live.write_bytes((increment.root / "serving.duckdb").read_bytes())
    rows = increment.after[increment.after["user_id"] == NEW_USER]
    broken = pa.Table.from_pandas(breakage(rows), preserve_index=False)
    with pytest.raises(PublishInvariantError, match=invariant):
        replace_user_rows(live, pd.Index([NEW_USER]), broken, forbidden(increment.root, unavailable(rows)))
    assert live.read_bytes() == (increment.root / "serving.duckdb").read_bytes()
    assert not list(tmp_path.glob(".serving.duckdb.*"))


def test_recalculated_factors_solve_the_als_normal_equations(increment: Increment) -> None:
    """implicit's ``recalculate_user`` as called here is the exact ALS user solve with the fit's alpha and
    regularization: (Y'Y + reg I + sum (c - 1) y y') x = sum c y, c = alpha * strength (Hu et al.)."""
    root = increment.root
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        champion, _ = published_champion(con, live_publication(root / "serving.duckdb"))
        config = champion.spec.config_class(**champion.params)
        items = champion.fit_arrays("serving").item_index
        rows = current_rows(con, pd.Index([increment.warm_user, NEW_USER]), items, config)
    item_factors = champion.fit_arrays("serving").dense["item_factors"].astype(np.float64)
    solved = recalculated_user_factors(champion.fit_arrays("serving").dense["item_factors"], rows, config)
    for row in range(rows.shape[0]):
        y, confidence = item_factors[rows[row].indices], config.alpha * rows[row].data
        lhs = item_factors.T @ item_factors + config.regularization * np.eye(y.shape[1]) + (y.T * (confidence - 1)) @ y
        np.testing.assert_allclose(solved[row], np.linalg.solve(lhs, y.T @ confidence), rtol=1e-3, atol=1e-4)
