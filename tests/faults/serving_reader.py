"""A reader of the serving file, run as its own process while publishes swap the file underneath it.

``python serving_reader.py SERVING STOP_FILE REPORT_JSON``: until STOP_FILE exists, open SERVING
read-only (a new connection each time, as a service would), read recs.user_recommendations and check
what a reader relies on (touching REPORT_JSON with suffix ``.ready`` after the first read): one model_version, ranks 1..n without gaps for every user, and the complete
version -- every version the test publishes is named ``<id>-users<N>-per<K>``, so the reader knows
how many users and rows that version has. Writes what it saw to REPORT_JSON.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import duckdb

VERSION_PATTERN = re.compile(r".*-users(\d+)-per(\d+)$")
READ_SQL = """
    SELECT count(DISTINCT model_version), min(model_version), count(DISTINCT user_id), count(*),
           (SELECT count(*) FROM (
                SELECT user_id FROM recs.user_recommendations GROUP BY user_id
                HAVING min(rank) <> 1 OR max(rank) <> count(*) OR count(DISTINCT rank) <> count(*)))
    FROM recs.user_recommendations
"""


def problems_of(row: tuple) -> list[str]:
    n_versions, version, n_users, n_rows, gappy_users = row
    problems = []
    if n_versions != 1:
        problems.append(f"{n_versions} model versions in one read")
    if gappy_users:
        problems.append(f"{version}: {gappy_users} users with missing or repeated ranks")
    match = VERSION_PATTERN.match(version or "")
    if match is None:
        problems.append(f"unexpected version {version!r}")
    elif (n_users, n_rows) != (int(match[1]), int(match[1]) * int(match[2])):
        problems.append(f"{version}: partial version, {n_users} users and {n_rows} rows")
    return problems


def main(serving: Path, stop: Path, report: Path) -> None:
    reads, versions, problems = 0, [], []
    ready = report.with_suffix(".ready")
    while not stop.exists():
        try:
            with duckdb.connect(str(serving), read_only=True) as con:
                row = con.execute(READ_SQL).fetchone()
        except duckdb.Error as error:
            problems.append(f"read failed: {error}")
            continue
        reads += 1
        ready.touch()
        problems += problems_of(row)
        if not versions or versions[-1] != row[1]:
            versions.append(row[1])
        time.sleep(0.005)
    report.write_text(json.dumps({"reads": reads, "versions": versions, "problems": problems[:20]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
