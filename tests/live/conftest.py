"""The live suite starts a real ``dagster dev``; its tests carry the ``live`` marker (run by ``make test``;
deselect with ``-m 'not live'``)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: starts a real dagster dev (webserver + daemon) on loopback")
