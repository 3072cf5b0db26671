"""Model artifacts on disk: one versioned folder per trained model, plain numpy files inside.

Layout: ``<models_dir>/<model>/<model_version>/`` holding ``params.json`` and one sub-folder per
fit (``holdout/``, ``serving/``) with ``ids.npz`` (user and item ids, in matrix order),
``arrays.npz`` (dense arrays such as factors) and one ``sparse_<name>.npz`` per sparse matrix.
Only numpy/scipy formats are written, loaded with ``allow_pickle=False``, so an artifact never
executes code on load and survives library upgrades that would break a pickled model object.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix, load_npz, save_npz

from recsys_dagster.models.matrix import FIT_TABLES, checked_table, id_array, table_fingerprint


@dataclass
class FitArrays:
    """Everything one fit of a model needs for scoring, as arrays keyed by name."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: dict[str, csr_matrix] = field(default_factory=dict)
    #: Sizes of the data the fit was trained on (reported in params.json and the Dagster UI).
    stats: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.user_ids = id_array(self.user_ids)
        self.item_ids = id_array(self.item_ids)

    @cached_property
    def user_index(self) -> pd.Index:
        """id -> position lookup, built on first use (a million-user index is not free, and the
        small per-batch fits made while scoring never need one)."""
        return pd.Index(self.user_ids)

    @cached_property
    def item_index(self) -> pd.Index:
        return pd.Index(self.item_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


class NonFiniteModelError(ValueError):
    """A fit produced NaN or infinite numbers (diverged, or trained on collapsed data): it is not saved,
    so it can never be registered, evaluated or published."""


def non_finite_counts(fit: FitArrays) -> dict[str, int]:
    """Array name -> how many of its floating-point values are NaN or infinite (only names with any)."""
    arrays = {**fit.dense, **{f"sparse_{name}": matrix.data for name, matrix in fit.sparse.items()}}
    counts = {
        name: int(values.size - np.count_nonzero(np.isfinite(values)))
        for name, values in arrays.items()
        if np.issubdtype(np.asarray(values).dtype, np.floating)
    }
    return {name: count for name, count in counts.items() if count}


def save_fit(fit: FitArrays, folder: Path) -> None:
    """Write one fit's arrays; refuse a fit with non-finite numbers (``NonFiniteModelError``)."""
    bad = non_finite_counts(fit)
    if bad:
        raise NonFiniteModelError(
            f"the '{folder.name}' fit has non-finite values ({', '.join(f'{n}: {c}' for n, c in bad.items())}); "
            "the model is not saved or registered, and the published tables stay as they were"
        )
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "ids.npz", user_ids=fit.user_ids, item_ids=fit.item_ids)
    np.savez(folder / "arrays.npz", **fit.dense)
    for name, matrix in fit.sparse.items():
        save_npz(folder / f"sparse_{name}.npz", matrix, compressed=False)  # zlib cost seconds per fit


def load_fit(folder: Path) -> FitArrays:
    if not folder.is_dir():
        raise FileNotFoundError(f"model artifact folder {folder} is missing")
    with np.load(folder / "ids.npz", allow_pickle=False) as ids, np.load(
        folder / "arrays.npz", allow_pickle=False
    ) as arrays:
        fit = FitArrays(user_ids=ids["user_ids"], item_ids=ids["item_ids"], dense=dict(arrays))
    fit.sparse = {
        path.stem.removeprefix("sparse_"): load_npz(path).tocsr() for path in sorted(folder.glob("sparse_*.npz"))
    }
    return fit


#: The names ``new_model_version`` gives: retention (``models/retention.py``) removes no folder named otherwise.
VERSION_NAME = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")


def new_model_version(hyperparameters: dict[str, object], data_fingerprints: dict[str, str]) -> str:
    """``<UTC timestamp>-<hash>``: sorts by training time, and the hash tells apart runs of the same
    second and names exactly which hyperparameters and data produced the artifact."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    payload = json.dumps({"params": hyperparameters, "data": data_fingerprints}, sort_keys=True, default=str)
    return f"{stamp}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


def write_params(folder: Path, document: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return path


def latest_artifact(con: duckdb.DuckDBPyConnection, model: str) -> Path | None:
    """The folder of ``model``'s newest registered artifact (None before any registration)."""
    registered = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' AND table_name = 'model_registry'"
    ).fetchone()[0]
    row = con.execute(
        "SELECT artifact_dir FROM ml.model_registry WHERE model = ? ORDER BY trained_at DESC, model_version DESC LIMIT 1",
        [model],
    ).fetchone() if registered else None
    return Path(row[0]) if row else None


def reusable_fit(
    con: duckdb.DuckDBPyConnection, model: str, table: str, hyperparameters: dict[str, object]
) -> FitArrays | None:
    """``model``'s latest fit on ``table`` when it was trained with the same value of every
    hyperparameter it records and on the same data (recorded fingerprint), else None.

    Lets a model built on another one (repeat-aware on ALS) load its factors instead of refitting
    them: the same parameters on the same rows give the same factors, so only time is saved.
    ``use_tuned`` is not compared: it says where values came from, not what they are.
    """
    artifact_dir = latest_artifact(con, model)
    if artifact_dir is None or not (artifact_dir / "params.json").is_file():
        return None
    fit = {name: fit for fit, name in FIT_TABLES.items()}[checked_table(table)]
    params = json.loads((artifact_dir / "params.json").read_text())
    same_recipe = all(
        hyperparameters.get(name) == value for name, value in params["hyperparameters"].items() if name != "use_tuned"
    )
    if not same_recipe or not (artifact_dir / fit).is_dir():
        return None
    if params.get("fingerprints", {}).get(fit) != table_fingerprint(con, table):
        return None
    reused = load_fit(artifact_dir / fit)
    reused.stats = {name: params["fits"][fit][name] for name in ("n_users", "n_items", "nnz")}
    return reused
