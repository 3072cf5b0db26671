"""Every file of the bad-input corpus, through the real ingest + validate run, gets its recorded outcome.

Quarantine: the run succeeds, the file's rows are split exactly as MANIFEST.yaml says, every raw row
is accounted for, and the baseline's rows keep their fate. Reject: the run fails with an error
naming the file and the problem, every table is exactly as before, and the next run skips the file.
"""

from __future__ import annotations

import re
import shutil

import pytest
from dagster import AssetKey

from fault_env import CORPUS_DIR, FaultEnv, failure_text, load_manifest

MANIFEST = load_manifest()


def stage(env: FaultEnv, case: dict) -> list[str]:
    """Put the case's files where the run will meet them; returns the configured files (if any)."""
    source = CORPUS_DIR / case["file"]
    setup = case.get("setup")
    for extra in case.get("together_with", []):
        shutil.copy(CORPUS_DIR / extra, env.inbox / extra)
    if setup == "configured_outside":
        shutil.copy(source, env.outside / source.name)
        return [str(env.outside / source.name)]
    if setup == "symlink_outside":
        shutil.copy(source, env.outside / source.name)
        (env.inbox / case["stage_as"]).symlink_to(env.outside / source.name)
        return []
    shutil.copy(source, env.inbox / case.get("stage_as", source.name))
    return []


