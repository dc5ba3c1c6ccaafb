"""`drgw demo`: one whole DR window, live, on embedded defaults.

Real parts throughout: the simulated home's devices are served over Modbus TCP and RTU (pty), the
gateway is the same `Agent` that `drgw run` starts (config file, store, signed measurements,
MQTT to a local mosquitto), the market is the real contract on an embedded EVM. Only the clock is
compressed: a 10-minute window and a 10-minute lockout last 600 / speed seconds each.

Timeline: the market is deployed and everybody bids (the home offers `award_kw` of load reduction);
the operator announces a window one lockout ahead and clears it; the gateway learns its award from
the chain, measures its pre-event baseline, and when the window opens its checker projects a
shortfall and the policy turns the EV charger down and the boiler off; at the end it restores them,
judges itself and submits its signed Report; the operator settles and checks; the summary shows
award, delivered energy, verdict, payment and deposit, and the event plot is drawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import DrgwError

if TYPE_CHECKING:
    from gateway.agent import Agent
    from gateway.chain.port import Web3MarketPort
    from gateway.config.gateway import GatewayConfig
    from gateway.demo.market import DemoMarket
    from gateway.measurement.identity import GatewayKey

log = logging.getLogger(__name__)

WINDOW_S, LOCKOUT_S, GRACE_S = 600, 600, 300  # the market's nominal timing, before `speed`
SETUP_PAST_S = 3600  # how far in the past the embedded chain starts (see `_chain_setup`)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    speed: float = 20.0
    award_kw: float = 4.0  # the home's bid: this much load reduction
    bid_price: float = 30.0  # tokens/kWh
    rated_kw: float = 7.0
    levers: tuple[str, ...] = ("ev", "boiler")  # which appliances the loop may act on
    scenario: Path | None = None
    workdir: Path | None = None
    keep_running: bool = False
    plot: bool = True
    out: Callable[[str], None] = print


@dataclass(slots=True)
class DemoResult:
    award_w: int = 0
    window: int = 0
    verdict: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] | None = None
    chain_state: str | None = None
    settlement: dict[str, Any] | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None
    workdir: Path | None = None
    event_id: str = ""


def demo_scenario() -> Path:
    return Path(str(resources.files("gateway") / "data" / "demo_home.toml"))


def _config_text(*, home: Any, key: Path, broker: str, speed: float, levers: tuple[str, ...]) -> str:
    lines = [
        "# Written by drgw demo: the gateway config of the simulated home.",
        "[gateway]", f'key = "{key}"', "chain_id = 1", 'log_level = "WARNING"',
        "[mqtt]", f'broker = "{broker}"', "health_interval = 10",
        "[store]", 'path = "drgw.db"', "merkle_interval_s = 60",
        "[poll]", "fast = 1.0", "normal = 5.0", "slow = 30.0",
    ]
    buses: dict[str, str] = {}
    for info in home.devices:
        ident = f"{info.transport}:{info.address}"
        if ident not in buses:
            buses[ident] = f"bus{len(buses) + 1}"
            where = f'tcp = "{info.address}"' if info.transport == "tcp" else f'serial = "{info.address}"'
            lines += ["[[bus]]", f'name = "{buses[ident]}"', where]
    for info in home.devices:
        role = "main" if info.name == "main" else None
        lines += ["[[device]]", f'name = "{info.name}"', f'profile = "{info.profile}"',
                  f'bus = "{buses[f"{info.transport}:{info.address}"]}"', f"unit = {info.unit}",
                  "timeout = 0.5"] + ([f'role = "{role}"'] if role else [])
    # The gateway starts with the demo, so it measures only during the lockout. Its baseline is
    # committed at NEAR, lead_minutes before the start, from the pre-event minute that ends there
    # (docs/baselines.md, "Committed baselines"): halfway through the lockout it has seen half of it
    # (less up to one 5 s slot, the period ends on the grid); ask for half of that, 25 % at most.
    lead_min = LOCKOUT_S / speed / 60 / 2
    coverage = min(0.25, lead_min / 2)
    lines += [
        "[dr]", 'baseline = "pre_event"', "pre_event_minutes = 1", f"lead_minutes = {lead_min:.3f}",
        "tolerance = 0.05", f"hold_off_s = {max(1.0, 30.0 / speed):.2f}", "slot_s = 5",
        "[dr.baseline_params]", f"min_coverage = {coverage:.3f}",
    ]
    if "ev" in levers:
        lines += ["[[dr.lever]]", 'device = "ev"', 'point = "ev_current_limit_a"', 'kind = "setpoint"',
                  "min = 6", "priority = 1", "expected_w = 2760", "power_w_per_unit = 690"]
    if "boiler" in levers:
        lines += ["[[dr.lever]]", 'device = "boiler"', 'point = "relay_1_on"', 'kind = "switch"',
                  "off = 0", "on = 1", "priority = 2", "expected_w = 2000", "max_off_minutes = 120"]
    return "\n".join(lines) + "\n"


class _Progress:
    """Turns the loop's MQTT event bodies into one line each for the terminal."""

    def __init__(self, out: Callable[[str], None], result: DemoResult) -> None:
        self.out, self.result = out, result

    def __call__(self, body: Mapping[str, Any]) -> None:
        kind = body.get("type")
        if kind == "dr_event":
            self.out(f"  gateway: DR event {body['event_id']} {body['change']} "
                     f"({body['award_w']} W {body['direction']}, state {body['state']})")
        elif kind == "dr_state":
            self.out(f"  gateway: event {body['from']} -> {body['to']}")
        elif kind == "dr_live":
            short = "SHORTFALL projected" if body["shortfall"] else "on track"
            self.out(f"  live: baseline {body['baseline_w']:7.0f} W  actual {body['actual_w']:7.0f} W  "
                     f"delivered {body['delivered_wh']:6.2f} Wh  projected {body['projected_wh']:6.2f}"
                     f" / required {body['required_wh']:6.2f} Wh  {short}")
        elif kind == "dr_action":
            self.result.actions.append(dict(body))
            self.out(f"  action: {body['device']}.{body['point']} {body['previous']:g} -> "
                     f"{body['value']:g} ({body['reason']}){'' if body['ok'] else ' FAILED'}")
        elif kind == "dr_verdict":
            self.out(f"  verdict: delivered {body['delivered_wh']} Wh of {body['required_wh']} Wh "
                     f"required -> {'performed' if body['performed'] else 'SHORT'}")
        elif kind == "dr_error":
            self.out(f"  DR error: {body['reason']}")


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

    loop = asyncio.get_running_loop()
    key, config = _gateway_files(opts, home, broker_url, workdir)
    out = opts.out

    lockout = max(5, round(LOCKOUT_S / opts.speed))
    window_s = max(5, round(WINDOW_S / opts.speed))
    grace = max(2, round(GRACE_S / opts.speed))
    market, port = await loop.run_in_executor(
        chain, _chain_setup, key, workdir, lockout, grace, opts)
    out(f"market: DRMarket {market.market.deployment.market} on the embedded chain; "
        f"bids: home {opts.award_kw:g} kW at {opts.bid_price:g} tok/kWh, and 4 neighbours")

    # one thread owns the embedded chain; the market is polled often, as the clock is compressed
    agent = Agent(config, key=key, market=port, executor=chain, poll_interval_s=1.0,
                  on_dr_event=_Progress(out, result))
    agent_task = asyncio.create_task(agent.run(), name="agent")
    try:
        await _timeline(opts, market, port, agent, result, chain, lockout=lockout, window_s=window_s)
        if opts.keep_running:
            out("--keep-running: the gateway keeps running (Ctrl-C to stop)")
            await agent_task
    finally:
        agent.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent_task, 20.0)
        await loop.run_in_executor(chain, port.close)
    if opts.plot and result.event_id:
        result.plot = _plot(config.store.path, result.event_id, workdir / "event.png", out)
    _summary(result, out)


