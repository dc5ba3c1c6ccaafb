"""Three households in one DR market, for tests/e2e/test_market_households.py: their simulated homes,
gateway configs, seeded histories and the market's operator on the embedded chain.

Every household has a wallet, a gateway key, a SimulatedHome (scenario written here) and an agent of
its own; the history its bidder learns from is a synthetic household's (gateway/demo/history.py)
written into the agent's bid journal as the agent itself would have recorded it. Keys are derived
from fixed labels: THEY ARE TEST KEYS, public by construction, never to hold value.

The households' flexibility is in their evening, but the test runs whenever it is started. So the
agents live in the fixed-offset zone (`Etc/GMT...`) in which the test's start reads 19:xx, and the
synthetic history is generated on a clock on which the block of hours starts at 19:30, when the
histories' EVs charge most often (their weekday arrival is ~18:30; docs/forecast.md). On a Saturday
or Sunday the seeded days are the generator's Monday/Tuesday (shifted by two days): the generator's
weekend EV charges in daytime, and the bids would then depend on the weekday the test runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.demo.history import Household, SyntheticHistory, generate
from gateway.forecast.series import LeverHistory, SlotSeries
from gateway.loop.history import LoadSlot
from gateway.loop.lever_record import LEVER_SLOT_S

if TYPE_CHECKING:
    from gateway.chain.market_client import MarketClient
    from gateway.chain.node import ChainNode
    from gateway.chain.sender import TxSender

SPEED = 40.0  # as tests/e2e/test_demo.py: a 10-minute window lasts 15 s
LOCKOUT_S, WINDOW_S, GRACE_S = 15, 15, 8  # 600 s, 600 s and 300 s at SPEED
BLOCK_S = 1800  # the one block of hours each household bids for
SYNTHETIC_START_H = 19.5  # the block's start on the synthetic households' clock
HISTORY_WEEKS = 6  # 30 matched weekdays (the flexibility forecast looks back 42 days)
EV_W_PER_A = 690.0  # 230 V x 3 phases (heidelberg_energycontrol, rated 11 kW = 3 x 230 V x 16 A)
EV_FLOOR_A = 6.0  # IEC 61851-1: 6 A is the lowest charging current
BOILER_W = 2000.0
DEPOSIT_PER_KW_MTOK = 100_000  # 100 tokens per rated kW
TOLERANCE_BPS = 500
MTOK_PER_CURRENCY = 1_000_000  # 1000 tokens per currency unit
RETAIL_MICRO, REALTIME_MICRO, OMEGA_MILLI = 600_000, 680_000, 1200  # optimum (0 + 80) / 2.4 = 33.3 kW
WALLET_TOKENS_MTOK = 1_000_000  # 1000 tokens minted to and approved by each wallet


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeSpec:
    """One household: what its history was and what its home is tonight."""

    name: str
    household: Household  # its synthetic past
    seed: int
    confidence: float  # its [market] confidence
    price: float  # its [market] min_price, tokens/kWh
    ev_amps_tonight: float | None  # the wallbox's current limit in the live home (None: no EV)
    boiler: bool
    base_w: float  # the rest of the house, on the main meter


# Seeds and duties picked so that, on every weekday, A (EV + boiler) > C (the same EV alone) > B
# (boiler only), each at least 1 kW (checked over all seven weekdays when they were chosen).
# A's and C's histories share a seed: the generator draws the base load and the EV sessions before
# the boiler, so A's evenings are C's EV sessions plus a boiler. Their EVs charged at 11 A (7.59 kW)
# in the past; tonight A's car charges at 16 A (11 kW: more to shed than its history promises) and
# C's car is not there (the wallbox's limit below 6 A: IEC 61851 "no charging", so it draws nothing).
_EV_PAST = dict(ev=True, ev_power_w=11 * EV_W_PER_A, ev_weekday_p=0.95)
HOMES = (
    HomeSpec(name="A", household=Household(boiler=True, boiler_duty=0.4, **_EV_PAST),  # type: ignore[arg-type]
             seed=9, confidence=0.5, price=20.0, ev_amps_tonight=16.0, boiler=True, base_w=600.0),
    HomeSpec(name="B", household=Household(ev=False, boiler=True, boiler_duty=0.4), seed=1,
             confidence=0.6, price=25.0, ev_amps_tonight=None, boiler=True, base_w=500.0),
    HomeSpec(name="C", household=Household(boiler=False, **_EV_PAST),  # type: ignore[arg-type]
             seed=9, confidence=0.5, price=30.0, ev_amps_tonight=5.0, boiler=False, base_w=400.0),
)


def test_key(label: str) -> bytes:
    """A TEST KEY derived from a public label: never to hold value."""
    from eth_utils.crypto import keccak

    return keccak(f"drgw-e2e-market/TEST-KEY/{label}".encode())


# ----------------------------------------------------------------------------- the clocks


@dataclass(frozen=True, slots=True)
class Evening:
    """The block [start_s, start_s + BLOCK_S) and the zones that put it in the households' evening."""

    start_s: int
    zone_name: str  # the agents' [dr] time_zone: the block starts at 19:mm there
    synthetic: dt.timezone  # the generator's clock: the block starts at 19:30 there (+-2.5 min)
    day_shift: int  # days the generated history is moved back (2 on a weekend, else 0)

    @property
    def zone(self) -> dt.tzinfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.zone_name)

    def hours(self) -> str:
        """The block as `[market] hours` writes it, in the agents' zone."""
        a = dt.datetime.fromtimestamp(self.start_s, self.zone)
        b = dt.datetime.fromtimestamp(self.start_s + BLOCK_S, self.zone)
        return f"{a:%H:%M}-{b:%H:%M}"


