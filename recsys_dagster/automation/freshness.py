"""Declarative freshness of the published tables: stale when not republished for 26 hours.

The nightly run republishes every 24 hours; 26 hours leave two hours for a slow or retried run
before the UI (asset page, "Freshness") marks the tables as failing, with a warning an hour earlier.
Dagster's freshness daemon evaluates the policy (``freshness: enabled`` in dagster.yaml), so the
state is visible whether or not anyone runs a check.
"""

from datetime import timedelta

from dagster import AssetsDefinition, AssetSpec, FreshnessPolicy, apply_freshness_policy

PUBLISHED_TABLES = frozenset({"user_recommendations", "similar_items", "popular_items"})
STALE_AFTER = timedelta(hours=26)
WARN_AFTER = timedelta(hours=25)
PUBLISHED_FRESHNESS = FreshnessPolicy.time_window(fail_window=STALE_AFTER, warn_window=WARN_AFTER)


def with_published_freshness(spec: AssetSpec) -> AssetSpec:
    """The spec with the 26-hour policy when it is a published table, unchanged otherwise."""
    if spec.key.to_user_string() in PUBLISHED_TABLES:
        return apply_freshness_policy(spec, PUBLISHED_FRESHNESS)
    return spec


def apply_published_freshness(assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """Attach the policy to the definitions that produce published tables; the others are untouched."""
    return [
        asset.map_asset_specs(with_published_freshness)
        if PUBLISHED_TABLES & {key.to_user_string() for key in asset.keys}
        else asset
        for asset in assets
    ]
