"""The incremental publish: the users of one new input file re-scored and swapped into the live tables.

A full refresh retrains every model and rescores every user; a day's file touches a few thousand of
them. ``recommendations_increment`` (run by the ``incremental_refresh`` job, which the inbox sensor
launches once a publication exists) keeps the published champion's serving fit and changes only the
rows of the users who acted in the file:

1. **who**: the distinct users of the file's validated rows (``validated_interactions.source_file``);
2. **their user side**: their current rows of ``fct_user_item_interactions`` (history + new events,
   rebuilt by dbt in the same run) against the FROZEN item factors of the serving fit, solved with
   implicit's ``recalculate_user`` (the library's native, multi-threaded exact per-user least squares
   with the fit's own confidence ``alpha * strength`` and regularization: nothing of ours to keep in
   step with the library, and cheaper than any loop we could write); the repeat-aware champion also
   gets their own-item history and co-occurrence evidence recomputed (``with_history_of`` over the
   BM25 item-item similarity of the updated mart: one item-kNN fit, seconds at 2.76M events). Users whose every item is new to
   the fit stay unknown to it and get the fallback, as users unknown to a model always do;
3. **their lists**: exactly the full publish's rules (``model_rows`` for the users with >= 2 items,
   the same owned / unavailable exclusions and repurchase policy of the publication, the fallback
   ``FallbackLists`` for everyone else and for short lists);
4. **republish**: the live serving file is copied to a staging file, those users' rows of
   ``recs.user_recommendations`` are deleted and inserted in one transaction, the contract's
   invariants (``check_invariants``) run on the new rows (each is a property of one user's rows, and
   the kept rows passed them when published) and one model_version on the whole table, and the file
   is moved over the live one with ``os.replace``; then the Parquet copy of that table is re-exported.
   Any failure leaves the last good tables in place.

Everything else stays as the last full refresh left it until the nightly run: other users' rows,
``similar_items``, ``popular_items``, ``items``, the models (an item first seen in the new file has
no factors yet, so the model cannot recommend it before the nightly retraining).
"""

# No `from __future__ import annotations`: Dagster reads the `config: PublishConfig` annotation at
# decoration time and cannot resolve it from a string.

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster import AssetExecutionContext, AssetKey, BackfillPolicy, Failure, MaterializeResult, MetadataValue, asset
from implicit.cpu.als import AlternatingLeastSquares
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from recsys_dagster.ingest.assets import INPUT_FILES, partition_files
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.als import WEIGHTINGS, AlsConfig
from recsys_dagster.models.artifacts import FitArrays
from recsys_dagster.models.fallback import FallbackLists, popular_ranking, ranking_depth, users_served_the_model
from recsys_dagster.models.matrix import FIT_TABLES, load_matrix, pair_value_sql
from recsys_dagster.models.registry import LoadedModel, ensure_fit, load_latest
from recsys_dagster.models.repeat import with_history_of
from recsys_dagster.publish.assets import (
    GATE_TAG,
    PublishConfig,
    candidate_items,
    forbidden_items,
    model_rows,
    user_recommendation_rows,
)
from recsys_dagster.publish.serving import (
    INVARIANTS,
    RECOMMENDATIONS_PER_USER,
    SERVING_TABLES,
    Forbidden,
    InvariantViolation,
    PublishInvariantError,
    _staging_file,
    check_invariants,
    export_parquet,
    live_rows,
)
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource

INCREMENT_ASSET = "recommendations_increment"
#: The mart the serving fit was trained on, rebuilt by dbt in the incremental run.
SERVING_TABLE = FIT_TABLES["serving"]
USER_RECOMMENDATIONS = "recs.user_recommendations"

#: Champions whose user side can be recomputed from a user's own rows against frozen item factors:
#: model -> what it stores per user beyond the ALS factors (repeat-aware: the own-item history).
USER_SIDE_UPDATES: dict[str, Callable[[duckdb.DuckDBPyConnection, FitArrays, AlsConfig], FitArrays]] = {
    "als_model": lambda con, fit, config: fit,
    "repeat_aware_model": lambda con, fit, config: with_history_of(con, SERVING_TABLE, fit, config),
}