def evening(start_s: int) -> Evening:
    """The clocks for a block starting at `start_s` (a whole minute)."""
    utc = dt.datetime.fromtimestamp(start_s, dt.UTC)
    hours = (19 - utc.hour) % 24
    hours = hours - 24 if hours > 14 else hours  # Etc/GMT zones span UTC-12..UTC+14
    # tz database: "Etc/GMT-3" is three hours AHEAD of UTC (POSIX sign convention)
    name = "Etc/GMT" if hours == 0 else f"Etc/GMT{-hours:+d}"
    # the agents' clock moved by less than an hour, so both clocks agree on the block's date
    local_s = (utc.hour + hours) % 24 * 3600 + utc.minute * 60  # 19:mm
    # ... and whole 5-minute steps, so the synthetic slots fall on the agents' (epoch) slot grid
    shift = round((round(SYNTHETIC_START_H * 3600) - local_s) / LEVER_SLOT_S) * LEVER_SLOT_S
    zone = dt.timezone(dt.timedelta(seconds=hours * 3600 + shift))
    weekday = dt.datetime.fromtimestamp(start_s, zone).weekday()
    return Evening(start_s=start_s, zone_name=name, synthetic=zone, day_shift=2 if weekday >= 5 else 0)


def history(spec: HomeSpec, ev: Evening) -> SyntheticHistory:
    """HISTORY_WEEKS of the household up to the (synthetic) midnight before the block."""
    shift = ev.day_shift * 86_400
    day = dt.datetime.fromtimestamp(ev.start_s + shift, ev.synthetic).date()
    start = int(dt.datetime.combine(day - dt.timedelta(weeks=HISTORY_WEEKS), dt.time(),
                                    tzinfo=ev.synthetic).timestamp())
    h = generate(spec.household, weeks=HISTORY_WEEKS, seed=spec.seed, start_s=start,
                 zone=ev.synthetic, slot_s=LEVER_SLOT_S)
    if not shift:
        return h
    back = [LeverHistory(key=lv.key, kind=lv.kind, full_w=lv.full_w, load=_moved(lv.load, shift),
                         floor_w=lv.floor_w, add_w=lv.add_w) for lv in h.levers]
    return SyntheticHistory(household=h.household, meter=_moved(h.meter, shift), levers=tuple(back),
                            shed_w=h.shed_w, add_w=h.add_w)


def _moved(series: SlotSeries, back_s: int) -> SlotSeries:
    return SlotSeries(slot_s=series.slot_s, start_s=series.start_s - back_s, values=series.values)


# ----------------------------------------------------------------------------- the gateway's side

LEVER_KEYS = {"ev": "ev.ev_current_limit_a", "boiler": "boiler.relay_1_on"}


def lever_config(name: str) -> tuple[float, float]:
    """(expected_w, floor_w) of the [[dr.lever]] on the synthetic lever `name`, as written below."""
    if name == "ev":
        return (16 - EV_FLOOR_A) * EV_W_PER_A, EV_FLOOR_A * EV_W_PER_A
    return BOILER_W, 0.0


