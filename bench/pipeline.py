"""Benchmark of the real pipeline: the same Dagster job, in-process, on generated data of a given size.

Usage: ``python -m bench.pipeline --events N [--seed S] [--scratch DIR] [--no-compare] [--results DIR]``.

1. ``bench.generate`` writes a RetailRocket-shaped ``events.csv`` + ``items.csv`` of N events into a
   cache folder outside the repo (``$RECSYS_BENCH_DIR``, default ``/tmp/recsys-bench``), keyed by size
   and seed, so repeated runs reuse it.
2. Every ``RECSYS_*`` path points into a fresh run folder beside it (the warehouse keeps its name
   ``warehouse.duckdb``: dbt-duckdb bakes the catalog name into the manifest), the files are
   hard-linked into its input folder, and ``refresh_recommendations`` runs with ``execute_in_process``
   on an ephemeral instance: exactly what the schedule runs, minus the daemon.
3. Per stage (one Dagster step each): wall time from the STEP_START -> STEP_SUCCESS timestamps of the
   run's event log; peak RSS from a background thread that samples this process plus its children
   (dbt runs in a subprocess) every ``SAMPLE_SECONDS`` from ``/proc``, each sample attributed to the
   step running at its timestamp. The run's overall peak also comes from ``getrusage`` (kernel
   high-water mark, no sampling gap).
4. ``bench.compare`` then measures, in the same process and on the same files, the reference
   figures the issue's targets are ratios of (see that module).

Writes ``bench/results/pipeline-N.json`` and ``pipeline-N.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path


from bench.generate import GeneratorConfig, generate
from recsys_dagster.settings import ENV_DEFAULTS, PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"
DEFAULT_SCRATCH = Path(os.environ.get("RECSYS_BENCH_DIR", "/tmp/recsys-bench"))
SAMPLE_SECONDS = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
GIB = 1024**3
#: Dagster's console logger at WARNING: the DEBUG event stream would drown the printed table.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

#: Dagster step key -> the stage name reported (issue 4's list); model steps are "train <model>".
STAGE_NAMES: dict[str, str] = {
    "ingest": "ingest",
    "validate_interactions": "validate",
    "recsys_dbt_assets": "dbt",
    "model_evaluation": "evaluate",
    "publish_recommendations": "publish (score + write)",
}


def stage_name(step_key: str) -> str:
    """The reported stage of a Dagster step: a fixed name, "train <model>", or the step key itself."""
    if step_key in STAGE_NAMES:
        return STAGE_NAMES[step_key]
    if step_key.endswith("_model"):
        return "train " + step_key.removesuffix("_model")
    return step_key


# --- data ---------------------------------------------------------------------------------------


def dataset_dir(scratch: Path, events: int, seed: int) -> Path:
    """The cached generated log of ``events`` events (generated once per size and seed)."""
    target = scratch / f"data-{events}-seed{seed}"
    if not (target / "events.csv").is_file() or not (target / "items.csv").is_file():
        generate(GeneratorConfig.scaled(events, seed), target)
    return target


def fresh_run_dir(scratch: Path, events: int) -> Path:
    """An empty folder for one run's warehouse, serving file, models and published files."""
    run_dir = scratch / f"run-{events}"
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "input_dir").mkdir(parents=True)
    (run_dir / "inbox_dir").mkdir()
    return run_dir


def link_inputs(data_dir: Path, input_dir: Path) -> list[Path]:
    """Hard-link (or copy across filesystems) the generated files into the run's input folder."""
    linked = []
    for source in (data_dir / "events.csv", data_dir / "items.csv"):
        target = input_dir / source.name
        try:
            os.link(source, target)
        except OSError:
            shutil.copy(source, target)
        linked.append(target)
    return linked


def pipeline_environment(run_dir: Path) -> dict[str, str]:
    """Every ``RECSYS_*`` path inside ``run_dir`` (same layout as the tests' ``isolate_pipeline``)."""
    env = {name: str(run_dir / name.removeprefix("RECSYS_").lower()) for name in ENV_DEFAULTS}
    env["RECSYS_DUCKDB_PATH"] = str(run_dir / "warehouse.duckdb")
    env["RECSYS_SERVING_PATH"] = str(run_dir / "serving.duckdb")
    return env


# --- memory sampling ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
    except (OSError, IndexError):
        return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants (dbt is a child process)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        total += _rss_bytes(current)
        pending.extend(_children(current))
    return total


