"""Every arrival order of a gateway's batches over two master workers, on a real SQLite database,
without a broker: the ledger and the gap book driven directly, so each order is run every time.

With shared subscriptions, consecutive batches of one gateway reach two workers in either order,
and a worker's gap scan runs while the other worker stores. A scan is several statements, so a
store can land between any two of them: `Interleaved` (the real connection, plus one store run
right after the scan's k-th statement) reproduces each such point deterministically.

Expected values come from the virtual gateways (their own MeasurementChain made and signed every
record) and from the scenario read by hand, never from the master's code:
- C publishes 1..10, 11..20, 1..10 again, then [21 signed by an impostor, 22..25]: all 25 stored
  once (21 from the resend), the forged 21 quarantined, one gap 21..21, filled.
- D publishes 1..4 and 9..20 (5..8 never), then evicts its records up to 6: a resend of 5..8 gets
  7 and 8, so 18 stored and gap 5..8 lost ("resent 2 of 4").
- E's birth says seq 0, its only batch is 4..10: gap 1..3, filled by the resend.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.master.db_sqlite import open_sqlite
from gateway.master.fleet_state import StatusUpdate
from gateway.master.gaps import GapBook
from gateway.master.ledger import Ledger
from gateway.master.settings import RepairPolicy
from gateway.master.sql import Row, Sql
from gateway.master.verify import check_batch
from gateway.measurement.identity import GatewayKey
from gateway.measurement.wire import encode_batch
from gateway.testing.virtual_fleet import VirtualGateway, make_fleet

POLICY = RepairPolicy(grace_ms=300, first_retry_ms=1_000, max_retry_ms=4_000)
T0 = 1_000_000
BIRTH = "birth"  # an event that is the gateway's birth (status seq 0), not a meas payload
MAX_STATEMENTS = 14  # more than one gateway's scan runs (the tail runs the store after the scan)


class Interleaved:
    """`Sql` over the real connection that runs `action` once, right after its `after`-th
    statement: a store of the other worker landing between two statements of this one's scan."""

    def __init__(self, sql: Sql) -> None:
        self.sql, self.name = sql, sql.name
        self.after: int | None = None
        self.action: Callable[[], None] | None = None

    def arm(self, after: int, action: Callable[[], None]) -> None:
        self.after, self.action = after, action

    def fire_pending(self) -> None:
        action, self.action, self.after = self.action, None, None
        if action is not None:
            action()

    def _tick(self) -> None:
        if self.after is not None:
            self.after -= 1
            if self.after < 0:
                self.fire_pending()

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        out = self.sql.run(sql, params)
        self._tick()
        return out

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        out = self.sql.many(sql, rows)
        self._tick()
        return out

    def insert_measurements(self, rows: Sequence[Row]) -> dict[str, int]:
        out = self.sql.insert_measurements(rows)
        self._tick()
        return out

    def transaction(self) -> AbstractContextManager[None]:
        return self.sql.transaction()

    def close(self) -> None:
        self.sql.close()


@dataclass
class Scenario:
    """One gateway's events (payloads or BIRTH), made once; `evict` runs before the repair."""

    g: VirtualGateway
    events: list[bytes | str]
    evict_to: int = 0
    held: dict[int, Any] = field(default_factory=dict)


def _c(g: VirtualGateway, impostor: GatewayKey) -> Scenario:
    r = g.make(25)
    return Scenario(g, [BIRTH, encode_batch(r[:10]), encode_batch(r[10:20]), encode_batch(r[:10]),
                        encode_batch([g.foreign(r[20], impostor), *r[21:]])])


def _d(g: VirtualGateway) -> Scenario:
    r = g.make(20)
    return Scenario(g, [BIRTH, encode_batch(r[:4]), encode_batch(r[8:])], evict_to=6)


def _e(g: VirtualGateway) -> Scenario:
    return Scenario(g, [BIRTH, encode_batch(g.make(10)[3:])])


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Scenario]:
    c, d, e = make_fleet(3)
    made = {"C": _c(c, GatewayKey.generate()), "D": _d(d), "E": _e(e)}
    for s in made.values():  # the store as it is when the resend comes: evicted up to evict_to
        s.held = {seq: sm for seq, sm in s.g.records.items() if seq > s.evict_to}
    return made


