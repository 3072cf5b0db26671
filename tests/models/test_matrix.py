from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from recsys_dagster.models.matrix import load_matrix, pairs_matrix, table_fingerprint


def test_load_matrix_matches_the_table_cell_by_cell(retail_db: Path) -> None:
    with duckdb.connect(str(retail_db), read_only=True) as con:
        data = load_matrix(con, "fct_train_user_item")
        table = con.execute("SELECT user_id, item_id, strength FROM fct_train_user_item WHERE strength > 0").df()

    assert data.matrix.dtype == np.float32
    assert data.nnz == len(table)
    assert data.n_users == table["user_id"].nunique() and data.n_items == table["item_id"].nunique()
    assert list(data.user_ids) == sorted(table["user_id"].unique())
    assert list(data.item_ids) == sorted(table["item_id"].unique())

    rows = pd.Index(data.user_ids).get_indexer(table["user_id"])
    cols = pd.Index(data.item_ids).get_indexer(table["item_id"])
    np.testing.assert_allclose(np.asarray(data.matrix[rows, cols]).ravel(), table["strength"].to_numpy(), rtol=1e-6)


def test_load_matrix_refuses_tables_outside_the_allowlist_and_partial_event_weights(retail_db: Path) -> None:
    with duckdb.connect(str(retail_db), read_only=True) as con:
        with pytest.raises(ValueError, match="unknown training table"):
            load_matrix(con, "dim_items; DROP TABLE dim_users")
        with pytest.raises(ValueError, match="expected 4 event weights"):
            load_matrix(con, "fct_train_user_item", [1.0, 3.0])


def test_pairs_matrix_marks_known_pairs_and_drops_unknown_ids() -> None:
    users, items = pd.Index(["u1", "u2"]), pd.Index(["a", "b", "c"])
    pairs = pd.DataFrame({"user_id": ["u1", "u2", "u2", "ghost", "u1"], "item_id": ["c", "a", "zzz", "a", "c"]})

    marked = pairs_matrix(pairs, users, items)

    assert marked.shape == (2, 3)
    assert marked.toarray().tolist() == [[False, False, True], [True, False, False]]


def test_fingerprint_changes_with_the_data(tmp_path: Path, retail_db: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(retail_db.read_bytes())
    with duckdb.connect(str(copy)) as con:
        before = table_fingerprint(con, "fct_train_user_item")
        assert table_fingerprint(con, "fct_train_user_item") == before
        con.execute("UPDATE fct_train_user_item SET strength = strength + 1 WHERE rowid = 0")
        assert table_fingerprint(con, "fct_train_user_item") != before
