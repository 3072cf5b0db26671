"""Format recognition and column mapping on slices of the real shared datasets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from recsys_dagster.ingest.files import text_encoding_of
from recsys_dagster.ingest.formats import (
    DetectedFile,
    UnrecognisedFileError,
    detect_format,
    events_select_sql,
    items_select_sql,
    read_csv_parameters,
)

AMAZON = "amazon_electronics_ratings/ratings_Electronics_head.csv"
RETAIL = "online_retail/online_retail_head10k.csv"
RETAIL_NODATE = "online_retail/online_retail_head50k_nodate.csv"
REES46 = "rees46_multicategory_head/2019-Oct_head_0000-0249UTC.csv"
TAOBAO_WINDOW = "taobao_userbehavior/UserBehavior_20171126_0100-0310UTC_shared.csv"
TAOBAO_USERS = "taobao_userbehavior/UserBehavior_tail10k_114users_fullhistory.csv"
YOOCHOOSE = "yoochoose_rsc15_sample/yoochoose-clicks-100k_test.txt"


def detect(path: Path) -> DetectedFile:
    """Recognise ``path`` with the encoding the loader would use."""
    return dataclasses.replace(
        detect_format(path), encoding=text_encoding_of(path, compressed=path.name.endswith(".gz"))
    )


def events_of(path: Path) -> pd.DataFrame:
    detected = detect(path)
    sql = f"SELECT * FROM ({events_select_sql(detected)}) ORDER BY source_row"
    return duckdb.connect().execute(sql, read_csv_parameters(detected)).df()


def items_of(path: Path) -> pd.DataFrame:
    detected = detect(path)
    sql = f"SELECT * FROM ({items_select_sql(detected)}) ORDER BY item_id"
    return duckdb.connect().execute(sql, read_csv_parameters(detected)).df().set_index("item_id")


@pytest.mark.parametrize(
    ("source", "target", "skip", "fmt", "has_header", "delimiter"),
    [
        (AMAZON, "amazon.csv", 0, "amazon_ratings", True, ","),
        (AMAZON, "amazon_noheader.csv", 1, "amazon_ratings", False, ","),
        (AMAZON, "amazon.csv.gz", 0, "amazon_ratings", True, ","),
        (RETAIL, "retail.csv", 0, "online_retail", True, ","),
        (RETAIL_NODATE, "retail_nodate.csv.gz", 0, "online_retail", True, ","),
        (REES46, "rees46.csv", 0, "rees46", True, ","),
        (TAOBAO_WINDOW, "taobao.csv", 0, "taobao", False, ","),
        (TAOBAO_USERS, "UserBehavior.csv.gz", 0, "taobao", False, ","),
        (YOOCHOOSE, "clicks.txt", 0, "yoochoose", True, "\t"),
        (YOOCHOOSE, "clicks.dat", 0, "yoochoose", True, "\t"),
    ],
)
def test_real_slices_are_recognised_with_exact_row_numbers(
    shared_datasets, head, tmp_path, source, target, skip, fmt, has_header, delimiter
):
    path = head(shared_datasets / source, tmp_path / target, n_lines=301, skip=skip)
    detected = detect(path)
    assert (detected.format.name, detected.has_header, detected.delimiter) == (fmt, has_header, delimiter)
    assert detected.compression == ("gzip" if target.endswith(".gz") else "none")
    events = events_of(path)
    expected_rows = 300 if has_header else 301
    assert len(events) == expected_rows
    assert events["source_row"].tolist() == list(range(1, expected_rows + 1))


def test_amazon_keeps_leading_zeros_and_header_less_copy_maps_identically(shared_datasets, head, tmp_path):
    with_header = events_of(head(shared_datasets / AMAZON, tmp_path / "ratings.csv", n_lines=1001))
    without_header = events_of(head(shared_datasets / AMAZON, tmp_path / "ratings_Electronics.csv", 1000, skip=1))
    first = with_header.iloc[0]
    assert (first.user_id, first.item_id, first.event_type, first.rating, first.event_time, first.time_unit) == (
        "AKM1MP6P0OYPR", "0132793040", "rating", "5.0", "1365811200", "s"
    )
    pd.testing.assert_frame_equal(with_header, without_header)


def test_online_retail_maps_purchases_returns_adjustments_and_customers(shared_datasets):
    events = events_of(shared_datasets / RETAIL)
    first = events.iloc[0]
    assert (first.user_id, first.item_id, first.event_type, first.transaction_id) == (
        "17850", "85123A", "transaction", "536365"
    )
    assert (first.event_time, first.time_unit, first.rating) == ("2010-12-01 08:26:00", "text", None)
    # PROVENANCE: 100 cancellation rows ("C" invoices), 2,291 rows without CustomerID.
    assert events["event_type"].value_counts().to_dict() == {"transaction": 9870, "return": 100, "adjustment": 30}
    assert events.loc[events.event_type == "return", "transaction_id"].str.startswith("C").all()
    assert events["user_id"].isna().sum() == 2291
    assert not events["user_id"].dropna().str.contains(r"\.").any()
    adjustment = events[events.event_type == "adjustment"].iloc[0]
    assert not adjustment.transaction_id.startswith("C")


def test_online_retail_without_invoice_date_has_no_event_time(shared_datasets, head, tmp_path):
    events = events_of(head(shared_datasets / RETAIL_NODATE, tmp_path / "nodate.csv", n_lines=2001))
    assert len(events) == 2000
    assert events["event_time"].isna().all() and events["time_unit"].isna().all()
    assert events.iloc[0][["user_id", "item_id", "transaction_id"]].tolist() == ["17850", "85123A", "536365"]


def test_online_retail_catalog_keeps_latest_non_null_attributes(shared_datasets):
    items = items_of(shared_datasets / RETAIL)
    assert len(items) == 2015  # PROVENANCE: 2,015 StockCodes
    heart = items.loc["85123A"]
    assert heart["name"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    retail = pd.read_csv(shared_datasets / RETAIL, dtype=str)
    last_row = retail[retail.StockCode == "85123A"].iloc[-1]
    assert heart["price"] == pytest.approx(float(last_row.UnitPrice))
    latest_sale = pd.to_datetime(retail[retail.StockCode == "85123A"].InvoiceDate).max()
    assert heart["observed_at"] == latest_sale


def test_rees46_maps_event_types_and_catalog(shared_datasets):
    events = events_of(shared_datasets / REES46)
    # PROVENANCE: view 17,045, purchase 214, cart 165.
    assert events["event_type"].value_counts().to_dict() == {"view": 17045, "transaction": 214, "addtocart": 165}
    first = events.iloc[0]
    assert (first.user_id, first.item_id, first.event_time, first.time_unit) == (
        "541312140", "44600062", "2019-10-01 00:00:00 UTC", "text"
    )
    items = items_of(shared_datasets / REES46)
    assert len(items) == 6489  # PROVENANCE: 6,489 products
    shiseido = items.loc["44600062"]  # empty category_code: falls back to category_id
    assert (shiseido["category"], shiseido["brand"], shiseido["price"]) == ("2103807459595387724", "shiseido", 35.79)
    assert items.loc["3900821", "category"] == "appliances.environment.water_heater"


def test_rees46_passes_unknown_event_types_through(shared_datasets, head, tmp_path):
    path = head(shared_datasets / REES46, tmp_path / "rees46.csv", n_lines=3)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace(",view,", ",remove_from_cart,")
    path.write_text("\n".join(lines) + "\n")
    assert events_of(path)["event_type"].tolist() == ["view", "remove_from_cart"]


def test_taobao_maps_behaviours_and_one_category_per_item(shared_datasets):
    events = events_of(shared_datasets / TAOBAO_USERS)
    # PROVENANCE: pv 9,046, cart 536, fav 212, buy 206 (fav counts as addtocart).
    assert events["event_type"].value_counts().to_dict() == {"view": 9046, "addtocart": 748, "transaction": 206}
    assert events.iloc[0][["user_id", "item_id", "event_time", "time_unit"]].tolist() == [
        "999477", "2200475", "1511848894", "s"
    ]
    items = items_of(shared_datasets / TAOBAO_USERS)
    assert len(items) == 7623  # PROVENANCE: 7,623 items
    assert items.loc["2200475", "category"] == "3607361"
    assert str(items.loc["2200475", "observed_at"]) >= "2017-11-28 06:01:34"


def test_yoochoose_session_is_the_user(shared_datasets):
    first = events_of(shared_datasets / YOOCHOOSE).iloc[0]
    assert first[["user_id", "item_id", "event_type", "event_time", "time_unit"]].tolist() == [
        "1", "214536502", "view", "1396860669.277", "s"
    ]


def test_retailrocket_layout_is_recognised(tmp_path):
    # No genuine RetailRocket events sample exists in the shared data: this is the published header.
    path = tmp_path / "events.csv"
    path.write_text(
        "timestamp,visitorid,event,itemid,transactionid\n"
        "1433221332117,257597,view,355908,\n"
        "1433224214164,992329,addtocart,248676,\n"
        "1433221999827,111016,transaction,318965,4000\n"
    )
    events = events_of(path)
    assert detect(path).format.name == "retailrocket"
    mapped = ["user_id", "item_id", "event_type", "event_time", "time_unit", "transaction_id"]
    assert events[mapped].values.tolist() == [
        ["257597", "355908", "view", "1433221332117", "ms", None],
        ["992329", "248676", "addtocart", "1433224214164", "ms", None],
        ["111016", "318965", "transaction", "1433221999827", "ms", "4000"],
    ]


def test_canonical_header_any_order_bom_case_semicolon_and_time_units(shared_datasets, tmp_path):
    taobao = pd.read_csv(shared_datasets / TAOBAO_USERS, header=None, dtype=str, nrows=3)
    path = tmp_path / "export.csv"
    rows = [
        f"{taobao[4][0]};{taobao[1][0]};view;{taobao[0][0]};",
        f"2017-11-28 06:01:34;{taobao[1][1]};transaction;{taobao[0][1]};T1",
        f";{taobao[1][2]};rating;{taobao[0][2]};",
    ]
    path.write_text("\ufeff Event_Time ;ITEM_ID;event_type;User_Id;transaction_id\n" + "\n".join(rows) + "\n")
    events = events_of(path)
    assert detect(path).format.name == "canonical"
    assert events["time_unit"].tolist() == ["s", "text", None]
    assert events["user_id"].tolist() == taobao[0].tolist()
    assert events["transaction_id"].tolist() == [None, "T1", None]

    millis = tmp_path / "export_ms.csv"
    millis.write_text("user_id|item_id|event_type|rating|event_time_ms\nu1|i1|rating|4|1511848894000\n")
    assert events_of(millis)[["rating", "event_time", "time_unit"]].values.tolist() == [["4", "1511848894000", "ms"]]


def test_canonical_item_catalog_feeds_items_only(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,name,category,price,available\n"
        "85123A,WHITE HANGING HEART T-LIGHT HOLDER,decor,2.55,true\n"
        "85123A,,decor,2.95,\n"
        "71053,WHITE METAL LANTERN,,abc,0\n"
    )
    detected = detect(path)
    assert (detected.format.name, detected.has_events, detected.has_items) == ("canonical_items", False, True)
    items = items_of(path)
    assert items.loc["85123A", ["name", "category", "price", "available"]].tolist() == [
        "WHITE HANGING HEART T-LIGHT HOLDER", "decor", 2.95, True
    ]
    assert pd.isna(items.loc["71053", "price"]) and items.loc["71053", "available"] == False  # noqa: E712


def test_malformed_lines_are_kept_and_numbered(shared_datasets, head, tmp_path):
    path = head(shared_datasets / RETAIL, tmp_path / "retail.csv", n_lines=4)
    with path.open("a") as out:
        out.write("536999,22222\n")  # too few fields
        out.write("536999,33333,EXTRA,COMMA,1,2010-12-01 09:00:00,1.0,17850.0,United Kingdom\n")  # too many
        out.write('536366,22633,"HAND WARMER, UNION JACK",6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom\n')
    events = events_of(path)
    assert events["source_row"].tolist() == [1, 2, 3, 4, 5, 6]
    assert events.iloc[3][["item_id", "user_id", "event_type"]].tolist() == ["22222", None, "adjustment"]
    assert events.iloc[4]["item_id"] == "33333"
    assert events.iloc[5][["item_id", "user_id", "event_time"]].tolist() == ["22633", "17850", "2010-12-01 08:28:00"]


def test_latin1_file_is_read_with_its_encoding(shared_datasets, head, tmp_path):
    text = head(shared_datasets / RETAIL, tmp_path / "utf8.csv", n_lines=3).read_text()
    path = tmp_path / "latin1.csv"
    path.write_bytes(text.replace("WHITE METAL LANTERN", "LANTERNE CAFÉ £").encode("latin-1"))
    assert text_encoding_of(path, compressed=False) == "latin-1"
    assert items_of(path).loc["71053", "name"] == "LANTERNE CAFÉ £"


def test_unrecognised_file_error_names_file_and_header(shared_datasets, head, tmp_path):
    path = head(shared_datasets / "retailrocket/category_tree.csv", tmp_path / "category_tree.csv", n_lines=20)
    with pytest.raises(UnrecognisedFileError) as error:
        detect_format(path)
    message = str(error.value)
    assert str(path) in message and "categoryid" in message and "parentid" in message