@dataclass(frozen=True)
class Publication:
    """The champion the live serving file was published from."""

    model: str
    model_version: str


def live_publication(serving_path: Path) -> Publication | None:
    """The champion of the live serving file (None: nothing published: no file, no
    recs.user_recommendations in it, or no row in it); an unreadable file raises (``live_rows``)."""
    rows = live_rows(serving_path, f"SELECT model, model_version FROM {USER_RECOMMENDATIONS} LIMIT 1")
    return Publication(*rows[0]) if rows else None


def full_refresh_reason(serving_path: Path, models_dir: Path) -> str | None:
    """Why a new file must go through the full refresh (None: the incremental run can take it).

    An unreadable live file also sends it there (the full refresh writes a new file and swaps it in),
    and the reason carries DuckDB's error, so whoever reads the sensor's log or the run's tags sees why.
    """
    try:
        publication = live_publication(serving_path)
    except duckdb.Error as error:
        return f"the live serving file {serving_path} could not be read: {error}"
    if publication is None:
        return "nothing is published yet"
    if publication.model not in USER_SIDE_UPDATES:
        return f"the published champion {publication.model} has no incremental user update"
    if not (models_dir / publication.model / publication.model_version / "serving").is_dir():
        return f"the serving fit of {publication.model} {publication.model_version} is missing"
    return None


def published_champion(con: duckdb.DuckDBPyConnection, publication: Publication) -> tuple[LoadedModel, bool]:
    """The registered artifact of the live publication's champion and the repurchase policy it was published under."""
    row = con.execute(
        """
        SELECT r.artifact_dir, r.params_json, p.repurchase
        FROM ml.model_registry r JOIN ml.published_runs p USING (model, model_version)
        WHERE model = ? AND model_version = ? ORDER BY p.published_at DESC LIMIT 1
        """,
        [publication.model, publication.model_version],
    ).fetchone()
    if row is None:
        raise Failure(f"{publication.model} {publication.model_version} is live but not recorded as published")
    artifact_dir, params_json, repurchase = row
    champion = LoadedModel(publication.model, publication.model_version, Path(artifact_dir), json.loads(params_json))
    return champion, bool(repurchase)


#: The distinct users of the files' validated rows (quarantined rows change nobody's list).
ACTING_USERS_SQL = "SELECT DISTINCT user_id FROM validated_interactions WHERE list_contains($source_files, source_file)"


def acting_users(con: duckdb.DuckDBPyConnection, source_files: list[Path]) -> pd.Index:
    """The users who acted in ``source_files`` (``ACTING_USERS_SQL``), sorted."""
    frame = con.execute(f"{ACTING_USERS_SQL} ORDER BY user_id", {"source_files": list(map(str, source_files))}).df()
    return pd.Index(frame["user_id"].astype(str))


def reindexed(user_ids: np.ndarray, item_ids: np.ndarray, values: np.ndarray, users: pd.Index, items: pd.Index) -> csr_matrix:
    """(user, item, value) triples as a float32 ``users`` x ``items`` CSR; other ids are dropped."""
    rows, cols = users.get_indexer(user_ids), items.get_indexer(item_ids)
    known = (rows >= 0) & (cols >= 0)
    return csr_matrix(
        (np.asarray(values, np.float32)[known], (rows[known], cols[known])), shape=(len(users), len(items)), dtype=np.float32
    )


def current_rows(con: duckdb.DuckDBPyConnection, users: pd.Index, items: pd.Index, config: AlsConfig) -> csr_matrix:
    """``users`` x ``items`` values of the users' current rows, as the fit's matrix had them: the same
    pair values (strength, or ``config.event_weights``: ``pair_value_sql``) and ``config.weighting``.

    Without weighting only their rows are read. BM25 and TF-IDF weigh a cell by statistics of the
    whole matrix (item document frequency, mean row length), so then the whole mart is loaded and
    weighted like ``fit_als`` does, and their rows taken from it.
    """
    if config.weighting == "none":
        value, parameters = pair_value_sql(config.event_weights)
        frame = con.execute(
            f"SELECT user_id, item_id, value FROM (SELECT user_id, item_id, {value} AS value FROM {SERVING_TABLE}) "
            "WHERE value > 0 AND user_id IN (SELECT unnest($users))",
            {**parameters, "users": users.tolist()},
        ).df()
        return reindexed(frame["user_id"].to_numpy(str), frame["item_id"].to_numpy(str), frame["value"], users, items)
    whole = load_matrix(con, SERVING_TABLE, config.event_weights)
    cells = WEIGHTINGS[config.weighting](whole.matrix).tocoo()
    return reindexed(whole.user_ids[cells.row], whole.item_ids[cells.col], cells.data, users, items)