class Master:
    """Two workers on one real database; w2's connection can interleave a store into its scan."""

    def __init__(self, s: Scenario) -> None:
        self.s = s
        self.sql = open_sqlite(":memory:")
        self.hook = Interleaved(self.sql)
        self.w1, self.w2 = Ledger(self.sql, worker="w1"), Ledger(self.hook, worker="w2")
        self.books = GapBook(self.w1, POLICY), GapBook(self.w2, POLICY)

    def apply(self, event: bytes | str, ledger: Ledger) -> None:
        gw = self.s.g.gw
        if event == BIRTH:
            ledger.record_status(gw, StatusUpdate(
                online=True, reason="", version="v", config_hash=None, seq=0, clock_synced=True,
                disk_full=None, backlog_rows=None), now_ms=T0)
        else:
            assert isinstance(event, bytes)
            ledger.store([check_batch(gw, event, self.s.g.domain)], now_ms=T0)

    def repair(self) -> None:
        """The gateway's side of resend, until no gap is open: what it still holds is resent."""
        now, book = T0, self.books[0]
        for n in range(8):
            now += 60_000
            book.scan(now_ms=now)
            for claim in book.claim(now_ms=now):
                held = [self.s.held[q] for q in range(claim.seq_from, claim.seq_to + 1)
                        if q in self.s.held]
                book.sent(claim, cmd_id=f"rs-{n}-{claim.seq_from}", now_ms=now)
                if held:
                    self.apply(encode_batch(held), self.w1)
                book.replied(cmd_id=f"rs-{n}-{claim.seq_from}", queued=len(held), error=None)
        book.scan(now_ms=now + 60_000)

    def outcome(self) -> tuple[set[tuple[int, bytes]], list[Row], list[Row]]:
        gw = self.s.g.gw
        stored, _ = self.sql.run("SELECT seq, leaf FROM measurements WHERE gw = ?", [gw])
        quarantined, _ = self.sql.run("SELECT seq FROM quarantine WHERE gw = ? ORDER BY seq", [gw])
        gaps, _ = self.sql.run("SELECT seq_from, seq_to, state, reason FROM gaps WHERE gw = ? "
                               "ORDER BY seq_from", [gw])
        return {(int(q), bytes(leaf)) for q, leaf in stored}, quarantined, gaps


def _check(master: Master, name: str, order: object) -> None:
    s = master.s
    stored, quarantined, gaps = master.outcome()
    lost = {"D": {5, 6}}.get(name, set())
    assert stored == {(q, leaf) for q, leaf in s.g.made.items() if q not in lost}, order
    assert [q for q, in quarantined] == ([21] if name == "C" else []), order
    want = {"C": [(21, 21, "filled")], "D": [(5, 8, "lost")], "E": [(1, 3, "filled")]}[name]
    assert [(lo, hi, state) for lo, hi, state, _ in gaps] == want, (order, gaps)
    if name == "D":
        assert "resent 2 of 4" in str(gaps[0][3]), gaps


def _orders(s: Scenario, *, birth_first: bool) -> Iterator[tuple[int, ...]]:
    for order in itertools.permutations(range(len(s.events))):
        if not birth_first or s.events[order[0]] == BIRTH:
            yield order


@pytest.mark.parametrize("name", ["C", "D", "E"])
def test_every_arrival_order_ends_the_same(scenarios: dict[str, Scenario], name: str) -> None:
    """Each order of the events (birth included), alternating between the workers, the other
    worker scanning after each one."""
    s = scenarios[name]
    for order in _orders(s, birth_first=False):
        master = Master(s)
        for j, i in enumerate(order):
            master.apply(s.events[i], (master.w1, master.w2)[j % 2])
            master.books[(j + 1) % 2].scan(now_ms=T0)
        master.repair()
        _check(master, name, order)


@pytest.mark.parametrize("scan_each", [True, False], ids=["scan-after-each", "scan-once"])
@pytest.mark.parametrize("name", ["C", "D", "E"])
def test_a_store_between_any_two_statements_of_a_scan(scenarios: dict[str, Scenario], name: str,
                                                      scan_each: bool) -> None:
    """Each order, and each event in turn stored by w1 right after the k-th statement of w2's
    scan (k = 0 .. the scan's length): the watermark and the holes a scan finds must not pass a
    record that another worker stored meanwhile. The events before it are each followed by a
    scan, or by none (the scan then sees them all at once). C: its birth first (24 orders)."""
    s = scenarios[name]
    for order in _orders(s, birth_first=name == "C"):
        for hit, k in itertools.product(range(len(order)), range(MAX_STATEMENTS)):
            master = Master(s)
            for j, i in enumerate(order):
                if j == hit:
                    master.hook.arm(k, lambda e=s.events[i], m=master: m.apply(e, m.w1))
                    master.books[1].scan(now_ms=T0)
                    master.hook.fire_pending()
                else:
                    master.apply(s.events[i], master.w1)
                    if scan_each:
                        master.books[1].scan(now_ms=T0)
            master.repair()
            _check(master, name, (order, hit, k, scan_each))
