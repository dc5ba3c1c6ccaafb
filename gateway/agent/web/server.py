"""The local page's HTTP side (`[web]`, docs/operations.md): a small HTTP/1.1 responder on the agent's
own event loop, like the Prometheus endpoint (gateway/ops/metrics.py) and the master's dashboard.

    GET /               the page (page.html beside this module: plain JS, no build step)
    GET /api/snapshot   the whole snapshot as JSON (gateway/agent/web/view.py)
    GET /api/events     text/event-stream: a `snapshot` event now, then one after each change

Live by server-sent events, pushed only on change: a stream waits on the LiveState's change counter
(a committed sample, a DR or market message) and sends at most one snapshot per PUSH_MIN_S. With no
page open nothing runs but the listening socket: no ticker, no timer, no snapshot built.

Read-only: there is no action to take through the page, so GET and HEAD are all it answers. Access:
loopback by default; with `token_file` every request needs the token (`Authorization: Bearer …` or
`?token=…`, which the page passes on to its event stream). Without a token, only a Host header
naming a loopback address is answered, so a web site cannot read the page through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from importlib import resources
from typing import Any, Protocol

from gateway.agent.web.live import LiveState
from gateway.config.web import WebConfig, is_loopback, read_token
from gateway.ops import http
from gateway.ops.http import HEAD_LIMIT, Request

log = logging.getLogger(__name__)
PUSH_MIN_S = 1.0  # at most one snapshot a second per stream, however often samples come
MAX_STREAMS = 8  # open event streams at once; more are refused (503), each holds a socket
HEADERS = ("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
           "X-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n")


class View(Protocol):
    """What the page shows (gateway.agent.web.view.HomeView; a fake in gateway/testing/web.py)."""

    def snapshot(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class WebPage:
    """Answers the page's requests; `serve` listens until cancelled."""

    def __init__(self, *, settings: WebConfig, view: View, live: LiveState) -> None:
        self.settings, self.view, self.live = settings, view, live
        self.token = None if settings.token_file is None else read_token(settings.token_file)
        self.streams = 0
        self.port = settings.port  # the bound one, once listening (port 0: any free port)
        self._snapshot: tuple[int, bytes] | None = None

    def snapshot(self) -> bytes:
        """The snapshot as JSON, built once per change however many streams are open."""
        version = self.live.version
        if self._snapshot is None or self._snapshot[0] != version:
            self._snapshot = (version, json.dumps(self.view.snapshot()).encode())
        return self._snapshot[1]

    # ---- access ----

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            host = request.headers.get("host", "")
            name = host[1:host.index("]")] if host.startswith("[") and "]" in host \
                else host.rpartition(":")[0] or host
            return is_loopback(name)
        return request.token_matches(self.token)

    # ---- HTTP ----

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await http.answer(reader, writer, self._route, log=log, what="web")

    async def _route(self, request: Request, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        method, path = request.method, request.path
        if method not in ("GET", "HEAD"):
            return _send(writer, "405 Method Not Allowed", "text/plain",
                         b"the page is read-only: GET only\n", extra="Allow: GET, HEAD\r\n")
        if not self.allowed(request):
            if self.token is None:
                return _send(writer, "403 Forbidden", "text/plain",
                             b"open the page by a loopback address (http://127.0.0.1:PORT/)\n")
            return _send(writer, "401 Unauthorized", "text/plain",
                         b"give the page's token: ?token=... or Authorization: Bearer ...\n",
                         extra='WWW-Authenticate: Bearer realm="drgw"\r\n')
        body = b"" if method == "HEAD" else None
        if path == "/api/events" and method == "GET":
            return await self._stream(reader, writer)
        if path in ("/", "/index.html"):
            page = resources.files("gateway.agent.web").joinpath("page.html").read_bytes()
            return _send(writer, "200 OK", "text/html; charset=utf-8", page, body=body)
        if path == "/api/snapshot":
            return _send(writer, "200 OK", "application/json", self.snapshot(), body=body)
        _send(writer, "404 Not Found", "text/plain",
              b"the page is at /, its data at /api/snapshot and /api/events\n")

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Server-sent events (HTML Living Standard, 9.2 "Server-sent events"): `event:`, `id:` and
        `data:` lines, a blank line ends an event; EventSource reconnects by itself after `retry`
        ms. The stream ends when the page closes its side, seen as EOF on the reader."""
        if self.streams >= MAX_STREAMS:
            return _send(writer, "503 Service Unavailable", "text/plain",
                         b"too many pages open at once; close one\n")
        self.streams += 1
        http.open_event_stream(writer, retry_ms=3000, headers=HEADERS)
        gone = asyncio.ensure_future(reader.read())
        try:
            seen = -1
            while True:
                if seen == self.live.version:
                    nxt = asyncio.ensure_future(self.live.changed_since(seen))
                    await asyncio.wait((nxt, gone), return_when=asyncio.FIRST_COMPLETED)
                    if not nxt.done():
                        nxt.cancel()
                        return
                seen = self.live.version
                writer.write(http.event("snapshot", seen, self.snapshot()))
                await writer.drain()
                await asyncio.wait((gone,), timeout=PUSH_MIN_S)  # changes meanwhile wait for it
                if gone.done():
                    return
        finally:
            self.streams -= 1
            gone.cancel()

    # ---- serving ----

    async def serve(self, listening: asyncio.Event | None = None) -> None:
        """Listen until cancelled. A port that cannot be bound is logged, and the agent goes on
        without its page: measuring matters more than showing."""
        s = self.settings
        try:
            server = await asyncio.start_server(self.answer, s.host, s.port, limit=HEAD_LIMIT)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            log.error("web: [web] listen = \"%s\", port = %d: cannot listen there (%s); the agent "
                      "runs without its page: choose a free port in [web] or remove the table",
                      s.host, s.port, reason)
            await asyncio.Event().wait()  # a part that ended would stop the agent
            return
        self.port = int(server.sockets[0].getsockname()[1])
        host = f"[{s.host}]" if ":" in s.host else s.host
        log.warning("web: the home's page is at http://%s:%d/%s", host, self.port,
                    "" if self.token is None else " (with its token: ?token=...)")
        if listening is not None:
            listening.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.view.close()


def _send(writer: asyncio.StreamWriter, status: str, ctype: str, content: bytes, *,
          extra: str = "", body: bytes | None = None) -> None:
    http.send(writer, status, ctype, content, headers=HEADERS, extra=extra, body=body)
