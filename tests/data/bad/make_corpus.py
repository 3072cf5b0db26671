"""Regenerate the bad-input corpus from small slices of the real shared datasets.

Run once by hand (``.venv/bin/python tests/data/bad/make_corpus.py``); the files it writes are
committed, and MANIFEST.yaml (written by hand) states the outcome each must get. Every file starts
from real rows (Taobao UserBehavior, Amazon Electronics ratings, REES46, UCI Online Retail) and
breaks them in exactly the way its name says. MovieLens is never used.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATASETS = Path(os.environ.get("RECSYS_SHARED_DATASETS") or HERE.parents[2].parent / "shared" / "datasets")
TAOBAO = DATASETS / "taobao_userbehavior/UserBehavior_tail10k_114users_fullhistory.csv"
AMAZON = DATASETS / "amazon_electronics_ratings/ratings_Electronics_head.csv"
REES46 = DATASETS / "rees46_multicategory_head/2019-Oct_head_0000-0249UTC.csv"
RETAIL = DATASETS / "online_retail/online_retail_head10k.csv"
RETAIL_NODATE = DATASETS / "online_retail/online_retail_head50k_nodate.csv"
TAOBAO_TO_CANONICAL = {"pv": "view", "cart": "addtocart", "fav": "addtocart", "buy": "transaction"}


def lines_of(path: Path, start: int, count: int) -> list[str]:
    """``count`` lines from 0-based line ``start`` (line 0 is the header where there is one)."""
    with path.open(encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle][start : start + count]


def taobao(count: int, start: int = 0) -> list[list[str]]:
    return [line.split(",") for line in lines_of(TAOBAO, start, count)]


def canonical(count: int, start: int = 0) -> list[list[str]]:
    """Taobao rows as canonical (user_id, item_id, event_type, event_time)."""
    return [[u, i, TAOBAO_TO_CANONICAL[b], t] for u, i, _, b, t in taobao(count, start)]


def csv_text(rows: list[list[str]], delimiter: str = ",", newline: str = "\n") -> str:
    return "".join(delimiter.join(row) + newline for row in rows)


def write(name: str, content: str | bytes) -> None:
    data = content.encode("utf-8") if isinstance(content, str) else content
    (HERE / name).write_bytes(data)


def png_bytes() -> bytes:
    """A valid 1x1 PNG image."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


CANONICAL_HEADER = ["user_id", "item_id", "event_type", "event_time"]


def ids_cases() -> None:
    rows = canonical(8)
    rows[1][0] = ""
    rows[3][0] = "NULL"
    rows[5][1] = "\\N"
    rows[6][1] = "   "
    write("missing_ids.csv", csv_text([CANONICAL_HEADER, *rows]))
    write("non_numeric_ids.csv", "\n".join(lines_of(AMAZON, 0, 7)) + "\n")


def timestamp_cases() -> None:
    rows = taobao(10)
    rows[0][4] = "-" + rows[0][4]
    rows[4][4] = "-5"
    write("negative_timestamps.csv", csv_text(rows))
    rows = taobao(10, 20)
    rows[2][4] = "2551848894"  # year 2050
    rows[6][4] = "4102444800"  # 2100-01-01
    write("future_timestamps.csv", csv_text(rows))
    rows = taobao(10, 40)
    for index in (1, 3, 5):
        rows[index][4] += "000"
    write("milliseconds_in_seconds_column.csv", csv_text(rows))
    rows = [[u, i, e, t + "000"] for u, i, e, t in canonical(7, 60)]
    rows[6][3] = rows[6][3][:-3]  # seconds in the millisecond column -> January 1970
    write("seconds_in_milliseconds_column.csv", csv_text([["user_id", "item_id", "event_type", "event_time_ms"], *rows]))
    rows = canonical(6, 80)
    texts = ["2017-11-28T06:08:14Z", "2017-11-28 06:08:14", "11/28/2017 6:08", "28.11.2017 06:08", "yesterday", ""]
    for row, text in zip(rows, texts, strict=True):
        row[3] = text
    write("text_timestamps.csv", csv_text([CANONICAL_HEADER, *rows]))


