"""Memory bench: a ~2 GB generated events file through ingest and validation, peak RSS per stage.

Usage: ``python -m bench.memory_ingest [--events 60000000] [--work DIR] [--memory-limit 4GB]
[--report bench/results/memory-ingest.md] [--keep]``.

Why separate processes: the generator, the ingest step and the validate step each run in their own
child process, and the peak resident set size of each is read from the kernel when the child exits
(``os.wait4`` -> ``ru_maxrss``), so the figure is the stage's own peak, not the largest of all, and
nothing the parent allocated is counted. A sampler also polls ``/proc/<pid>/status`` (VmRSS) every
0.2 s for the RSS timeline summary (``ru_maxrss`` is authoritative; the sampler can miss a spike).

Each stage is a real Dagster materialization (``dagster.materialize``) of the pipeline's own assets
against a DuckDB warehouse in ``--work``, with ``WarehouseResource`` configured as in production:
``RECSYS_DUCKDB_MEMORY_LIMIT`` (default 4GB) and a temp directory beside the warehouse.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from recsys_dagster import settings

#: ~60M RetailRocket-shaped events make a ~2 GB events.csv (about 34 bytes a line, measured).
DEFAULT_EVENTS = 60_000_000
DEFAULT_REPORT = settings.PROJECT_ROOT / "bench" / "results" / "memory-ingest.md"
SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class StageRun:
    """One child process: what it did, how long it took and how much memory it held at most."""

    name: str
    seconds: float
    peak_rss_bytes: int
    sampled_peak_rss_bytes: int
    returncode: int


def rss_of(pid: int) -> int:
    """Current resident set size of ``pid`` in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run_stage(name: str, argv: list[str], env: dict[str, str]) -> StageRun:
    """Run ``argv`` as a child, sample its RSS, and read its kernel-accounted peak when it exits."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=settings.PROJECT_ROOT)
    sampled = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            sampled[0] = max(sampled[0], rss_of(process.pid))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    run = StageRun(name, seconds, usage.ru_maxrss * 1024, sampled[0], process.returncode)
    print(f"{name}: {seconds:.1f} s, peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB, exit {run.returncode}", flush=True)
    return run


def materialize_stage(stage: str, work: Path) -> None:
    """Child-process body: materialize one pipeline stage against the bench warehouse."""
    from dagster import materialize

    from recsys_dagster.ingest.assets import ingest
    from recsys_dagster.resources import RecsysPaths, WarehouseResource
    from recsys_dagster.validate.assets import validate_interactions

    assets = {"ingest": [ingest], "validate": [validate_interactions]}[stage]
    resources = {
        "warehouse": WarehouseResource(database=str(work / "warehouse.duckdb")),
        "paths": RecsysPaths(
            input_dir=str(work / "input"),
            inbox_dir=str(work / "inbox"),
            models_dir=str(work / "models"),
            serving_path=str(work / "serving.duckdb"),
            published_dir=str(work / "published"),
        ),
    }
    result = materialize(assets, resources=resources, raise_on_error=False)
    if not result.success:
        raise SystemExit(f"{stage} failed: {[e.message for e in result.all_events if e.is_failure]}")


def table_counts(warehouse: Path) -> dict[str, int]:
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {
            table: int(con.execute(f"SELECT count(*) FROM main.{table}").fetchone()[0])
            for table in ("raw_events", "raw_items", "validated_interactions", "quarantined_events")
        }


def markdown_report(
    events: int, csv_bytes: int, memory_limit: str, runs: list[StageRun], counts: dict[str, int], warehouse_bytes: int
) -> str:
    rows = "\n".join(
        f"| {r.name} | {r.seconds:,.1f} | {r.peak_rss_bytes / 2**20:,.0f} | {r.sampled_peak_rss_bytes / 2**20:,.0f} "
        f"| {'ok' if r.returncode == 0 else f'FAILED ({r.returncode})'} |"
        for r in runs
    )
    table_rows = "\n".join(f"| {table} | {n:,} |" for table, n in counts.items())
    return f"""# Memory bench: a ~2 GB events file through ingest and validation

Command: `python -m bench.memory_ingest --events {events}` (machine: {os.cpu_count()} cores,
{_total_ram_gib():.0f} GiB RAM; DuckDB `memory_limit` = `{memory_limit}`, temp directory beside the warehouse).

Input: `events.csv` generated by `python -m bench.generate --events {events}`: {csv_bytes / 1e9:.2f} GB
({csv_bytes:,} bytes), plus its `items.csv` catalog. Warehouse afterwards: {warehouse_bytes / 1e9:.2f} GB.

Each stage is a separate process (a real Dagster materialization of the pipeline's asset); peak RSS
is the kernel's `ru_maxrss` of that process, the sampled peak polls `/proc/<pid>/status` every
{SAMPLE_SECONDS} s.

| stage | wall time (s) | peak RSS (MiB) | sampled peak RSS (MiB) | result |
|---|---|---|---|---|
{rows}

| table | rows |
|---|---|
{table_rows}

How to read it: DuckDB's buffer manager uses memory up to `memory_limit` before it spills to the temp
directory, so a stage's peak RSS is expected near that limit plus the Python process (~0.3 GB with
Dagster loaded) and, for validation, one GX partition of at most 1M rows (~1 GB of pandas objects).
The input size does not appear in the peak: that is the bound. Lower `RECSYS_DUCKDB_MEMORY_LIMIT`
to lower it (at the cost of more spilling).
"""


def _total_ram_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def run_bench(events: int, work: Path, report: Path) -> None:
    memory_limit = settings.duckdb_memory_limit()
    env = {**os.environ, settings.MEMORY_LIMIT_ENV: memory_limit}
    (work / "inbox").mkdir(parents=True, exist_ok=True)
    python = sys.executable
    runs = [run_stage("generate", [python, "-m", "bench.generate", "--events", str(events),
                                   "--out", str(work / "input")], env)]
    csv_bytes = (work / "input" / "events.csv").stat().st_size
    print(f"events.csv: {csv_bytes / 1e9:.2f} GB", flush=True)
    for stage in ("ingest", "validate"):
        runs.append(run_stage(stage, [python, "-m", "bench.memory_ingest", "--stage", stage, "--work", str(work)], env))
        if runs[-1].returncode != 0:
            break
    warehouse = work / "warehouse.duckdb"
    counts = table_counts(warehouse) if all(r.returncode == 0 for r in runs) else {}
    text = markdown_report(events, csv_bytes, memory_limit, runs, counts, warehouse.stat().st_size)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)
    print(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS)
    parser.add_argument("--work", type=Path, default=None, help="working directory (default: a temporary one)")
    parser.add_argument("--memory-limit", default=None, help=f"DuckDB memory_limit (default ${settings.MEMORY_LIMIT_ENV} or 4GB)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--stage", choices=("ingest", "validate"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_limit:
        os.environ[settings.MEMORY_LIMIT_ENV] = settings.validated_memory_limit(args.memory_limit)
    if args.stage:
        materialize_stage(args.stage, args.work)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="recsys-memory-bench-"))
    try:
        run_bench(args.events, work, args.report)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
