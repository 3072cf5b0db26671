"""The model registry and the one scoring API that evaluation and publishing both use.

``ml.model_registry`` has one row per trained artifact; ``load_latest`` reads the newest row of a
model and returns a ``LoadedModel`` whose ``recommend`` / ``similar_items`` / ``predict_ratings``
score with plain numpy/scipy from the artifact's arrays. Evaluation and publishing calling the
same code is what makes the evaluated numbers describe the published tables.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from dagster import Config
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from recsys_dagster.metadata import timed
from recsys_dagster.models import als, baselines, repeat, svd
from recsys_dagster.models.artifacts import FitArrays, load_fit, save_fit, write_params
from recsys_dagster.models.matrix import FIT_TABLES, Fit, checked_table, pairs_matrix
from recsys_dagster.models.scoring import (
    FACTOR_BATCH_USERS,
    NormHead,
    batch_size,
    mask_cells,
    pruned_factor_extremes,
    pruned_factor_top_n,
    ranked_cells,
    ranks_within_rows,
    top_n,
    top_n_of_cells,
)

#: Every model trained each run; the first four keep their historic names (publishing reads
#: popularity_model and item_knn_model by name).
MODEL_NAMES = (
    "als_model",
    "svd_model",
    "popularity_model",
    "item_knn_model",
    "repeat_aware_model",
    "user_knn_model",
    "item_knn_bm25_model",
    "popularity_recent_model",
)
FITS = ("validation", "holdout", "serving")
#: The fits every model asset makes; "serving" is made on demand by ``ensure_fit`` for what gets published.
TRAINING_FITS = ("validation", "holdout")

REGISTRY_DDL = """
CREATE SCHEMA IF NOT EXISTS ml;
CREATE TABLE IF NOT EXISTS ml.model_registry (
    model VARCHAR, model_version VARCHAR, artifact_dir VARCHAR, params_json VARCHAR,
    n_users BIGINT, n_items BIGINT, trained_at TIMESTAMP, run_id VARCHAR
);
"""


def cosine_similarities(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine of ``vectors[rows]`` against every vector (zero vectors get a tiny norm, as in implicit)."""
    norms = np.linalg.norm(vectors, axis=1)
    norms[norms == 0] = 1e-10
    return ((vectors[rows] @ vectors.T) / np.outer(norms[rows], norms)).astype(np.float64)


def positive_cells(matrix: csr_matrix) -> csr_matrix:
    """The cells of ``matrix`` with a positive value: item-kNN's evidence (``no_evidence_to_minus_inf``)."""
    kept = matrix.multiply(matrix > 0).tocsr()
    kept.eliminate_zeros()
    return kept


def popularity_keys(fit: FitArrays, count: int) -> np.ndarray:
    """Popularity ranks every user alike; the key is minus the stored position (best first)."""
    return np.broadcast_to(-np.arange(fit.n_items, dtype=np.float64), (count, fit.n_items)).copy()


#: Users whose candidate columns are scored together by an own-items model (``FactorRanking.own``):
#: the union of their candidates grows with the group, so the dense block grows with its square.
OWN_AWARE_GROUP = 64


#: (user vectors, item vectors, per-user offset or None): the model's score of (u, i) is
#: ``users[u] . items[i] + offset[u]``.
FactorVectors = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def als_vectors(fit: FitArrays) -> FactorVectors:
    return fit.dense["user_factors"], fit.dense["item_factors"], None


def svd_vectors(fit: FitArrays) -> FactorVectors:
    """SVD's estimate ``mean + bu + bi + pu . qi`` as ``[pu, 1] . [qi, bi] + (mean + bu)``, in float64
    like surprise, so the ranking equals its ``predict`` loop to the last bit that matters."""
    d = fit.dense
    users = np.hstack([d["pu"], np.ones((len(d["pu"]), 1))])
    items = np.hstack([d["qi"], d["bi"][:, None]])
    return users, items, float(d["global_mean"]) + d["bu"]


