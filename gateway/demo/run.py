"""`drgw demo`: one whole DR window, live, on embedded defaults.

Real parts throughout: the simulated home's devices are served over Modbus TCP and RTU (pty), the
gateway is the same `Agent` that `drgw run` starts (config file, store, signed measurements,
MQTT to a local mosquitto), the market is the real contract on an embedded EVM. Only the clock is
compressed: a 10-minute window and a 10-minute lockout last 600 / speed seconds each.

Timeline: the market is deployed; the home's wallet approves the market for its deposits and the
gateway's key gets gas; a few weeks of the home's history are seeded into the gateway's journals
(gateway/demo/seed.py). The gateway starts with a `[market]` table whose one block of hours began
at the demo's start (its whole minute), and its bidder's first cycle (run when the agent starts)
bids from the forecast flexibility of its levers: placeBidFor, from the gateway's key, the deposit
from the household's wallet. The neighbours bid; the operator announces a window at the block's
start and clears it; the gateway learns its award, commits its baseline on chain before the window,
and when the window opens its checker projects a shortfall and the policy turns the EV charger down
and the boiler off; at the end it restores them, judges itself and submits its signed Report; the
operator settles and checks; one reading of the Report is proven on chain; the summary and the event
plot follow.

Why the block has already begun: `[market] hours` are local HH:MM, and a window clears only bids
whose range covers it, placed before its announcement. A block that has begun still takes a new bid
while a window fits in what is left of it after the lockout (docs/bidding.md), so the window opens
one lockout after the announcement, with no wait for a whole minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.demo.report import DemoResult, Progress, bid_line, prove_reading, summary
from gateway.errors import DrgwError

if TYPE_CHECKING:
    from gateway.agent import Agent
    from gateway.chain.port import Web3MarketPort
    from gateway.config.gateway import GatewayConfig
    from gateway.demo.market import DemoMarket
    from gateway.measurement.identity import GatewayKey

__all__ = ["DemoOptions", "DemoResult", "demo_scenario", "main_sync", "run_demo"]
log = logging.getLogger(__name__)

WINDOW_S, LOCKOUT_S, GRACE_S = 600, 600, 300  # the market's nominal timing, before `speed`
SETUP_PAST_S = 3600  # how far in the past the embedded chain starts (see `_chain_setup`)
BID_WAIT_S = 30  # the agent starts and its bidder's first cycle places the bid within this
BLOCK_S = 7200  # the [market] block: two hours from the demo's start on
HOME_ZONE = dt.UTC  # the home's `[dr] time_zone`


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    speed: float = 20.0
    confidence: float = 0.8  # [market] confidence: bid what the levers delivered on 80 % of days
    history_weeks: int = 6  # simulated weeks seeded into the gateway's journals (max 6: LOOKBACK_DAYS)
    bid_price: float = 30.0  # tokens/kWh: [market] min_price
    rated_kw: float = 7.0  # [market] max_deposit = deposit per kW x this (and the wallet's allowance)
    levers: tuple[str, ...] = ("ev", "boiler")  # which appliances the loop may act on and bid with
    scenario: Path | None = None
    workdir: Path | None = None
    keep_running: bool = False
    plot: bool = True
    out: Callable[[str], None] = print


@dataclass(frozen=True, slots=True, kw_only=True)
class _Timing:
    lockout: int
    window_s: int
    grace: int
    block: tuple[int, int]


def demo_scenario() -> Path:
    return Path(str(resources.files("gateway") / "data" / "demo_home.toml"))


async def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the whole loop once; returns what happened (also printed through `opts.out`)."""
    from firmware_shims.home import SimulatedHome
    from gateway.network.localbroker import Broker

    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="drgw-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(workdir=workdir)
    out = opts.out
    out(f"drgw demo: speed x{opts.speed:g} (a 10-minute window lasts {WINDOW_S / opts.speed:.0f} s); "
        f"files in {workdir}")
    broker = Broker(workdir / "mosquitto")
    broker.start()
    chain_thread = ThreadPoolExecutor(1, thread_name_prefix="chain")
    try:
        async with SimulatedHome(opts.scenario or demo_scenario()) as home:
            out("simulated home: " + ", ".join(f"{d.name} ({d.profile}, {d.transport})"
                                              for d in home.devices))
            await _run(opts, home, broker.url, workdir, chain_thread, result)
    finally:
        chain_thread.shutdown(wait=True)
        broker.kill()
    return result


