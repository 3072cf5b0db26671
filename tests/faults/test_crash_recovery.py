"""Crash safety: SIGKILL a real run during ingest, dbt, training and publishing; the rerun repairs all.

One isolated setup on the bundled Online Retail sample. After a complete first run, a stage is
materialized four times in a separate process (``run_refresh.py``: the real job, restricted to that
stage's assets) and killed with SIGKILL -- its whole process group, dbt included -- as soon as it is
seen to have reached a point, observed from the outside without test hooks in the pipeline:

- ingest: the run's log names a big new inbox file as an input and the load has been running for a
  second (the kill lands inside the ingest transaction; the file is removed afterwards);
- dbt: a ``dbt build`` process of the run has existed for two seconds;
- training: a new model artifact folder appears under the models dir (saved, not yet registered);
- publishing: a staging file ``.serving.duckdb.*.tmp`` appears beside the serving file.

After every kill the warehouse opens, every raw row is accounted for, the ingestion tables hold no
partial load, every registered model has a complete artifact, and the serving file is byte-for-byte
the one published before. A final run of the whole graph completes, removes the killed publish's
staging file, and leaves tables that honour every contract invariant.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from pipeline_state import (
    assert_rows_accounted,
    broken_serving_invariants,
    registry_problems,
    serving_state,
    warehouse_fingerprints,
)
from recsys_dagster.definitions import defs
from recsys_dagster.settings import DATA_DIR, PROJECT_ROOT
from tests.conftest import isolate_pipeline

RUNNER = Path(__file__).with_name("run_refresh.py")
SAMPLE = DATA_DIR / "sample" / "online_retail.csv"
BIG_FILE = "events_big.csv"
#: Events in the big inbox file: enough for its load to take several seconds on a loaded machine.
BIG_FILE_EVENTS = 1_500_000
#: The ingestion and validation tables: a killed run must leave them exactly as they were.
INGESTED = {
    "main.ingested_files": "*",
    "main.raw_events": "*",
    "main.raw_items": "*",
    "main.validated_interactions": "*",
    "main.quarantined_events": "* EXCLUDE (quarantined_at)",
}
#: The assets each killed run materializes (keys of the refresh_recommendations job).
STAGE_ASSETS = {
    "ingest": ["raw_events", "raw_items"],
    "dbt": ["stg_interactions", "int_holdout_cutoff", "fct_user_item_interactions", "fct_train_user_item",
            "fct_holdout_interactions", "dim_items", "dim_users"],
    "training": ["als_model", "svd_model", "popularity_model", "item_knn_model"],
    "publish": ["user_recommendations", "similar_items", "popular_items"],
}
MARTS = ("int_holdout_cutoff", "fct_user_item_interactions", "fct_train_user_item",
         "fct_holdout_interactions", "dim_items", "dim_users")


@dataclass
class Watch:
    """What the test can see of a running job: its process, its log, the files of its setup."""

    process: subprocess.Popen
    log: Path
    root: Path
    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def held_for(self, name: str, condition: bool, seconds: float) -> bool:
        """True once ``condition`` has been true (continuously or not) for ``seconds``."""
        if condition:
            self.marks.setdefault(name, time.monotonic())
        return name in self.marks and time.monotonic() - self.marks[name] >= seconds

    def session_commands(self) -> list[str]:
        """Command lines of every live process of the run's process group (dbt included)."""
        commands = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) == self.process.pid:
                    commands.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except (ProcessLookupError, FileNotFoundError, PermissionError):
                continue
        return commands


def ingesting_big_file(watch: Watch) -> bool:
    listed = any("input file(s):" in line and BIG_FILE in line for line in watch.log_text().splitlines())
    return watch.held_for("ingest", listed, 1.0)


def running_dbt(watch: Watch) -> bool:
    building = any("dbt" in command and " build " in command for command in watch.session_commands())
    return watch.held_for("dbt", building, 2.0)


def writing_model_artifact(existing: set[Path]) -> Callable[[Watch], bool]:
    def reached(watch: Watch) -> bool:
        return bool(artifact_folders(watch.root) - existing)

    return reached


def staging_serving_file(watch: Watch) -> bool:
    return bool(staging_files(watch.root))


def artifact_folders(root: Path) -> set[Path]:
    return set((root / "models_dir").glob("*/*"))


def unregistered_folders(root: Path) -> set[Path]:
    """Artifact folders without a registry row: what a training killed between save and register leaves."""
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as con:
        registered = con.execute("SELECT artifact_dir FROM ml.model_registry").fetchall()
    return artifact_folders(root) - {Path(folder) for (folder,) in registered}


def staging_files(root: Path) -> list[Path]:
    return sorted(root.glob(".serving.duckdb.*"))