@dataclass(frozen=True)
class FactorRanking:
    """A model that ranks by a dot product of factors (``vectors``), so scoring can use implicit's
    batched top-k instead of dense rows of every item.

    ``own`` names a sparse users x items matrix of items the model may rank above their dot
    product (the repeat-aware model's history). Outside them the score must rise with the dot
    product and depend on the rest of the row only through its minimum and maximum. Then the
    top-n lies within the dot product's top-(n + own items) plus the own items, and scoring the
    model on just those columns plus the row's arg-min and arg-max (which fix any min-max
    scaling) reproduces the full-row ranking. Item-indexed arrays: dense ``item_*`` (rows) and
    every sparse matrix (columns); user-indexed: dense ``user_*`` and sparse rows.
    """

    vectors: Callable[[FitArrays], FactorVectors] = als_vectors
    own: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """How one kind of model is configured, fitted and scored.

    ``score(fit, user_rows)`` returns a dense (users x items) array of ranking keys, -inf for items
    that must not be recommended; ``reported_score`` turns the keys of chosen cells into the
    published score (popularity ranks by stored position but reports distinct users).
    """

    config_class: type[Config]
    #: ``fit(con, table, config)``; with ``warm_starts`` it also takes ``start=`` an earlier fit of a subset.
    fit: Callable[..., FitArrays]
    score: Callable[[FitArrays, np.ndarray], np.ndarray]
    similar: Callable[[FitArrays, np.ndarray], np.ndarray] | None = None
    user_agnostic: bool = False
    reported_score: Callable[[FitArrays, np.ndarray, np.ndarray], np.ndarray] = lambda fit, cols, keys: keys
    factor_ranking: FactorRanking | None = None
    #: ``similar`` as a sparse matrix of its positive cells (neighbourhood models): ranked without dense rows.
    similar_cells: Callable[[FitArrays, np.ndarray], csr_matrix] | None = None
    #: ``fit`` continues from an earlier fit (validation -> holdout -> serving: each table holds the
    #: previous one's rows), so each later fit needs only a few iterations.
    warm_starts: bool = False


def popularity_spec(config_class: type[Config]) -> ModelSpec:
    """A popularity ranking (global or recent window): the same list for every user, scored by its users."""
    return ModelSpec(
        config_class=config_class,
        fit=baselines.fit_popularity,
        score=lambda fit, rows: popularity_keys(fit, len(rows)),
        user_agnostic=True,
        reported_score=lambda fit, cols, keys: fit.dense["n_users"][cols],
    )


def item_knn_spec(config_class: type[Config]) -> ModelSpec:
    """An item-item neighbourhood (cosine or BM25 weighting): same fit and scoring, other Config."""
    return ModelSpec(
        config_class=config_class,
        fit=baselines.fit_item_knn,
        score=baselines.score_item_knn,
        similar=baselines.similar_item_knn,
        similar_cells=lambda fit, rows: positive_cells(fit.sparse["similarity"][rows]),
    )


MODEL_SPECS: dict[str, ModelSpec] = {
    "als_model": ModelSpec(
        config_class=als.AlsConfig,
        fit=als.fit_als,
        warm_starts=True,
        score=als.score_als,
        similar=lambda fit, rows: cosine_similarities(als.item_vectors_als(fit), rows),
        factor_ranking=FactorRanking(),
    ),
    "svd_model": ModelSpec(
        config_class=svd.SvdConfig,
        fit=svd.fit_svd,
        score=svd.score_svd,
        factor_ranking=FactorRanking(vectors=svd_vectors),
    ),
    "popularity_model": popularity_spec(baselines.PopularityConfig),
    "item_knn_model": item_knn_spec(baselines.ItemKnnConfig),
    "repeat_aware_model": ModelSpec(
        config_class=repeat.RepeatAwareConfig,
        fit=repeat.fit_repeat_aware,
        warm_starts=True,
        score=repeat.score_repeat_aware,
        factor_ranking=FactorRanking(own="history"),
    ),
    "user_knn_model": ModelSpec(
        config_class=baselines.UserKnnConfig, fit=baselines.fit_user_knn, score=baselines.score_user_knn
    ),
    "item_knn_bm25_model": item_knn_spec(baselines.ItemKnnBm25Config),
    "popularity_recent_model": popularity_spec(baselines.PopularityRecentConfig),
}


