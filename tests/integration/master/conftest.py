"""Fixtures of the master station's tests: a throwaway PostgreSQL cluster (one per xdist worker,
a database per test) and a master config writer for either backend."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.master.localpg import POSTGRES_FIX, LocalPostgres, find_postgres_bin
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: scripts/setup --test installs it (the test extra)")
    try:
        find_postgres_bin()
    except RuntimeError:
        pytest.skip(POSTGRES_FIX)
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The [database] section of a master config, on each backend."""
    if request.param == "sqlite":
        return f'sqlite = "{tmp_path / "master.sqlite"}"'
    pg: LocalPostgres = request.getfixturevalue("postgres")
    return f'url = "{pg.database(f"master_{next(_names)}")}"'


@pytest.fixture
def operator(tmp_path: Path) -> tuple[GatewayKey, Path]:
    key = GatewayKey.generate()
    path = tmp_path / "operator.key"
    write_key(path, key)
    return key, path


MasterConfig = Callable[..., Path]


@pytest.fixture
def master_config(tmp_path: Path, database: str, operator: tuple[GatewayKey, Path]
                  ) -> MasterConfig:
    def write(broker_url: str, *, repair: str = "", fleet: str = "") -> Path:
        path = tmp_path / "master.toml"
        path.write_text(f"""
[broker]
url = "{broker_url}"
share_group = "masters"

[database]
{database}

[operator]
key = "{operator[1]}"

[fleet]
{fleet}

[repair]
grace_s = 0.3
first_retry_s = 1.0
max_retry_s = 4.0
scan_s = 0.1
{repair}
""")
        return path

    return write