def seed_levers(store: Path, h: SyntheticHistory) -> int:
    """The levers' loads, written as the agent's LeverRecorder would have journalled them: whole
    5-minute slots, fully covered. Returns the number of slots written."""
    from gateway.loop.bid_journal import BidJournal

    journal = BidJournal(store)
    try:
        rows = 0
        for lever in h.levers:
            s = lever.load
            slots = [LoadSlot(start_s=s.start_s + i * s.slot_s, slot_s=s.slot_s, energy_ws=w * s.slot_s,
                              covered_s=float(s.slot_s)) for i, w in enumerate(s.values) if w is not None]
            journal.add_lever_slots(LEVER_KEYS[lever.key], slots)
            rows += len(slots)
        return rows
    finally:
        journal.close()


def scenario(spec: HomeSpec) -> str:
    """The live home: a main meter on Modbus TCP and the household's appliances feeding it."""
    text = f"""
[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "noise"
pct = 2
seed = 7
[device.load.base]
kind = "constant"
power_w = {spec.base_w:g}
"""
    if spec.ev_amps_tonight is not None:
        text += f"""
[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
transport = "tcp"
address = "127.0.0.1:0"
unit = 10
feeds = "main"
[device.values]
ev_current_limit_a = {spec.ev_amps_tonight:g}
"""
    if spec.boiler:
        text += f"""
[[device]]
name = "boiler"
profile = "waveshare_relay8"
transport = "tcp"
address = "127.0.0.1:0"
unit = 11
feeds = "main"
rated_power_w = {BOILER_W:g}
[device.values]
relay_1_on = 1
"""
    return text