def event_type_cases() -> None:
    rows = canonical(8, 100)
    for index, value in ((1, "click"), (4, "remove_from_cart"), (6, "wishlist")):
        rows[index][2] = value
    write("unknown_event_types.csv", csv_text([CANONICAL_HEADER, *rows]))
    rees = lines_of(REES46, 0, 9)
    rees[3] = rees[3].replace(",view,", ",remove_from_cart,", 1)
    rees[7] = rees[7].replace(",view,", ",remove_from_cart,", 1)
    write("rees46_remove_from_cart.csv", "\n".join(rees) + "\n")
    rows = canonical(6, 120)
    messy = [" VIEW ", "AddToCart", "Transaction\t", "\u00a0view\u00a0", "  Rating ", "vIeW"]
    for row, value in zip(rows, messy, strict=True):
        row[2] = value
    rows[0][0] = "  " + rows[0][0] + "\t"
    rows[1][1] = "\t" + rows[1][1] + "  "
    body = [[u, i, e, "4" if "ating" in e else "", t] for u, i, e, t in rows]
    body[4][3] = " 4 "
    write("case_whitespace_variants.csv", csv_text([[" User_ID ", "ITEM ID", "Event Type", "Rating", "EVENT_TIME "], *body]))
    rows = taobao(8, 140)
    for index, value in ((0, "PV"), (2, "Buy"), (4, " cart "), (6, "FAV")):
        rows[index][3] = value
    write("taobao_mixed_case_behaviour.csv", csv_text(rows))


def rating_cases() -> None:
    lines = lines_of(AMAZON, 0, 11)
    bad = ["0", "6", "-1", "5.5", "nan", '"4,5"', "five", ""]
    for offset, value in enumerate(bad, start=1):
        user, item, _, stamp = lines[offset].split(",")
        lines[offset] = ",".join([user, item, value, stamp])
    write("ratings_out_of_range.csv", "\n".join(lines) + "\n")
    lines = lines_of(AMAZON, 20, 10)
    user, item, _, stamp = lines[4].split(",")
    lines[4] = ",".join([user, item, "N/A", stamp])
    write("amazon_headerless_bad_rating.csv", "\n".join(lines) + "\n")
    rows = [[u, i, e, "", t] for u, i, e, t in canonical(4, 160)]
    rows[0][2], rows[0][3] = "view", "3"
    rows[2][2], rows[2][3] = "view", "5"
    write("rating_on_view.csv", csv_text([["user_id", "item_id", "event_type", "rating", "event_time"], *rows]))


def transaction_cases() -> None:
    rows = canonical(6, 180)
    kinds = [("view", "T1"), ("view", "T2"), ("addtocart", "T3"), ("transaction", "T4"), ("transaction", "T5"), ("view", "")]
    body = [[u, i, kind, t, txn] for (u, i, _, t), (kind, txn) in zip(rows, kinds, strict=True)]
    write("transaction_id_on_views.csv", csv_text([["user_id", "item_id", "event_type", "event_time", "transaction_id"], *body]))


def duplicate_cases() -> None:
    rows = taobao(10, 200)
    padded = list(rows[3])
    padded[0] = " " + padded[0] + " "
    write("duplicated_events.csv", csv_text([*rows, rows[0], rows[1], rows[2], padded]))
    write("resent_baseline_events.csv", "\n".join(lines_of(RETAIL, 0, 21)) + "\n")
    same = csv_text(taobao(6, 220))
    write("duplicate_file_a.csv", same)
    write("duplicate_file_b.csv", same)


def shape_cases() -> None:
    write("semicolon_delimiter.csv", csv_text([CANONICAL_HEADER, *canonical(6, 240)], delimiter=";"))
    write("missing_required_column.csv", csv_text([["user_id", "item_id", "event_time"],
                                                   *[[u, i, t] for u, i, _, t in canonical(5, 250)]]))
    write("missing_time_column.csv", csv_text([["user_id", "item_id", "event_type"],
                                               *[[u, i, e] for u, i, e, _ in canonical(5, 260)]]))
    rows = canonical(6, 270)
    write("extra_columns.csv", csv_text([["session_id", *CANONICAL_HEADER, "page_url", "price"],
                                         *[[f"s{n}", *row, f"https://shop.example/p/{row[1]}", "9.99"]
                                           for n, row in enumerate(rows)]]))
    write("reordered_columns.csv", csv_text([["event_time", "event_type", "item_id", "user_id"],
                                             *[[t, e, i, u] for u, i, e, t in canonical(6, 280)]]))
    write("header_only.csv", csv_text([CANONICAL_HEADER]))
    write("empty_0_bytes.csv", b"")
    write("only_blank_lines.csv", "\n\n  \n\n")
    write("headerless_extra_column.csv", csv_text([[*row, "extra"] for row in taobao(8, 290)]))
    rows = canonical(8, 300)
    write("repeated_header_concatenated.csv", csv_text([CANONICAL_HEADER, *rows[:4], CANONICAL_HEADER, *rows[4:]]))
    write("blank_lines_between_rows.csv", csv_text(taobao(4, 310)) + "\n\n" + csv_text(taobao(4, 314)) + "\n")
    rows = taobao(8, 320)
    text = csv_text(rows[:7]) + ",".join(rows[7])[:17]  # cut mid-row, no final newline
    write("truncated_last_line.csv", text)


