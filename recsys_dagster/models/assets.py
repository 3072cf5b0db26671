"""The four model assets: each fits its model twice and registers one versioned artifact.

The "holdout" fit (on ``fct_train_user_item``) is what ``model_evaluation`` judges; the "serving"
fit (on ``fct_user_item_interactions``) is what gets published. Both come from the same
hyperparameters in the same run, so the published model is the evaluated recipe on more data.
"""


from dagster import AssetExecutionContext, AssetKey, Config, MaterializeResult, MetadataValue, asset

from recsys_dagster.metadata import timed
from recsys_dagster.models.als import AlsConfig
from recsys_dagster.models.artifacts import new_model_version, save_fit, write_params
from recsys_dagster.models.baselines import ItemKnnConfig, PopularityConfig
from recsys_dagster.models.matrix import FIT_TABLES, table_fingerprint
from recsys_dagster.models.registry import MODEL_SPECS, register_model
from recsys_dagster.models.svd import SvdConfig
from recsys_dagster.resources import WAREHOUSE_POOL, RecsysPaths, WarehouseResource

MODEL_DEPS = [AssetKey("fct_train_user_item"), AssetKey("fct_user_item_interactions")]


def train_and_register(
    context: AssetExecutionContext, model: str, config: Config, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Fit ``model`` on both tables, save the artifact folder, append the registry row."""
    spec = MODEL_SPECS[model]
    hyperparameters = config.model_dump()
    with warehouse.get_connection() as con:
        fingerprints = {fit: table_fingerprint(con, table) for fit, table in FIT_TABLES.items()}
        fits, seconds = {}, {}
        for fit, table in FIT_TABLES.items():
            with timed() as watch:
                fits[fit] = spec.fit(con, table, config)
            seconds[fit] = watch.seconds
        model_version = new_model_version(hyperparameters, fingerprints)
        artifact_dir = paths.models_path() / model / model_version
        for fit, arrays in fits.items():
            save_fit(arrays, artifact_dir / fit)
        fit_reports = {
            fit: {"table": table, "fit_seconds": seconds[fit], "fingerprint": fingerprints[fit], **fits[fit].stats}
            for fit, table in FIT_TABLES.items()
        }
        write_params(
            artifact_dir,
            {"model": model, "model_version": model_version, "hyperparameters": hyperparameters, "fits": fit_reports},
        )
        serving = fits["serving"].stats
        register_model(
            con,
            model=model,
            model_version=model_version,
            artifact_dir=artifact_dir,
            hyperparameters=hyperparameters,
            n_users=serving["n_users"],
            n_items=serving["n_items"],
            run_id=context.run.run_id,
        )
    context.log.info(f"{model} {model_version} saved to {artifact_dir}")
    return MaterializeResult(metadata=model_metadata(model_version, str(artifact_dir), hyperparameters, fit_reports))


def model_metadata(
    model_version: str, artifact_dir: str, hyperparameters: dict[str, object], fit_reports: dict[str, dict]
) -> dict[str, object]:
    """Serving-fit sizes under plain names (what gets published), holdout sizes prefixed."""
    serving, holdout = fit_reports["serving"], fit_reports["holdout"]
    return {
        "model_version": MetadataValue.text(model_version),
        "artifact_path": MetadataValue.path(artifact_dir),
        "params": MetadataValue.json(hyperparameters),
        "n_users": MetadataValue.int(serving["n_users"]),
        "n_items": MetadataValue.int(serving["n_items"]),
        "nnz": MetadataValue.int(serving["nnz"]),
        "fit_seconds": MetadataValue.float(serving["fit_seconds"]),
        "holdout_n_users": MetadataValue.int(holdout["n_users"]),
        "holdout_n_items": MetadataValue.int(holdout["n_items"]),
        "holdout_nnz": MetadataValue.int(holdout["nnz"]),
        "holdout_fit_seconds": MetadataValue.float(holdout["fit_seconds"]),
    }


MODEL_ASSET_ARGS = {"group_name": "models", "deps": MODEL_DEPS, "kinds": {"python", "duckdb"}, "pool": WAREHOUSE_POOL}


@asset(**MODEL_ASSET_ARGS)
def als_model(
    context: AssetExecutionContext, config: AlsConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Implicit ALS on interaction strength (see ``models/als.py``)."""
    return train_and_register(context, "als_model", config, warehouse, paths)


@asset(**MODEL_ASSET_ARGS)
def svd_model(
    context: AssetExecutionContext, config: SvdConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Surprise SVD on star ratings, or on ratings derived from the strongest event (see ``models/svd.py``)."""
    return train_and_register(context, "svd_model", config, warehouse, paths)


@asset(**MODEL_ASSET_ARGS)
def popularity_model(
    context: AssetExecutionContext, config: PopularityConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Items by distinct users, optionally in a recent window; also the cold-start fallback."""
    return train_and_register(context, "popularity_model", config, warehouse, paths)


@asset(**MODEL_ASSET_ARGS)
def item_knn_model(
    context: AssetExecutionContext, config: ItemKnnConfig, warehouse: WarehouseResource, paths: RecsysPaths
) -> MaterializeResult:
    """Item-item cosine or BM25 neighbours (see ``models/baselines.py``)."""
    return train_and_register(context, "item_knn_model", config, warehouse, paths)


MODEL_ASSETS = [als_model, svd_model, popularity_model, item_knn_model]
