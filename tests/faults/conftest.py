"""Fixtures of the fault suite: a warehouse holding a good baseline, copied for every test.

The baseline (the bundled Online Retail sample, ingested and validated) is built once per session
and copied per test: a copy of a DuckDB file is a complete warehouse, and copying takes
milliseconds where re-ingesting takes a second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fault_env import SAMPLE, Baseline, FaultEnv


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    # 'zz': the baseline's paths sort AFTER every test inbox, so "first occurrence" rules that
    # ordered by file name instead of ingestion time would show up as a changed baseline.
    root = tmp_path_factory.mktemp("zz_baseline")
    input_dir = root / "input"
    input_dir.mkdir()
    shutil.copy(SAMPLE, input_dir / SAMPLE.name)
    env = FaultEnv(Baseline(input_dir, root / "warehouse.duckdb", ""), root / "warehouse.duckdb", root / "inbox", root)
    env.inbox.mkdir()
    result = env.run()
    assert result.success, "the baseline (bundled sample) must ingest and validate"
    return Baseline(input_dir, env.warehouse, str((input_dir / SAMPLE.name).resolve()))


@pytest.fixture()
def fault_env(baseline: Baseline, tmp_path: Path) -> FaultEnv:
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(baseline.warehouse, warehouse)
    env = FaultEnv(baseline, warehouse, tmp_path / "inbox", tmp_path / "outside")
    env.inbox.mkdir()
    env.outside.mkdir()
    return env
