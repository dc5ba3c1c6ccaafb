"""Shared test helpers: scenario files for simulated homes, and the repository root."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
