"""Benchmark of the incremental refresh against the full refresh, measured in the same process.

Usage: ``python -m bench.incremental --events N [--day-events D] [--seed S] [--scratch DIR] [--results DIR]``.

1. The cached generated log of N events (``bench.pipeline.dataset_dir``) and one more day of about D
   events after it (``bench.generate.generate_next_day``; default D = N / the log's 138 days, i.e.
   ~20,000 events at RetailRocket's 2,756,101).
2. ``refresh_recommendations`` in-process on the log (the full refresh the nightly schedule runs).
3. The day's file dropped into the inbox; the real ``inbox_sensor`` is evaluated against the same
   instance and must request ``incremental_refresh`` for it; that run is executed in-process.
4. Both runs' wall times and their ratio (issue 4's target: the incremental run <= 10% of the full
   refresh), per-step times and peak RSS (as ``bench.pipeline`` measures them), the increment's own
   figures (users republished, rows replaced, its inner steps), and the contract's invariants checked
   on the serving file afterwards.

Writes ``bench/results/incremental-N.json`` and ``incremental-N.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import duckdb

from bench import calibration as cal
from bench.generate import GeneratorConfig, generate_next_day
from bench.pipeline import (
    DEFAULT_SCRATCH,
    GIB,
    QUIET_LOGS,
    RESULTS_DIR,
    PipelineRun,
    RssSampler,
    StageFigure,
    dataset_dir,
    environment,
    fresh_run_dir,
    link_inputs,
    load_average,
    pipeline_environment,
    step_intervals,
)

TARGET_RATIO = 0.10
INCREMENT_STEP = "recommendations_increment"


def day_file(data_dir: Path, events: int, seed: int, day_events: int) -> Path:
    """The cached next-day file of ``day_events`` events after the log in ``data_dir``."""
    folder = data_dir / f"next-day-{day_events}"
    existing = sorted(folder.glob("day-*.csv"))
    if existing:
        return existing[0]
    return generate_next_day(GeneratorConfig.scaled(events, seed), data_dir / "events.csv", day_events, folder)


def timed_run(
    job_name: str, instance, sampler: RssSampler, run_dir: Path, partition_key: str | None = None
) -> tuple[PipelineRun, object]:
    """One in-process run of ``job_name`` with wall time and per-step time and peak RSS."""
    from recsys_dagster.definitions import defs

    started = time.time()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, partition_key=partition_key, run_config=QUIET_LOGS, raise_on_error=False
    )
    wall = time.time() - started
    stages = [
        StageFigure(
            key, key, round(end - start, 2), round(sampler.peak_between(start, end) / GIB, 3), round(start - started, 2)
        )
        for key, (start, end) in step_intervals(instance, result.run_id).items()
    ]
    run = PipelineRun(
        success=result.success,
        run_id=result.run_id,
        wall_seconds=round(wall, 2),
        peak_rss_gib=round(max((stage.peak_rss_gib for stage in stages), default=0.0), 3),
        stages=stages,
        failures=[event.message or "" for event in result.all_events if event.is_failure],
        run_dir=str(run_dir),
    )
    return run, result


def drop_into_inbox(source: Path, inbox: Path) -> Path:
    """The day's file in the inbox, marked fully written (``<name>.done``) as an uploader would."""
    target = inbox / source.name
    os.link(source, target)
    (inbox / f"{source.name}.done").write_text("")
    return target


def invariant_violations(run_dir: Path) -> list[str]:
    """The contract's invariants on the serving file after the increment (empty = all hold)."""
    from recsys_dagster.models.registry import unavailable_items
    from recsys_dagster.publish.serving import Forbidden, check_invariants

    with duckdb.connect(str(run_dir / "warehouse.duckdb"), read_only=True) as con:
        purchased = con.execute(
            "SELECT user_id, item_id FROM fct_user_item_interactions WHERE n_transactions > 0 OR n_ratings > 0"
        ).df()
        unavailable = unavailable_items(con)
    with duckdb.connect(str(run_dir / "serving.duckdb"), read_only=True) as con:
        return [violation.name for violation in check_invariants(con, Forbidden(purchased, unavailable))]


