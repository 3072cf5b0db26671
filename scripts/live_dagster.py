"""Start a real ``dagster dev`` (webserver + daemon + the workspace.yaml code location) and talk to it.

Used by the live end-to-end test (tests/live) and by the asset-graph screenshot script: both need a
running deployment on a free loopback port with its own DAGSTER_HOME, and both must leave no process
behind. ``dagster dev`` is started in a new process group, so that stopping it also stops the
daemon, the code server and any run worker they launched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DAGSTER = PROJECT_ROOT / ".venv" / "bin" / "dagster"
LOCATION_NAME = "recsys_dagster"
REPOSITORY_NAME = "__repository__"
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

LOCATION_QUERY = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


class LiveDagsterError(RuntimeError):
    """The deployment did not start, did not answer, or answered with an error."""


def free_loopback_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class LiveDagster:
    """A running ``dagster dev``: its URL and the process (leader of its own process group)."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict:
        """POST a GraphQL query; returns ``data`` (raises on transport or GraphQL errors)."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise LiveDagsterError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def location_status(self) -> tuple[str, str]:
        """(load status, type of the loaded location or its error message) of our code location."""
        data = self.graphql(LOCATION_QUERY, timeout=10)["workspaceOrError"]
        for entry in data.get("locationEntries", []):
            if entry["name"] == LOCATION_NAME:
                loaded = entry["locationOrLoadError"] or {}
                return entry["loadStatus"], loaded.get("message") or loaded.get("__typename", "")
        return "MISSING", ""

    def wait_for_code_location(self, timeout: float) -> None:
        """Block until the webserver answers and the code location is loaded (or fail with the log)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LiveDagsterError(f"dagster dev exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, detail = self.location_status()
                if status == "LOADED" and detail == "RepositoryLocation":
                    return
                if status == "LOADED":
                    raise LiveDagsterError(f"code location failed to load: {detail}")
                last = status
            except (OSError, ValueError) as error:  # webserver not listening / not answering yet
                last = repr(error)
            time.sleep(1)
        raise LiveDagsterError(f"code location not loaded after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def prepare_dagster_home(home: Path) -> Path:
    """A fresh instance directory with the project's dagster.yaml (as ``make dev`` does)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def stop(process: subprocess.Popen, grace_seconds: float = 20) -> None:
    """Stop the whole process group: SIGTERM (dagster dev shuts its children down), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group (run workers, code server)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def running_dagster(env: Mapping[str, str], home: Path, log_path: Path, load_timeout: float = 120) -> Iterator[LiveDagster]:
    """``dagster dev -w workspace.yaml`` on a free loopback port, with ``home`` as DAGSTER_HOME and
    ``env`` added to the environment; stopped (process group) when the block exits, even on error."""
    port = free_loopback_port()
    full_env = {**os.environ, **env, "DAGSTER_HOME": str(prepare_dagster_home(home))}
    command = [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    live = LiveDagster(f"http://127.0.0.1:{port}", process, log_path)
    try:
        live.wait_for_code_location(load_timeout)
        yield live
    finally:
        stop(process)
