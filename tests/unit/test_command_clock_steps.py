"""Replay protection across wall-clock steps (issue 12, fault 4): the dispatcher and its nonce cache
get the wall clock and the monotonic clock through their constructors, and a test steps them.

A used command must be refused after the wall clock jumps forward by days and comes back, each
time, across a restart too; the cache must still forget nonces once both clocks let them go, so it
stays bounded. Real SQLite files; the agent is the shipped FakeAgent.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.measurement.identity import GatewayKey
from gateway.network import command as c
from gateway.network.dispatcher import CommandDispatcher
from gateway.network.nonces import NonceCache
from gateway.testing.fake_agent import FakeAgent

OP = GatewayKey.from_secret(bytes([7]) * 32)
GW = GatewayKey.from_secret(bytes([3]) * 32).address.lower()
T0 = 1_700_000_000_000
MINUTE = 60_000
DAY = 24 * 60 * MINUTE
LIFETIME = 15 * MINUTE  # CommandPolicy.max_lifetime_ms: the longest `exp` a gateway accepts
SKEW = 30_000


@dataclass
class Clocks:
    """The wall clock (steps both ways) and the monotonic clock (only runs forward), in ms."""

    wall: int = T0
    mono: int = 0

    def wall_ms(self) -> int:
        return self.wall

    def mono_ms(self) -> int:
        return self.mono

    def run(self, ms: int) -> None:
        """Real time passes: both clocks advance."""
        self.wall += ms
        self.mono += ms


def gateway(path: Path, clocks: Clocks) -> CommandDispatcher:
    """A gateway process: a dispatcher over the nonce file at `path` (a new one = a restart)."""
    return CommandDispatcher(policy=c.CommandPolicy.build(gw=GW, operators=[OP.address]),
                             agent=FakeAgent(), clock_ms=clocks.wall_ms,
                             nonces=NonceCache(path, elapsed_ms=clocks.mono_ms))


def signed(*, nonce: int, exp_ms: int, id: str = "r-1") -> bytes:
    env = c.make(gw=GW, cmd="ping", args={}, op=OP.address, id=id, nonce=nonce, exp_ms=exp_ms)
    return json.dumps(c.sign(env, OP.sign_digest)).encode()


def answer(d: CommandDispatcher, payload: bytes) -> str:
    """"ok" or the error code of the reply."""
    body = json.loads(asyncio.run(d.handle(payload)))
    return "ok" if body["ok"] else str(body["error"]["code"])


def test_a_used_command_is_refused_after_the_wall_clock_steps_forward_by_days_and_back(
        tmp_path: Path) -> None:
    clocks = Clocks()
    d = gateway(tmp_path / "nonces.sqlite", clocks)
    used = signed(nonce=1, exp_ms=T0 + 10 * MINUTE)
    assert answer(d, used) == "ok"
    for step, days in enumerate((3, 40, 1), start=2):
        clocks.wall += days * DAY  # e.g. a Pi without an RTC, before NTP
        assert answer(d, used) == "expired"
        # a fresh command signed for that wrong time is accepted and makes the cache purge
        assert answer(d, signed(nonce=1000 + step, exp_ms=clocks.wall + MINUTE)) == "ok"
        clocks.wall -= days * DAY  # NTP steps it back
        clocks.run(MINUTE)
        assert answer(d, used) == "replayed", f"replay accepted after a {days}-day step"
    d.nonces.close()
    restarted = gateway(tmp_path / "nonces.sqlite", Clocks(wall=clocks.wall, mono=0))
    assert answer(restarted, used) == "replayed"  # the run clock is kept in the nonce file


def test_a_replay_is_refused_while_the_wall_clock_runs_behind_after_a_back_step(
        tmp_path: Path) -> None:
    clocks = Clocks()
    d = gateway(tmp_path / "nonces.sqlite", clocks)
    used = signed(nonce=1, exp_ms=T0 + 5 * MINUTE)
    assert answer(d, used) == "ok"
    clocks.run(20 * MINUTE)  # its lifetime passed on both clocks ...
    clocks.wall -= 20 * MINUTE  # ... then the wall clock went back to where it was used
    assert answer(d, signed(nonce=2, exp_ms=clocks.wall + MINUTE)) == "ok"  # a purge runs
    assert answer(d, used) == "replayed"  # the wall clock never passed its expiry: still held


def test_the_cache_stays_bounded_through_clock_steps(tmp_path: Path) -> None:
    """One command a minute for a simulated day, with the wall clock 40 days ahead for one hour of
    it: the cache holds one lifetime window of commands, plus the commands used while the clock was
    ahead (signed for that time), which it keeps until the wall clock reaches their expiry."""
    clocks = Clocks()
    d = gateway(tmp_path / "nonces.sqlite", clocks)
    window = (LIFETIME + 2 * SKEW) // MINUTE + 1
    held = []
    for minute in range(24 * 60):
        if minute == 600:
            clocks.wall += 40 * DAY
        if minute == 660:
            clocks.wall -= 40 * DAY
        assert answer(d, signed(nonce=minute, exp_ms=clocks.wall + LIFETIME)) == "ok"
        held.append(d.nonces.count())
        clocks.run(MINUTE)
    assert max(held[:600]) <= window
    assert max(held) <= window + 60 and held[-1] <= window + 60
    clocks.run(41 * DAY)
    assert answer(d, signed(nonce=10**6, exp_ms=clocks.wall + MINUTE)) == "ok"
    assert d.nonces.count() == 1


def test_run_clock_and_nonces_survive_a_restart_and_expire_by_run_time(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite"
    clocks = Clocks()
    cache = NonceCache(path, elapsed_ms=clocks.mono_ms)
    assert cache.claim("0xop", "0x1", exp_ms=T0 + 5 * MINUTE, now_ms=T0)
    clocks.mono += 2 * MINUTE
    cache.close()
    # a restart: the process' monotonic clock starts over; the wall clock jumped a day ahead
    later = Clocks(wall=T0 + DAY, mono=0)
    cache = NonceCache(path, elapsed_ms=later.mono_ms)
    assert cache.run_ms() == 2 * MINUTE
    assert not cache.claim("0xop", "0x1", exp_ms=T0 + 5 * MINUTE, now_ms=T0 + MINUTE)
    assert cache.claim("0xop", "0x2", exp_ms=later.wall + MINUTE, now_ms=later.wall)
    assert cache.count() == 2  # 0x1 still has 3.5 min of run time to wait
    later.mono += 4 * MINUTE
    assert cache.claim("0xop", "0x3", exp_ms=later.wall + MINUTE, now_ms=later.wall)
    assert cache.count() == 2  # 0x1 gone: past its expiry on the wall clock and on the run clock


def test_a_nonce_file_from_before_the_run_clock_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "nonces.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE command_nonces (op TEXT NOT NULL, nonce TEXT NOT NULL,
            keep_until_ms INTEGER NOT NULL, PRIMARY KEY (op, nonce)) WITHOUT ROWID;
        INSERT INTO command_nonces VALUES ('0xop', '0x1', 1700000090000);
    """)
    old.close()
    cache = NonceCache(path, elapsed_ms=lambda: 0)
    assert not cache.claim("0xop", "0x1", exp_ms=T0 + MINUTE, now_ms=T0)
    assert cache.claim("0xop", "0x2", exp_ms=T0 + MINUTE, now_ms=T0)
