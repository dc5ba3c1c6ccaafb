"""The local page's HTTP side on a real socket: the token guards every route (401 without it or with
a wrong one), a page without a token answers only loopback Host names, it is read-only (405), and
its event stream sends a snapshot at once and then only after a change, building none while no
page is open. The view is gateway/testing/web.py's CountingView; the browser test
(tests/e2e/test_agent_web.py) runs the real one against a running agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.agent.web.live import LiveState
from gateway.agent.web.server import MAX_STREAMS, WebPage
from gateway.config.web import WebConfig
from gateway.perception.readings import Quality, Reading, Sample
from gateway.testing.web import CountingView
from tests.waits import until

TOKEN = "0123456789abcdef0123456789abcdef"


def sample(watts: float) -> Sample:
    return Sample(device="main", time=1000.0, poll=("fast",), readings=(
        Reading("power_active_total_w", watts, "W", Quality.OK, 1000.0),))


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *, token: bool) -> AsyncIterator[tuple[WebPage, CountingView]]:
    token_file = None
    if token:
        token_file = tmp_path / "web.token"
        token_file.write_text(TOKEN + "\n")
    live = LiveState()
    view = CountingView(live)
    page = WebPage(settings=WebConfig(host="127.0.0.1", port=0, token_file=token_file), view=view,
                   live=live)
    listening = asyncio.Event()
    task = asyncio.create_task(page.serve(listening), name="web")
    await asyncio.wait_for(listening.wait(), 10)
    try:
        yield page, view
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def request(port: int, target: str, *, method: str = "GET", host: str = "127.0.0.1",
                  headers: str = "") -> tuple[str, bytes]:
    """One request; the status line and the body (the answer ends with the connection)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def test_the_token_guards_every_route(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, token=True) as (page, _):
            p = page.port
            for target in ("/", "/api/snapshot", "/api/events", "/nothing"):
                assert (await request(p, target))[0] == "HTTP/1.1 401 Unauthorized", target
                assert (await request(p, target + "?token=" + TOKEN[:-1] + "0"))[0] == \
                    "HTTP/1.1 401 Unauthorized", target
                assert (await request(p, target, headers="Authorization: Bearer wrong-token-1234"
                                      "5678\r\n"))[0] == "HTTP/1.1 401 Unauthorized", target
            status, body = await request(p, "/?token=" + TOKEN)
            assert status == "HTTP/1.1 200 OK" and b"<title>drgw" in body
            status, body = await request(p, "/api/snapshot",
                                         headers=f"Authorization: Bearer {TOKEN}\r\n")
            assert status == "HTTP/1.1 200 OK" and json.loads(body) == {"version": 0, "built": 1}
            # the token also opens the page from another Host name: it is meant for the LAN
            assert (await request(p, "/?token=" + TOKEN, host="gateway.lan"))[0] == "HTTP/1.1 200 OK"
    asyncio.run(main())


def test_a_page_without_a_token_answers_only_loopback_names_and_only_reads(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, token=False) as (page, _):
            p = page.port
            for host in ("127.0.0.1", "localhost", "[::1]"):
                assert (await request(p, "/api/snapshot", host=host))[0] == "HTTP/1.1 200 OK"
            # a web site whose name resolves to 127.0.0.1 (DNS rebinding) is not answered
            status, body = await request(p, "/api/snapshot", host="attacker.example")
            assert status == "HTTP/1.1 403 Forbidden" and b"loopback address" in body
            for method in ("POST", "PUT", "DELETE"):
                status, body = await request(p, "/api/snapshot", method=method)
                assert status == "HTTP/1.1 405 Method Not Allowed" and b"read-only" in body
            assert (await request(p, "/api/snapshot", method="HEAD"))[0] == "HTTP/1.1 200 OK"
    asyncio.run(main())


async def next_event(reader: asyncio.StreamReader) -> dict[str, object]:
    """The data of the next `snapshot` event (HTML Living Standard 9.2: lines up to a blank one)."""
    data = None
    while True:
        line = (await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\n")
        if line.startswith("data: "):
            data = json.loads(line[6:])
        elif not line and data is not None:
            return data


def test_the_event_stream_pushes_at_once_then_only_after_a_change(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, token=False) as (page, view):
            live = page.live
            live.on_sample(sample(500))  # before any page: counted, no snapshot built
            assert view.built == 0
            reader, writer = await asyncio.open_connection("127.0.0.1", page.port)
            writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{page.port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Type: text/event-stream" in head
            assert await next_event(reader) == {"version": 1, "built": 1}
            # sent, the stream parks on the change counter: no ticker sends it anything
            await until(lambda: live.waiting == 1, what="the stream to wait for a change")
            assert view.built == 1
            live.on_sample(sample(600))
            assert await next_event(reader) == {"version": 2, "built": 2}
            # changes that come while a push is held back arrive together, in one snapshot
            live.on_event({"type": "dr_state", "event_id": "e1", "from": "pending", "to": "near"})
            live.on_event({"type": "dr_live", "event_id": "e1", "delivered_wh": 1.5})
            assert await next_event(reader) == {"version": 4, "built": 3}
            assert live.dr_version == 1 and live.dr_live["e1"]["delivered_wh"] == 1.5
            writer.close()
            await until(lambda: page.streams == 0, what="the stream to end with its page")
            live.on_sample(sample(700))  # no page open: nothing is built, no task but the server
            assert view.built == 3 and live.waiting == 0
            others = asyncio.all_tasks() - {asyncio.current_task()}
            assert {t.get_name() for t in others} == {"web"}
    asyncio.run(main())


def test_streams_beyond_the_limit_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(tmp_path, token=False) as (page, _):
            open_ = []
            for _ in range(MAX_STREAMS):
                reader, writer = await asyncio.open_connection("127.0.0.1", page.port)
                writer.write(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{page.port}\r\n\r\n"
                             .encode())
                await next_event(reader)
                open_.append(writer)
            status, _ = await request(page.port, "/api/events")
            assert status == "HTTP/1.1 503 Service Unavailable"
            for writer in open_:
                writer.close()
    asyncio.run(main())