def recalculated_user_factors(item_factors: np.ndarray, rows: csr_matrix, config: AlsConfig) -> np.ndarray:
    """Each row's exact ALS user factors against the frozen ``item_factors`` (implicit's ``recalculate_user``)."""
    with threadpool_limits(limits=1, user_api="blas"):  # implicit parallelises over users itself (as fit_als)
        model = AlternatingLeastSquares(
            factors=item_factors.shape[1], regularization=config.regularization, alpha=config.alpha
        )
        model.item_factors = item_factors
        factors = model.recalculate_user(np.arange(rows.shape[0]), rows) if rows.shape[0] else np.empty((0, 1))
    return np.asarray(factors, dtype=np.float32).reshape(rows.shape[0], item_factors.shape[1])


def user_side_refit(con: duckdb.DuckDBPyConnection, champion: LoadedModel, users: pd.Index) -> FitArrays:
    """The champion's serving fit with its user side replaced by ``users`` recomputed from their current
    rows: item arrays and knobs unchanged, only users with a row on a fitted item (the rest are unknown
    to the fit and get the fallback)."""
    serving = champion.fit_arrays("serving")
    config = champion.spec.config_class(**champion.params)
    rows = current_rows(con, users, serving.item_index, config)
    known = rows.getnnz(axis=1) > 0
    fit = FitArrays(
        user_ids=users[known].to_numpy(str),
        item_ids=serving.item_ids,
        dense={
            **{name: values for name, values in serving.dense.items() if not name.startswith("user_")},
            "user_factors": recalculated_user_factors(serving.dense["item_factors"], rows[known], config),
        },
    )
    return USER_SIDE_UPDATES[champion.model](con, fit, config)


def with_serving_fit(champion: LoadedModel, fit: FitArrays) -> LoadedModel:
    """``champion`` scoring from ``fit`` as its serving fit (same model, version and knobs)."""
    return dataclasses.replace(champion, _fits={"serving": fit})


def users_limited_to(con: duckdb.DuckDBPyConnection, source_files: list[Path]) -> None:
    """Shadow ``dim_users`` with a temporary table of the rows of the users who acted in ``source_files``
    (the fallback SQL lists every ``dim_users`` user; DuckDB resolves temporary tables first).
    Undo with ``drop_user_limit``."""
    con.execute(
        f"CREATE TEMP TABLE dim_users AS SELECT * FROM dim_users WHERE user_id IN ({ACTING_USERS_SQL})",
        {"source_files": list(map(str, source_files))},
    )


