"""One run of many gateways' payloads stored by the ledger in one transaction, on SQLite and on a
real PostgreSQL (where new records go in by COPY through a staging table): each gateway's records,
duplicates and forgeries counted as worked out by hand below, whichever gateways share the run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.master.ledger import Ledger
from gateway.master.localpg import LocalPostgres
from gateway.master.sql import Sql
from gateway.master.verify import check_batch
from gateway.measurement.wire import encode_batch
from gateway.testing.virtual_fleet import VirtualGateway, make_fleet

T0 = 1_000_000


@pytest.fixture(params=["sqlite", "postgres"])
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sql]:
    if request.param == "sqlite":
        from gateway.master.db_sqlite import open_sqlite

        db: Sql = open_sqlite(tmp_path / "master.sqlite")
    else:
        from gateway.master.db_postgres import open_postgres

        pg: LocalPostgres = request.getfixturevalue("postgres")
        db = open_postgres(pg.database(f"ledger_run_{uuid.uuid4().hex[:12]}"))
    try:
        yield db
    finally:
        db.close()


def test_a_run_of_many_gateways_is_judged_and_counted_per_gateway(sql: Sql) -> None:
    fleet = make_fleet(40)
    made = {g.gw: g.make(10) for g in fleet}
    other = Ledger(sql, worker="other")
    # Before the run, another worker stored seq 1..5 of every gateway.
    other.store([check_batch(g.gw, encode_batch(made[g.gw][:5]), g.domain) for g in fleet],
                now_ms=T0)
    a, b = fleet[0], fleet[1]
    run = [(g.gw, encode_batch(made[g.gw][3:])) for g in fleet]  # seq 4..10: 4, 5 stored already
    run.append((a.gw, encode_batch(made[a.gw][8:])))  # a: 9, 10 twice in the run
    run.append((b.gw, encode_batch([b.tampered(made[b.gw][9])])))  # b: seq 10 altered
    result = Ledger(sql, worker="w").store([check_batch(gw, p, fleet[0].domain) for gw, p in run],
                                           now_ms=T0 + 1)
    # new: 40 gateways x 5 (seq 6..10); duplicates: 40 x 2 (4, 5) + 2 (a's 9, 10 twice);
    # quarantined: b's altered 10 (its honest 10 is stored)
    assert (result.inserted, result.duplicates, result.quarantined) == (200, 82, 1)
    counts = dict(_rows(sql, "SELECT gw, records FROM gateways"))
    assert counts == {g.gw: 10 for g in fleet}
    assert _rows(sql, f"SELECT duplicates, forgeries FROM gateways WHERE gw = '{a.gw}'") == [(4, 0)]
    assert _rows(sql, f"SELECT duplicates, forgeries FROM gateways WHERE gw = '{b.gw}'") == [(2, 1)]
    _stored_once(sql, fleet)
    # the whole run again, on a third worker: nothing new, every record a duplicate
    again = Ledger(sql, worker="w3").store(
        [check_batch(gw, p, fleet[0].domain) for gw, p in run[:40]], now_ms=T0 + 2)
    assert (again.inserted, again.duplicates) == (0, 280)


def test_stored_neighbours_are_checked_across_gateways_in_one_query(sql: Sql) -> None:
    """A record whose prev does not match the stored record before it, and one that the stored
    record after it does not chain to, are kept apart; other gateways in the run are untouched."""
    c, d, e = make_fleet(3)
    rc, rd, re_ = c.make(6), d.make(6), e.make(6)
    ledger = Ledger(sql, worker="w")
    ledger.store([check_batch(c.gw, encode_batch(rc[:3]), c.domain),
                  check_batch(d.gw, encode_batch(rd[4:]), d.domain)], now_ms=T0)
    forked = VirtualGateway(c.key, c.domain)  # c's key signing another history from seq 1
    fork = forked.make(5, t0_ms=1_800_000_000_000)  # other times: other struct hashes
    result = ledger.store([check_batch(c.gw, encode_batch(fork[3:4]), c.domain),  # 4's prev ≠ 3
                           check_batch(d.gw, encode_batch(rd[:4]), d.domain),   # 4 chains to 5
                           check_batch(e.gw, encode_batch(re_), e.domain)], now_ms=T0 + 1)
    reasons = sorted(r[0] for r in _rows(sql, "SELECT reason FROM quarantine"))
    assert reasons == ["prev hash of seq 4 does not match the stored seq 3"]
    assert result.inserted == 4 + 6  # d's 1..4, e's 1..6
    _stored_once(sql, [d, e])


def _rows(sql: Sql, query: str) -> list[tuple[object, ...]]:
    rows, _ = sql.run(query)
    return [tuple(int(v) if isinstance(v, int) else v for v in r) for r in rows]


def _stored_once(sql: Sql, fleet: list[VirtualGateway]) -> None:
    """Every record the gateways made is stored once, with the struct hash it was signed with."""
    for g in fleet:
        rows, _ = sql.run("SELECT seq, leaf FROM measurements WHERE gw = ? ORDER BY seq", [g.gw])
        assert [(int(q), bytes(leaf)) for q, leaf in rows] == sorted(g.made.items())