def _gateway_files(opts: DemoOptions, home: Any, broker_url: str,
                   workdir: Path) -> tuple[GatewayKey, GatewayConfig]:
    """A new gateway key and the home's config file, as `drgw init` would write them."""
    from gateway.config.gateway import load_config
    from gateway.measurement.identity import GatewayKey
    from gateway.measurement.keyfile import write_key

    key = GatewayKey.generate()
    write_key(workdir / "gateway.key", key)
    config_path = workdir / "drgw.toml"
    config_path.write_text(_config_text(home=home, key=workdir / "gateway.key", broker=broker_url,
                                        speed=opts.speed, levers=opts.levers))
    opts.out(f"gateway {key.address}: config {config_path}, broker {broker_url}")
    return key, load_config(config_path)


def _chain_setup(key: GatewayKey, workdir: Path, lockout: int, grace: int,
                 opts: DemoOptions) -> tuple[DemoMarket, Web3MarketPort]:
    from gateway.chain.node import embedded
    from gateway.chain.port import Web3MarketPort
    from gateway.demo.market import DemoBid, DemoMarket

    # the setup's ~30 transactions, one block and one second each, are mined an hour in the past,
    # so the chain's clock is not half a minute ahead of the wall clock when the window is announced
    node = embedded(clock_lag_s=SETUP_PAST_S)
    market = DemoMarket(node, lockout_s=lockout, grace_s=grace)
    home_bid = DemoBid("home", -opts.award_kw, opts.rated_kw, opts.bid_price)
    market.setup(home_gateway=key.address, home_bid=home_bid)
    port = Web3MarketPort(w3=node.w3, market=market.market.deployment.market,
                          household=market.wallets["home"].address, gateway_secret=key.secret(),
                          sender_secret=market.aggregator_key, outbox_path=workdir / "chain-outbox.sqlite")
    return market, port