def drop_user_limit(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP TABLE IF EXISTS temp.dim_users")


def increment_lists(
    con: duckdb.DuckDBPyConnection, champion: LoadedModel, repurchase: bool, source_files: list[Path],
    config: PublishConfig,
) -> tuple[pa.Table, Forbidden, int]:
    """The published lists of the users who acted in ``source_files``, by the full publish's rules; also
    what they must never contain (the invariants' input) and how many users the champion scored."""
    forbidden = forbidden_items(con, repurchase)
    owned, banned = forbidden.purchased, forbidden.unavailable
    popularity = load_latest(con, "popularity_model")
    ensure_fit(con, popularity)
    depth = max(config.popular_items, ranking_depth(2 * RECOMMENDATIONS_PER_USER, owned))
    ranking = popular_ranking(popularity, depth, fit="serving", banned_items=banned)
    users_limited_to(con, source_files)
    try:
        warm = users_served_the_model(con)
        scored = with_serving_fit(champion, user_side_refit(con, champion, pd.Index(warm.astype(str))))
        champion_rows = model_rows(scored, warm, owned, banned, candidate_items(con, config.candidate_share))
        recs = FallbackLists(
            champion_rows, ranking, owned, RECOMMENDATIONS_PER_USER, config.fallback_recent_days
        ).arrow(con)
    finally:
        drop_user_limit(con)
    generated_at = datetime.now(UTC).replace(tzinfo=None)
    return user_recommendation_rows(recs, champion, generated_at), forbidden, len(scored.fit_arrays("serving").user_ids)


#: The contract's tables that hold recommendations (the invariants read all three).
RECOMMENDATION_TABLES = ("recs.user_recommendations", "recs.similar_items", "recs.popular_items")
#: The one invariant that spans users: it is checked on the whole table, the others on the new rows.
WHOLE_TABLE_INVARIANT = "single_model_version"


def replacing_rows_violations(rows: pa.Table, forbidden: Forbidden) -> list[InvariantViolation]:
    """``check_invariants`` on the replacing rows alone, in a scratch database with the contract's tables.

    Every invariant but one model_version is a property of each user's rows (ranks, duplicates,
    purchased or unavailable items, NULL ids, finite scores); the rows kept passed them when they were
    published and are unchanged, so checking the new rows proves the table, at a cost that grows with
    the increment rather than with every published row. (An item the catalog marked unavailable since
    then leaves the kept rows at the nightly full refresh.)"""
    with duckdb.connect() as scratch:
        scratch.execute("CREATE SCHEMA recs")
        for table in RECOMMENDATION_TABLES:
            scratch.execute(f"CREATE TABLE {table} ({', '.join(f'{n} {kind}' for n, kind in SERVING_TABLES[table])})")
        scratch.register("incoming", rows)
        scratch.execute(f"INSERT INTO {USER_RECOMMENDATIONS} BY NAME SELECT * FROM incoming")
        return check_invariants(scratch, forbidden)


def increment_violations(
    con: duckdb.DuckDBPyConnection, rows: pa.Table, forbidden: Forbidden
) -> list[InvariantViolation]:
    """Every invariant the staged table breaks after the swap of ``rows`` (empty = publishable)."""
    whole_table = con.execute(INVARIANTS[WHOLE_TABLE_INVARIANT]).fetchone()[0]
    spanning = [InvariantViolation(WHOLE_TABLE_INVARIANT, int(whole_table))] if whole_table else []
    return spanning + [v for v in replacing_rows_violations(rows, forbidden) if v.name != WHOLE_TABLE_INVARIANT]


@dataclass(frozen=True)
class Replacement:
    """What one swap did to recs.user_recommendations."""

    rows_deleted: int
    rows_inserted: int
    rows_total: int


def replace_user_rows(serving_path: Path, users: pd.Index, rows: pa.Table, forbidden: Forbidden) -> Replacement:
    """Swap ``users``' rows of recs.user_recommendations for ``rows`` in a copy of the live serving
    file (one transaction), check the contract's invariants (``increment_violations``), then rename the
    copy over the live file. Raises ``PublishInvariantError`` (live file untouched) when a check fails."""
    with _staging_file(serving_path) as staging:
        shutil.copyfile(serving_path, staging)
        with duckdb.connect(str(staging)) as con:
            con.register("replaced_users", pd.DataFrame({"user_id": users}))
            con.register("incoming", rows)
            con.begin()
            deleted = con.execute(
                f"DELETE FROM {USER_RECOMMENDATIONS} WHERE user_id IN (SELECT user_id FROM replaced_users)"
            ).fetchone()[0]
            inserted = con.execute(f"INSERT INTO {USER_RECOMMENDATIONS} BY NAME SELECT * FROM incoming").fetchone()[0]
            violations = increment_violations(con, rows, forbidden)
            if violations:
                con.rollback()
                raise PublishInvariantError(
                    "increment not published, invariants broken: "
                    + ", ".join(f"{v.name} ({v.offending_rows} rows)" for v in violations)
                )
            con.commit()
            total = con.execute(f"SELECT count(*) FROM {USER_RECOMMENDATIONS}").fetchone()[0]
            con.execute("CHECKPOINT")
        os.replace(staging, serving_path)
    return Replacement(int(deleted), int(inserted), int(total))


def republish(
    context: AssetExecutionContext, paths: RecsysPaths, users: pd.Index, rows: pa.Table, forbidden: Forbidden
) -> Replacement:
    """``replace_user_rows`` on the live serving file (nothing to do for a file that changed no user);
    a broken invariant tags the run as publishing does and fails it with the old tables in place."""
    if not len(users):
        return Replacement(0, 0, 0)
    try:
        return replace_user_rows(paths.serving_file(), users, rows, forbidden)
    except PublishInvariantError as error:
        context.instance.add_run_tags(context.run.run_id, {GATE_TAG: str(error)[:250]})
        raise Failure(description=f"{error}; previous tables kept", metadata={"reason": str(error)}) from error


@asset(
    name=INCREMENT_ASSET,
    partitions_def=INPUT_FILES,
    backfill_policy=BackfillPolicy.single_run(),  # a backfill of several files republishes their users once
    group_name="publish",
    pool=WAREHOUSE_POOL,
    deps=[AssetKey("validated_interactions"), AssetKey(SERVING_TABLE), AssetKey("dim_users"), AssetKey("dim_items")],
    description="The users who acted in new input files, re-scored against the published champion's frozen "
    "item factors and swapped into recs.user_recommendations (and its Parquet copy); everything else stays as "
    "the last full refresh published it.",
)
def recommendations_increment(
    context: AssetExecutionContext, config: PublishConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Republish the rows of the users who acted in this partition's file (module docstring)."""
    reason = full_refresh_reason(paths.serving_file(), paths.models_path())
    if reason is not None:  # e.g. launched by hand, or the nightly run changed the champion meanwhile
        raise Failure(f"no incremental refresh possible: {reason}; run refresh_recommendations")
    publication = live_publication(paths.serving_file())
    steps: dict[str, float] = {}
    with timed() as total:
        with warehouse.get_connection() as con:
            with timed() as watch:
                source_files = partition_files(list(context.partition_keys), paths)
                users = acting_users(con, source_files)
                champion, repurchase = published_champion(con, publication)
            steps["find_users_s"] = watch.seconds
            with timed() as watch:
                rows, forbidden, model_users = increment_lists(con, champion, repurchase, source_files, config)
            steps["refit_and_score_s"] = watch.seconds
        with timed() as watch:
            replaced = republish(context, paths, users, rows, forbidden)
        steps["republish_s"] = watch.seconds
        with timed() as watch:
            exported = (
                export_parquet(paths.serving_file(), paths.published_path(), (USER_RECOMMENDATIONS,)) if len(users) else {}
            )
        steps["parquet_s"] = watch.seconds
    context.log.info(
        f"{', '.join(file.name for file in source_files)}: {len(users)} users republished "
        f"({model_users} by {champion.model}), {replaced.rows_deleted} rows replaced by {replaced.rows_inserted}"
    )
    return MaterializeResult(
        metadata={
            "source_files": MetadataValue.text(", ".join(map(str, source_files))),
            "users_updated": MetadataValue.int(len(users)),
            "model_users": MetadataValue.int(model_users),
            "rows_deleted": MetadataValue.int(replaced.rows_deleted),
            "rows_inserted": MetadataValue.int(replaced.rows_inserted),
            **({"dagster/row_count": MetadataValue.int(replaced.rows_total)} if len(users) else {}),
            "model": MetadataValue.text(champion.model),
            "model_version": MetadataValue.text(champion.model_version),
            "repurchase_policy": MetadataValue.bool(repurchase),
            **{name: MetadataValue.float(seconds) for name, seconds in steps.items()},
            "duration_s": MetadataValue.float(total.seconds),
            "serving_file": MetadataValue.path(str(paths.serving_file())),
            "parquet": MetadataValue.path(str(exported.get(USER_RECOMMENDATIONS, ""))),
            "preview": frame_preview(rows.slice(0, 20).to_pandas(), limit=20),
        }
    )
