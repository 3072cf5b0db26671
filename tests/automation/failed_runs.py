"""A failed run of the nightly job and the failure sensor's context for it (shared by the failure tests)."""

from __future__ import annotations

from dagster import DagsterInstance, RunFailureSensorContext, build_run_status_sensor_context
from dagster._core.execution.execute_in_process_result import ExecuteInProcessResult

from recsys_dagster.definitions import defs


def failed_refresh() -> tuple[ExecuteInProcessResult, RunFailureSensorContext]:
    """Run ``refresh_recommendations`` on an ephemeral instance, expecting it to fail, and build the
    context ``pipeline_failure_sensor`` receives for that failure."""
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("refresh_recommendations").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = build_run_status_sensor_context(
        sensor_name="pipeline_failure_sensor", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()
    return result, context
