"""The market operation's price feed from an HTTP source (a loopback http.server serving the CSV
a grid operator's endpoint would), and a feed URL that does not answer."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from gateway.master.price_feed import FeedError, PriceSlot, read_feed

CSV = b"start,realtime\n1796493600,0.68\n1796494500,0.61\n"


@pytest.fixture
def feed_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls it by this name
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.end_headers()
            self.wfile.write(CSV)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prices.csv"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_feed_reads_like_the_file(feed_url: str) -> None:
    assert read_feed(feed_url) == [PriceSlot(start_s=1796493600, realtime_micro=680_000),
                                   PriceSlot(start_s=1796494500, realtime_micro=610_000)]


def test_a_feed_url_that_does_not_answer_names_it() -> None:
    from gateway.network.localbroker import free_port

    url = f"http://127.0.0.1:{free_port()}/prices.csv"
    with pytest.raises(FeedError, match=f"price feed {url}: cannot fetch it"):
        read_feed(url)
