"""ml.pipeline_failures names the problem when a run failed on a blocking asset check.

A real collapsed night: the shop's first export holds one user's events (a real Taobao user's full
9-day history), so the whole ``refresh_recommendations`` job fails at the blocking
``training_data_not_collapsed`` check. The step's own error only says that a blocking check failed;
the row the failure sensor records must say what the check found.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from recsys_dagster.automation.failures import pipeline_failure_sensor
from tests.automation.failed_runs import failed_refresh

TAOBAO_SLICE = Path("taobao_userbehavior") / "UserBehavior_tail10k_114users_fullhistory.csv"
ONE_USER = "99981"  # the slice's most active user: 404 events of all four behaviours


def write_one_user_export(shared_datasets: Path, target: Path) -> None:
    """The Taobao export cut to one user's rows (header-less: user_id is the first column)."""
    lines = (shared_datasets / TAOBAO_SLICE).read_text(encoding="utf-8").splitlines(keepends=True)
    target.write_text("".join(line for line in lines if line.split(",", 1)[0] == ONE_USER), encoding="utf-8")


def test_a_run_failed_on_a_blocking_check_is_recorded_with_the_checks_description(
    pipeline_env: Path, shared_datasets: Path
) -> None:
    write_one_user_export(shared_datasets, pipeline_env / "input_dir" / "UserBehavior.csv")
    result, context = failed_refresh()

    pipeline_failure_sensor(context)

    with duckdb.connect(str(pipeline_env / "warehouse.duckdb"), read_only=True) as con:
        [(step, error)] = con.execute("SELECT step, error FROM ml.pipeline_failures WHERE run_id = ?",
                                      [result.run_id]).fetchall()
    assert step == "fct_train_user_item_training_data_not_collapsed"
    first_line, *rest = error.splitlines()
    assert first_line == ("check fct_train_user_item:training_data_not_collapsed failed: only 1 distinct user(s) "
                          "in fct_train_user_item (minimum 2)")
    assert any("blocking asset check" in line for line in rest)  # Dagster's own error follows
