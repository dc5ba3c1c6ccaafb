"""`drgw doctor`'s device check: each device's first point, read through the device layer as the
agent would read it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.config.gateway import GatewayConfig
from gateway.errors import DrgwError
from gateway.ops.doctor.check import Check, fail, ok, warn


async def check_devices(config: GatewayConfig) -> list[Check]:
    """Read each device's first point through the device layer, as the agent would."""
    from gateway.device.layer import DeviceLayer

    if not config.devices.devices:
        return [warn("devices", "none configured", "add [[bus]] and [[device]] tables "
                     "(`drgw scan` prints them)")]
    layer = DeviceLayer(config.devices, sink=lambda sample: None)
    polling = asyncio.create_task(layer.run(), name="doctor-devices")
    try:
        return list(await asyncio.gather(*(_read_device(layer, d, config)
                                           for d in config.devices.devices)))
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)


async def _read_device(layer: Any, device: Any, config: GatewayConfig) -> Check:
    from gateway.perception.readings import Quality

    bus = config.devices.bus(device.bus)
    where = f"{device.profile.name}, unit {device.unit} on {bus.tcp or bus.serial}"
    name = f"device {device.name}"
    point = device.profile.points[0]
    started = time.monotonic()
    try:
        readings = await asyncio.wait_for(layer.read_now(device.name, [point.name]),
                                          3 * device.timeout + 1.0)
    except (DrgwError, TimeoutError) as exc:
        return _unanswered(name, where, exc, device, bus)
    took = (time.monotonic() - started) * 1000
    got = next((r for r in readings if r.name == point.name), None)
    if got is None or got.quality is not Quality.OK:
        error = got.error if got is not None else "no reading"
        return fail(name, f"{where}: {point.name}: {error}", "the device answers but not as the "
                    f"profile {device.profile.name} expects: is it that model? `drgw scan` identifies it")
    model = await _model(layer, device, name, where)
    if isinstance(model, Check):
        return model
    return ok(name, f"{where}{model}: {point.name} = {got.value} {got.unit} in {took:.0f} ms")


async def _model(layer: Any, device: Any, name: str, where: str) -> Check | str:
    """The model check the agent runs before polling (its probe registers): a failed Check for
    another model, else a note for the detail line: " (model identified)"."""
    from gateway.device.model_check import wrong_model_message
    from gateway.perception.identify import Fit

    if not device.check_model:
        return " (model check off: check_model = false)"
    try:
        check = await asyncio.wait_for(layer.verify_model(device.name), 6 * device.timeout + 1.0)
    except (DrgwError, TimeoutError) as exc:
        return fail(name, f"{where}: the model check got no answer ({exc or 'timeout'})",
                    "the agent checks the model before polling: check the wiring and the unit id")
    if check is None or check.fit is Fit.UNPROVEN:
        return "" if check is None else f" (model not confirmed: {check.evidence})"
    if check.ruled_out:
        spec = layer.owner_of(device.name).devices[device.name].spec
        return fail(name, f"{where}: {wrong_model_message(spec, check)}",
                    "the agent will not sign its readings: set the profile `drgw scan` proposes, "
                    "or check_model = false on the device if it is a variant the probe does not know")
    return f" (model {check.fit})"


def _unanswered(name: str, where: str, exc: Exception, device: Any, bus: Any) -> Check:
    """A device that gave no answer: the port held by the agent, or what to check on the wire."""
    text = str(exc) or f"no answer within {3 * device.timeout + 1.0:.0f} s"
    if "lock" in text:
        return warn(name, f"{where}: the port is in use ({text})",
                    "the agent holds it while it runs; `systemctl stop drgw` to test devices")
    if bus.tcp:
        hint = (f"that the device is on and answers unit {device.unit}: `drgw read --tcp "
                f"{bus.tcp} --profile {device.profile.name} --unit {device.unit}`")
    else:
        hint = f"power, A/B wiring, baud/parity and unit id; `drgw scan --serial {bus.serial}`"
    return fail(name, f"{where}: {text}", f"check {hint}")
