"""A simulated meter or appliance: a profile's registers filled from a physical model of the load.

`SimulatedDevice` serves any device profile. Its active power comes from a load model (meters) or
from the appliance behaviour driven by writes (appliances), plus the power of every device that
`feeds` it (so the home's main meter shows base load + appliances). Everything else - per-phase
power, voltage, current, power factor, reactive and apparent power, energy counters - follows from
that power through `physics`. Identity registers serve the profile's probe value and
`simulation.values`; a name nothing knows reads as 0.

Time comes from an injected clock (simulated POSIX seconds), so tests can run a day in a second. The
class is synchronous and does no I/O; `firmware_shims.context` adapts it to pymodbus.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes

from firmware_shims.appliances import ApplianceInputs, appliance_power, initial_state, phases_of
from firmware_shims.faults import Fault, FaultState
from firmware_shims.loads import LoadModel
from firmware_shims.physics import EnergyCounters, Grid, instantaneous
from firmware_shims.registers import FUNCTION_TABLES, RegisterMap, Value
from gateway.errors import ConfigError
from gateway.perception.profiles import Profile

MAX_STEP_S = 10.0  # integration step; ...
MAX_STEPS = 200  # ... but never more steps than this per advance (bounds CPU at high clock speeds)
AMBIENT_C = 25.0
BATTERY_V = 51.2  # a 16-cell LiFePO4 pack, the common "48 V" home battery

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class DeviceSettings:
    """How one simulated device behaves beyond what its profile says."""

    power_factor: float = 0.95
    grid: Grid = field(default_factory=Grid)
    phase_split: tuple[float, ...] | None = None
    strict_addresses: bool = True
    rated_power_w: float | None = None  # overrides the profile's simulation.rated_power_w
    capacity_wh: float = 10_000.0  # battery behaviour only
    soc_pct: float = 50.0  # battery behaviour only: state of charge at start
    phases: int | None = None  # overrides the profile's phases


@dataclass(frozen=True, slots=True)
class DeviceCounters:
    """What one device has seen on the wire since it started."""

    requests: int
    exceptions: int
    silent: int
    writes: int
    bytes_sent: int


class SimulatedDevice:
    """One simulated meter or appliance at one unit id (see the module docstring)."""

    def __init__(self, *, name: str, profile: Profile, unit: int, clock: Clock,
                 load: LoadModel | None = None, settings: DeviceSettings | None = None) -> None:
        self.name = name
        self.profile = profile
        self.unit = unit
        self.settings = settings or DeviceSettings()
        self.registers = RegisterMap(profile)
        self.faults = FaultState()
        self.feeds: SimulatedDevice | None = None
        self._fed_by: list[SimulatedDevice] = []
        self._clock = clock
        self._load = load
        self._t0 = self._last_t = self._boot_t = clock()
        self.phases = self.settings.phases or phases_of(profile)
        split = self.settings.phase_split or (1.0,) * self.phases
        if len(split) != self.phases or any(s < 0 for s in split) or sum(split) <= 0:
            raise ConfigError(f"{name}: phase_split needs {self.phases} shares >= 0, found {split}")
        self._split = tuple(split)
        self._energy = EnergyCounters(self.phases)
        self._state = initial_state(profile)
        self._overrides: dict[str, Value] = {}
        self._soc = self.settings.soc_pct
        self._counts = {"requests": 0, "exceptions": 0, "silent": 0, "writes": 0, "bytes_sent": 0}

    # ------------------------------------------------------------------------------- topology

    def attach(self, appliance: SimulatedDevice) -> None:
        """Let `appliance`'s power add to what this device measures."""
        node: SimulatedDevice | None = self
        while node is not None:
            if node is appliance:
                raise ConfigError(f"{appliance.name} feeds {self.name}, which already feeds "
                                  f"{appliance.name}: 'feeds' must not form a loop")
            node = node.feeds
        now = self._clock()
        self._advance_tree(now)
        appliance.feeds = self
        self._fed_by.append(appliance)

    def _tree(self) -> Iterator[SimulatedDevice]:
        yield self
        for child in self._fed_by:
            yield from child._tree()

    def _advance_tree(self, now: float) -> None:
        root = self
        while root.feeds is not None:
            root = root.feeds
        for device in root._tree():
            device.advance(now)

    # ---------------------------------------------------------------------------------- power

    @property
    def rated_power_w(self) -> float | None:
        if self.settings.rated_power_w is not None:
            return self.settings.rated_power_w
        return self.profile.simulation.rated_power_w

    def own_power(self, t: float) -> float:
        """The power this device itself draws at t: its appliance behaviour, else its load model."""
        if self.profile.simulation.behaviour is not None:
            return appliance_power(self.profile, ApplianceInputs(
                state=self._state, rated_power_w=self.rated_power_w, phases=self.phases,
                voltage_v=self.settings.grid.voltage_v, soc_pct=self._soc))
        return self._load.power_w(t, self._t0) if self._load is not None else 0.0

    def total_power(self, t: float) -> float:
        """What this device measures: its own power plus everything that feeds it."""
        return self.own_power(t) + sum(child.total_power(t) for child in self._fed_by)

    def _quantities(self, power_w: float, voltages: list[float],
                    frequency: float) -> dict[str, float]:
        return instantaneous(power_w=power_w, split=self._split, voltages=voltages,
                             frequency_hz=frequency, power_factor=self.settings.power_factor)

    def advance(self, now: float) -> None:
        """Integrate energy (and a battery's state of charge) from the last advance up to `now`."""
        dt = now - self._last_t
        if dt <= 0:
            return
        steps = min(MAX_STEPS, max(1, math.ceil(dt / MAX_STEP_S)))
        h = dt / steps
        nominal = [self.settings.grid.voltage_v] * self.phases
        before = self.total_power(self._last_t)
        for k in range(1, steps + 1):
            after = self.total_power(self._last_t + k * h)
            mean = (before + after) / 2.0
            self._energy.add(self._quantities(mean, nominal, self.settings.grid.frequency_hz), h)
            if self.profile.simulation.behaviour == "battery" and self.settings.capacity_wh > 0:
                own = self.own_power(self._last_t + k * h)
                percent = own * h / 36.0 / self.settings.capacity_wh  # W x s -> % of capacity
                self._soc = min(100.0, max(0.0, self._soc + percent))
            before = after
        self._last_t = now

    # --------------------------------------------------------------------------------- values

    def values(self, now: float | None = None) -> dict[str, Value]:
        """Every named value the device would show at `now` (default: the clock's now)."""
        now = self._clock() if now is None else now
        self.advance(now)
        grid = self.settings.grid
        out: dict[str, Value] = {}
        out.update(self._quantities(self.total_power(now), grid.voltages(now, self.phases),
                                    grid.frequency(now)))
        out.update(self._energy.snapshot())
        out["uptime_s"] = max(0.0, now - self._boot_t)
        out["temperature_c"] = AMBIENT_C
        if self.profile.simulation.behaviour == "battery":
            out["battery_soc_pct"] = self._soc
            out["battery_voltage_v"] = BATTERY_V
            out["battery_current_a"] = self.own_power(now) / BATTERY_V  # positive = charging
        out.update(self.profile.simulation.values)
        out.update(self._state)
        out.update(self._overrides)
        return out

    def read(self, func_code: int, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """Answer a read (or the read-back of a write) as the device would."""
        table = FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self.registers.read(table, address, count, self.values(),
                                   strict=self.settings.strict_addresses)

    def write(self, func_code: int, address: int, data: list[int] | list[bool]) -> ExcCodes | None:
        """Apply a write request; answers the exception a device would, or None when accepted."""
        table = FUNCTION_TABLES.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        decoded = self.registers.decode_write(table, address, data, self.values())
        if isinstance(decoded, ExcCodes):
            return decoded
        self._advance_tree(self._clock())
        self._state.update(decoded)
        self._counts["writes"] += 1
        return None

    # ------------------------------------------------------------------------- control (API)

    def set_value(self, name: str, value: Value) -> None:
        """Make the device show `value` for point `name`.

        A writable point takes the value as if it had been written (the appliance reacts); an energy
        counter is set and keeps counting from there; any other point is pinned to the value until
        `clear_value` or a reboot.
        """
        names = [p.name for p in self.profile.points]
        if name not in names and name not in self._energy.values:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{self.name}: profile {self.profile.name} has no point {name!r}{hint}")
        now = self._clock()
        self._advance_tree(now)
        if name in self._state:
            self._state[name] = float(value)
        elif self._energy.tracks(name):
            self._energy.values[name] = float(value)
        else:
            self._overrides[name] = value

    def clear_value(self, name: str) -> None:
        self._overrides.pop(name, None)

    def set_load(self, load: LoadModel | None) -> None:
        """Replace the load model from now on; energy counted so far stays."""
        self._advance_tree(self._clock())
        self._load = load

    def inject(self, fault: Fault, *, now_monotonic: float) -> None:
        self.faults.apply(fault, now_monotonic=now_monotonic)

    def clear_faults(self) -> None:
        self.faults.clear()

    def reboot_done(self) -> None:
        """Come back from a reboot: energy counters continue, volatile values reset."""
        now = self._clock()
        self._advance_tree(now)
        self._state = initial_state(self.profile)
        self._overrides.clear()
        self._boot_t = now
        self.faults.reboot_until = None

    # ------------------------------------------------------------------------------- counters

    def count(self, what: str, n: int = 1) -> None:
        self._counts[what] += n

    @property
    def counters(self) -> DeviceCounters:
        return DeviceCounters(**self._counts)
