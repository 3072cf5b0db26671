"""The inbox sensor: a new, fully written event file becomes a partition and triggers one run that
ingests exactly that file: the incremental refresh of the users who acted in it once a publication
exists, the full refresh before that.

Files are keyed by name, size and modification time. A file is "settled" (no longer being written)
when it is older than ``RECSYS_INBOX_SETTLE_SECONDS`` or has a ``<name>.done`` marker beside it;
hidden files and ``*.tmp`` / ``*.part`` uploads are ignored. The cursor remembers every key already
requested, and each run request's ``run_key`` is the same key, so Dagster itself refuses to launch a
file twice; ingestion also de-duplicates by content hash, so even a renamed copy adds no rows.
Each file is added as a partition of the ingest assets (``INPUT_FILES``, keyed by file name) and the
run targets that partition: the run list and the partition view show which file each run loaded, and
the same partition can be re-run later. Which job a file gets is decided when it is seen
(``full_refresh_reason``): ``incremental_refresh`` when the live serving file was published from a
champion whose users can be refitted alone (ALS, repeat-aware) and its serving fit is on disk,
``refresh_recommendations`` otherwise (the first file, another champion, a missing fit, a serving
file DuckDB cannot read), with the reason logged and in the runs' tag ``recsys/full_refresh_reason``.
The nightly schedule always runs the full refresh. A file whose name Dagster refuses as a partition
key (it contains "..." or a control character) is skipped with a message asking to rename it.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from recsys_dagster import settings
from recsys_dagster.automation.jobs import incremental_refresh, refresh_recommendations
from recsys_dagster.ingest.assets import INPUT_FILES, is_listable_partition_key
from recsys_dagster.ingest.files import is_data_file_name
from recsys_dagster.publish.incremental import full_refresh_reason

DONE_SUFFIX = ".done"
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")


@dataclass(frozen=True)
class InboxFile:
    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return f"{self.path.name}:{self.size}:{self.mtime_ns}"


def settle_seconds() -> float:
    return float(os.environ.get("RECSYS_INBOX_SETTLE_SECONDS", "10"))


def _is_candidate(path: Path, inbox: Path) -> bool:
    """An input file directly in the inbox, not hidden, not an upload in progress, not escaping it."""
    name = path.name
    if name.startswith(".") or name.endswith(PARTIAL_SUFFIXES) or name.endswith(DONE_SUFFIX):
        return False
    return path.is_file() and path.resolve().parent == inbox.resolve() and is_data_file_name(name)


def settled_files(inbox: Path, now: float, settle: float) -> list[InboxFile]:
    """Inbox files that are completely written: marked ``.done`` or untouched for ``settle`` seconds."""
    if not inbox.is_dir():
        return []
    found = []
    for path in sorted(inbox.iterdir()):
        if not _is_candidate(path, inbox):
            continue
        stat = path.stat()
        marked = path.with_name(path.name + DONE_SUFFIX).exists()
        if marked or now - stat.st_mtime >= settle:
            found.append(InboxFile(path.resolve(), stat.st_size, stat.st_mtime_ns))
    return found


#: Run tag of a full refresh the sensor chose: why the incremental refresh could not take the file.
FULL_REFRESH_TAG = "recsys/full_refresh_reason"


def run_request_for(file: InboxFile, job_name: str, tags: dict[str, str]) -> RunRequest:
    """One run of ``job_name`` on the file's partition: its ingest step loads exactly this file."""
    return RunRequest(
        run_key=file.key, job_name=job_name, partition_key=file.path.name,
        tags={"recsys/inbox_file": file.path.name, **tags},
    )


def job_for_new_files(context: SensorEvaluationContext) -> tuple[str, dict[str, str]]:
    """The incremental refresh when the live publication allows one, else the full refresh and why:
    logged, and tagged on its runs (``FULL_REFRESH_TAG``), where it outlasts the sensor's tick log
    and the cause itself (an unreadable serving file is replaced by the full refresh's new one)."""
    reason = full_refresh_reason(settings.serving_path(), settings.models_dir())
    if reason is None:
        return incremental_refresh.name, {}
    context.log.info(f"full refresh: {reason}")
    return refresh_recommendations.name, {FULL_REFRESH_TAG: reason}


@sensor(
    name="inbox_sensor",
    jobs=[refresh_recommendations, incremental_refresh],
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.STOPPED,
    description="Ingest each new, fully written file dropped into RECSYS_INBOX_DIR, once, and republish: "
    "incrementally (its users only) once a publication exists, else the full refresh.",
)
def inbox_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    seen: set[str] = set(json.loads(context.cursor)) if context.cursor else set()
    new = [f for f in settled_files(settings.inbox_dir(), time.time(), settle_seconds()) if f.key not in seen]
    for file in new:
        if not is_listable_partition_key(file.path.name):
            context.log.warning(f"{file.path.name}: skipped, its name cannot be a partition key (rename it)")
    fresh = [f for f in new if is_listable_partition_key(f.path.name)]
    if not fresh:
        return SkipReason(f"no new settled file in {settings.inbox_dir()}")
    context.log.info(f"new inbox files: {[f.path.name for f in fresh]}")
    job_name, tags = job_for_new_files(context)
    return SensorResult(
        run_requests=[run_request_for(f, job_name, tags) for f in fresh],
        dynamic_partitions_requests=[INPUT_FILES.build_add_request(sorted({f.path.name for f in fresh}))],
        cursor=json.dumps(sorted(seen | {f.key for f in fresh})),
    )
