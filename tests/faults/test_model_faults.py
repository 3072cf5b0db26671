"""Model-level faults: a night whose training data collapsed fails the run before anything is published.

Real in-process runs of the whole ``refresh_recommendations`` job on a real Taobao slice (114 users
with their full 9-day histories: views, carts/favourites, purchases). The shop exports its whole
history nightly to the same file name, so a broken export replaces the training data. After one good
night that publishes, three broken nights replace the export with (a) one user's events, (b) one
item's events, (c) only the views. Each run must fail at the blocking ``training_data_not_collapsed``
check with a message naming the problem, materialize nothing downstream of the training mart, leave
the serving file byte-identical and keep every raw row accounted for. An operator who confirms a
genuine change re-runs the check once with ``accept_event_type_changes`` and the new mix becomes the
baseline. Every rejected file of the bad-input corpus, met by the whole job after that good night,
likewise fails the run at ingestion and leaves the published tables and the row accounting intact
(test_bad_inputs.py checks the same files on ingest + validate alone).

The pipeline lives in a folder whose name is an SQL injection string: the whole graph, models and
publishing included, also proves that the warehouse, serving, model and Parquet paths are bound as
values, never pasted into SQL text.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, DagsterInstance, ExecuteInProcessResult, RunConfig

from fault_env import HOSTILE, Baseline, FaultEnv, failure_text, load_manifest
from pipeline_state import assert_rows_accounted, serving_fingerprints, serving_state
from recsys_dagster.ingest.assets import IngestConfig
from recsys_dagster.definitions import defs
from recsys_dagster.features.checks import (
    COLLAPSE_CHECK,
    TRAINING_MART,
    TrainingDataCheckConfig,
    training_data_not_collapsed,
)
from recsys_dagster.features.dbt import recsys_dbt_assets
from test_bad_inputs import stage
from tests.conftest import isolate_pipeline

TAOBAO_SLICE = Path("taobao_userbehavior") / "UserBehavior_tail10k_114users_fullhistory.csv"
EXPORT_NAME = "UserBehavior.csv"
CHECK_KEY = AssetCheckKey(AssetKey(TRAINING_MART), COLLAPSE_CHECK)
#: Taobao columns: user_id, item_id, category_id, behavior (pv | cart | fav | buy), timestamp.
USER_COLUMN, ITEM_COLUMN, BEHAVIOR_COLUMN = 0, 1, 3
#: The slice's most active user (404 events of all four behaviours) and an item viewed, carted and bought.
ONE_USER, ONE_ITEM = "99981", "4423269"


@dataclass(frozen=True)
class CollapsedNight:
    """A broken export: the rows of the good export that ``keep`` accepts, and the expected complaint."""

    name: str
    keep: Callable[[list[str]], bool]
    complaint: str


NIGHTS = [
    CollapsedNight("one_user", lambda row: row[USER_COLUMN] == ONE_USER, "only 1 distinct user(s)"),
    CollapsedNight("one_item", lambda row: row[ITEM_COLUMN] == ONE_ITEM, "only 1 distinct item(s)"),
    CollapsedNight("views_only", lambda row: row[BEHAVIOR_COLUMN] == "pv", "addtocart (7.5%), transaction (2.1%)"),
]
REJECTED_FILES = [case for case in load_manifest() if case["outcome"] == "reject"]


@dataclass(frozen=True)
class GoodNight:
    """The isolated pipeline after the good night, and what it published."""

    root: Path
    export: list[str]
    serving: tuple[tuple[str, ...], int, str]
    serving_tables: dict[str, tuple]

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    def write_export(self, lines: list[str]) -> None:
        (self.root / "input_dir" / EXPORT_NAME).write_text("".join(lines), encoding="utf-8")

    def corpus_env(self) -> FaultEnv:
        """This pipeline's inbox (and a folder outside it) as the bad-input corpus stages files."""
        baseline = Baseline(self.root / "input_dir", self.warehouse, "")
        return FaultEnv(baseline, self.warehouse, self.root / "inbox_dir", self.root / "outside")

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql).fetchall()


def run_refresh(run_config: RunConfig | None = None, check_only: bool = False) -> ExecuteInProcessResult:
    """The real job in this process (``check_only``: the collapse check alone, as an operator re-runs it)."""
    job = defs.resolve_job_def("refresh_recommendations")
    if check_only:
        job = job.get_subset(asset_selection=set(), asset_check_selection={CHECK_KEY})
    return job.execute_in_process(run_config=run_config, instance=DagsterInstance.ephemeral(), raise_on_error=False)


def collapse_evaluation(result: ExecuteInProcessResult):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.asset_check_key == CHECK_KEY]
    return evaluation


