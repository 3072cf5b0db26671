"""The validation split and the model assets: each model is fitted twice here and registered as
one versioned artifact.

The "validation" fit (on ``ml.validation_train_user_item``) picks the champion and tunes; the
"holdout" fit (on ``fct_train_user_item``) is what the test-window evaluation reports. The
"serving" fit (on ``fct_user_item_interactions``) is what gets published: it is made by the
publish step (``registry.ensure_fit``) for the approved champion and the models publishing reads,
from the hyperparameters recorded here, so the published model is the evaluated recipe on more
data while the challengers never pay for a fit nobody publishes (at RetailRocket size one ALS fit
costs about as much as the rest of a model step together). Each model asset then removes its model's
versions that retention no longer keeps (``models/retention.py``), so nightly runs do not fill the disk.
"""


import json

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from recsys_dagster.automation.retries import STEP_RETRY_POLICY
from recsys_dagster.metadata import frame_preview, timed
from recsys_dagster.models.artifacts import new_model_version, save_fit, write_params
from recsys_dagster.models.matrix import FIT_TABLES, table_fingerprint
from recsys_dagster.models.registry import MODEL_SPECS, TRAINING_FITS, fit_model, register_model
from recsys_dagster.models.retention import prune_versions
from recsys_dagster.models.tuning import TuningConfig, tune, with_tuned_defaults
from recsys_dagster.models.validation import build_validation_split
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource

MODEL_DEPS = [AssetKey("validation_split"), AssetKey("fct_train_user_item"), AssetKey("fct_user_item_interactions")]


