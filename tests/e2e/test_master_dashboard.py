"""The operator dashboard in a real browser (Debian's chromium through Playwright) on real parts:
mosquitto, a master worker storing a virtual fleet (a gap repaired by resend, a forgery) in SQLite,
and the embedded chain's market with a cleared window and a Report. The test reads the page's
numbers against the database (the test's own connection), waits for a live update by server-sent
events after more records arrive, and saves a screenshot: into the test's tmp dir, or with
DRGW_SCREENSHOTS=docs/img as docs/img/master-dashboard.png (how the committed one was made)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from gateway.chain.node import embedded
from gateway.chain.outbox import ChainOutbox
from gateway.master.dashboard import serve_dashboard
from gateway.master.dashboard_data import ChainMarketView
from gateway.master.service import build
from gateway.master.settings import load
from gateway.network.localbroker import free_port
from gateway.testing.virtual_fleet import FleetLink, make_fleet
from tests.browser import chromium_or_skip, chromium_page
from tests.integration.chain.conftest import Market
from tests.integration.master.test_dashboard_api import (
    _listening,
    _operator,
    master,
    query,
    scenario,
    settled,
    write_config,
)
from tests.mosquitto import Broker
from tests.waits import until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def chain_market() -> tuple[Market, ChainOutbox]:
    """Three households bid; a window is cleared; two Reports are accepted."""
    outbox = ChainOutbox(":memory:")
    market = Market(embedded(), outbox)
    hs = [market.household(f"h{i}") for i in range(3)]
    for h, (power, price) in zip(hs, ((-2000, 10_000), (-3000, 50_000), (-1500, 30_000)),
                                 strict=True):
        market.bid(h, power_w=power, price_mtok=price)
    window, _, end = market.announce()
    market.client.clear(market.op, window)
    for h in hs[:2]:
        market.commit(h, window)
    market.at(end)
    market.client.submit_report(market.stranger, market.report(hs[0], window, delivered=1900))
    market.client.submit_report(market.stranger, market.report(hs[1], window, delivered=2500))
    return market, outbox


def test_dashboard_in_chromium_shows_the_database_and_updates_live(
        tmp_path: Path, mqtt_broker: Broker) -> None:
    chromium_or_skip()
    service_dir, page_dir = tmp_path / "service", tmp_path / "page"
    shots = os.environ.get("DRGW_SCREENSHOTS")
    screenshot = (ROOT / shots if shots else tmp_path) / "master-dashboard.png"
    service_dir.mkdir()
    page_dir.mkdir()
    # the worker ingests (its own dashboard on a port of its own); the page's dashboard reads the
    # same database through its own connection, with the chain's market handed in
    config = write_config(service_dir, mqtt_broker.url, port=free_port())
    port = free_port()
    page_config = write_config(page_dir, mqtt_broker.url, port=port)
    page_config.write_text(page_config.read_text().replace(
        'sqlite = "master.sqlite"', f'sqlite = "{service_dir / "master.sqlite"}"'))
    market, outbox = chain_market()
    fleet = make_fleet(3)
    g0, g1, g2 = (g.gw for g in fleet)

    async def main() -> None:
        link = FleetLink(fleet, host=mqtt_broker.host, port=mqtt_broker.port,
                         operators=[_operator(service_dir)])
        async with master(config), link.running():
            await scenario(link, fleet)
            await until(lambda: settled(config), timeout=60, what="the fleet stored, gaps closed")
            settings = load(page_config)
            assert settings.dashboard is not None
            parts = build(settings, worker="page")
            task = asyncio.create_task(serve_dashboard(
                parts, settings.dashboard, market=ChainMarketView(market.client)))
            try:
                await until(lambda: _listening(port), what="the dashboard to listen")
                async with chromium_page() as page:
                    await check_page(page, f"http://127.0.0.1:{port}/", link)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await parts.close()

    async def check_page(page: object, url: str, link: FleetLink) -> None:
        from playwright.async_api import Page

        assert isinstance(page, Page)
        await page.goto(url)
        await page.wait_for_function("document.getElementById('records').textContent === '60'")
        db = dict(query(config, "SELECT gw, COUNT(*) FROM measurements GROUP BY gw"))
        assert db == {g0: 20, g1: 20, g2: 20}  # the scenario's 3 x 20 honest records
        rows = await page.eval_on_selector_all("#fleet tbody tr", "rs => rs.map(r => "
                                               "[...r.cells].map(c => c.textContent))")
        shown = {r[0]: r for r in rows}
        assert set(shown) == set(db)
        for gw, n in db.items():
            assert shown[gw][4] == str(n)  # records
        assert [shown[g][8] for g in (g0, g1, g2)] == ["0", "1", "0"]  # forgeries: g1's seq 4
        assert [shown[g][6] for g in (g0, g1, g2)] == ["1", "1", "0"]  # gaps filled by resend
        assert shown[g2][3] == "7"  # the backlog g2's birth announced
        assert await page.text_content("#gaps") == "0 / 2 / 0"
        assert await page.text_content("#online") == "3 / 3"
        windows = await page.text_content("#windows") or ""
        assert "cleared" in windows and "reported" in windows and "1,900" in windows
        ranks = await page.eval_on_selector_all("#rank-households tbody tr", "rs => rs.length")
        assert ranks == 3
        # live: 5 more records of g2 arrive; the page changes without a reload (SSE)
        await link.publish(fleet[2], fleet[2].make(5))
        await page.wait_for_function("document.getElementById('records').textContent === '65'")
        assert query(config, "SELECT COUNT(*) FROM measurements")[0][0] == 65
        await page.wait_for_function("parseFloat(document.getElementById('rate').textContent) > 0")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(screenshot), full_page=True)

    try:
        asyncio.run(main())
    finally:
        outbox.close()
    assert screenshot.stat().st_size > 10_000
