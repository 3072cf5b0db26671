"""A fit with NaN or infinite numbers is refused before it can be registered or published."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from recsys_dagster.models.artifacts import FitArrays, NonFiniteModelError, load_fit, save_fit


def _fit(item_factors: np.ndarray) -> FitArrays:
    return FitArrays(
        user_ids=np.array(["u1", "u2"]),
        item_ids=np.array(["i1", "i2", "i3"]),
        dense={"user_factors": np.ones((2, 2), dtype=np.float32), "item_factors": item_factors},
        sparse={"seen": csr_matrix(np.eye(2, 3, dtype=np.float32))},
    )


def test_finite_fit_round_trips(tmp_path: Path) -> None:
    save_fit(_fit(np.arange(6, dtype=np.float32).reshape(3, 2)), tmp_path / "serving")
    loaded = load_fit(tmp_path / "serving")
    assert loaded.dense["item_factors"].tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_factors_are_refused_and_nothing_is_written(tmp_path: Path, bad_value: float) -> None:
    factors = np.ones((3, 2), dtype=np.float32)
    factors[1, 0] = bad_value
    with pytest.raises(NonFiniteModelError, match="item_factors: 1"):
        save_fit(_fit(factors), tmp_path / "serving")
    assert not (tmp_path / "serving").exists()
