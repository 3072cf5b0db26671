"""Run the ``refresh_recommendations`` job, or a selection of its assets, in this process.

``python run_refresh.py [ASSET_KEY ...]``: no argument runs the whole job, asset keys run only those
assets (a real materialization of that stage). The RECSYS_* variables of the environment choose the
files. Dagster's console log goes to stderr, which the crash tests read to see how far the run got.
Exit status 0 = the run succeeded, 1 = it failed. The crash tests kill it with SIGKILL.
"""

from __future__ import annotations

import sys

from dagster import AssetKey, DagsterInstance

from recsys_dagster.definitions import defs


def main(asset_keys: list[str]) -> int:
    job = defs.resolve_job_def("refresh_recommendations")
    selection = [AssetKey(key) for key in asset_keys] or None
    result = job.execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False, asset_selection=selection)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
