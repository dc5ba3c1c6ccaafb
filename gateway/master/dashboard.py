"""The operator dashboard (`[dashboard]`, docs/master.md): one HTML page and its JSON API, served
by a task of the master worker's TaskGroup, with live updates by server-sent events.

    GET /              the page (gateway/master/web/index.html: plain JS, no build step)
    GET /api/fleet     gateways (online, last seen, backlog, records, gaps, forgeries), ingest rate
    GET /api/windows   the newest DR windows with bids, awards, deliveries, outcomes (the chain),
                       and the master's own record of the windows it operates (market_windows)
    GET /api/ranking   the contract's reputation ranking of households and aggregators
    GET /api/events    text/event-stream: a `snapshot` event (all of the above) every push_s

A small HTTP/1.1 responder on the worker's own loop, like the metrics endpoint
(gateway/ops/metrics.py), rather than a web framework: four GET routes and one stream need no
router, and the worker gets no extra dependency or thread. One ticker builds the snapshot for every
open stream, so ten open pages cost one database read per tick, not ten.

Access: loopback by default. The page shows the fleet's addresses and the market, so a non-loopback
`listen` requires `token_file`; the token is then asked for as `Authorization: Bearer …` or
`?token=…` (EventSource cannot send headers; the page passes its own URL's token on).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.clock import wall_ms
from gateway.errors import ConfigError
from gateway.master.dashboard_data import IngestRate, MarketView, fleet_rows, records_total
from gateway.master.ledger import market_windows, tables
from gateway.ops import http
from gateway.ops.http import HEAD_LIMIT, Request

if TYPE_CHECKING:
    from gateway.master.parts import MasterParts
    from gateway.schema import Fields

log = logging.getLogger(__name__)
T = TypeVar("T")
TOKEN_FIX = ("it is not a loopback address: the dashboard shows the fleet and the market, so set "
             "token_file = \"PATH\" (a file holding a long random token) in [dashboard], or listen "
             "on 127.0.0.1 and reach it through an SSH tunnel")


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardSettings:
    host: str
    port: int
    token_file: Path | None
    push_ms: int


def parse_dashboard(f: Fields, *, config: Path) -> DashboardSettings | None:
    """`[dashboard] listen = "127.0.0.1:9580"` turns the page on; `token_file`, `push_s`."""
    import ipaddress

    listen = f.optional_str("listen")
    token = f.optional_str("token_file")
    push = f.optional_number("push_s", minimum=0.05, maximum=600, unit="seconds")
    f.reject_unknown()
    if listen is None:
        return None
    host, _, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        f.fail("listen", f"{listen!r}: write host:port, e.g. \"127.0.0.1:9580\" (\"[::1]:9580\")")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None:
        f.fail("listen", f"{listen!r}: {TOKEN_FIX}")
    token_path = None if token is None else (Path(token) if Path(token).is_absolute()
                                             else config.parent / token)
    return DashboardSettings(host=host, port=int(port), token_file=token_path,
                             push_ms=2000 if push is None else int(push * 1000))


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"[dashboard] token_file = \"{path}\": cannot read it ({exc.strerror}); "
                          "write a long random token there (e.g. `openssl rand -hex 32`)") from None
    if len(token) < 16:
        raise ConfigError(f"[dashboard] token_file = \"{path}\": the token is shorter than 16 "
                          "characters; use a long random one (`openssl rand -hex 32`)")
    return token


class Dashboard:
    """The page's data and the open event streams of one worker."""

    def __init__(self, parts: MasterParts, settings: DashboardSettings, *,
                 market: MarketView | None = None) -> None:
        self.parts = parts
        self.settings = settings
        self.market = market
        self.token = None if settings.token_file is None else read_token(settings.token_file)
        self.rate = IngestRate()
        self.snapshot: dict[str, Any] = {}
        self.version = 0
        self.changed = asyncio.Condition()

    # ---- the data ----

    async def fleet(self) -> dict[str, Any]:
        sql = self.parts.sql
        rows, total = await self.parts.in_db(lambda: (fleet_rows(sql), records_total(sql)))
        now = wall_ms()
        if not self.rate.samples or self.rate.samples[-1][0] < now:
            self.rate.add(now, total)
        gaps = {k: sum(r["gaps"][k] for r in rows) for k in ("open", "filled", "lost")}
        return {"now_ms": now, "worker": self.parts.worker, "gateways": rows,
                "totals": {"gateways": len(rows), "online": sum(1 for r in rows if r["online"]),
                           "records": total, "forgeries": sum(r["forgeries"] for r in rows),
                           "gaps": gaps},
                "ingest_per_s": round(self.rate.rate(), 1)}

    async def windows(self) -> dict[str, Any]:
        """The windows on chain, each with the master's own row for it (`master`: state,
        prices, outcome, error as the market task recorded them), and every row the market task
        keeps (`operated`), including windows it planned that are not on chain (yet)."""
        sql = self.parts.sql
        operated = await self.parts.in_db(
            lambda: market_windows(sql) if "market_windows" in tables(sql) else [])
        if self.market is None:
            return {"chain": False, "windows": [], "operated": operated}
        on_chain = await self._on_chain_thread(self.market.windows)
        by_win = {row["win"]: row for row in operated if row["win"] is not None}
        for window in on_chain:
            window["master"] = by_win.get(window["window"])
        return {"chain": True, "windows": on_chain, "operated": operated}

    async def ranking(self) -> dict[str, Any]:
        if self.market is None:
            return {"chain": False, "households": [], "aggregators": []}
        return {"chain": True, **await self._on_chain_thread(self.market.ranking)}

    async def _on_chain_thread(self, read: Callable[[], T]) -> T:
        """web3 calls block: on the master chain's own thread when the worker has one (its
        client is used only there), else on a thread of their own."""
        chain = self.parts.chain
        return await (chain.run(read) if chain is not None else asyncio.to_thread(read))

    async def tick(self) -> None:
        """Build one snapshot and wake the streams. A failed read (database restarting, node
        unreachable) is shown on the page, not fatal: the worker's ingest must go on."""
        snap: dict[str, Any] = {}
        for name, read in (("fleet", self.fleet), ("windows", self.windows),
                           ("ranking", self.ranking)):
            try:
                snap[name] = await read()
            except Exception as exc:  # sqlite3/psycopg/web3 errors of a part that went away
                snap[name] = {"error": str(exc)[:200]}
        async with self.changed:
            self.snapshot, self.version = snap, self.version + 1
            self.changed.notify_all()

    async def run_ticks(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(self.settings.push_ms / 1000)

    async def next_snapshot(self, seen: int) -> tuple[int, dict[str, Any]]:
        async with self.changed:
            await self.changed.wait_for(lambda: self.version > seen)
            return self.version, self.snapshot

    # ---- HTTP ----

    def allowed(self, request: Request) -> bool:
        return self.token is None or request.token_matches(self.token)

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await http.answer(reader, writer, self._route, log=log, what="dashboard")

    async def _route(self, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        path = request.path
        if request.method != "GET":
            return _send(writer, "405 Method Not Allowed", "text/plain", b"GET only\n")
        if not self.allowed(request):
            return _send(writer, "401 Unauthorized", "text/plain",
                         b"give the dashboard token: ?token=... or Authorization: Bearer ...\n")
        if path == "/api/events":
            return await self._stream(reader, writer)
        reads = {"/api/fleet": self.fleet, "/api/windows": self.windows,
                 "/api/ranking": self.ranking}
        if path in ("/", "/index.html"):
            page = resources.files("gateway.master").joinpath("web/index.html").read_bytes()
            return _send(writer, "200 OK", "text/html; charset=utf-8", page)
        if path not in reads:
            return _send(writer, "404 Not Found", "text/plain",
                         b"the dashboard is at /, its API at /api/fleet, /api/windows, "
                         b"/api/ranking, /api/events\n")
        try:
            body = json.dumps(await reads[path]()).encode()
        except Exception as exc:  # the database or the node is unreachable: say which
            log.warning("dashboard: %s failed: %s", path, exc)
            return _send(writer, "503 Service Unavailable", "application/json",
                         json.dumps({"error": str(exc)[:200]}).encode())
        _send(writer, "200 OK", "application/json", body)

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server-sent events (HTML Living Standard §9.2): `event:`/`data:` lines, a blank line
        ends an event; the browser's EventSource reconnects by itself. The stream ends when the
        client closes its side (a page closed), seen as EOF on the reader."""
        http.open_event_stream(writer, retry_ms=2000)
        gone = asyncio.ensure_future(reader.read())
        seen = 0
        try:
            while True:
                nxt = asyncio.ensure_future(self.next_snapshot(seen))
                await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    nxt.cancel()
                    return
                seen, snap = nxt.result()
                writer.write(http.event("snapshot", seen, json.dumps(snap).encode()))
                await writer.drain()
        finally:
            gone.cancel()


_send = http.send


async def serve_dashboard(parts: MasterParts, settings: DashboardSettings, *,
                          market: MarketView | None = None,
                          listening: asyncio.Event | None = None) -> None:
    """Serve until cancelled. A port that cannot be bound is a ConfigError naming the key."""
    board = Dashboard(parts, settings, market=market)
    s = settings
    where = f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}"
    try:
        server = await asyncio.start_server(board.answer, s.host, s.port, limit=HEAD_LIMIT)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"[dashboard] listen = \"{where}\": cannot listen there ({reason}); "
                          "choose a free port or remove [dashboard]") from None
    log.warning("dashboard: http://%s/", where)
    if listening is not None:
        listening.set()
    async with server, asyncio.TaskGroup() as group:
        group.create_task(board.run_ticks(), name="dashboard-ticks")
        await server.serve_forever()


def market_view(parts: MasterParts) -> MarketView | None:
    """The chain's market as the page reads it, when this worker has a [chain] (`parts.chain`,
    built for the Report relay and market operation); otherwise None and the page says that no
    chain is configured."""
    if parts.chain is None:
        return None  # no [chain]: web3 is not imported
    from gateway.master.dashboard_data import ChainMarketView

    return ChainMarketView(parts.chain.client)
