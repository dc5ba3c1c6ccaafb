"""Issue 12, faults 5 and 10, with real parts: the agent refusing a setting out of range at start,
`write_point` replying what the device holds, `read_register`'s `words`, and the modes of the files
the agent creates (store, nonce cache, remote config) whatever the umask.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_shims.home import SimulatedHome
from gateway.agent import trial
from gateway.agent.lifetime import StopRequest
from gateway.agent.wiring import LoopOptions, build
from gateway.config.gateway import load_config
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.measurement.store.database import Store
from gateway.network.nonces import NonceCache

# --------------------------------------------------------------- fault 5: drgw run, before and after


@pytest.mark.parametrize(("table", "line", "key"), [
    ("gateway", "chain_id = -1", "chain_id"),  # crashed: ValueError: -1 does not fit uint256
    ("mqtt", "keepalive = -1", "keepalive"),  # crashed: paho ValueError: Keepalive must be >=0.
    ("mqtt", "inflight = -1", "inflight"),  # crashed: ValueError: PublishLimits.window ... >= 1
    ("store", "outbox_max_rows = -1", "outbox_max_rows"),  # ran, evicting every batch unsent
])
def test_drgw_run_refuses_the_setting_with_exit_2_and_no_traceback(tmp_path: Path, table: str,
                                                                   line: str, key: str) -> None:
    write_key(tmp_path / "gw.key", GatewayKey.generate())  # so that nothing else stops it first
    path = tmp_path / "drgw.toml"
    path.write_text(f'[gateway]\nkey = "gw.key"\n[{table}]\n{line}\n' if table != "gateway"
                    else f'[gateway]\nkey = "gw.key"\n{line}\n')
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "run", str(path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"{path}: " in out.stderr and f"{key}: -1 is out of range" in out.stderr
    assert not (tmp_path / "drgw.db").exists()  # refused before anything was created


# --------------------------------------------------------------- fault 10 (a), (c): the commands

EV = """
[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
"""


def test_write_point_replies_the_value_the_device_holds_and_read_register_its_words(
        tmp_path: Path, scenario_file: Callable[[str], Path]) -> None:
    async def main() -> tuple[dict[str, object], dict[str, object], dict[str, object], object]:
        async with SimulatedHome(scenario_file(EV)) as home:
            config = tmp_path / "drgw.toml"
            config.write_text(f'[gateway]\nkey = "gw.key"\n[store]\npath = "drgw.db"\n'
                              f'[[bus]]\nname = "lan"\ntcp = "{home.devices[0].address}"\n'
                              '[[device]]\nname = "ev"\nprofile = "heidelberg_energycontrol"\n'
                              'bus = "lan"\nunit = 1\n')
            parts = build(load_config(config), key=GatewayKey.generate(), stop=StopRequest(),
                          loop=LoopOptions())
            polling = asyncio.create_task(parts.layer.run())
            try:
                odd = await parts.control.write_point("ev", "ev_current_limit_a", 6.04)
                even = await parts.control.write_point("ev", "ev_current_limit_a", 8)
                await parts.control.write_point("ev", "ev_current_limit_a", 6.04)
                words = await parts.control.read_register("ev", "holding", 261, 1)
                return odd, even, words, home.device("ev").values()["ev_current_limit_a"]
            finally:
                polling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await polling
                parts.store.close()

    odd, even, words, simulated = asyncio.run(main())
    # Heidelberg Energy Control register table: holding 261 "maximal current command" in 0.1 A, so
    # 6.04 A is sent as 60 and the box holds 6.0 A (it used to reply "value": 6.04).
    assert odd == {"device": "ev", "name": "ev_current_limit_a", "value": 6.0, "requested": 6.04}
    assert even == {"device": "ev", "name": "ev_current_limit_a", "value": 8}  # as asked: no note
    assert words == {"device": "ev", "table": "holding", "address": 261, "words": [60]}
    assert simulated == 6.0  # the simulator's own state agrees


# --------------------------------------------------------------- fault 10 (b): file modes


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a shell outside systemd (the unit sets UMask=0077)."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_store_and_nonce_cache_are_created_owner_only_with_their_wal_files(tmp_path: Path,
                                                                           open_umask: None) -> None:
    with Store(tmp_path / "drgw.db") as store:
        assert store.outbox_depth() == (0, 0)
        nonces = NonceCache(tmp_path / "drgw.db.nonces")
        assert nonces.claim("0xop", "0x1", exp_ms=2_000, now_ms=1_000)
        modes = {p.name: mode(p) for p in tmp_path.iterdir()}  # while open: -wal and -shm exist
        nonces.close()
    assert set(modes) >= {"drgw.db", "drgw.db-wal", "drgw.db-shm", "drgw.db.nonces",
                          "drgw.db.nonces-wal"}
    assert modes == dict.fromkeys(modes, 0o600)


def test_an_existing_store_keeps_the_mode_its_owner_gave_it(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "drgw.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    Store(path).close()
    assert mode(path) == 0o640


def test_a_remote_config_its_last_good_copy_and_the_marker_are_owner_only(
        tmp_path: Path, open_umask: None) -> None:
    config = tmp_path / "drgw.toml"
    config.write_text('[gateway]\nkey = "gw.key"\n')
    (tmp_path / "drgw.toml.tmp").write_text("left by a crash")  # 0644: must not pass its mode on
    trial.apply(config, '[gateway]\nkey = "gw.key"\nlog_level = "DEBUG"\n')
    written = [config, trial.last_good(config), trial.marker(config)]
    assert {p.name: mode(p) for p in written} == {p.name: 0o600 for p in written}
