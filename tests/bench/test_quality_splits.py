"""bench.quality's YooChoose timeline: its validation window must be built like its test window."""

from __future__ import annotations

from pathlib import Path

import duckdb

from bench.quality import YOOCHOOSE

TRAIN_SESSIONS = 10  # sessions 1..10, session s starts at hour s; its four clicks are a minute apart
TEST_SESSIONS = 2  # sessions 101, 102 (four clicks each) start after every train click


def write_clicks(folder: Path) -> Path:
    """A tiny YooChoose sample: train_full and test files with the real files' columns."""
    base = 1_396_000_000
    train = [(s, 1000 + click, base + 3600 * s + 60 * click) for s in range(1, TRAIN_SESSIONS + 1) for click in range(4)]
    test = [(s, 2000 + click, base + 3600 * 20 + 60 * click + s) for s in (101, 102) for click in range(4)]
    for name, rows in (("train_full", train), ("test", test)):
        lines = ["SessionId\tItemId\tTime", *(f"{s}\t{item}\t{time}.0" for s, item, time in rows)]
        (folder / f"yoochoose-clicks-100k_{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_yoochoose_validation_sessions_are_split_like_the_test_sessions(tmp_path: Path) -> None:
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE events AS {YOOCHOOSE.events_sql}", {"path": str(write_clicks(tmp_path))})
        cutoff = con.execute(f"SELECT {YOOCHOOSE.cutoff_sql}").fetchone()[0]
        blocks = con.execute(
            """
            SELECT user_id, item_id, event_time,
                   CASE WHEN user_id LIKE 'test-%' THEN 'test' ELSE 'train' END AS kind,
                   CAST(split_part(user_id, '-', 2) AS INTEGER) AS session, CAST(item_id AS INTEGER) % 1000 < 2 AS first_half
            FROM events
            """
        ).df()
    assert len(blocks) == 4 * (TRAIN_SESSIONS + TEST_SESSIONS)
    # the late sessions start at or after the 0.8 quantile of starts (quantile_disc: the eighth of ten)
    late = blocks[(blocks["kind"] == "train") & (blocks["session"] >= 8)]
    early = blocks[(blocks["kind"] == "train") & (blocks["session"] < 8)]
    test = blocks[blocks["kind"] == "test"]
    # in time: early train sessions < test first halves < late first halves < late second halves < cutoff
    # < test second halves
    assert early["event_time"].max() < test.loc[test["first_half"], "event_time"].min()
    assert test.loc[test["first_half"], "event_time"].max() < late.loc[late["first_half"], "event_time"].min()
    assert late.loc[late["first_half"], "event_time"].max() < late.loc[~late["first_half"], "event_time"].min()
    assert late["event_time"].max() < cutoff == test.loc[~test["first_half"], "event_time"].min()
    # every session keeps its click order
    ordered = blocks.sort_values("event_time").groupby("user_id")["item_id"].apply(list)
    assert all(items == sorted(items) for items in ordered)