def metadata_of(result, key: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return {name: value.value for name, value in event.materialization.metadata.items()}


def new_rows(env: FaultEnv, table: str, columns: str = "count(*)") -> list[tuple]:
    """``columns`` (aggregates, grouped by the other columns) over the rows of ``table`` that do not
    come from the baseline file."""
    sql = f"SELECT {columns} FROM main.{table} WHERE source_file <> ? GROUP BY ALL"
    return env.query(sql, [env.baseline.sample_path])


def baseline_routing(env: FaultEnv) -> list[tuple]:
    """Where every baseline row went (validated or the quarantine reason), in row order."""
    return env.query(
        "SELECT source_row, 'validated' FROM main.validated_interactions WHERE source_file = ? "
        "UNION ALL SELECT source_row, reason FROM main.quarantined_events WHERE source_file = ? ORDER BY 1",
        [env.baseline.sample_path, env.baseline.sample_path],
    )


def assert_rows_present(env: FaultEnv, table: str, expected: list[dict]) -> None:
    """Each expected row (a column subset) exists among the non-baseline rows of ``table``."""
    for row in expected:
        conditions, params = ["source_file <> ?"], [env.baseline.sample_path]
        for column, value in row.items():
            if isinstance(value, dict):
                conditions.append(f"length({column}) = ?")
                params.append(value["length"])
            else:
                conditions.append(f"{column}::VARCHAR = ?::{'DOUBLE' if isinstance(value, float) else 'VARCHAR'}::VARCHAR")
                params.append(value)
        found = env.query(f"SELECT count(*) FROM main.{table} WHERE {' AND '.join(conditions)}", params)[0][0]
        assert found >= 1, f"{table} lacks a row with {row}"


def assert_quarantine_outcome(env: FaultEnv, case: dict, result, routing_before: list[tuple]) -> None:
    assert result.success, failure_text(result)
    assert new_rows(env, "raw_events")[0][0] == case["raw_rows"]
    assert new_rows(env, "validated_interactions")[0][0] == case["validated"]
    reasons = dict(new_rows(env, "quarantined_events", "reason, count(*)"))
    assert reasons == case["reasons"]
    raw, validated, quarantined = env.query(
        "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM validated_interactions), "
        "(SELECT count(*) FROM quarantined_events)"
    )[0]
    assert raw == validated + quarantined
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["row_accounting"] and all(checks.values()), checks
    assert baseline_routing(env) == routing_before, "a new file changed the fate of rows already routed"
    staged = case.get("stage_as", case["file"])
    statuses = env.query("SELECT status FROM main.ingested_files WHERE file_name = ?", [staged])
    assert [s for (s,) in statuses] == ([] if case.get("ledger") == "absent" else [case.get("ledger", "loaded")])
    assert_rows_present(env, "validated_interactions", case.get("expect_validated", []))
    assert_rows_present(env, "raw_items", case.get("expect_items", []))


def assert_reject_outcome(env: FaultEnv, case: dict, result, before: dict, files: list[str]) -> None:
    assert not result.success, "a rejected file must fail the run"
    message = failure_text(result)
    assert re.search(case["error"], message, re.DOTALL), message
    assert env.fingerprints() == before, "a rejected file changed the tables"
    if not case.get("rerun_skips", True):
        assert not env.run(files).success, "a configuration error fails every run"
        return
    rerun = env.run(files)
    assert rerun.success, failure_text(rerun)
    ingest_metadata = metadata_of(rerun, "raw_events")
    assert ingest_metadata["files_rejected"] == 1 and "rejected_earlier" in ingest_metadata["files"]
    assert env.fingerprints() == before, "the skipped file changed the tables"


@pytest.mark.parametrize("case", MANIFEST, ids=[case["file"] for case in MANIFEST])
def test_bad_input_gets_its_recorded_outcome(fault_env: FaultEnv, case: dict) -> None:
    files = stage(fault_env, case)
    before = fault_env.fingerprints()
    routing_before = baseline_routing(fault_env)

    result = fault_env.run(files)

    if case["outcome"] == "quarantine":
        assert_quarantine_outcome(fault_env, case, result, routing_before)
    else:
        assert case["outcome"] == "reject"
        assert_reject_outcome(fault_env, case, result, before, files)


def test_corpus_is_complete_and_every_file_has_an_outcome() -> None:
    listed = {case["file"] for case in MANIFEST} | {f for case in MANIFEST for f in case.get("together_with", [])}
    on_disk = {path.name for path in CORPUS_DIR.iterdir()} - {"MANIFEST.yaml", "make_corpus.py"}
    assert listed == on_disk
    assert len(MANIFEST) >= 30
    assert {case["outcome"] for case in MANIFEST} == {"quarantine", "reject"}
    for case in MANIFEST:  # a rejection's expected error names the file as the run sees it
        if case["outcome"] == "reject":
            assert re.escape(case.get("stage_as", case["file"])) in case["error"], case["file"]


def test_a_rejected_file_fails_one_run_then_blocks_nothing(fault_env: FaultEnv) -> None:
    """The policy: first sight fails the run (nothing loaded), then the file is skipped, until fixed."""
    shutil.copy(CORPUS_DIR / "png_named_csv.csv", fault_env.inbox / "export.csv")
    shutil.copy(CORPUS_DIR / "gzip_compressed.csv.gz", fault_env.inbox / "good.csv.gz")
    before = fault_env.fingerprints()

    first = fault_env.run()
    assert not first.success and "export.csv: binary content" in failure_text(first)
    assert fault_env.fingerprints() == before  # the good file waits: a failed run changes nothing
    [(name, hashed, error)] = fault_env.query("SELECT file_name, sha256 IS NOT NULL, error FROM main.rejected_files")
    assert (name, hashed) == ("export.csv", True) and "binary content" in error

    second = fault_env.run()
    assert second.success
    assert metadata_of(second, "raw_events")["files_rejected"] == 1
    assert dict(new_rows(fault_env, "raw_events", "regexp_extract(source_file, '[^/]+$'), count(*)")) == {
        "good.csv.gz": 20
    }

    shutil.copy(CORPUS_DIR / "semicolon_delimiter.csv", fault_env.inbox / "export.csv")  # a fixed re-export
    third = fault_env.run()
    assert third.success
    assert metadata_of(third, "raw_events")["files_rejected"] == 0
    assert dict(new_rows(fault_env, "raw_events", "regexp_extract(source_file, '[^/]+$'), count(*)")) == {
        "good.csv.gz": 20, "export.csv": 6
    }