def run_and_kill(root: Path, reached: Callable[[Watch], bool], name: str, timeout: float = 300.0) -> Watch:
    """Materialize stage ``name`` in a new process group and SIGKILL the group once ``reached`` says so."""
    log = root / f"killed-{name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [sys.executable, str(RUNNER), *STAGE_ASSETS[name]], cwd=PROJECT_ROOT, env=dict(os.environ),
            stdout=subprocess.DEVNULL, stderr=handle, start_new_session=True,
        )
    watch = Watch(process, log, root)
    try:
        while process.poll() is None:
            if reached(watch):
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return watch
            assert time.monotonic() - watch.started < timeout, f"{name}: not reached within {timeout} s"
            time.sleep(0.05)
        pytest.fail(f"{name}: the run ended (exit {process.returncode}) before the kill point\n{watch.log_text()[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_refresh_in_process() -> None:
    result = defs.resolve_job_def("refresh_recommendations").execute_in_process(
        instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success, [event.message for event in result.all_events if event.is_failure]


def generate_big_file(target: Path) -> None:
    """A RetailRocket-shaped events file from the project's seeded generator (bench.generate)."""
    out = target.parent / "generated"
    subprocess.run(
        [sys.executable, "-m", "bench.generate", "--events", str(BIG_FILE_EVENTS), "--out", str(out)],
        cwd=PROJECT_ROOT, check=True, stdout=subprocess.DEVNULL,
    )
    shutil.move(out / "events.csv", target)
    shutil.rmtree(out)


def warehouse_tables(warehouse: Path) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def assert_consistent_after_kill(root: Path, ingested_before: dict[str, tuple], serving_before: tuple) -> None:
    warehouse = root / "warehouse.duckdb"
    assert warehouse_fingerprints(warehouse, INGESTED) == ingested_before
    assert set(MARTS) <= warehouse_tables(warehouse)  # dbt replaces a model in one transaction
    assert_rows_accounted(warehouse)
    assert registry_problems(warehouse) == []
    assert serving_state(root / "serving.duckdb") == serving_before


@dataclass(frozen=True)
class CrashHistory:
    root: Path
    ingested_before: dict[str, tuple]
    serving_before: tuple
    kills: dict[str, Watch]
    staging_left_by_kill: list[Path]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashHistory]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = isolate_pipeline(tmp_path_factory.mktemp("crash"), monkeypatch)
        shutil.copy(SAMPLE, root / "input_dir" / SAMPLE.name)
        run_refresh_in_process()
        ingested_before = warehouse_fingerprints(root / "warehouse.duckdb", INGESTED)
        serving_before = serving_state(root / "serving.duckdb")
        kills = {}

        big = root / "inbox_dir" / BIG_FILE
        generate_big_file(big)
        kills["ingest"] = run_and_kill(root, ingesting_big_file, "ingest")
        big.unlink()
        assert_consistent_after_kill(root, ingested_before, serving_before)

        kills["dbt"] = run_and_kill(root, running_dbt, "dbt")
        assert_consistent_after_kill(root, ingested_before, serving_before)

        kills["training"] = run_and_kill(root, writing_model_artifact(artifact_folders(root)), "training")
        assert_consistent_after_kill(root, ingested_before, serving_before)

        kills["publish"] = run_and_kill(root, staging_serving_file, "publish")
        staging_left = staging_files(root)
        assert_consistent_after_kill(root, ingested_before, serving_before)

        run_refresh_in_process()
        yield CrashHistory(root, ingested_before, serving_before, kills, staging_left)


def test_each_kill_landed_inside_its_stage(crashes: CrashHistory) -> None:
    """The kills really interrupted work: nothing of the big file was ever reported loaded, dbt and
    the publish was cut off before its swap (the serving file was unchanged after it, see the fixture)."""
    assert all(watch.process.returncode == -signal.SIGKILL for watch in crashes.kills.values())
    assert f"{BIG_FILE}: loaded" not in crashes.kills["ingest"].log_text()
    assert "Finished dbt command" not in crashes.kills["dbt"].log_text()
    assert crashes.staging_left_by_kill, "the killed publish left no staging file: it was killed too late"


def test_rerun_completes_with_consistent_tables(crashes: CrashHistory) -> None:
    root = crashes.root
    warehouse, serving = root / "warehouse.duckdb", root / "serving.duckdb"
    assert warehouse_fingerprints(warehouse, INGESTED) == crashes.ingested_before
    assert_rows_accounted(warehouse)
    assert registry_problems(warehouse) == []
    assert broken_serving_invariants(serving, warehouse) == {}
    versions, rows, _ = serving_state(serving)
    assert len(versions) == 1 and versions != crashes.serving_before[0] and rows > 0


def test_rerun_leaves_no_debris_of_the_killed_runs(crashes: CrashHistory) -> None:
    root = crashes.root
    assert staging_files(root) == []
    assert unregistered_folders(root) == set()  # model retention removed what the killed training left
    tables = warehouse_tables(root / "warehouse.duckdb")
    assert set(MARTS) <= tables
    assert sorted(name for name in tables if "__dbt_" in name) == []