async def _run(opts: DemoOptions, home: Any, broker_url: str, workdir: Path, chain: ThreadPoolExecutor,
               result: DemoResult) -> None:
    from gateway.agent import Agent
    from gateway.measurement.identity import GatewayKey

    loop = asyncio.get_running_loop()
    out = opts.out
    started = time.time()
    key = GatewayKey.generate()
    lockout = max(5, round(LOCKOUT_S / opts.speed))
    market, port = await loop.run_in_executor(
        chain, _chain_setup, key, workdir, lockout, max(2, round(GRACE_S / opts.speed)), opts)
    result.market, result.gateway = market, key.address
    out(f"market: DRMarket {market.market.deployment.market} on the embedded chain; the home's wallet "
        f"approved it for {_max_deposit(opts):g} tokens of deposits, its gateway's key has gas")
    # the block began at the demo's start (its whole minute): the bidder still bids for it, since a
    # window announced from now on fits in the rest of it (docs/bidding.md)
    first = int(started) // 60 * 60
    timing = _Timing(lockout=lockout, window_s=max(5, round(WINDOW_S / opts.speed)),
                     grace=max(2, round(GRACE_S / opts.speed)), block=(first, first + BLOCK_S))
    config = await loop.run_in_executor(None, _gateway_files, opts, home, broker_url, workdir, key,
                                        market, timing)
    # one thread owns the embedded chain; the market is polled often, as the clock is compressed
    agent = Agent(config, key=key, market=port, executor=chain, poll_interval_s=1.0,
                  on_dr_event=Progress(out, result))
    agent_task = asyncio.create_task(agent.run(), name="agent")
    try:
        await _timeline(opts, market, agent, result, chain, timing)
        if opts.keep_running:
            out("--keep-running: the gateway keeps running (Ctrl-C to stop)")
            await agent_task
    finally:
        agent.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent_task, 20.0)
        await loop.run_in_executor(chain, port.close)
    if result.report is not None:
        result.proof = await loop.run_in_executor(chain, _prove, config, market, result)
    if opts.plot and result.event_id:
        result.plot = _plot(config.store.path, result.event_id, workdir / "event.png", out, opts.speed)
    summary(result, out)


def _max_deposit(opts: DemoOptions) -> float:
    from gateway.demo.market import DEPOSIT_PER_KW_MTOK

    return DEPOSIT_PER_KW_MTOK * opts.rated_kw / 1000


