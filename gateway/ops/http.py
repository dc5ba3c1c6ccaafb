"""The small HTTP/1.1 responder shared by the agent's local page (gateway/agent/web/server.py) and
the master's dashboard (gateway/master/dashboard.py): one request per connection (`Connection:
close`), a bounded head read with a deadline, GET-only routes, a token from a file, and server-sent
events. It is not a web framework: each server keeps its own routes and access rules.

Request syntax follows RFC 9112 §3 (request line: method SP request-target SP HTTP-version) and §5
(header fields: name ":" OWS value OWS); server-sent events the HTML Living Standard §9.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

HEAD_LIMIT = 8192  # bytes of request line + headers accepted (start_server's limit); a browser sends ~600
HEAD_TIMEOUT_S = 10.0  # a client that has not sent its whole head by then is dropped
PLAIN_HEADERS = "Cache-Control: no-store\r\nConnection: close\r\n"


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # as sent: path and query
    path: str
    headers: dict[str, str]  # names lower-cased

    def token(self) -> str:
        """The token the client gave: `Authorization: Bearer …`, else `?token=…`, else ""."""
        given = self.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return given or parse_qs(urlsplit(self.target).query).get("token", [""])[0]

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token().encode(), token.encode())


def parse_head(head: str) -> Request | None:
    """The request of a head ending in a blank line; None when it is not HTTP/1.x."""
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    return Request(method=parts[0], target=parts[1], path=urlsplit(parts[1]).path, headers=headers)


def send(writer: asyncio.StreamWriter, status: str, ctype: str, content: bytes, *,
         headers: str = PLAIN_HEADERS, extra: str = "", body: bytes | None = None) -> None:
    """One whole answer; `body` replaces `content` on the wire (b"" for HEAD) but not its length."""
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(content)}\r\n"
                 f"{headers}{extra}\r\n".encode() + (content if body is None else body))


def open_event_stream(writer: asyncio.StreamWriter, *, retry_ms: int,
                      headers: str = PLAIN_HEADERS) -> None:
    """The head of a text/event-stream answer and the client's reconnect delay."""
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n{headers}\r\n"
                 f"retry: {retry_ms}\n\n".encode())


def event(name: str, event_id: int, data: bytes) -> bytes:
    return b"event: %s\nid: %d\ndata: %s\n\n" % (name.encode(), event_id, data)


Route = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, route: Route, *,
                 log: logging.Logger, what: str) -> None:
    """Read one head (HEAD_TIMEOUT_S), answer it with `route`, close. A client that goes away or
    sends too much costs nothing; a bug in `route` costs one 500 and a log line, never the process."""
    try:
        async with asyncio.timeout(HEAD_TIMEOUT_S):
            head = await reader.readuntil(b"\r\n\r\n")
        request = parse_head(head.decode("latin-1"))
        if request is None:
            send(writer, "400 Bad Request", "text/plain", b"not an HTTP/1.x request\n")
        else:
            await route(request, reader, writer)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # went away, or sent no complete head within the limits: nothing to answer
    except Exception:
        log.exception("%s: answering a request failed", what)
        with contextlib.suppress(Exception):
            send(writer, "500 Internal Server Error", "text/plain", b"see the log\n")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