def run_benchmark(events: int, seed: int, day_events: int, scratch: Path) -> dict:
    """Full refresh, then the sensor's incremental run of the next day; both measured."""
    from dagster import DagsterInstance, build_sensor_context

    data_dir = dataset_dir(scratch, events, seed)
    day = day_file(data_dir, events, seed, day_events)
    run_dir = fresh_run_dir(scratch / "incremental", events)
    link_inputs(data_dir, run_dir / "input_dir")
    load_before = load_average()
    with environment(pipeline_environment(run_dir)):
        from recsys_dagster.automation.sensors import inbox_sensor
        from recsys_dagster.ingest.assets import INPUT_FILES

        with DagsterInstance.ephemeral() as instance, RssSampler().running() as sampler:
            full, _ = timed_run("refresh_recommendations", instance, sampler, run_dir)
            drop_into_inbox(day, run_dir / "inbox_dir")
            [request] = inbox_sensor(build_sensor_context(instance=instance)).run_requests
            instance.add_dynamic_partitions(INPUT_FILES.name, [request.partition_key])
            incremental, result = timed_run(request.job_name, instance, sampler, run_dir, request.partition_key)
    [materialization] = result.asset_materializations_for_node(INCREMENT_STEP) if incremental.success else [None]
    return {
        "events": events,
        "seed": seed,
        "day_file": str(day),
        "day_events": sum(1 for _ in day.open()) - 1,
        "requested_job": request.job_name,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_before": load_before,
        "load_after": load_average(),
        "full_refresh": asdict(full),
        "incremental": asdict(incremental),
        "ratio": round(incremental.wall_seconds / full.wall_seconds, 4),
        "increment": {name: value.value for name, value in materialization.metadata.items()} if materialization else {},
        "invariant_violations": invariant_violations(run_dir) if incremental.success else ["run failed"],
    }


def stage_rows(run: dict) -> str:
    return "\n".join(
        f"| `{stage['step_key']}` | {stage['seconds']:.1f} | {stage['seconds'] / run['wall_seconds']:.0%} "
        f"| {stage['peak_rss_gib']:.2f} |"
        for stage in run["stages"]
    )


def markdown_report(report: dict) -> str:
    full, incremental, inc = report["full_refresh"], report["incremental"], report["increment"]
    inner = ", ".join(f"{name.removesuffix('_s')} {inc[name]:.1f} s" for name in inc if name.endswith("_s"))
    met = "**yes**" if report["ratio"] <= TARGET_RATIO else "**no**"
    return f"""# Incremental refresh benchmark: {report['events']:,} events + one day of {report['day_events']:,}

Command: `python -m bench.incremental --events {report['events']} --seed {report['seed']}`  
Machine: {report['machine']}; load average (1, 5, 15 min) before {report['load_before']}, after {report['load_after']} (shared machine: expect noise; the ratio is measured in one process, one run after the other).  
The sensor requested `{report['requested_job']}` for `{Path(report['day_file']).name}`.

| run | wall s | peak RSS GiB |
|---|---:|---:|
| full refresh (`refresh_recommendations`, the nightly run) | {full['wall_seconds']:.1f} | {full['peak_rss_gib']:.2f} |
| incremental (`incremental_refresh`, one new day) | {incremental['wall_seconds']:.1f} | {incremental['peak_rss_gib']:.2f} |
| **ratio incremental / full** (target <= {TARGET_RATIO:.2f}) | **{report['ratio']:.3f}** | met: {met} |

The increment republished {inc.get('users_updated', 0):,} users ({inc.get('model_users', 0):,} scored by
{inc.get('model', '?')}, the rest by the fallback), replacing {inc.get('rows_deleted', 0):,} rows by
{inc.get('rows_inserted', 0):,} (table: {inc.get('dagster/row_count', 0):,} rows). Inside its step: {inner}.
Contract invariants after the increment: {', '.join(report['invariant_violations']) or 'all hold'}.

## Incremental run per step

| Dagster step | wall s | share | peak RSS GiB |
|---|---:|---:|---:|
{stage_rows(incremental)}

## Full refresh per step

| Dagster step | wall s | share | peak RSS GiB |
|---|---:|---:|---:|
{stage_rows(full)}
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.incremental", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, required=True, help="events of the base log")
    parser.add_argument("--day-events", type=int, default=None, help="events of the new day (default: N / 138 days)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    day_events = args.day_events or max(1, round(args.events / cal.WINDOW_DAYS))
    report = run_benchmark(args.events, args.seed, day_events, args.scratch)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"incremental-{args.events}.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = markdown_report(report)
    (args.results / f"incremental-{args.events}.md").write_text(markdown)
    print(markdown)
    if not (report["full_refresh"]["success"] and report["incremental"]["success"]):
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
