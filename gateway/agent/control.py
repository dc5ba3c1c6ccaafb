"""Remote control of the running agent: the fleet commands of gateway.network.dispatcher.AgentControl.

Library and domain errors become replies in one place, `ERROR_REPLIES` (in the style of httpcore's
map_exceptions): a command wraps the calls that may fail in `replies(...)` instead of an `except`
block of its own. A refusal the command spots itself is raised as CommandRejected directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.agent import trial
from gateway.agent.lifetime import RESTART, StopRequest
from gateway.agent.pipeline import MeasurementPipeline
from gateway.agent.readout import Readout, device_states
from gateway.clock import wall_ms
from gateway.config.gateway import GatewayConfig, parse_config
from gateway.device.bus import BusBusy, BusOwner
from gateway.device.device import DeviceError, DeviceState
from gateway.device.dlt645 import Dlt645BusOwner
from gateway.device.layer import DeviceLayer
from gateway.errors import ConfigError, DrgwError
from gateway.loop.events import EventRejected
from gateway.measurement.store.database import Store
from gateway.network.command import Code, CommandRejected
from gateway.perception.codec import decode_point
from gateway.perception.readings import Quality
from gateway.protocol import modbus

if TYPE_CHECKING:
    from gateway.loop.runner import DrLoop

log = logging.getLogger(__name__)

JSON = Any
RESTART_DELAY_S = 0.5  # the reply goes out before the agent stops
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Error -> reply code, first match wins. A refusal (BAD_ARGS) is about the operator's input and the
# error's own words say what is wrong; a failure or a busy bus happened somewhere, and the reply
# names where (the `place` given to `replies`).
ERROR_REPLIES: tuple[tuple[tuple[type[Exception], ...], str], ...] = (
    ((BusBusy,), Code.BUSY),
    ((DeviceError, modbus.LocalProtocolError), Code.FAILED),
    ((ConfigError, EventRejected), Code.BAD_ARGS),
    ((DrgwError,), Code.BAD_ARGS),  # not writable, out of range: the profile says no
)


def reply_code(exc: Exception) -> str | None:
    """The reply code ERROR_REPLIES gives `exc`; None for an error it does not know (a bug)."""
    return next((code for kinds, code in ERROR_REPLIES if isinstance(exc, kinds)), None)


@contextmanager
def replies(*, place: str = "", refusal: str = "") -> Iterator[None]:
    """Turn the errors of ERROR_REPLIES raised inside into CommandRejected; `place` prefixes a
    failure's message, `refusal` a refusal's. Other errors pass to the dispatcher (`failed`)."""
    try:
        yield
    except CommandRejected:
        raise
    except Exception as exc:
        code = reply_code(exc)
        if code is None:
            raise
        prefix = refusal if code == Code.BAD_ARGS else place
        raise CommandRejected(code, f"{prefix}{exc}") from None


class Control:
    """The AgentControl the dispatcher calls, one method per fleet command."""

    def __init__(self, *, config: GatewayConfig, store: Store, layer: DeviceLayer,
                 pipeline: MeasurementPipeline, readout: Readout, dr: DrLoop | None,
                 started: float, stop: StopRequest,
                 market: Callable[[], dict[str, Any]] | None = None) -> None:
        self.config, self.store, self.layer, self.pipeline = config, store, layer, pipeline
        self.readout, self.dr, self.started, self.stop = readout, dr, started, stop
        self.market = market  # the bidder's summary: deposits held, paid, forfeited

    async def ping(self) -> JSON:
        return {"pong": True, "time_ms": wall_ms()}

    async def status(self) -> JSON:
        rows, nbytes = self.store.outbox_depth()
        return {"version": __version__, "config_hash": self.config.config_hash,
                "seq": self.pipeline.chain.last_seq, "backlog": {"rows": rows, "bytes": nbytes},
                "devices": sorted(self.pipeline.ok_devices), "clock_synced": self.pipeline.clock_synced,
                "disk_full": self.store.disk_full, "uptime_s": round(time.monotonic() - self.started, 1),
                "dr": None if self.dr is None else self.dr.status(),
                "market": None if self.market is None else self.market(),
                **trial.status(self.config.path)}

    async def diagnostics(self) -> JSON:
        devices = {name: {"requests": st.requests, "timeouts": st.timeouts,
                          "protocol_errors": st.protocol_errors, "cycles": st.cycles,
                          "failed_cycles": st.failed_cycles, "overruns": st.overruns,
                          "splits": st.splits, "unsupported": sorted(st.planner.unsupported)}
                   for name, st in device_states(self.layer)}
        ports = {bus: dataclasses.asdict(port) for bus, owner in self.layer.owners.items()
                 if (port := owner.port_health()) is not None}
        return {"devices": devices, "ports": ports, "counters": dict(self.readout.counters()),
                "health": self.readout.peek()}

    def _device(self, device: str) -> tuple[BusOwner | Dlt645BusOwner, DeviceState]:
        with replies():
            owner = self.layer.owner_of(device)
        return owner, owner.devices[device]

    async def read_register(self, device: str, table: str, address: int, count: int) -> JSON:
        owner, state = self._device(device)
        if table not in modbus.READ_FUNCTION:
            raise CommandRejected(Code.BAD_ARGS, f"table {table!r}: use input, holding, coil or discrete")
        request = modbus.ReadRequest(unit=state.spec.unit, function=modbus.READ_FUNCTION[table],
                                     address=address, count=count)
        with replies(place=f"{device}: "):
            answer = await owner.submit(lambda: owner.transact(state, request))
        if isinstance(answer, modbus.ExceptionResponse):
            raise CommandRejected(Code.FAILED, f"{device} answered: {answer.message}")
        assert isinstance(answer, modbus.Response)  # what transact answers when it does not raise
        return {"device": device, "table": table, "address": address, "words": list(answer.values)}

    async def write_point(self, device: str, name: str, value: float) -> JSON:
        """Write, then read the point back: `value` in the reply is what the device holds, which the
        profile's scale may have rounded (6.04 A in 0.1 A steps is 6.0) or the device clamped;
        `requested` is added when it differs (docs/mqtt.md)."""
        _, state = self._device(device)
        with replies():
            await self.layer.write(device, name, value)
        held, note = await self._held(device, name, state, value)
        log.warning("command: wrote %s.%s = %g (holds %g)", device, name, value, held)
        reply: dict[str, Any] = {"device": device, "name": name, "value": held}
        if held != value:
            reply["requested"] = value
        return reply | note

    async def _held(self, device: str, name: str, state: DeviceState,
                    value: float) -> tuple[float, dict[str, Any]]:
        """The point's value read back now; when that read fails, the value the write sent (the
        profile's scale applied to `value`), marked `read_back: false` with the reason."""
        try:
            readings = await self.layer.read_now(device, [name])
        except DrgwError as exc:
            error = str(exc)
        else:
            back = next((r for r in readings if r.name == name), None)
            if back is not None and back.quality is Quality.OK and isinstance(back.value, int | float):
                return back.value, {}
            error = back.error if back is not None and back.error else "no value read"
        point = state.spec.profile.point(name)
        words = state.write_request(name, value).values
        written = decode_point(point, words, sf=state.scale_factors.get(point.scale_factor or "", 0))
        assert isinstance(written, int | float)  # a writable point is a number or a bool
        return written, {"read_back": False, "read_back_error": error}

    async def scan(self, args: Mapping[str, Any]) -> JSON:
        """Probe a unit range on a running Modbus bus (gateway.device.probe.scan_running_bus)."""
        from gateway.config.profiles import load_all
        from gateway.device.probe import scan_running_bus  # rare: not on the agent's start-up path

        buses = {b.name: b for b in self.config.devices.buses if b.name in self.layer.owners}
        name = args.get("bus") or (next(iter(buses)) if len(buses) == 1 else None)
        if name not in buses:
            what = f"no polled bus is named {name!r}" if name else "give the bus to scan"
            raise CommandRejected(Code.BAD_ARGS, f"scan: {what}; buses: "
                                  f"{', '.join(sorted(buses)) or '(none)'}")
        owner = self.layer.owners[name]
        if not isinstance(owner, BusOwner):
            raise CommandRejected(Code.BAD_ARGS, f"scan: bus {name!r} is DL/T 645 (one meter per "
                                  "line): stop the agent and run `drgw scan --protocol dlt645`")
        with replies(place=f"scan: bus {name!r}: "):
            return await scan_running_bus(owner, buses[name], args, profiles=load_all())

    async def resend(self, seq_from: int, seq_to: int) -> JSON:
        if seq_to < seq_from or seq_to - seq_from > 100_000:
            raise CommandRejected(Code.BAD_ARGS, "resend: seq_from <= seq_to, at most 100000")
        queued = self.store.requeue(seq_from, seq_to, self.pipeline.topic)
        self.pipeline.wake.set()
        return {"queued": queued, "seq_from": seq_from, "seq_to": seq_to}

    async def config_get(self) -> JSON:
        return {"text": self.config.text, "config_hash": self.config.config_hash}

    async def config_set(self, text: str, dry_run: bool) -> JSON:
        with replies(refusal="config rejected: "):
            new = parse_config(text, path=self.config.path)
        if new.key != self.config.key:
            raise CommandRejected(Code.BAD_ARGS, "config: [gateway] key cannot change remotely")
        result = {"valid": True, "config_hash": new.config_hash, "dry_run": dry_run,
                  "devices": [d.name for d in new.devices.devices]}
        if not dry_run:
            trial.apply(self.config.path, text)
            self._restart_soon()
            result["restarting"] = True
        return result

    async def restart(self) -> JSON:
        self._restart_soon()
        return {"restarting": True}

    def _restart_soon(self) -> None:
        asyncio.get_running_loop().call_later(RESTART_DELAY_S, self.stop, RESTART)

    async def set_log_level(self, level: str) -> JSON:
        if level.upper() not in LOG_LEVELS:
            raise CommandRejected(Code.BAD_ARGS, "log level: DEBUG, INFO, WARNING or ERROR")
        logging.getLogger().setLevel(level.upper())
        return {"level": level.upper()}

    async def dr_event(self, args: Mapping[str, Any]) -> JSON:
        if self.dr is None:
            raise CommandRejected(Code.FAILED, "this gateway has no [dr] section in its config: "
                                  "add one (docs/config.md) to take part in DR events")
        with replies():
            return self.dr.accept(self.dr.from_command(args))