def train_and_register(
    context: AssetExecutionContext, model: str, config: Config, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Fit ``model`` on the validation and holdout tables, save the artifact folder, append the registry
    row, then remove the model's versions retention no longer keeps (``models/retention.py``).

    The fingerprints of all three tables are recorded, the serving table's too: the version names
    the data its later serving fit will see, and another model may reuse a fit only on equal data.
    """
    spec = MODEL_SPECS[model]
    with warehouse.get_connection() as con:
        config = with_tuned_defaults(con, model, config)
        hyperparameters = config.model_dump()
        fingerprints = {fit: table_fingerprint(con, table) for fit, table in FIT_TABLES.items()}
        fits, seconds = {}, {}
        for fit in TRAINING_FITS:
            with timed() as watch:
                fits[fit] = fit_model(spec, con, fit, config, previous=fits.get("validation"))
            seconds[fit] = watch.seconds
        model_version = new_model_version(hyperparameters, fingerprints)
        artifact_dir = paths.models_path() / model / model_version
        for fit, arrays in fits.items():
            save_fit(arrays, artifact_dir / fit)
        fit_reports = {
            fit: {"table": FIT_TABLES[fit], "fit_seconds": seconds[fit], "fingerprint": fingerprints[fit], **fits[fit].stats}
            for fit in TRAINING_FITS
        }
        write_params(
            artifact_dir,
            {
                "model": model,
                "model_version": model_version,
                "hyperparameters": hyperparameters,
                "fingerprints": fingerprints,
                "fits": fit_reports,
            },
        )
        holdout = fits["holdout"].stats
        register_model(
            con,
            model=model,
            model_version=model_version,
            artifact_dir=artifact_dir,
            hyperparameters=hyperparameters,
            n_users=holdout["n_users"],
            n_items=holdout["n_items"],
            run_id=context.run.run_id,
        )
        context.log.info(f"{model} {model_version} saved to {artifact_dir}")
        pruned = prune_versions(con, paths, model, model_version, context.log)
    return MaterializeResult(
        metadata={**model_metadata(model_version, str(artifact_dir), hyperparameters, fit_reports), **pruned.metadata()}
    )


def model_metadata(
    model_version: str, artifact_dir: str, hyperparameters: dict[str, object], fit_reports: dict[str, dict]
) -> dict[str, object]:
    """Holdout-fit sizes under plain names (what the test window judges), validation sizes prefixed."""
    holdout, validation = fit_reports["holdout"], fit_reports["validation"]
    return {
        "model_version": MetadataValue.text(model_version),
        "artifact_path": MetadataValue.path(artifact_dir),
        "params": MetadataValue.json(hyperparameters),
        "n_users": MetadataValue.int(holdout["n_users"]),
        "n_items": MetadataValue.int(holdout["n_items"]),
        "nnz": MetadataValue.int(holdout["nnz"]),
        "fit_seconds": MetadataValue.float(holdout["fit_seconds"]),
        "validation_n_users": MetadataValue.int(validation["n_users"]),
        "validation_n_items": MetadataValue.int(validation["n_items"]),
        "validation_nnz": MetadataValue.int(validation["nnz"]),
        "validation_fit_seconds": MetadataValue.float(validation["fit_seconds"]),
    }


MODEL_ASSET_ARGS = {"group_name": "models", "deps": MODEL_DEPS, "kinds": {"python", "duckdb"}, "pool": WAREHOUSE_POOL,
                    "retry_policy": STEP_RETRY_POLICY}


@asset(
    group_name="models",
    deps=[AssetKey("stg_interactions"), AssetKey("int_holdout_cutoff"), AssetKey("fct_train_user_item")],
    kinds={"python", "duckdb"},
    pool=WAREHOUSE_POOL,
)
def validation_split(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    """The train period split again at its own quantile: ``ml.validation_train_user_item`` (fit
    for tuning and champion choice) and ``ml.validation_holdout_interactions`` (what it is judged on)."""
    with timed() as watch, warehouse.get_connection() as con:
        summary = build_validation_split(con)
    if summary["n_train_pairs"] == 0 or summary["n_window_pairs"] == 0:
        raise Failure(
            description=f"the validation split is empty ({summary}): the train period is too short to split again"
        )
    return MaterializeResult(
        metadata={
            "validation_cutoff": MetadataValue.text(summary["validation_cutoff"]),
            "test_cutoff": MetadataValue.text(summary["test_cutoff"]),
            "n_train_pairs": MetadataValue.int(summary["n_train_pairs"]),
            "n_window_pairs": MetadataValue.int(summary["n_window_pairs"]),
            "event_weights": MetadataValue.json(summary["event_weights"]),
            "duration_s": MetadataValue.float(watch.seconds),
        }
    )


@asset(group_name="models", deps=[AssetKey("validation_split")], kinds={"python", "duckdb"}, pool=WAREHOUSE_POOL)
def model_tuning(context: AssetExecutionContext, config: TuningConfig, warehouse: WarehouseResource) -> MaterializeResult:
    """Budgeted ALS, repeat-aware and SVD grid search on the validation window (``models/tuning.py``); the selected
    parameters, stored in ``ml.tuning_runs``, are the next training run's defaults."""
    with timed() as watch, warehouse.get_connection() as con:
        trials = tune(con, context.run.run_id, config)
    selected = trials[trials["selected"]]
    return MaterializeResult(
        metadata={
            "dagster/row_count": MetadataValue.int(len(trials)),
            "trials": frame_preview(trials[["model", "trial", "params_json", "metric", "value", "selected"]], len(trials)),
            "selected": MetadataValue.json({row.model: json.loads(row.params_json) for row in selected.itertuples()}),
            "duration_s": MetadataValue.float(watch.seconds),
        }
    )


def model_asset(model: str, description: str, after: tuple[str, ...] = ()) -> AssetsDefinition:
    """The asset that trains ``model`` with its spec's Config class as run configuration; ``after``
    names model assets whose artifacts its fit reuses (so they must be trained first)."""
    config_class = MODEL_SPECS[model].config_class
    args = {**MODEL_ASSET_ARGS, "deps": [*MODEL_DEPS, *(AssetKey(name) for name in after)]}

    @asset(name=model, description=description, **args)
    def train(
        context: AssetExecutionContext, config: config_class, warehouse: WarehouseResource, paths: RecsysPaths
    ) -> MaterializeResult:
        return train_and_register(context, model, config, warehouse, paths)

    return train


als_model = model_asset("als_model", "Implicit ALS on interaction strength (see models/als.py).")
svd_model = model_asset(
    "svd_model", "Surprise SVD on star ratings, or on ratings derived from the strongest event (see models/svd.py)."
)
popularity_model = model_asset(
    "popularity_model", "Items by distinct users over all history; also the cold-start fallback."
)
popularity_recent_model = model_asset(
    "popularity_recent_model", "Items by distinct users in the last days of the data (baseline)."
)
item_knn_model = model_asset("item_knn_model", "Item-item cosine neighbours (baseline; feeds recs.similar_items).")
item_knn_bm25_model = model_asset("item_knn_bm25_model", "Item-item BM25 neighbours (baseline).")
user_knn_model = model_asset("user_knn_model", "User-based cosine kNN, top-20 neighbours, weighted average (baseline).")
repeat_aware_model = model_asset(
    "repeat_aware_model",
    "The user's own recent items (recency- and intensity-weighted) blended with ALS (reuses als_model's fits).",
    after=("als_model",),
)

MODEL_ASSETS = [
    als_model,
    svd_model,
    popularity_model,
    item_knn_model,
    repeat_aware_model,
    user_knn_model,
    item_knn_bm25_model,
    popularity_recent_model,
]
