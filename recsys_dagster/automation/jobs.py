"""Jobs: the nightly full refresh (raw files to published tables) and the weekly hyperparameter tuning."""

from dagster import AssetSelection, define_asset_job

REFRESH_JOB_NAME = "refresh_recommendations"
TUNING_JOB_NAME = "tune_hyperparameters"

#: The grid search is the dearest step and its answer changes slowly, so it runs weekly on its own.
TUNING = AssetSelection.assets("model_tuning")

#: Every asset and check but the tuning, raw files to published tables. The schedule and the inbox
#: sensor run it; training reads the parameters the latest tuning run stored (``use_tuned``).
refresh_recommendations = define_asset_job(
    name=REFRESH_JOB_NAME,
    selection=AssetSelection.all() - TUNING,
    description="Ingest new files, validate, rebuild dbt features, retrain, evaluate and republish.",
    tags={"recsys/writes": "warehouse"},
)

#: The ALS / SVD grid search on the validation window the last refresh built (``ml.tuning_runs``).
tune_hyperparameters = define_asset_job(
    name=TUNING_JOB_NAME,
    selection=TUNING,
    description="Grid-search ALS, repeat-aware and SVD on the validation window; the next refresh trains with the winners.",
    tags={"recsys/writes": "warehouse"},
)
