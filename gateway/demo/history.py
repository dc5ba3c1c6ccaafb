"""A synthetic household's measured history: weeks of main-meter load and lever loads, with the truth.

What the forecasts (gateway/forecast/) are measured on (bench/forecast.py), what the e2e test's three
agents of different flexibility and `drgw demo`'s home seed their journals with. Pure and seeded: the
same Household, seed and start give the same history, slot for slot.

A day of the household: a base load (everything but the levers) shaped by hour, weekday or weekend,
times a weather-like drift (an AR(1) factor per day, so cold spells last several days) and slot noise,
plus short appliance spikes; trips away (2-5 days of low base load, no EV, boiler on standby); an EV
charging in stochastic sessions (evening arrival on weekdays, daytime at weekends, some days none, 5-30
kWh at the household's 7-11 kW); a relay-switched boiler on a duty cycle (a two-state Markov chain
whose on-share follows the hour); a battery that charges at night and covers part of the evening load
from its state of charge. The truth kept beside it is what each lever could have shed or added in each
slot, from the simulation's own state (the EV's session power, the boiler's relay), not from the loads.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.forecast.series import LeverHistory, SlotSeries

# The load of everything but the levers, as multiples of Household.base_w, per local hour 0..23.
WEEKDAY_SHAPE = (0.55, 0.5, 0.5, 0.5, 0.5, 0.6, 1.2, 1.8, 1.4, 0.8, 0.7, 0.7,
                 0.8, 0.7, 0.7, 0.8, 1.1, 1.6, 2.0, 2.0, 1.8, 1.5, 1.1, 0.7)
WEEKEND_SHAPE = (0.6, 0.55, 0.5, 0.5, 0.5, 0.5, 0.6, 0.9, 1.5, 1.7, 1.5, 1.3,
                 1.5, 1.3, 1.1, 1.1, 1.2, 1.5, 1.9, 1.9, 1.7, 1.5, 1.2, 0.8)
AWAY_SHAPE = 0.35  # fridge, standby, a lamp on a timer
# The boiler's on-share by hour as multiples of Household.boiler_duty (showers in the morning, dishes).
BOILER_SHAPE = (0.4, 0.3, 0.3, 0.3, 0.4, 0.8, 2.0, 2.4, 1.6, 1.0, 0.8, 0.8,
                0.8, 0.8, 0.8, 0.8, 1.0, 1.2, 1.6, 1.8, 1.8, 1.4, 1.0, 0.6)
BOILER_ON_S = 2700.0  # mean length of a heating cycle
# IEC 61851-1 Annex A: a PWM duty cycle of 10 % signals 6 A, the lowest current a vehicle must accept;
# at 230 V that is 1380 W on one phase, 4140 W on three (chargers above 7.4 kW are three-phase).
EV_FLOOR_1P_W, EV_FLOOR_3P_W = 1380.0, 4140.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Household:
    """What a synthetic household has and how it lives. `ev_power_w` None: drawn in 7-11 kW."""

    ev: bool = True
    boiler: bool = True
    battery: bool = False
    base_w: float = 450.0
    ev_weekday_p: float = 0.55  # chance of a charging session on a weekday at home
    ev_weekend_p: float = 0.3
    ev_power_w: float | None = None
    boiler_w: float = 2000.0
    boiler_duty: float = 0.25  # mean on-share at home
    battery_wh: float = 10_000.0
    battery_w: float = 3000.0
    reserve_pct: float = 20.0
    trips_per_4_weeks: float = 1.0  # absences of 2-5 days; at least one when > 0 and weeks >= 2


EV_ONLY = Household(ev=True, boiler=False, battery=False)
FLEXIBLE = Household(ev=True, boiler=True, battery=True)
BOILER_ONLY = Household(ev=False, boiler=True, battery=False)
RIGID = Household(ev=False, boiler=False, battery=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticHistory:
    """The history and its truth. `shed_w`/`add_w`: per setpoint/switch lever, the W it could have
    shed/added in each slot. `soc_pct`: the battery's SoC at each slot boundary (len + 1 values)."""

    household: Household
    meter: SlotSeries
    levers: tuple[LeverHistory, ...]
    shed_w: Mapping[str, SlotSeries]
    add_w: Mapping[str, SlotSeries]
    soc_pct: tuple[float, ...] = ()
    away_days: frozenset[dt.date] = field(default=frozenset())

    def known_at(self, now_s: int) -> tuple[SlotSeries, tuple[LeverHistory, ...]]:
        """The meter and the levers as a gateway would have measured them by now_s (whole slots)."""
        k = max(0, min(len(self.meter.values), (now_s - self.meter.start_s) // self.meter.slot_s))
        levers = []
        for lever in self.levers:
            soc = self.soc_pct[k] if lever.kind == "battery" else None
            levers.append(LeverHistory(key=lever.key, kind=lever.kind, full_w=lever.full_w,
                                       load=_head(lever.load, k), floor_w=lever.floor_w, add_w=lever.add_w,
                                       soc_pct=soc, capacity_wh=lever.capacity_wh,
                                       reserve_pct=lever.reserve_pct))
        return _head(self.meter, k), tuple(levers)

    def realised_w(self, *, start_s: int, end_s: int, direction: str) -> dict[str, float]:
        """What each lever could really have delivered over [start_s, end_s) (slot-aligned)."""
        s = self.meter
        first, last = (start_s - s.start_s) // s.slot_s, (end_s - s.start_s) // s.slot_s
        out = {}
        for lever in self.levers:
            if lever.kind == "battery":
                out[lever.key] = self._battery_w(lever, first, last, direction)
            else:
                truth = (self.shed_w if direction == "reduce" else self.add_w)[lever.key].values
                out[lever.key] = sum(v or 0.0 for v in truth[first:last]) / (last - first)
        return out

    def _battery_w(self, lever: LeverHistory, first: int, last: int, direction: str) -> float:
        own = sum(v or 0.0 for v in lever.load.values[first:last]) / (last - first)
        hours = (last - first) * self.meter.slot_s / 3600
        soc, cap = self.soc_pct[first], lever.capacity_wh or 0.0
        if direction == "reduce":  # discharge at full power from the start, down to the reserve
            return max(0.0, min(lever.full_w, (soc - lever.reserve_pct) / 100 * cap / hours) - own)
        return max(0.0, min(lever.add_w, (100 - soc) / 100 * cap / hours) + own)


def _head(series: SlotSeries, k: int) -> SlotSeries:
    return SlotSeries(slot_s=series.slot_s, start_s=series.start_s, values=series.values[:k])


@dataclass(slots=True)
class _Clock:
    """The local calendar of every slot (computed once: zone lookups are the slow part)."""

    days: list[dt.date]
    hours: list[float]


def generate(household: Household = FLEXIBLE, *, weeks: int, seed: int, start_s: int,
             zone: dt.tzinfo = dt.UTC, slot_s: int = 900) -> SyntheticHistory:
    """`weeks` of history from start_s (best a local midnight) in slots of slot_s (60 or 900 s...)."""
    if weeks < 1 or slot_s <= 0 or 86_400 % slot_s:
        raise ValueError(f"need weeks >= 1 and slot_s dividing 86400, got weeks={weeks} slot_s={slot_s}")
    rng = random.Random(seed)
    n = weeks * 7 * 86_400 // slot_s
    times = [start_s + i * slot_s for i in range(n)]
    local = [dt.datetime.fromtimestamp(t, zone) for t in times]
    clock = _Clock([t.date() for t in local], [t.hour + t.minute / 60 + t.second / 3600 for t in local])
    away = _trips(household, sorted(set(clock.days)), rng)
    base = _base_load(household, clock, away, rng, slot_s)
    parts: dict[str, tuple[list[float], list[float], list[float]]] = {}
    levers: list[LeverHistory] = []
    if household.ev:
        power = household.ev_power_w or rng.uniform(7000.0, 11_000.0)
        floor = EV_FLOOR_3P_W if power > 7400 else EV_FLOOR_1P_W
        parts["ev"] = _ev(household, clock, away, rng, times, zone, slot_s, power, floor)
        levers.append(_lever("ev", "setpoint", power, parts["ev"][0], start_s, slot_s, floor_w=floor))
    if household.boiler:
        parts["boiler"] = _boiler(household, clock, away, rng, slot_s)
        levers.append(_lever("boiler", "switch", household.boiler_w, parts["boiler"][0], start_s, slot_s,
                             add_w=household.boiler_w))
    house = [b + sum(p[0][i] for p in parts.values()) for i, b in enumerate(base)]
    soc: list[float] = []
    if household.battery:
        battery, soc = _battery(household, clock, house, rng, slot_s)
        house = [h - d for h, d in zip(house, battery, strict=True)]
        levers.append(_lever("battery", "battery", household.battery_w, battery, start_s, slot_s,
                             add_w=household.battery_w, soc_pct=soc[-1], capacity_wh=household.battery_wh,
                             reserve_pct=household.reserve_pct))
    return SyntheticHistory(
        household=household, meter=_series(house, start_s, slot_s), levers=tuple(levers),
        shed_w=MappingProxyType({k: _series(p[1], start_s, slot_s) for k, p in parts.items()}),
        add_w=MappingProxyType({k: _series(p[2], start_s, slot_s) for k, p in parts.items()}),
        soc_pct=tuple(soc), away_days=frozenset(away))


def _series(values: list[float], start_s: int, slot_s: int) -> SlotSeries:
    return SlotSeries(slot_s=slot_s, start_s=start_s, values=tuple(round(v, 1) for v in values))


def _lever(key: str, kind: str, full_w: float, load: list[float], start_s: int, slot_s: int,
           **extra: float) -> LeverHistory:
    return LeverHistory(key=key, kind=kind, full_w=round(full_w, 1), load=_series(load, start_s, slot_s),
                        **extra)


def _trips(household: Household, days: list[dt.date], rng: random.Random) -> set[dt.date]:
    """Days away: trips of 2-5 days, none in the first week (so every trip has a history before it)."""
    weeks = len(days) / 7
    count = round(weeks / 4 * household.trips_per_4_weeks)
    if household.trips_per_4_weeks > 0 and weeks >= 2:
        count = max(1, count)
    away: set[dt.date] = set()
    for _ in range(count):
        first = rng.randrange(7, max(8, len(days) - 2))
        away.update(days[first:first + rng.randint(2, 5)])
    return away


def _shape(shape: tuple[float, ...], hour: float) -> float:
    """The hourly shape read at `hour`, linear between the hours' middles (no steps on the hour)."""
    x = hour - 0.5
    i = int(x // 1) % 24
    frac = x - (x // 1)
    return shape[i] * (1 - frac) + shape[(i + 1) % 24] * frac


def _drift(days: list[dt.date], rng: random.Random) -> dict[dt.date, float]:
    """A weather-like factor per day: AR(1), x = 0.8 x_yesterday + N(0, 0.08), so spells last days."""
    x, out = 0.0, {}
    for day in [*sorted(set(days)), max(days) + dt.timedelta(days=1)]:
        x = 0.8 * x + rng.gauss(0.0, 0.08)
        out[day] = min(1.5, max(0.6, 1.0 + x))
    return out


def _base_load(household: Household, clock: _Clock, away: set[dt.date], rng: random.Random,
               slot_s: int) -> list[float]:
    drift = _drift(clock.days, rng)
    spike_p = 0.04 * slot_s / 900  # kettle, oven, washing machine: a few an evening
    out = []
    for day, hour in zip(clock.days, clock.hours, strict=True):
        weather = drift[day] * (1 - hour / 24) + drift[day + dt.timedelta(days=1)] * hour / 24
        if day in away:
            level = AWAY_SHAPE
        else:
            level = _shape(WEEKEND_SHAPE if day.weekday() >= 5 else WEEKDAY_SHAPE, hour)
        w = household.base_w * level * weather * max(0.3, rng.gauss(1.0, 0.12))
        if day not in away and 7 <= hour < 23 and rng.random() < spike_p:
            w += rng.uniform(800.0, 2200.0)
        out.append(w)
    return out


def _ev(household: Household, clock: _Clock, away: set[dt.date], rng: random.Random, times: list[int],
        zone: dt.tzinfo, slot_s: int, power_w: float,
        floor_w: float) -> tuple[list[float], list[float], list[float]]:
    """The charger's load, what it could have shed (power - floor while charging) and added (0: it
    charges at its full power already)."""
    sessions = []
    for day in sorted(set(clock.days)):
        weekend = day.weekday() >= 5
        if day in away or rng.random() >= (household.ev_weekend_p if weekend else household.ev_weekday_p):
            continue
        arrive_h = rng.uniform(10.0, 20.0) if weekend else min(22.0, max(16.0, rng.gauss(18.5, 1.0)))
        start = dt.datetime.combine(day, dt.time(), tzinfo=zone) + dt.timedelta(hours=arrive_h)
        power = power_w * rng.gauss(1.0, 0.02)
        t0 = int(start.timestamp())
        sessions.append((t0, t0 + int(rng.uniform(5.0, 30.0) * 3.6e6 / power), power))
    load, shed = [0.0] * len(times), [0.0] * len(times)
    for t0, t1, power in sessions:
        for i in range(max(0, (t0 - times[0]) // slot_s), min(len(times), (t1 - times[0]) // slot_s + 1)):
            share = max(0, min(t1, times[i] + slot_s) - max(t0, times[i])) / slot_s
            load[i] += power * share
            shed[i] += (power - floor_w) * share
    return load, shed, [0.0] * len(times)


def _boiler(household: Household, clock: _Clock, away: set[dt.date], rng: random.Random,
            slot_s: int) -> tuple[list[float], list[float], list[float]]:
    """A two-state chain: P(on -> off) = slot / mean cycle; P(off -> on) set so the stationary on-share
    is the hour's duty d (p_on = p_off x d / (1 - d))."""
    p_off = min(1.0, slot_s / BOILER_ON_S)
    on, load, shed, add = False, [], [], []
    for day, hour in zip(clock.days, clock.hours, strict=True):
        duty = 0.05 if day in away else min(0.9, household.boiler_duty * _shape(BOILER_SHAPE, hour))
        p_on = min(1.0, p_off * duty / (1 - duty))
        on = rng.random() >= p_off if on else rng.random() < p_on
        w = household.boiler_w if on else 0.0
        load.append(w)
        shed.append(w)
        add.append(household.boiler_w - w)
    return load, shed, add


def _battery(household: Household, clock: _Clock, house: list[float], rng: random.Random,
             slot_s: int) -> tuple[list[float], list[float]]:
    """Discharge W per slot (negative = charging) and SoC at each slot boundary: charges to a daily
    target in 01:00-05:00, covers a daily share of the house's load in 17:00-22:00, else idle."""
    cap, hours = household.battery_wh, slot_s / 3600
    soc, socs, out = 60.0, [60.0], []
    target = share = 0.0
    previous: dt.date | None = None
    for day, hour, load in zip(clock.days, clock.hours, house, strict=True):
        if day != previous:
            target, share, previous = rng.uniform(70.0, 100.0), rng.uniform(0.2, 1.0), day
        w = 0.0
        if 1 <= hour < 5 and soc < target:
            w = -min(household.battery_w, (target - soc) / 100 * cap / hours)
        elif 17 <= hour < 22:
            above = max(0.0, (soc - household.reserve_pct) / 100 * cap / hours)
            w = min(household.battery_w, share * load, above)
        soc -= w * hours / cap * 100
        out.append(w)
        socs.append(soc)
    return out, socs