def steps_after_training_mart() -> set[AssetKey]:
    """The assets downstream of the mart built by later steps (the dbt build makes the other marts)."""
    graph = defs.resolve_asset_graph()
    downstream = AssetSelection.assets(TRAINING_MART).downstream(include_self=False).resolve(graph)
    return set(downstream) - set(recsys_dbt_assets.keys)


@pytest.fixture(scope="module")
def good_night(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Iterator[GoodNight]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = tmp_path_factory.mktemp("model_faults") / f"shop{HOSTILE}"
        root.mkdir()
        isolate_pipeline(root, monkeypatch)
        source = shared_datasets / TAOBAO_SLICE
        shutil.copy(source, root / "input_dir" / EXPORT_NAME)
        result = run_refresh()
        assert result.success, [event.message for event in result.all_events if event.is_failure]
        serving = root / "serving.duckdb"
        export = source.read_text(encoding="utf-8").splitlines(keepends=True)
        yield GoodNight(root, export, serving_state(serving), serving_fingerprints(serving))


def test_the_good_night_publishes_and_records_a_passing_profile(good_night: GoodNight) -> None:
    assert good_night.serving[1] > 0
    profile = good_night.query(
        "SELECT event_type, n_events > 0, passed FROM ml.training_data_profiles ORDER BY event_type"
    )
    assert profile == [("addtocart", True, True), ("rating", False, True), ("transaction", True, True),
                       ("view", True, True)]


@pytest.mark.parametrize("night", NIGHTS, ids=lambda night: night.name)
def test_a_collapsed_night_fails_at_the_check_and_publishes_nothing(
    good_night: GoodNight, night: CollapsedNight
) -> None:
    registered_before = good_night.query("SELECT count(*) FROM ml.model_registry")
    good_night.write_export([line for line in good_night.export if night.keep(line.rstrip("\n").split(","))])

    result = run_refresh()

    assert not result.success
    evaluation = collapse_evaluation(result)
    assert not evaluation.passed
    assert night.complaint in evaluation.description
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert AssetKey(TRAINING_MART) in materialized  # the run got as far as the mart...
    assert materialized & steps_after_training_mart() == set()  # ...and not one step further
    assert good_night.query("SELECT count(*) FROM ml.model_registry") == registered_before
    serving = good_night.root / "serving.duckdb"
    assert serving_state(serving) == good_night.serving  # same versions, rows and file bytes
    assert serving_fingerprints(serving) == good_night.serving_tables
    assert_rows_accounted(good_night.warehouse)
    [(passed,)] = good_night.query(
        "SELECT DISTINCT passed FROM ml.training_data_profiles WHERE checked_at = (SELECT max(checked_at) "
        "FROM ml.training_data_profiles)"
    )
    assert passed is False


def test_an_operator_accepts_a_genuine_mix_change_once(good_night: GoodNight) -> None:
    """Views only from now on, confirmed: the accepted profile becomes the baseline of later checks."""
    good_night.write_export([line for line in good_night.export if line.split(",")[BEHAVIOR_COLUMN] == "pv"])
    assert not run_refresh().success  # the change is refused until someone accepts it

    accept_config = TrainingDataCheckConfig(accept_event_type_changes=True)
    accept = RunConfig(ops={training_data_not_collapsed.op.name: accept_config})
    accepted = run_refresh(accept, check_only=True)
    next_night = run_refresh(check_only=True)

    assert accepted.success and collapse_evaluation(accepted).passed
    assert next_night.success and collapse_evaluation(next_night).passed
    assert collapse_evaluation(next_night).metadata["previous_mix"].value == "view 100.0%"


@pytest.fixture()
def corpus_env(good_night: GoodNight) -> Iterator[FaultEnv]:
    """The good night's pipeline with an empty folder outside the inbox; staged files removed after."""
    env = good_night.corpus_env()
    env.outside.mkdir()
    yield env
    shutil.rmtree(env.outside)
    for staged in env.inbox.iterdir():
        staged.unlink()


@pytest.mark.parametrize("case", REJECTED_FILES, ids=[case["file"] for case in REJECTED_FILES])
def test_a_rejected_file_fails_the_whole_job_and_keeps_the_published_tables(
    good_night: GoodNight, corpus_env: FaultEnv, case: dict
) -> None:
    serving = good_night.root / "serving.duckdb"
    published_before = serving_state(serving)
    files = stage(corpus_env, case)

    result = run_refresh(RunConfig(ops={"ingest": IngestConfig(files=files)}))

    assert not result.success
    # The folder name holds a quote, so the repr of a path in the error is in double quotes.
    assert re.search(case["error"], failure_text(result).replace('"', "'"), re.DOTALL)
    assert [event.step_key for event in result.get_step_failure_events()] == ["ingest"]
    assert result.get_asset_materialization_events() == []
    assert serving_state(serving) == published_before
    assert_rows_accounted(good_night.warehouse)