def ensure_registry(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(REGISTRY_DDL)


def register_model(
    con: duckdb.DuckDBPyConnection,
    *,
    model: str,
    model_version: str,
    artifact_dir: Path,
    hyperparameters: dict[str, object],
    n_users: int,
    n_items: int,
    run_id: str,
) -> None:
    """Append the registry row that makes an artifact the model's latest."""
    ensure_registry(con)
    con.execute(
        "INSERT INTO ml.model_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            model,
            model_version,
            str(artifact_dir),
            json.dumps(hyperparameters, sort_keys=True),
            n_users,
            n_items,
            datetime.now(UTC).replace(tzinfo=None),
            run_id,
        ],
    )


def purchased_pairs(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """(user_id, item_id) pairs the user already owns in ``table``: bought, or rated (a rating means
    the user has the item). Recommendations never repeat these — evaluation and publishing both
    exclude them, so the evaluated lists are the published ones."""
    return con.execute(
        f"SELECT user_id, item_id FROM {checked_table(table)} WHERE n_transactions > 0 OR n_ratings > 0"
    ).df()


def unavailable_items(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Items the catalog marks unavailable (``dim_items.available = false``): never recommended.

    Unknown availability (NULL) counts as available: most shops send no availability at all.
    """
    has_items = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = 'dim_items'"
    ).fetchone()[0]
    if not has_items:
        return []
    return con.execute("SELECT item_id FROM dim_items WHERE available = false ORDER BY item_id").df()["item_id"].tolist()


def _registry_exists(con: duckdb.DuckDBPyConnection) -> bool:
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'ml' AND table_name = 'model_registry'"
    ).fetchone()
    return bool(found[0])


def registered_models(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The models of ``MODEL_NAMES`` that have at least one registry row, in that order."""
    if not _registry_exists(con):
        return []
    present = {row[0] for row in con.execute("SELECT DISTINCT model FROM ml.model_registry").fetchall()}
    return [name for name in MODEL_NAMES if name in present]


#: The registry's order of a model's versions, newest first: what "latest" means everywhere.
NEWEST_FIRST = "ORDER BY trained_at DESC, model_version DESC"


def load_latest(con: duckdb.DuckDBPyConnection, model: str) -> LoadedModel:
    """The newest registered artifact of ``model`` (versions sort by training time)."""
    loaded = load_registered(con, model)
    if loaded is None:
        raise LookupError(
            f"no trained artifact of {model!r} in ml.model_registry (or its directory is gone): "
            f"materialize the {model} asset first"
        )
    return loaded


def load_registered(con: duckdb.DuckDBPyConnection, model: str, model_version: str | None = None) -> LoadedModel | None:
    """The registered artifact ``model_version`` of ``model`` (default: the newest), or None when the
    registry has no such row or its directory is gone from disk (e.g. removed by hand)."""
    if model not in MODEL_SPECS:
        raise ValueError(f"unknown model {model!r}; expected one of {MODEL_NAMES}")
    rows = (
        con.execute(  # fetchall: a half-read result would block the connection's next register()
            f"""
            SELECT model_version, artifact_dir, params_json FROM ml.model_registry
            WHERE model = $model AND ($version IS NULL OR model_version = $version)
            {NEWEST_FIRST} LIMIT 1
            """,
            {"model": model, "version": model_version},
        ).fetchall()
        if _registry_exists(con)
        else []
    )
    if not rows or not Path(rows[0][1]).is_dir():
        return None
    version, artifact_dir, params_json = rows[0]
    return LoadedModel(model=model, model_version=version, artifact_dir=Path(artifact_dir), params=json.loads(params_json))


@dataclass
class LoadedModel:
    """One registered artifact; its two fits are read from disk on first use."""

    model: str
    model_version: str
    artifact_dir: Path
    params: dict[str, object]
    _fits: dict[str, FitArrays] = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> ModelSpec:
        return MODEL_SPECS[self.model]

    def fit_arrays(self, fit: Fit) -> FitArrays:
        if fit not in FITS:
            raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
        if fit not in self._fits:
            self._fits[fit] = load_fit(self.artifact_dir / fit)
        return self._fits[fit]

    def unload(self) -> None:
        """Forget the fits read so far (read again on next use): lets a caller free them early."""
        self._fits.clear()

    def recommend(self, user_ids: Sequence[str], n: int, fit: Fit, **options: object) -> pd.DataFrame:
        """Top-``n`` items per user: DataFrame[user_id, rank, item_id, score], ranks 1..k (k <= n).

        ``options``: ``exclude``, ``banned_items``, ``candidate_items`` as in ``top_items``.
        """
        users, rows, cols, scores = self.top_items(user_ids, n, fit, **options)
        return pd.DataFrame(
            {
                "user_id": users.to_numpy(dtype=object)[rows],
                "rank": ranks_within_rows(rows),
                "item_id": self.fit_arrays(fit).item_ids.astype(object)[cols],
                "score": scores,
            }
        )

    def top_items(
        self,
        user_ids: Sequence[str],
        n: int,
        fit: Fit,
        exclude: pd.DataFrame | None = None,
        banned_items: Sequence[str] = (),
        candidate_items: Sequence[str] | None = None,
    ) -> tuple[pd.Index, np.ndarray, np.ndarray, np.ndarray]:
        """Top-``n`` items per user as arrays: (scored users, position in them, item column of the
        fit, score), rows grouped by user and best first (publishing turns them into a table
        without pandas; ``recommend`` into a DataFrame).

        Users unknown to the fit are absent (popularity knows everyone); ``exclude`` holds
        (user_id, item_id) pairs never to return, ``banned_items`` items never to return to anyone
        (e.g. marked unavailable in the catalog). ``candidate_items`` (None = every item) prunes the
        catalog searched; a user's own items stay candidates for models that rank them. No item
        appears twice for a user.
        """
        arrays = self.fit_arrays(fit)
        requested = unique_ids(user_ids)
        if self.spec.user_agnostic:
            users, user_rows = requested, np.arange(len(requested))
        else:
            positions = arrays.user_index.get_indexer(requested)
            users, user_rows = requested[positions >= 0], positions[positions >= 0]
        excluded = pairs_matrix(
            exclude if exclude is not None else pd.DataFrame(columns=["user_id", "item_id"]),
            users,
            arrays.item_index,
        )
        banned = banned_columns(arrays, banned_items)
        columns = (
            np.arange(arrays.n_items) if candidate_items is None else np.sort(banned_columns(arrays, candidate_items))
        )
        ranking = self.spec.factor_ranking
        pruned = np.union1d(banned, np.setdiff1d(np.arange(arrays.n_items), columns))
        if self.spec.user_agnostic:
            rows, cols, keys = shared_ranking_top_items(self.spec.score, arrays, len(user_rows), excluded, pruned, n)
        elif ranking is None:
            rows, cols, keys = dense_top_items(self.spec.score, arrays, user_rows, excluded, pruned, n)
        elif ranking.own is None:
            rows, cols, keys = factor_top_items(FactorSearch.over(ranking, arrays, excluded, banned, columns), user_rows, n)
        else:
            search = FactorSearch.over(ranking, arrays, excluded, banned, columns)
            rows, cols, keys = own_aware_top_items(
                self.spec.score, arrays.sparse[ranking.own], search, arrays, user_rows, excluded, banned, n
            )
        return users, rows, cols, self.spec.reported_score(arrays, cols, keys).astype(np.float64)

    def similar_items(
        self, item_ids: Sequence[str] | None, n: int, fit: Fit, banned_items: Sequence[str] = ()
    ) -> pd.DataFrame:
        """Top-``n`` most similar items per item: DataFrame[item_id, rank, similar_item_id, score].

        ``None`` = every item of the fit; unknown items are absent; an item is never its own
        neighbour, and ``banned_items`` are never anyone's neighbour.
        """
        if self.spec.similar is None:
            raise NotImplementedError(f"similar_items is defined for als_model and item_knn_model, not {self.model}")
        arrays = self.fit_arrays(fit)
        if item_ids is None:
            rows = np.arange(arrays.n_items)
        else:
            positions = arrays.item_index.get_indexer(unique_ids(item_ids))
            rows = positions[positions >= 0]
        banned = banned_columns(arrays, banned_items)
        step = batch_size(arrays.n_items)
        frames = [
            self._similar_batch(arrays, rows[start : start + step], banned, n) for start in range(0, len(rows), step)
        ]
        return pd.concat(frames, ignore_index=True) if frames else _empty_frame("item_id", "similar_item_id")

    def _similar_batch(self, arrays: FitArrays, rows: np.ndarray, banned: np.ndarray, n: int) -> pd.DataFrame:
        if self.spec.similar_cells is not None:
            cells = self.spec.similar_cells(arrays, rows).tocoo()
            values = np.where(np.isin(cells.col, banned) | (cells.col == rows[cells.row]), -np.inf, cells.data)
            batch_rows, cols, best = ranked_cells(cells.row, cells.col, values.astype(np.float64), n)
        else:
            scores = self.spec.similar(arrays, rows)
            scores[np.arange(len(rows)), rows] = -np.inf
            scores[:, banned] = -np.inf
            batch_rows, cols, best = top_n(scores, n)
        item_ids = arrays.item_ids.astype(object)
        return pd.DataFrame(
            {
                "item_id": item_ids[rows[batch_rows]],
                "rank": ranks_within_rows(batch_rows),
                "similar_item_id": item_ids[cols],
                "score": best,
            }
        )

    def predict_ratings(self, pairs: pd.DataFrame, fit: Fit) -> np.ndarray:
        """SVD's predicted rating of every (user_id, item_id) row, as surprise's ``predict`` gives it."""
        if self.model != "svd_model":
            raise NotImplementedError(f"predict_ratings is defined for svd_model only, not {self.model}")
        return svd.predict_svd(self.fit_arrays(fit), pairs)


def read_params(loaded: LoadedModel) -> dict[str, object]:
    return json.loads((loaded.artifact_dir / "params.json").read_text())


#: The fit each fit warm-starts from (``ModelSpec.warm_starts``): its table is a subset of the next one's.
WARM_START_FROM: dict[str, str] = {"holdout": "validation", "serving": "holdout"}


def fit_model(
    spec: ModelSpec, con: duckdb.DuckDBPyConnection, fit: Fit, config: Config, previous: FitArrays | None = None
) -> FitArrays:
    """``spec``'s ``fit`` of its table, continuing from ``previous`` (the ``WARM_START_FROM`` fit) when
    the model can; models that cannot, or a call without ``previous``, fit from scratch."""
    if spec.warm_starts and previous is not None:
        return spec.fit(con, FIT_TABLES[fit], config, start=previous)
    return spec.fit(con, FIT_TABLES[fit], config)


def ensure_fit(con: duckdb.DuckDBPyConnection, loaded: LoadedModel, fit: Fit = "serving") -> FitArrays:
    """``loaded``'s ``fit``, fitting it now from the recorded hyperparameters if the artifact lacks it.

    The model assets make only the validation and holdout fits; publishing calls this for the
    approved champion and the models it reads, so only those pay for a serving fit. The fit is
    written to a temporary folder and renamed into place, so a killed fit never leaves a
    half-written folder that a later run would take for a complete one.
    """
    folder = loaded.artifact_dir / fit
    if not folder.is_dir():
        config = loaded.spec.config_class(**loaded.params)
        previous = loaded.fit_arrays(WARM_START_FROM[fit]) if loaded.spec.warm_starts and fit in WARM_START_FROM else None
        with timed() as watch:
            arrays = fit_model(loaded.spec, con, fit, config, previous)
        staging = loaded.artifact_dir / f".{fit}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        save_fit(arrays, staging)
        staging.rename(folder)
        params = read_params(loaded)
        params["fits"][fit] = {"table": FIT_TABLES[fit], "fit_seconds": watch.seconds, **arrays.stats}
        write_params(loaded.artifact_dir, params)
    return loaded.fit_arrays(fit)


TopItems = tuple[np.ndarray, np.ndarray, np.ndarray]


def joined(parts: list[TopItems]) -> TopItems:
    """Per-batch (row, column, key) arrays, rows already offset to the whole request, as one."""
    if not parts:
        empty = np.array([], dtype=np.int64)
        return empty, empty, np.array([], dtype=np.float64)
    return tuple(np.concatenate(column) for column in zip(*parts))  # type: ignore[return-value]


def dense_top_items(
    score: Callable[[FitArrays, np.ndarray], np.ndarray],
    arrays: FitArrays,
    user_rows: np.ndarray,
    excluded: csr_matrix,
    banned: np.ndarray,
    n: int,
) -> TopItems:
    """Any model: dense score rows of every item, batch by batch, masked, then ``top_n``."""
    step = batch_size(arrays.n_items)
    parts = []
    for start in range(0, len(user_rows), step):
        keys = mask_cells(score(arrays, user_rows[start : start + step]), excluded[start : start + step])
        keys[:, banned] = -np.inf
        rows, cols, best = top_n(keys, n)
        parts.append((rows + start, cols, best))
    return joined(parts)


def shared_ranking_top_items(
    score: Callable[[FitArrays, np.ndarray], np.ndarray],
    arrays: FitArrays,
    n_users: int,
    excluded: csr_matrix,
    banned: np.ndarray,
    n: int,
) -> TopItems:
    """A user-agnostic model (popularity): one ranking, then each user's first ``n`` items of it that
    they may get; only the ranking's head (``n`` + the most exclusions any user has) is looked at."""
    keys = score(arrays, np.zeros(1, dtype=np.int64))[0]
    keys[banned] = -np.inf
    depth = min(arrays.n_items, n + int(excluded.getnnz(axis=1).max(initial=0)))
    head = np.lexsort((np.arange(arrays.n_items), -keys))[:depth]  # ties: lower column first, as top_n
    allowed = ~excluded[:, head].toarray() & np.isfinite(keys[head])[None, :]
    allowed &= np.cumsum(allowed, axis=1) <= n
    rows, positions = np.nonzero(allowed)
    return rows, head[positions], keys[head[positions]].astype(np.float64)


def local_positions(columns: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Positions inside the sorted ``columns`` of the ``wanted`` columns that are among them."""
    positions = np.searchsorted(columns, wanted)
    inside = positions < len(columns)
    found = positions[inside][columns[positions[inside]] == wanted[inside]]
    return found


def factor_top_items(search: FactorSearch, user_rows: np.ndarray, n: int) -> TopItems:
    """A pure dot-product model: implicit's top-k over the searched columns, exclusions inside."""
    parts = []
    for start in range(0, len(user_rows), FACTOR_BATCH_USERS):
        batch = slice(start, start + FACTOR_BATCH_USERS)
        rows, cols, best = search.top(user_rows[batch], batch, n)
        if search.offsets is not None:
            best = best + search.offsets[user_rows[batch]][rows]
        parts.append((rows + start, cols, best))
    return joined(parts)


@dataclass(frozen=True)
class FactorSearch:
    """A factor model's vectors restricted to the searched ``columns``, with the exclusions and
    banned items in those columns' positions: what every top-k call over a user batch needs."""

    user_vectors: np.ndarray
    item_vectors: np.ndarray
    offsets: np.ndarray | None
    excluded: csr_matrix
    banned: np.ndarray
    columns: np.ndarray
    head: NormHead

    @classmethod
    def over(
        cls, ranking: FactorRanking, arrays: FitArrays, excluded: csr_matrix, banned: np.ndarray, columns: np.ndarray
    ) -> FactorSearch:
        user_vectors, item_vectors, offsets = ranking.vectors(arrays)
        searched = item_vectors[columns]
        return cls(
            user_vectors, searched, offsets, excluded[:, columns], local_positions(columns, banned), columns,
            NormHead.of(searched),
        )

    def top(self, user_rows: np.ndarray, batch: slice | np.ndarray, depth: int) -> TopItems:
        """The best ``depth`` allowed items of ``user_rows`` (rows ``batch`` of the request), in fit columns."""
        rows, cols, best = pruned_factor_top_n(
            self.user_vectors[user_rows], self.item_vectors, self.head, depth, self.excluded[batch], self.banned
        )
        return rows, self.columns[cols], best

    def extremes(self, user_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each user's lowest- and highest-scoring searched item in fit columns, exclusions and bans
        ignored: together they fix the min-max scale of the user's full row."""
        lowest, highest = pruned_factor_extremes(self.user_vectors[user_rows], self.item_vectors, self.head)
        return self.columns[lowest], self.columns[highest]

    def top_per_depth(
        self, user_rows: np.ndarray, positions: np.ndarray, depths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(row, fit column) of each user's best ``depths[row]`` allowed items; ``user_rows`` sit at
        ``positions`` of the request, rows index them.

        Users are searched in groups of similar depth (the next power of two): a top-k heap and its
        pruning bound cost grow with k, so one heavy user must not set the depth of a whole batch."""
        groups = np.ceil(np.log2(np.maximum(depths, 1))).astype(np.int64)
        parts = []
        for group in np.unique(groups):
            members = np.flatnonzero(groups == group)
            rows, cols, _ = self.top(user_rows[members], positions[members], int(depths[members].max()))
            needed = ranks_within_rows(rows) <= depths[members][rows]
            parts.append((members[rows[needed]], cols[needed]))
        return np.concatenate([rows for rows, _ in parts]), np.concatenate([cols for _, cols in parts])


def users_by_items(arrays: FitArrays, user_rows: np.ndarray, item_columns: np.ndarray) -> FitArrays:
    """``arrays`` cut down to ``user_rows`` x ``item_columns`` (see ``FactorRanking`` for which
    arrays are user- or item-indexed): a small fit the model scores exactly like the full one."""
    dense = {
        name: values[user_rows] if name.startswith("user_") else values[item_columns] if name.startswith("item_")
        else values
        for name, values in arrays.dense.items()
    }
    sparse = {name: matrix[user_rows][:, item_columns] for name, matrix in arrays.sparse.items()}
    return FitArrays(
        user_ids=arrays.user_ids[user_rows], item_ids=arrays.item_ids[item_columns], dense=dense, sparse=sparse
    )


def own_aware_top_items(
    score: Callable[[FitArrays, np.ndarray], np.ndarray],
    own: csr_matrix,
    search: FactorSearch,
    arrays: FitArrays,
    user_rows: np.ndarray,
    excluded: csr_matrix,
    banned: np.ndarray,
    n: int,
) -> TopItems:
    """A dot-product model with ``own`` items (``FactorRanking.own``): candidates from implicit's
    top-k (each user's top n + own items, see ``FactorRanking``) plus the row's lowest and highest
    dot product over every item, banned or excluded ones too (they set the full row's min-max
    scale), then the model's own ``score`` on the candidate columns of small groups of users."""
    parts = []
    for start in range(0, len(user_rows), FACTOR_BATCH_USERS):
        rows_slice = slice(start, start + FACTOR_BATCH_USERS)
        batch = user_rows[rows_slice]
        batch_own, batch_excluded = own[batch], excluded[rows_slice]
        positions = np.arange(start, start + len(batch))
        top_rows, top_cols = search.top_per_depth(batch, positions, n + batch_own.getnnz(axis=1))
        lowest, highest = search.extremes(batch)
        everyone = np.arange(len(batch))
        candidates = csr_matrix(
            (np.ones(len(top_rows) + 2 * len(batch), dtype=bool),
             (np.r_[top_rows, everyone, everyone], np.r_[top_cols, lowest, highest])),
            shape=(len(batch), arrays.n_items),
        ) + batch_own.astype(bool) + batch_excluded
        with threadpool_limits(limits=1, user_api="blas"):  # small products: BLAS threads only cost here
            for group in range(0, len(batch), OWN_AWARE_GROUP):
                members = slice(group, group + OWN_AWARE_GROUP)
                union = np.unique(candidates[members].indices)
                keys = score(users_by_items(arrays, batch[members], union), np.arange(len(batch[members])))
                keys = mask_cells(keys, batch_excluded[members][:, union])
                keys[:, local_positions(union, banned)] = -np.inf
                rows, cols, best = top_n_of_cells(keys, candidates[members][:, union], n)
                parts.append((rows + start + group, union[cols], best))
    return joined(parts)


def banned_columns(arrays: FitArrays, banned_items: Sequence[str]) -> np.ndarray:
    """Column positions of the ``banned_items`` the fit knows."""
    positions = arrays.item_index.get_indexer(unique_ids(banned_items)) if len(banned_items) else np.array([], int)
    return positions[positions >= 0]


def unique_ids(ids: Sequence[str]) -> pd.Index:
    """The distinct ids as strings, in first-seen order."""
    return pd.Index(pd.unique(np.asarray(list(ids), dtype=object))).astype(str)


def _empty_frame(key: str, other: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            key: pd.Series(dtype=object),
            "rank": pd.Series(dtype=np.int64),
            other: pd.Series(dtype=object),
            "score": pd.Series(dtype=np.float64),
        }
    )