@dataclass
class RssSampler:
    """Samples (time, tree RSS) of this process in a daemon thread until stopped."""

    interval: float = SAMPLE_SECONDS
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_rss_bytes(pid)))
            self._stop.wait(self.interval)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def peak_between(self, start: float, end: float) -> int:
        """Peak RSS sampled in [start, end]; a step shorter than the sampling interval gets the nearest sample."""
        inside = [rss for t, rss in self.samples if start <= t <= end]
        if inside or not self.samples:
            return max(inside, default=0)
        return min(self.samples, key=lambda sample: min(abs(sample[0] - start), abs(sample[0] - end)))[1]


# --- the run ------------------------------------------------------------------------------------


@dataclass
class StageFigure:
    stage: str
    step_key: str
    seconds: float
    peak_rss_gib: float
    started_offset_s: float


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` for the block, restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def step_intervals(instance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key -> (start, end) epoch seconds from the run's STEP_START / STEP_SUCCESS|FAILURE events."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = record.timestamp
    return {key: (starts[key], ends[key]) for key in sorted(starts, key=starts.get) if key in ends}


@dataclass
class PipelineRun:
    success: bool
    run_id: str
    wall_seconds: float
    peak_rss_gib: float
    stages: list[StageFigure]
    failures: list[str]
    run_dir: str


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, recorded beside every figure (the machine is shared)."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def run_pipeline(run_dir: Path) -> PipelineRun:
    """Run ``refresh_recommendations`` in-process on ``run_dir``'s files, sampling memory per step."""
    from dagster import DagsterInstance

    with environment(pipeline_environment(run_dir)):
        from recsys_dagster.definitions import defs

        job = defs.resolve_job_def("refresh_recommendations")
        with DagsterInstance.ephemeral() as instance, RssSampler().running() as sampler:
            started = time.time()
            result = job.execute_in_process(instance=instance, run_config=QUIET_LOGS, raise_on_error=False)
            wall = time.time() - started
            intervals = step_intervals(instance, result.run_id)
    stages = [
        StageFigure(
            stage=stage_name(key),
            step_key=key,
            seconds=round(end - start, 2),
            peak_rss_gib=round(sampler.peak_between(start, end) / GIB, 3),
            started_offset_s=round(start - started, 2),
        )
        for key, (start, end) in intervals.items()
    ]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return PipelineRun(
        success=result.success,
        run_id=result.run_id,
        wall_seconds=round(wall, 2),
        peak_rss_gib=round(max(peak_kib * 1024, max((rss for _, rss in sampler.samples), default=0)) / GIB, 3),
        stages=stages,
        failures=[event.message or "" for event in result.all_events if event.is_failure],
        run_dir=str(run_dir),
    )


#: Sizes read from the run's warehouse and serving file (the compare targets use the last two).
SIZE_QUERIES: dict[str, str] = {
    "raw_events": "SELECT count(*) FROM wh.main.raw_events",
    "validated_interactions": "SELECT count(*) FROM wh.main.validated_interactions",
    "users": "SELECT count(*) FROM wh.main.dim_users",
    "items": "SELECT count(*) FROM wh.main.dim_items",
    "user_item_pairs": "SELECT count(*) FROM wh.main.fct_user_item_interactions",
    "users_with_2_items": "SELECT count(*) FROM (SELECT user_id FROM wh.main.fct_user_item_interactions"
    " GROUP BY user_id HAVING count(*) >= 2)",
    "published_recommendations": "SELECT count(*) FROM serving.recs.user_recommendations",
    "eligible_users_without_recs": "SELECT count(*) FROM (SELECT user_id FROM wh.main.fct_user_item_interactions"
    " GROUP BY user_id HAVING count(*) >= 2) ANTI JOIN serving.recs.user_recommendations USING (user_id)",
}


def warehouse_sizes(run_dir: Path) -> dict[str, int]:
    """Row counts of the run's main tables, read-only."""
    import duckdb

    with duckdb.connect() as con:
        con.execute("ATTACH $path AS wh (READ_ONLY)", {"path": str(run_dir / "warehouse.duckdb")})
        con.execute("ATTACH $path AS serving (READ_ONLY)", {"path": str(run_dir / "serving.duckdb")})
        return {name: int(con.execute(sql).fetchall()[0][0]) for name, sql in SIZE_QUERIES.items()}


TABLE_METHOD = """Wall time per stage: STEP_START -> STEP_SUCCESS timestamps of the run's Dagster event log; total =
`execute_in_process` wall time. Peak RSS per stage: a background thread samples the resident memory of
this process and its children (dbt runs as a subprocess) every 50 ms from /proc
and attributes each sample to the step running at that moment; the total's peak is the kernel's
`getrusage` high-water mark (no sampling gap)."""


def stage_table(run: PipelineRun) -> str:
    """Markdown table: one row per Dagster step, then the total."""
    lines = [
        "| stage | Dagster step | wall s | share of total | peak RSS GiB |",
        "|---|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {s.stage} | `{s.step_key}` | {s.seconds:.1f} | {s.seconds / run.wall_seconds:.0%} | {s.peak_rss_gib:.2f} |"
        for s in run.stages
    )
    lines.append(f"| **total** | | **{run.wall_seconds:.1f}** | 100% | **{run.peak_rss_gib:.2f}** |")
    return "\n".join(lines)


def markdown_report(report: dict) -> str:
    run = PipelineRun(**{**report["pipeline"], "stages": [StageFigure(**s) for s in report["pipeline"]["stages"]]})
    parts = [
        f"# Pipeline benchmark: {report['events']:,} events\n",
        f"Command: `python -m bench.pipeline --events {report['events']} --seed {report['seed']}`  ",
        f"Machine: {report['machine']}; load average (1, 5, 15 min) before {report['load_before']}, "
        f"after {report['load_after']} (shared with other engineers' test runs: expect noise).  ",
        f"Data: {', '.join(f'{k} {v:,}' for k, v in report['sizes'].items())}.  ",
        TABLE_METHOD + "\n",
        stage_table(run),
    ]
    if report.get("comparisons"):
        from bench.compare import comparisons_markdown

        parts.append("\n" + comparisons_markdown(report["comparisons"]))
    if report.get("targets"):
        parts.append("\n## Targets of issue 4\n")
        parts.append("| target | measured | met |\n|---|---|---|")
        parts.extend(f"| {t['target']} | {t['measured']} | {t['met']} |" for t in report["targets"])
    return "\n".join(parts) + "\n"


def growth_table(results_dir: Path) -> str:
    """One column per committed ``pipeline-N.json``: seconds per stage and in total, to read growth."""
    reports = sorted(
        (json.loads(path.read_text()) for path in results_dir.glob("pipeline-*.json")), key=lambda r: r["events"]
    )
    stages = list(dict.fromkeys(s["stage"] for r in reports for s in r["pipeline"]["stages"]))
    header = "| stage | " + " | ".join(f"{r['events']:,} events" for r in reports) + " |"
    lines = [header, "|---|" + "---:|" * len(reports)]
    for stage in stages:
        cells = []
        for report in reports:
            found = [s for s in report["pipeline"]["stages"] if s["stage"] == stage]
            cells.append(f"{found[0]['seconds']:.1f} s / {found[0]['peak_rss_gib']:.2f} GiB" if found else "-")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(
        f"**{r['pipeline']['wall_seconds']:.0f} s / {r['pipeline']['peak_rss_gib']:.2f} GiB**" for r in reports
    ) + " |")
    lines.append("| load average before (1 min) | " + " | ".join(r["load_before"].split(",")[0] for r in reports) + " |")
    return "\n".join(lines)


def write_results(results_dir: Path, stem: str, report: dict, markdown: str) -> None:
    """``<stem>.json`` and ``<stem>.md`` in ``results_dir`` (the figures and their reading); the markdown is printed."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (results_dir / f"{stem}.md").write_text(markdown)
    print(markdown)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, help="events to generate and run on")
    parser.add_argument("--summary", action="store_true", help="print the growth table of the committed results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=DEFAULT_SCRATCH, help="cache + run folder (outside the repo)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where pipeline-N.json/.md go")
    parser.add_argument("--no-compare", action="store_true", help="skip the reference measurements of bench.compare")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.summary:
        print(growth_table(args.results))
        return {}
    if args.events is None:
        raise SystemExit("--events N is required (or --summary)")
    args.scratch.mkdir(parents=True, exist_ok=True)
    load_before = load_average()
    generated = time.perf_counter()
    data_dir = dataset_dir(args.scratch, args.events, args.seed)
    generate_seconds = time.perf_counter() - generated
    run_dir = fresh_run_dir(args.scratch, args.events)
    link_inputs(data_dir, run_dir / "input_dir")
    run = run_pipeline(run_dir)
    if not run.success:
        raise SystemExit("pipeline run failed:\n" + "\n".join(run.failures))
    report = {
        "events": args.events,
        "seed": args.seed,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "load_before": load_before,
        "data_dir": str(data_dir),
        "generate_or_cache_seconds": round(generate_seconds, 2),
        "sizes": warehouse_sizes(run_dir),
        "pipeline": asdict(run),
    }
    if not args.no_compare:
        from bench.compare import run_comparisons, target_status

        report["comparisons"] = run_comparisons(data_dir, run_dir, report["pipeline"])
        report["targets"] = target_status(report)
    report["load_after"] = load_average()
    write_results(args.results, f"pipeline-{args.events}", report, markdown_report(report))
    return report


if __name__ == "__main__":
    main()
