"""Jobs: the nightly full refresh (raw files to published tables), the incremental refresh of one new
file's users, and the weekly hyperparameter tuning."""

from dagster import AssetSelection, define_asset_job

REFRESH_JOB_NAME = "refresh_recommendations"
INCREMENTAL_JOB_NAME = "incremental_refresh"
TUNING_JOB_NAME = "tune_hyperparameters"

#: The grid search is the dearest step and its answer changes slowly, so it runs weekly on its own.
TUNING = AssetSelection.assets("model_tuning")
#: The republication of one file's users (publish/incremental.py); never part of the full refresh.
INCREMENT = AssetSelection.assets("recommendations_increment")
#: What a new file must pass through before its users are republished: ingestion and validation, and
#: the dbt marts the increment reads (the training and holdout marts wait for the nightly run).
INCREMENT_INPUTS = AssetSelection.assets(
    "raw_events", "raw_items", "validated_interactions", "quarantined_events",
    "stg_interactions", "fct_user_item_interactions", "dim_users", "dim_items",
)

#: Every asset and check but the tuning and the increment, raw files to published tables. The schedule
#: runs it, and the inbox sensor while nothing incremental can be done (no publication yet); training
#: reads the parameters the latest tuning run stored (``use_tuned``).
refresh_recommendations = define_asset_job(
    name=REFRESH_JOB_NAME,
    selection=AssetSelection.all() - TUNING - INCREMENT,
    description="Ingest new files, validate, rebuild dbt features, retrain, evaluate and republish.",
    tags={"recsys/writes": "warehouse"},
)

#: One new file (a partition of the ingest assets): ingest, validate, rebuild the serving marts, then
#: republish only the users who acted in it against the live champion's frozen item factors.
incremental_refresh = define_asset_job(
    name=INCREMENTAL_JOB_NAME,
    selection=INCREMENT_INPUTS | INCREMENT,
    description="Ingest one new file and republish the recommendations of the users who acted in it; "
    "models, similar_items and popular_items stay as the last full refresh made them.",
    tags={"recsys/writes": "warehouse"},
)

#: The ALS / SVD grid search on the validation window the last refresh built (``ml.tuning_runs``).
tune_hyperparameters = define_asset_job(
    name=TUNING_JOB_NAME,
    selection=TUNING,
    description="Grid-search ALS, repeat-aware and SVD on the validation window; the next refresh trains with the winners.",
    tags={"recsys/writes": "warehouse"},
)
