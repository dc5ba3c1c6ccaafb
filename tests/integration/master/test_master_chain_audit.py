"""The gap scan's audit of stored links, on a real PostgreSQL: two workers storing a gateway's
neighbouring records at the same moment (READ COMMITTED: neither transaction sees the other's row,
postgresql.org/docs/current/transaction-iso.html, 13.2.1) can both store records that do not chain.
Here that race is run for real on two connections: worker 1's store reads the stored neighbours,
then worker 2 stores and commits, then worker 1 inserts and commits.

The records come from virtual gateways that signed them (gateway/testing/virtual_fleet.py): one
key, two chains (as after a restored backup), so seq 11 of the second chain does not name seq 10
of the first as its prev. Expected: the scan raises one chain_break alert for seq 11, once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from gateway.master.db_postgres import open_postgres
from gateway.master.gaps import GapBook
from gateway.master.ledger import Ledger
from gateway.master.settings import RepairPolicy
from gateway.master.sql import Row, Sql
from gateway.master.verify import check_batch
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import measurement_domain
from gateway.measurement.wire import encode_batch
from gateway.testing.virtual_fleet import VirtualGateway

POLICY = RepairPolicy(grace_ms=300, first_retry_ms=1_000, max_retry_ms=4_000)
DOMAIN = measurement_domain()


class AfterFirstStatement:
    """`Sql` that runs `action` once, right after its first statement (inside the transaction)."""

    def __init__(self, sql: Sql, action: Callable[[], None]) -> None:
        self.sql, self.name, self.action = sql, sql.name, action

    def _fire(self) -> None:
        action, self.action = self.action, None
        if action is not None:
            action()

    def run(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[Row], int]:
        out = self.sql.run(sql, params)
        self._fire()
        return out

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return self.sql.many(sql, rows)

    def insert_measurements(self, rows: Sequence[Row]) -> dict[str, int]:
        return self.sql.insert_measurements(rows)

    def transaction(self) -> AbstractContextManager[None]:
        return self.sql.transaction()

    def close(self) -> None:
        self.sql.close()


def checked(g: VirtualGateway, lo: int, hi: int) -> Any:
    return check_batch(g.gw, encode_batch([g.records[s] for s in range(lo, hi + 1)]), DOMAIN)


def test_neighbours_stored_at_once_that_do_not_chain_raise_one_chain_break(postgres) -> None:
    key = GatewayKey.generate()
    first, restored = VirtualGateway(key, DOMAIN), VirtualGateway(key, DOMAIN)
    first.make(10)
    restored.make(11, t0_ms=1_800_000_000_000)  # the same key, another chain: other leaves
    assert restored.records[11].measurement.prev_hash != first.made[10]

    url = postgres.database("chain_audit")
    sql1, sql2 = open_postgres(url), open_postgres(url)
    try:
        w1, w2 = Ledger(sql1, worker="w1"), Ledger(sql2, worker="w2")
        w1.store([checked(first, 1, 9)], now_ms=1)
        book = GapBook(w1, POLICY)
        assert book.scan(now_ms=2) == []  # 1..9 chain: no alert

        racing = Ledger(AfterFirstStatement(sql1, lambda: w2.store(
            [checked(restored, 11, 11)], now_ms=3)), worker="w1")  # type: ignore[arg-type]
        result = racing.store([checked(first, 10, 10)], now_ms=3)
        assert result.inserted == 1 and result.alerts == []  # neither saw the other
        rows, _ = sql1.run("SELECT seq, worker FROM measurements WHERE seq >= 10 ORDER BY seq")
        assert rows == [(10, "w1"), (11, "w2")]

        alerts = book.scan(now_ms=4)
        assert [(a.gw, a.kind) for a in alerts] == [(first.gw, "chain_break")]
        assert "seq 11 does not chain to seq 10" in alerts[0].detail
        stored, _ = sql1.run("SELECT kind, detail FROM alerts")
        assert stored == [("chain_break", alerts[0].detail)]
        assert book.scan(now_ms=5) == []  # raised once: the watermark has passed the pair
    finally:
        sql1.close()
        sql2.close()
