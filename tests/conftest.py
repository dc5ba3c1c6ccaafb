"""Shared test helpers: scenario files for simulated homes, the repository root, the area summary."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.areas import AreaReport

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Tests by area and the grouped skip reasons at the end of a run (tests/areas.py)."""
    if hasattr(config, "workerinput"):
        return  # an xdist worker: its reports reach the controller, which prints the summary
    config.pluginmanager.register(AreaReport(dict(os.environ)), "drgw-area-report")


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write a scenario TOML text to a file and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "home.toml"
        path.write_text(text)
        return path

    return write


from tests.mosquitto import broker_fixture  # noqa: E402  (after the helpers above)

mqtt_broker = pytest.fixture(broker_fixture())