def _gateway_files(opts: DemoOptions, home: Any, broker_url: str, workdir: Path, key: GatewayKey,
                   market: DemoMarket, timing: _Timing) -> GatewayConfig:
    """The gateway key and the home's config file, as `drgw init` would write them, and the
    simulated weeks of history in its journals."""
    from gateway.config.gateway import load_config
    from gateway.demo.home_config import BOILER_LEVER, EV_LEVER, MarketTable, config_text, hours
    from gateway.demo.seed import EVENING_H, seed_history
    from gateway.measurement.keyfile import write_key

    write_key(workdir / "gateway.key", key)
    table = MarketTable(market=market.market.deployment.market, household=market.wallets["home"].address,
                        block=timing.block, zone=HOME_ZONE, min_price=opts.bid_price,
                        max_deposit=_max_deposit(opts), confidence=opts.confidence,
                        history_days=opts.history_weeks * 7 + 1)
    from gateway.network.localbroker import free_port

    config_path = workdir / "drgw.toml"
    web_port = free_port()
    config_path.write_text(config_text(home=home, key=workdir / "gateway.key", broker=broker_url,
                                       speed=opts.speed, levers=opts.levers, market=table,
                                       web_port=web_port))
    opts.out(f"the home's own page: http://127.0.0.1:{web_port}/ (live; #installer for the "
             "installer's view)")
    opts.out(f"gateway {key.address}: config {config_path}, broker {broker_url}; [market] bids for "
             f"{hours(timing.block, HOME_ZONE)} {HOME_ZONE} at >= {opts.bid_price:g} tok/kWh")
    config = load_config(config_path)
    levers = {"ev": ".".join(EV_LEVER), "boiler": ".".join(BOILER_LEVER)}
    seeded = seed_history(config.store.path, weeks=opts.history_weeks, now_s=int(time.time()),
                          evening_at_s=timing.block[0], home=HOME_ZONE,
                          levers={k: v for k, v in levers.items() if k in opts.levers}, main="main")
    start = dt.datetime.fromtimestamp(seeded.start_s, HOME_ZONE).strftime("%Y-%m-%d")
    opts.out(f"history: {seeded.weeks} simulated weeks from {start} seeded into the gateway's "
             f"journals ({seeded.rows} five-minute slots: main meter, "
             f"{', '.join(lv for lv in ('ev', 'boiler') if lv in opts.levers)}); the synthetic "
             f"household's evening ({int(EVENING_H):02d}:{round(EVENING_H % 1 * 60):02d}) is "
             f"shifted by {seeded.shift_min:+d} min to fall on the demo's window")
    return config


def _chain_setup(key: GatewayKey, workdir: Path, lockout: int, grace: int,
                 opts: DemoOptions) -> tuple[DemoMarket, Web3MarketPort]:
    from gateway.chain.node import embedded
    from gateway.chain.port import Web3MarketPort
    from gateway.demo.market import DemoMarket

    # the setup's ~30 transactions, one block and one second each, are mined an hour in the past,
    # so the chain's clock is not half a minute ahead of the wall clock when the window is announced
    node = embedded(clock_lag_s=SETUP_PAST_S)
    market = DemoMarket(node, lockout_s=lockout, grace_s=grace)
    market.setup(home_gateway=key.address, home_deposit_mtok=round(_max_deposit(opts) * 1000))
    port = Web3MarketPort(w3=node.w3, market=market.market.deployment.market,
                          household=market.wallets["home"].address, gateway_secret=key.secret(),
                          sender_secret=market.aggregator_key, outbox_path=workdir / "chain-outbox.sqlite")
    return market, port


async def _timeline(opts: DemoOptions, market: DemoMarket, agent: Agent, result: DemoResult,
                    chain: ThreadPoolExecutor, timing: _Timing) -> None:
    loop = asyncio.get_running_loop()
    out = opts.out
    # the bidder's first cycle runs as the agent starts: seconds, not minutes
    await _until(lambda: result.placed() is not None, deadline=time.time() + BID_WAIT_S)
    bid = result.placed()
    if bid is None:
        bidder = agent.parts.bidder
        why = [] if bidder is None else [*bidder.notes, *([bidder.last_error] if bidder.last_error
                                                          else [])]
        raise DrgwError(f"the home's gateway placed no bid for its block from {_t(timing.block[0])} "
                        f"within {BID_WAIT_S} s of its start"
                        + (f": {'; '.join(why)}" if why else "; see the log above"))
    out(bid_line(bid, zone=HOME_ZONE, confidence=opts.confidence))
    window, state, awards = await loop.run_in_executor(chain, _announce, market, timing)
    result.window, result.award_w = window, awards["home"]
    start, end = int(state["start"]), int(state["end"])
    out(f"operator: window {window} announced for {_t(start)}..{_t(end)}, target "
        f"{state['targetW'] / 1000:.1f} kW, cleared at {state['clearingPrice'] / 1000:g} tok/kWh")
    out("  awards: " + ", ".join(f"{n} {w / 1000:.2f} kW" for n, w in awards.items()))
    if awards["home"] <= 0:
        raise DrgwError("the home's bid was not awarded; lower --price (the neighbours ask 25-40)")
    from gateway.loop.events import chain_event_id

    result.event_id = chain_event_id(market.market.deployment.market, window)
    out(f"waiting for the window ({start - int(time.time())} s: the lockout, in which the gateway "
        "measures its pre-event baseline and commits it on chain)")
    await _until(lambda: _outcome(agent, result.event_id) is not None, deadline=end + 30)
    if _outcome(agent, result.event_id) is None:
        raise DrgwError("the gateway did not judge the event in time; see the log above")
    await _settle(opts, market, agent, result, chain)
    # the event plot shows the load after the window too: half a window more of it, measured
    await asyncio.sleep(max(0.0, end + timing.window_s / 2 - time.time()))


