"""Issue 13's must-show: three households of different flexibility in one market, end to end.

One embedded chain and its operator; three households, each with a wallet, a gateway key, a simulated
home (real Modbus TCP servers), an agent (real config file, store, MQTT to one mosquitto) and a
seeded history its bidder learns from (tests/e2e/market_homes.py). Each agent bids by itself; the
operator announces and clears; each agent commits its baseline before the start, acts in the window,
reports; the operator settles and checks. Time is compressed as in tests/e2e/test_demo.py (x40).

Expectations, stated before the run:
- Bids: each household bids the block's forecast flexibility at its confidence, rounded down to
  100 W (docs/bidding.md), at its own price: A (EV + boiler) 20, B (boiler) 25, C (EV) 30 tok/kWh.
  By construction of the histories A > C > B >= 1 kW on every weekday (market_homes.HOMES).
- Clearing: the target is the optimum (0 + 80) / (2 x 1.2) = 33.3 kW (docs/market.md), more than
  the three bids together (< 10 kW), so every bid is awarded in full and the clearing price is the
  marginal (dearest) bid's, C's 30 tok/kWh = 30 000 mtok/kWh, paid to every winner.
- Delivery: A sheds its EV 16 A -> 6 A (6.9 kW) and its boiler (2 kW), 8.9 kW for a bid of at most
  4.4 kW; B switches its 2 kW boiler off for a bid of at most 1.3 kW: both perform (delivered >=
  95 % of award x 15 s). C's car is not there tonight (its wallbox below 6 A draws nothing, from
  before the agents start, so its pre-event baseline has no EV in it): it can shed nothing, is
  judged short, and its Report (valid, just short) is accepted.
- Settlement (DRMarket.settle/check): every winner that reported is paid clearing price x award W x
  15 s / 3 600 000 (mtok); A and B get their deposit (100 000 mtok/kW x bid kW) back, C forfeits
  it. So each wallet ends at 1000 tokens + payment (A, B) or 1000 tokens - deposit + payment (C).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import market_homes as mh
from tests.waits import until

pytestmark = pytest.mark.slow
MTOK_PRICE = 30_000  # C's price, the marginal bid's: the clearing price


class Household:
    """One household's running parts and what the test saw of it."""

    def __init__(self, spec: mh.HomeSpec, folder: Path) -> None:
        from gateway.measurement.identity import GatewayKey
        from gateway.measurement.keyfile import write_key

        self.spec, self.folder = spec, folder
        folder.mkdir()
        self.key = GatewayKey.from_secret(mh.test_key(f"{spec.name}/gateway"))  # TEST KEY
        write_key(folder / "gateway.key", self.key)
        self.events: list[dict[str, Any]] = []
        self.sim: Any = None
        self.agent: Any = None
        self.port: Any = None
        self.task: asyncio.Task[int] | None = None

    @property
    def wallet(self) -> str:
        return str(self.port.household)

    def on_event(self, body: Any) -> None:
        self.events.append(dict(body))

    def outcome(self, event_id: str) -> dict[str, Any]:
        dr = self.agent.dr
        return (None if dr is None else dr.journal.outcome(event_id)) or {}


def test_three_households_bid_deliver_report_and_are_paid_or_forfeit(tmp_path: Path,
                                                                    mqtt_broker: Any) -> None:
    asyncio.run(_run(tmp_path, mqtt_broker.url))


