"""A night whose inbox holds every "quarantine" file of the bad-input corpus, met by the whole job.

test_bad_inputs.py proves each corpus file's outcome on ingest + validate alone. Here the real
``refresh_recommendations`` job first publishes a good night (the bundled Online Retail sample), then
runs a night whose inbox holds all quarantine-outcome files at once (bad rows mixed with good ones
from Taobao, REES46, Amazon and RetailRocket exports). By design quarantine is not failure: the run
must succeed and publish a complete new version learned from the validated rows only, with every raw
row of every file accounted for exactly as MANIFEST.yaml records it, and the quarantined rows'
reasons exactly the recorded ones.

One difference from the files' runs alone is by design: several corpus files were cut from the same
real rows, so together some of a file's good rows repeat a row another file of the night already
brought. Of identical events the first ingested is kept (MANIFEST.yaml), so such a row moves from
"validated" to ``duplicate_event``; the test finds these rows by their validated twin in another
file and holds every other count to the MANIFEST exactly.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult

from fault_env import SAMPLE, Baseline, FaultEnv, load_manifest
from pipeline_state import assert_rows_accounted, broken_serving_invariants, serving_state
from recsys_dagster.definitions import defs
from test_bad_inputs import stage
from tests.conftest import isolate_pipeline

QUARANTINE_CASES = [case for case in load_manifest() if case["outcome"] == "quarantine"]


@dataclass(frozen=True)
class QuarantineNight:
    """The pipeline after the good night and the quarantine night, and what each run left."""

    root: Path
    published_before: tuple[tuple[str, ...], int, str]
    result: ExecuteInProcessResult

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def serving(self) -> Path:
        return self.root / "serving.duckdb"

    def query(self, sql: str, params: list | dict | None = None) -> list[tuple]:
        with duckdb.connect(str(self.warehouse), read_only=True) as con:
            return con.execute(sql, params or []).fetchall()

    def rows_per_file(self, sql: str, params: dict | None = None) -> Counter:
        """``sql`` yields (source_file, key, n); returns n per (file name, key)."""
        return Counter({(Path(source).name, key): n for source, key, n in self.query(sql, params)})


def run_refresh() -> ExecuteInProcessResult:
    job = defs.resolve_job_def("refresh_recommendations")
    return job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)


#: Duplicate rows whose kept twin (same user and item) is a validated row of another file of the inbox.
CROSS_FILE_DUPLICATES_SQL = """
    SELECT q.source_file, 'duplicate_event', count(*) FROM main.quarantined_events q
    WHERE q.reason = 'duplicate_event' AND EXISTS (
        SELECT 1 FROM main.validated_interactions v
        WHERE starts_with(v.source_file, $inbox) AND v.source_file <> q.source_file
          AND v.user_id = trim(q.user_id) AND v.item_id = trim(q.item_id))
    GROUP BY ALL
"""


def staged_names(case: dict) -> list[str]:
    """The inbox names of a case's files (the case's counts are over all of them)."""
    return [case.get("stage_as", case["file"])] + case.get("together_with", [])


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuarantineNight]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = isolate_pipeline(tmp_path_factory.mktemp("quarantine_night"), monkeypatch)
        shutil.copy(SAMPLE, root / "input_dir" / SAMPLE.name)
        good = run_refresh()
        assert good.success, [event.message for event in good.all_events if event.is_failure]
        published_before = serving_state(root / "serving.duckdb")
        env = FaultEnv(Baseline(root / "input_dir", root / "warehouse.duckdb", ""), root / "warehouse.duckdb",
                       root / "inbox_dir", root / "outside")
        for case in QUARANTINE_CASES:
            assert stage(env, case) == []  # no quarantine case needs a configured file list
        yield QuarantineNight(root, published_before, run_refresh())


def test_every_file_is_split_into_validated_and_quarantined_rows_as_recorded(night: QuarantineNight) -> None:
    raw = night.rows_per_file("SELECT source_file, 'raw', count(*) FROM main.raw_events GROUP BY ALL")
    validated = night.rows_per_file(
        "SELECT source_file, 'validated', count(*) FROM main.validated_interactions GROUP BY ALL")
    reasons = night.rows_per_file("SELECT source_file, reason, count(*) FROM main.quarantined_events GROUP BY ALL")
    twins = night.rows_per_file(CROSS_FILE_DUPLICATES_SQL, {"inbox": f"{night.root / 'inbox_dir'}/"})
    for case in QUARANTINE_CASES:
        names = staged_names(case)
        n_raw, n_validated = sum(raw[name, "raw"] for name in names), sum(validated[name, "validated"] for name in names)
        found_reasons = Counter({reason: n for (name, reason), n in reasons.items() if name in names})
        n_twins = sum(twins[name, "duplicate_event"] for name in names)
        assert n_raw == n_validated + found_reasons.total(), case["file"]
        alone_reasons = found_reasons - Counter(duplicate_event=n_twins)  # drops a reason left at 0
        assert (n_raw, n_validated + n_twins, alone_reasons) == (case["raw_rows"], case["validated"], case["reasons"]), \
            case["file"]
    assert sum(twins.values()) > 0  # the corpus does share rows between files: the rule above was exercised
    assert_rows_accounted(night.warehouse)
    assert night.query("SELECT count(*) FROM main.quarantined_events WHERE reason IS NULL") == [(0,)]


def test_the_night_publishes_a_complete_new_version_from_the_validated_rows(night: QuarantineNight) -> None:
    assert night.result.success, [event.message for event in night.result.all_events if event.is_failure]
    checks = {evaluation.check_name: evaluation.passed for evaluation in night.result.get_asset_check_evaluations()}
    assert checks["row_accounting"] and checks["training_data_not_collapsed"], checks
    versions, rows, digest = serving_state(night.serving)
    assert len(versions) == 1 and versions != night.published_before[0]  # one new version replaced the old
    assert rows > 0 and digest != night.published_before[2]
    assert broken_serving_invariants(night.serving, night.warehouse) == {}  # every user ranked 1..n, no gaps
    # The marts learn from validated rows only: their events are exactly the validated rows.
    [(mart_events, validated)] = night.query(
        "SELECT (SELECT sum(n_views + n_addtocarts + n_transactions + n_ratings) "
        "FROM main.fct_user_item_interactions), (SELECT count(*) FROM main.validated_interactions)")
    assert mart_events == validated