def config_text(spec: HomeSpec, *, devices: list[Any], key: Path, broker: str, market: str,
                wallet: str, ev: Evening) -> str:
    """The agent's drgw.toml: as `drgw demo` writes its home's, plus [chain] and [market]."""
    lines = ["[gateway]", f'key = "{key}"', "chain_id = 1", 'log_level = "WARNING"',
             "[mqtt]", f'broker = "{broker}"', "health_interval = 10",
             "[store]", 'path = "drgw.db"', "merkle_interval_s = 60",
             "[poll]", "fast = 1.0", "normal = 5.0", "slow = 30.0"]
    for i, info in enumerate(devices):
        lines += ["[[bus]]", f'name = "bus{i}"', f'tcp = "{info.address}"',
                  "[[device]]", f'name = "{info.name}"', f'profile = "{info.profile}"',
                  f'bus = "bus{i}"', f"unit = {info.unit}", "timeout = 0.5"]
        lines += ['role = "main"'] if info.name == "main" else []
    # never dialled: the test hands the agent its market port on the embedded chain
    lines += ["[chain]", 'rpc = "http://127.0.0.1:9"', f'market = "{market}"', f'household = "{wallet}"']
    # the baseline as the demo commits it: the pre-event period ending lead_minutes (half the
    # lockout) before the start, measured live (the agents start with the test)
    lead_min = LOCKOUT_S / 60 / 2
    lines += ["[dr]", 'baseline = "pre_event"', "pre_event_minutes = 1", f"lead_minutes = {lead_min:.3f}",
              "tolerance = 0.05", f"hold_off_s = {max(1.0, 30.0 / SPEED):.2f}", "slot_s = 5",
              f'time_zone = "{ev.zone_name}"', "[dr.baseline_params]",
              f"min_coverage = {min(0.25, lead_min / 2):.3f}"]
    expected_ev, _ = lever_config("ev")
    if spec.ev_amps_tonight is not None:
        lines += ["[[dr.lever]]", 'device = "ev"', 'point = "ev_current_limit_a"', 'kind = "setpoint"',
                  f"min = {EV_FLOOR_A:g}", "priority = 1", f"expected_w = {expected_ev:g}",
                  f"power_w_per_unit = {EV_W_PER_A:g}"]
    if spec.boiler:
        lines += ["[[dr.lever]]", 'device = "boiler"', 'point = "relay_1_on"', 'kind = "switch"',
                  "off = 0", "on = 1", "priority = 2", f"expected_w = {BOILER_W:g}",
                  "max_off_minutes = 120"]
    # renew_minutes = 60: one cycle as the agent starts (the block has just begun), and none after
    # it in the test but those the test runs itself (`Bidder.cycle(now_s)`)
    lines += ["[market]", f"min_price = {spec.price:g}", f"max_deposit = {WALLET_TOKENS_MTOK // 1000}",
              f'hours = ["{ev.hours()}"]', f"confidence = {spec.confidence:g}", "renew_minutes = 60",
              "horizon_hours = 1", "lockout_margin_minutes = 0", f"history_days = {HISTORY_WEEKS * 7}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the market's side


class Operator:
    """The market operator (also the aggregator every household is registered with) on the
    embedded chain. Synchronous: call it from the one chain thread."""

    def __init__(self, node: ChainNode) -> None:
        from gateway.chain.market_client import decoder
        from gateway.chain.outbox import ChainOutbox
        from gateway.chain.sender import TxSender

        self.node = node
        self.outbox = ChainOutbox(":memory:")
        self.op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=self.outbox, decoder=decoder())
        self.wallets = {s.name: TxSender(w3=node.w3, key=test_key(f"{s.name}/wallet"),
                                         outbox=self.outbox, decoder=decoder()) for s in HOMES}
        self.client: MarketClient | None = None

    @property
    def market(self) -> MarketClient:
        assert self.client is not None, "setup() first"
        return self.client

    def setup(self, gateways: dict[str, str]) -> None:
        """Deploy; register every household with its gateway; gas for wallets and gateways; tokens
        minted to each wallet and approved to the market; the treasury's budget for payments."""
        from gateway.chain.market_client import MarketClient, MarketConfig, deploy
        from gateway.chain.node import fund
        from gateway.market.reputation import ReputationRules

        config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=DEPOSIT_PER_KW_MTOK,
                              tolerance_bps=TOLERANCE_BPS, lockout_s=LOCKOUT_S, report_grace_s=GRACE_S)
        deployment = deploy(self.op, w3=self.node.w3, mtok_per_currency=MTOK_PER_CURRENCY,
                            config=config, rules=ReputationRules())
        c = self.client = MarketClient(w3=self.node.w3, deployment=deployment)
        c.register_aggregator(self.op, self.op.address)
        for name, wallet in self.wallets.items():
            c.register_household(self.op, wallet=wallet.address, gateway=gateways[name],
                                 aggregator=self.op.address)
            fund(self.node, self.op, wallet.address, 10**18)
            fund(self.node, self.op, gateways[name], 10**18)
            c.mint(self.op, wallet.address, WALLET_TOKENS_MTOK)
            c.approve(wallet, WALLET_TOKENS_MTOK)
        c.mint(self.op, self.op.address, 10**12)
        c.approve(self.op, 10**12)

    def announce_and_clear(self, *, start_s: int, end_s: int) -> tuple[int, dict[str, Any]]:
        from gateway.market import model as m

        c = self.market
        c.announce(self.op, start_s=start_s, end_s=end_s, retail_micro=RETAIL_MICRO,
                   realtime_micro=REALTIME_MICRO, omega_milli=OMEGA_MILLI, mode=m.Mode.SHIFT.value)
        window = c.window_count()
        c.clear(self.op, window)
        return window, c.window(window)

    def settle_and_check(self, window: int) -> None:
        """After the Report grace (the chain's clock jumps there), settle and check the window."""
        w = self.market.window(window)
        self.node.set_next_timestamp(int(w["end"]) + GRACE_S + 1)
        self.market.settle(self.op, window)
        self.market.check(self.op, window)

    def relay(self) -> TxSender:
        return self.op


def forecast_w(spec: HomeSpec, ev: Evening, *, now_s: int) -> tuple[int, str]:
    """What the household's forecast offers for the block, computed here from the synthetic history
    itself (not from the agent's journal), rounded down to 100 W as docs/bidding.md says; and the
    forecast's basis line."""
    from gateway.forecast.flex import forecast_flex

    levers = []
    for lever in history(spec, ev).levers:
        full_w, floor_w = lever_config(lever.key)
        levers.append(LeverHistory(key=LEVER_KEYS[lever.key], kind=lever.kind, full_w=full_w,
                                   load=lever.load, floor_w=floor_w,
                                   add_w=full_w if lever.kind == "switch" else 0.0))
    f = forecast_flex(levers, start_s=ev.start_s, end_s=ev.start_s + BLOCK_S, now_s=now_s,
                      zone=ev.zone, direction="reduce")
    return int(f.deliverable_w(spec.confidence)) // 100 * 100, f.basis