def rees46_with_long_brand(name: str, length: int) -> None:
    """Three REES46 rows, the second with a brand of ``length`` characters, gzip-compressed (a few KB)."""
    fields = [line.split(",") for line in lines_of(REES46, 0, 4)]
    fields[2][5] = "x" * length
    text = "\n".join(",".join(f) for f in fields) + "\n"
    (HERE / name).write_bytes(gzip.compress(text.encode(), mtime=0))


def encoding_cases() -> None:
    rees = lines_of(REES46, 0, 7)
    fields = [line.split(",") for line in rees]
    fields[2][5] = '"samsung, electronics\nco. ltd"'
    fields[3][4] = '"electronics.audio,headphone"'
    fields[5][5] = '"say ""hi"" brand"'
    write("quoted_fields_newlines_commas.csv", "\n".join(",".join(f) for f in fields) + "\n")
    fields = [line.split(",") for line in lines_of(REES46, 0, 8)]
    fields[3][5] = '"samsung'  # the quote opens on line 4 and never closes
    write("unterminated_quote.csv", "\n".join(",".join(f) for f in fields) + "\n")
    fields = [line.split(",") for line in lines_of(REES46, 0, 6)]
    fields[2][5] = '24" monitors'  # an inch mark inside an unquoted value: kept literally
    write("stray_quote_in_value.csv", "\n".join(",".join(f) for f in fields) + "\n")
    fields = [line.split(",") for line in lines_of(REES46, 0, 6)]
    fields[1][5] = "nestlé"
    fields[3][5] = "citroën"
    write("latin1_bytes.csv", ("\n".join(",".join(f) for f in fields) + "\n").encode("latin-1"))
    write("utf8_bom.csv", b"\xef\xbb\xbf" + csv_text([CANONICAL_HEADER, *canonical(5, 330)]).encode())
    write("utf8_bom_headerless.csv", b"\xef\xbb\xbf" + csv_text(taobao(5, 340)).encode())
    write("crlf_line_ends.csv", "\r\n".join(lines_of(AMAZON, 40, 6)) + "\r\n")
    rees46_with_long_brand("long_field_1mb.csv.gz", 1_000_000)
    rees46_with_long_brand("line_over_2mb.csv.gz", 3_000_000)


def container_cases() -> None:
    (HERE / "gzip_compressed.csv.gz").write_bytes(gzip.compress(csv_text(taobao(20, 350)).encode(), mtime=0))
    (HERE / "gzip_without_gz_name.csv").write_bytes(gzip.compress(csv_text(taobao(10, 370)).encode(), mtime=0))
    whole = gzip.compress(csv_text(taobao(400, 400)).encode(), mtime=0)
    (HERE / "truncated_gzip.csv.gz").write_bytes(whole[: len(whole) // 2])
    write("png_named_csv.csv", png_bytes())
    write("json_named_csv.csv", "[\n" + ",\n".join(
        f'  {{"user_id": "{u}", "item_id": "{i}", "event_type": "{e}", "event_time": {t}}}'
        for u, i, e, t in canonical(4, 800)) + "\n]\n")
    write("retail_without_invoice_date.csv", "\n".join(lines_of(RETAIL_NODATE, 0, 1) + lines_of(RETAIL_NODATE, 20000, 6)) + "\n")
    write("retail_returns_and_adjustments.csv", "\n".join(
        [lines_of(RETAIL, 0, 1)[0]] + [line for line in lines_of(RETAIL, 1, 400) if line.startswith("C") or ",-" in line][:5]
    ) + "\n")


def safety_cases() -> None:
    write("link_target_outside.csv", csv_text(taobao(5, 850)))
    write("configured_outside.csv", csv_text(taobao(5, 860)))
    write("still_being_written.csv.part", csv_text(taobao(5, 870)))
    write("glob_characters_in_name.csv", csv_text(taobao(5, 880)))
    write("sql_quote_in_name.csv", csv_text(taobao(5, 890)))


if __name__ == "__main__":
    for make in (ids_cases, timestamp_cases, event_type_cases, rating_cases, transaction_cases, duplicate_cases,
                 shape_cases, encoding_cases, container_cases, safety_cases):
        make()