def _announce(market: DemoMarket, timing: _Timing) -> tuple[int, dict[str, Any], dict[str, int]]:
    """The neighbours bid, then the operator announces the window at the block's start (or one
    lockout ahead, if that is later) and clears it."""
    now = market.chain_now()
    market.place_bids(from_s=now, to_s=timing.block[1])
    market.node.set_clock_lag(0)  # from here on the chain's clock is the wall clock
    now = market.chain_now()
    start = max(timing.block[0], max(now, int(time.time())) + timing.lockout + 1)
    window, state = market.announce_and_clear(start_s=start, end_s=start + timing.window_s)
    return window, state, market.awards()


def _prove(config: GatewayConfig, market: DemoMarket, result: DemoResult) -> Any:
    assert result.report is not None
    return prove_reading(config.store.path, client=market.market,
                         household=market.wallets["home"].address, window=result.window,
                         report=result.report)


async def _settle(opts: DemoOptions, market: DemoMarket, agent: Agent, result: DemoResult,
                  chain: ThreadPoolExecutor) -> None:
    """After the gateway's verdict: neighbours' Reports, settlement and check, the home's outcome."""
    loop = asyncio.get_running_loop()
    accepted = await loop.run_in_executor(chain, market.neighbour_reports, result.window)
    opts.out(f"neighbours: {accepted} Report(s) relayed by the aggregator")
    # the home's Report waits in the gateway's chain outbox until the chain's clock passed the end
    await _until(lambda: not str((_outcome(agent, result.event_id) or {}).get("chain_state"))
                 .startswith("queued"), deadline=time.time() + 20)
    await loop.run_in_executor(chain, market.settle_and_check, result.window)
    opts.out("operator: window settled and checked")
    await _until(lambda: (_outcome(agent, result.event_id) or {}).get("settlement") is not None,
                 deadline=time.time() + 20)
    outcome = _outcome(agent, result.event_id) or {}
    result.verdict, result.report = outcome.get("verdict", {}), outcome.get("report")
    result.chain_state, result.settlement = outcome.get("chain_state"), outcome.get("settlement")


def _outcome(agent: Agent, event_id: str) -> dict[str, Any] | None:
    return None if agent.dr is None else agent.dr.journal.outcome(event_id)


async def _until(done: Callable[[], bool], *, deadline: float) -> None:
    while not done() and time.time() < deadline:
        await asyncio.sleep(0.25)


def _plot(store: Path, event_id: str, path: Path, out: Callable[[str], None], speed: float) -> Path | None:
    """The same picture as `drgw event plot --speed SPEED`: simulated minutes on its time axis."""
    from gateway.loop.journal import Journal
    from gateway.loop.plot import plot_event

    try:
        journal = Journal(store, readonly=True)
        try:
            return plot_event(journal, event_id, path, time_scale=speed)
        finally:
            journal.close()
    except DrgwError as exc:  # matplotlib missing, or nothing to draw
        out(f"plot skipped: {exc}")
        return None


def _t(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def main_sync(opts: DemoOptions) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the loop's own log lines say what the progress lines below already show
    logging.getLogger("gateway.loop.runner").setLevel(logging.ERROR)
    logging.getLogger("gateway.loop.bidder").setLevel(logging.ERROR)
    try:
        result = asyncio.run(run_demo(opts))
    except KeyboardInterrupt:
        return 130
    return 0 if result.verdict else 1