async def _run(tmp_path: Path, broker_url: str) -> None:
    from firmware_shims.home import SimulatedHome

    t0 = int(time.time())
    ev = mh.evening(t0 // 60 * 60)  # the block starts at the minute the test started
    homes = {s.name: Household(s, tmp_path / s.name) for s in mh.HOMES}
    chain = ThreadPoolExecutor(1, thread_name_prefix="chain")  # one thread owns the embedded chain
    try:
        async with contextlib.AsyncExitStack() as stack:
            for h in homes.values():
                (h.folder / "home.toml").write_text(mh.scenario(h.spec))
                h.sim = await stack.enter_async_context(SimulatedHome(h.folder / "home.toml"))
            await _market(homes, ev, chain, broker_url, t0)
    finally:
        chain.shutdown(wait=True)


async def _market(homes: dict[str, Household], ev: mh.Evening, chain: ThreadPoolExecutor,
                  broker_url: str, t0: int) -> None:
    from gateway.chain.node import embedded

    loop = asyncio.get_running_loop()
    # the chain's setup is mined an hour before the block, so the bids are placed before it (a
    # block that starts within the lockout is left alone: docs/bidding.md)
    node = await loop.run_in_executor(chain, lambda: embedded(clock_lag_s=t0 - ev.start_s + 3600))
    operator = mh.Operator(node)
    await loop.run_in_executor(chain, operator.setup, {n: h.key.address for n, h in homes.items()})
    try:
        for h in homes.values():
            await _start_agent(h, operator, ev, broker_url, chain)
        await _scenario(homes, ev, chain, operator)
    finally:
        for h in homes.values():
            if h.agent is not None:
                h.agent.request_stop()
        for h in homes.values():
            if h.task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(h.task, 20.0)
            if h.port is not None:
                await loop.run_in_executor(chain, h.port.close)


async def _start_agent(h: Household, operator: mh.Operator, ev: mh.Evening, broker_url: str,
                       chain: ThreadPoolExecutor) -> None:
    """Its history seeded into its store, its config written and read, the agent started."""
    from gateway.agent import Agent
    from gateway.chain.port import Web3MarketPort
    from gateway.config.gateway import load_config

    assert mh.seed_levers(h.folder / "drgw.db", mh.history(h.spec, ev)) > 0
    wallet = operator.wallets[h.spec.name].address
    market = operator.market.deployment.market
    path = h.folder / "drgw.toml"
    path.write_text(mh.config_text(h.spec, devices=list(h.sim.devices), key=h.folder / "gateway.key",
                                   broker=broker_url, market=market, wallet=wallet, ev=ev))
    # the gateway's own account sends its bids, commitments and Reports (it was given gas)
    h.port = await asyncio.get_running_loop().run_in_executor(chain, lambda: Web3MarketPort(
        w3=operator.node.w3, market=market, household=wallet, gateway_secret=h.key.secret(),
        sender_secret=h.key.secret(), outbox_path=h.folder / "chain-outbox.sqlite"))
    h.agent = Agent(load_config(path), key=h.key, market=h.port, executor=chain,
                    poll_interval_s=1.0, on_dr_event=h.on_event)
    h.task = asyncio.create_task(h.agent.run(), name=f"agent {h.spec.name}")


async def _scenario(homes: dict[str, Household], ev: mh.Evening, chain: ThreadPoolExecutor,
                    operator: mh.Operator) -> None:
    loop = asyncio.get_running_loop()
    bids = await _bid(homes, ev)
    # from here on the chain's clock is the wall clock; the window opens one lockout from now
    operator.node.set_clock_lag(0)
    start = max(int(time.time()), await loop.run_in_executor(chain, operator.node.latest_timestamp))
    start += mh.LOCKOUT_S + 1
    window, state = await loop.run_in_executor(
        chain, lambda: operator.announce_and_clear(start_s=start, end_s=start + mh.WINDOW_S))
    assert ev.start_s <= start and start + mh.WINDOW_S <= ev.start_s + mh.BLOCK_S  # in the block
    assert int(state["state"]) == 2  # cleared
    c = operator.market
    awards = {n: int((await loop.run_in_executor(chain, c.bid, bids[n]))["awardW"]) for n in homes}
    quantities = {n: h.bid_w for n, h in homes.items()}  # type: ignore[attr-defined]
    assert awards == quantities  # the target (33.3 kW) exceeds the bids: each awarded in full
    assert int(state["clearingPrice"]) == MTOK_PRICE  # the dearest bid (C's) is the marginal one
    committed = await _committed(homes, window, chain, operator)
    await _mismatch(homes["A"], window, committed["A"], chain, operator)
    event_id = _event_id(c.deployment.market, window)
    for h in homes.values():
        await until(partial(_reported, h, event_id), what=f"{h.spec.name}'s Report accepted on chain",
                    timeout=60, detail=partial(_tail, h, event_id))
    balances_before = {n: await loop.run_in_executor(chain, c.balance, h.wallet) for n, h in homes.items()}
    await loop.run_in_executor(chain, operator.settle_and_check, window)
    for h in homes.values():
        await until(partial(_settled, h, event_id), what=f"{h.spec.name}'s settlement journalled",
                    detail=partial(_tail, h, event_id))
    _check_outcomes(homes, event_id, committed, awards)
    # pull settlement: what each household is owed waits in the market until it is claimed
    owed = {n: await loop.run_in_executor(chain, c.claimable, h.wallet) for n, h in homes.items()}
    _check_money(homes, awards, {n: 0 for n in homes}, owed)
    await _bidders_follow(homes, window)  # each bidder's next cycle claims for its household
    balances = {n: await loop.run_in_executor(chain, c.balance, h.wallet) for n, h in homes.items()}
    _check_money(homes, awards, balances_before, balances)
    assert [await loop.run_in_executor(chain, c.claimable, h.wallet) for h in homes.values()] == [0] * 3
    await _prove(homes, window, event_id, chain, operator)


def _reported(h: Household, event_id: str) -> bool:
    return str(h.outcome(event_id).get("chain_state")) == "accepted"


def _settled(h: Household, event_id: str) -> bool:
    return h.outcome(event_id).get("settlement") is not None


def _cycled(bidder: Any) -> bool:
    return bidder.last_cycle_s is not None


def _tail(h: Household, event_id: str) -> str:
    return f"outcome {h.outcome(event_id)}; last events {h.events[-5:]}"


def _event_id(market: str, window: int) -> str:
    from gateway.loop.events import chain_event_id

    return chain_event_id(market, window)


async def _bid(homes: dict[str, Household], ev: mh.Evening) -> dict[str, int]:
    """Each agent's own bidder bids for the block: one bid each, of the quantity its forecast says.

    The agent's first cycle runs as it starts (at the wall clock, just after the block began). If
    the planner leaves a started block alone, the test runs the agent's next cycle two minutes
    before the block instead (`Bidder.cycle(now_s)`; the chain's clock is an hour behind then)."""
    ids = {}
    for h in homes.values():
        bidder = h.agent.parts.bidder
        assert bidder is not None
        await until(partial(_cycled, bidder), what=f"{h.spec.name}'s first bidder cycle")
        if not bidder.journal.bids():
            changes = await bidder.cycle(ev.start_s - 120)
            assert [c.change for c in changes] == ["placed"], (changes, bidder.notes, bidder.last_error)
        rows = bidder.journal.bids()
        assert len(rows) == 1 and rows[0].state == "open", rows
        row = rows[0]
        expected_w, basis = mh.forecast_w(h.spec, ev, now_s=row.placed_ms // 1000)
        assert expected_w >= 1000 and row.order.power_w == -expected_w, (h.spec.name, row)
        assert row.basis == basis and row.order.price_mtok == round(h.spec.price * 1000)
        assert (row.order.from_s, row.order.to_s) == (ev.start_s, ev.start_s + mh.BLOCK_S)
        # deposit = 100 000 mtok/kW x rated kW, and the rating is the quantity (docs/bidding.md)
        assert row.deposit_mtok == mh.DEPOSIT_PER_KW_MTOK * expected_w // 1000
        # the agent said so on MQTT (its dr_bid message, seen by the test's event reader)
        said = [e for e in h.events if e.get("type") == "dr_bid" and e.get("change") == "placed"]
        assert [(e["bid_id"], e["power_w"], e["basis"]) for e in said] == [
            (row.bid_id, -expected_w, basis)]
        h.bid_w = expected_w  # type: ignore[attr-defined]
        ids[h.spec.name] = row.bid_id
    q = {n: h.bid_w for n, h in homes.items()}  # type: ignore[attr-defined]
    assert q["A"] > q["C"] > q["B"], q  # they differ by flexibility (market_homes.HOMES)
    return ids


async def _chain_until(chain: ThreadPoolExecutor, read: Any, *, what: str, timeout: float = 30.0) -> Any:
    """`until` for a condition read from the chain: the read runs in the chain thread."""
    loop = asyncio.get_running_loop()
    got: list[Any] = [await loop.run_in_executor(chain, read)]

    async def fresh() -> None:
        got[0] = await loop.run_in_executor(chain, read)

    async def check() -> None:
        while not got[0]:
            await asyncio.sleep(0.1)
            await fresh()

    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g} s for {what}; last read {got[0]!r}") from None
    return got[0]


async def _committed(homes: dict[str, Household], window: int, chain: ThreadPoolExecutor,
                     operator: mh.Operator) -> dict[str, dict[str, Any]]:
    """Each agent commits its baseline at NEAR, before the start: read the commitments on chain."""
    c, out = operator.market, {}
    for n, h in homes.items():
        def read(h: Household = h) -> dict[str, Any] | None:
            b = c.baseline(h.wallet, window)
            return b if b["committed"] else None

        out[n] = await _chain_until(chain, read, what=f"{n}'s baseline committed on chain "
                                    f"(its events: {h.events})")
        assert out[n]["method"] == 2  # PRE_EVENT (docs/baselines.md: method id 2), as its [dr] says
    return out


async def _mismatch(a: Household, window: int, committed: dict[str, Any], chain: ThreadPoolExecutor,
                    operator: mh.Operator) -> None:
    """A Report signed by A's own gateway for A's window whose baseline differs from the commitment
    reverts with BaselineMismatch. Sent during the window with the chain's clock moved past its end
    (WindowNotOver is checked first) and before A's own Report (DuplicateReport is checked first);
    A's own Report, with the committed baseline, is accepted afterwards."""
    from gateway.chain.report import Report, sign_report
    from gateway.chain.revert import ChainRevert

    c = operator.market
    w = await asyncio.get_running_loop().run_in_executor(chain, c.window, window)
    start, end = int(w["start"]), int(w["end"])
    await until(lambda: time.time() >= start, what="the window's start", timeout=60)
    wrong_wh = int(committed["baselineWh"]) + 1000
    report = Report(household=a.wallet, window=window, seq_from=1, seq_to=2, window_start=start,
                    window_end=end, baseline_method=int(committed["method"]),
                    baseline_input_hash=bytes(committed["inputHash"]), baseline_wh=wrong_wh,
                    actual_wh=wrong_wh - 100, delivered_wh=100, merkle_root=mh.test_key("root"))
    signed = sign_report(report, key=a.key.secret(), chain_id=c.deployment.chain_id,
                         market=c.deployment.market)

    def submit() -> ChainRevert | None:
        operator.node.set_next_timestamp(end + 1)
        try:
            c.submit_report(operator.op, signed)
        except ChainRevert as exc:
            return exc
        return None

    refused = await asyncio.get_running_loop().run_in_executor(chain, submit)
    assert refused is not None and refused.revert.name == "BaselineMismatch", refused
    assert int(refused.revert.args["committedWh"]) == int(committed["baselineWh"]) != wrong_wh


def _check_outcomes(homes: dict[str, Household], event_id: str, committed: dict[str, dict[str, Any]],
                    awards: dict[str, int]) -> None:
    """Verdicts, Reports against their commitments, and the settlements the agents journalled."""
    for n, h in homes.items():
        o = h.outcome(event_id)
        v, s = o["verdict"], o["settlement"]
        # the Report carried the committed baseline (the contract accepted it: BaselineMismatch
        # otherwise), and it is the baseline the gateway judged itself against
        assert v["baseline_wh"] == int(committed[n]["baselineWh"]), (n, v, committed[n])
        assert v["delivered_wh"] == v["baseline_wh"] - v["actual_wh"]
        # required = award x 15 s x (1 - 5 %), in Wh (docs/market.md)
        assert v["required_wh"] == pytest.approx(awards[n] * mh.WINDOW_S / 3600 * 0.95, abs=1), v
        assert s["delivered_wh_on_chain"] == v["delivered_wh"]
        assert s["payment_mtok"] == MTOK_PRICE * awards[n] * mh.WINDOW_S // 3_600_000, s
        assert s["deposit_mtok"] == mh.DEPOSIT_PER_KW_MTOK * awards[n] // 1000, s
        if n in ("A", "B"):
            assert v["performed"] is True and s["deposit"] == "refunded", (n, v, s)
            assert any(e.get("type") == "dr_action" for e in h.events)
        else:  # C's car is away: nothing to shed; short, its deposit forfeited
            assert v["performed"] is False and s["deposit"] == "forfeited", (n, v, s)
            assert v["delivered_wh"] < v["required_wh"]


def _check_money(homes: dict[str, Household], awards: dict[str, int], before: dict[str, int],
                 after: dict[str, int]) -> None:
    """Payments and refunded deposits, owed (before: 0) or arrived in the wallets (before: the balance
    after the bid); C's deposit is forfeited."""
    for n in homes:
        pay = MTOK_PRICE * awards[n] * mh.WINDOW_S // 3_600_000
        deposit = mh.DEPOSIT_PER_KW_MTOK * awards[n] // 1000
        if before[n]:
            assert before[n] == mh.WALLET_TOKENS_MTOK - deposit  # the deposit was escrowed at the bid
        assert after[n] - before[n] == pay + (deposit if n != "C" else 0), (n, before[n], after[n])


async def _bidders_follow(homes: dict[str, Household], window: int) -> None:
    """The next cycle of each bidder journals its bid's outcome (docs/bidding.md)."""
    for n, h in homes.items():
        bidder = h.agent.parts.bidder
        changes = await bidder.cycle(int(time.time()))
        settled = [c for c in changes if c.change == "settled"]
        assert len(settled) == 1 and settled[0].outcome is not None, (n, changes)
        assert [c.change for c in changes].count("claimed") == 1, (n, changes)
        assert settled[0].outcome["window"] == window
        assert settled[0].outcome["deposit"] == ("forfeited" if n == "C" else "refunded")
        summary = bidder.journal.summary()
        assert summary["paid_mtok"] == settled[0].outcome["payment_mtok"] > 0
        assert (summary["forfeited_mtok"] > 0) is (n == "C")


async def _prove(homes: dict[str, Household], window: int, event_id: str, chain: ThreadPoolExecutor,
                 operator: mh.Operator) -> None:
    """One reading of A's main meter in the window, proven on chain with `drgw prove`'s proof; a
    tampered leaf and B's reading under A's root are refused."""
    from gateway.commands.prove import prove

    loop = asyncio.get_running_loop()
    c = operator.market
    proofs = {}
    for n in ("A", "B"):
        h = homes[n]
        report = h.outcome(event_id)["report"]
        store = h.folder / "drgw.db"
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            seq = conn.execute("SELECT seq FROM measurements WHERE device = 'main' AND seq BETWEEN ? "
                               "AND ? ORDER BY seq LIMIT 1", (report["seq_from"], report["seq_to"])
                               ).fetchone()[0]
        finally:
            conn.close()
        proofs[n] = prove(store, seq)
        assert proofs[n].device == "main" and proofs[n].window == window
    p = proofs["A"]
    assert await loop.run_in_executor(chain, c.report_root, homes["A"].wallet, window) == p.root
    verify = lambda leaf, proof: c.verify_reading(homes["A"].wallet, window, leaf, list(proof))  # noqa: E731
    assert await loop.run_in_executor(chain, verify, p.leaf, p.proof) is True
    tampered = bytes([p.leaf[0] ^ 1]) + p.leaf[1:]
    assert await loop.run_in_executor(chain, verify, tampered, p.proof) is False
    assert await loop.run_in_executor(chain, verify, proofs["B"].leaf, proofs["B"].proof) is False