async def _timeline(opts: DemoOptions, market: DemoMarket, port: Web3MarketPort, agent: Agent,
                    result: DemoResult, chain: ThreadPoolExecutor, *, lockout: int,
                    window_s: int) -> None:
    loop = asyncio.get_running_loop()
    out = opts.out
    window, state, awards = await loop.run_in_executor(
        chain, _announce, opts, market, lockout, window_s)
    result.window, result.award_w = window, awards["home"]
    start, end = int(state["start"]), int(state["end"])
    out(f"operator: window {window} announced for {_t(start)}..{_t(end)}, target "
        f"{state['targetW'] / 1000:.1f} kW, cleared at {state['clearingPrice'] / 1000:g} tok/kWh")
    out("  awards: " + ", ".join(f"{n} {w / 1000:.2f} kW" for n, w in awards.items()))
    if awards["home"] <= 0:
        raise DrgwError("the home's bid was not awarded; raise --award or lower the bid price")
    from gateway.loop.events import chain_event_id

    result.event_id = chain_event_id(market.market.deployment.market, window)
    out(f"waiting for the window ({start - int(time.time())} s: the lockout, in which the gateway "
        "measures its pre-event baseline)")
    await _until(lambda: _outcome(agent, result.event_id) is not None, deadline=end + 30)
    outcome = _outcome(agent, result.event_id)
    if outcome is None:
        raise DrgwError("the gateway did not judge the event in time; see the log above")
    await _settle(opts, market, agent, result, chain)


def _announce(opts: DemoOptions, market: DemoMarket, lockout: int,
              window_s: int) -> tuple[int, dict[str, Any], dict[str, int]]:
    """Every bid placed, then the operator announces the window past the lockout and clears it."""
    from gateway.demo.market import DemoBid

    now = market.chain_now()
    home_bid = DemoBid("home", -opts.award_kw, opts.rated_kw, opts.bid_price)
    market.place_bids(home_bid=home_bid, from_s=now, to_s=max(now, int(time.time())) + 7200)
    market.node.set_clock_lag(0)  # from here on the chain's clock is the wall clock
    now = market.chain_now()
    start = max(now, int(time.time())) + lockout + 1
    window, state = market.announce_and_clear(start_s=start, end_s=start + window_s)
    return window, state, market.awards()


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


def _plot(store: Path, event_id: str, path: Path, out: Callable[[str], None]) -> Path | None:
    """The same picture as `drgw event plot`."""
    from gateway.loop.journal import Journal
    from gateway.loop.plot import plot_event

    try:
        journal = Journal(store, readonly=True)
        try:
            return plot_event(journal, event_id, path)
        finally:
            journal.close()
    except DrgwError as exc:  # matplotlib missing, or nothing to draw
        out(f"plot skipped: {exc}")
        return None


def _summary(r: DemoResult, out: Callable[[str], None]) -> None:
    v, s = r.verdict, r.settlement or {}
    out("")
    out("summary")
    out(f"  award        {r.award_w / 1000:.2f} kW reduction in window {r.window}")
    if v:
        out(f"  baseline     {v['baseline_wh']} Wh, actual {v['actual_wh']} Wh")
        out(f"  delivered    {v['delivered_wh']} Wh of {v['required_wh']} Wh required "
            f"(award x window x (1 - tolerance))")
        out(f"  verdict      {'performed' if v['performed'] else 'SHORT of the award'}")
    out(f"  actions      {len(r.actions)}: " + "; ".join(
        f"{a['device']}.{a['point']}={a['value']:g}" for a in r.actions))
    if r.report:
        out(f"  Report       seq {r.report['seq_from']}..{r.report['seq_to']}, Merkle root "
            f"{r.report['merkle_root'][:18]}..., chain: {r.chain_state}")
    if s:
        price = s["clearing_price_mtok_per_kwh"] / 1000
        out(f"  payment      {s['payment_mtok'] / 1000:.3f} tokens at {price:g} tok/kWh")
        out(f"  deposit      {s['deposit']} ({s['deposit_mtok'] / 1000:.3f} tokens); reputation "
            f"{s['score']}")
    if r.plot:
        out(f"  plot         {r.plot}")


def _t(ts: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def main_sync(opts: DemoOptions) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # the loop's own log lines say what the progress lines below already show
    logging.getLogger("gateway.loop.runner").setLevel(logging.ERROR)
    try:
        result = asyncio.run(run_demo(opts))
    except KeyboardInterrupt:
        return 130
    return 0 if result.verdict else 1
