"""Screenshot of the asset graph page of a real ``dagster dev``, saved to docs/asset-graph.png.

Rerun with ``make screenshot``. Starts the deployment (scripts/live_dagster.py) with a throw-away
DAGSTER_HOME and RECSYS_* paths (the graph comes from the definitions, no run is needed), then lets
headless Debian Chromium render the global asset lineage page (one box per stage group; the UI's
auto-fit works on that view, while a fully expanded 25-asset graph does not fit one screen).
Chromium gets a fresh profile and no network beyond loopback-served pages (no sync, component
updates, background networking or QUIC).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.live_dagster import PROJECT_ROOT, running_dagster  # noqa: E402

GRAPH_PATH = "/asset-groups"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    raise SystemExit("chromium not found: run `make screenshot` (installs Debian's chromium) or apt-get install chromium")


def take_screenshot(url: str, target: Path, profile: Path, width: int, height: int, render_ms: int) -> None:
    """Render ``url`` headless and write the PNG; ``render_ms`` of virtual time lets the graph lay out."""
    command = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--virtual-time-budget={render_ms}", f"--screenshot={target}", url]
    subprocess.run(command, check=True, timeout=180, capture_output=True)
    if not target.is_file() or target.stat().st_size < 10_000:
        raise SystemExit(f"chromium wrote no usable screenshot to {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "docs" / "asset-graph.png")
    parser.add_argument("--width", type=int, default=1800)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--render-ms", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recsys-screenshot-") as temp:
        root = Path(temp)
        env = {f"RECSYS_{name.upper()}": str(root / name) for name in ("input_dir", "inbox_dir", "models_dir",
                                                                         "published_dir")}
        env |= {"RECSYS_DUCKDB_PATH": str(root / "warehouse.duckdb"), "RECSYS_SERVING_PATH": str(root / "serving.duckdb")}
        with running_dagster(env, root / "dagster_home", root / "dagster_dev.log") as live:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            take_screenshot(live.url + GRAPH_PATH, args.output.resolve(), root / "chromium-profile",
                            args.width, args.height, args.render_ms)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
