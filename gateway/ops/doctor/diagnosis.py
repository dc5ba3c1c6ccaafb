"""`drgw doctor`'s whole run: every check, in the order an installer would fix things.

The checks go through the same code the agent uses (config parser, key loader, device layer, TLS
settings, chain client), with short timeouts, and write nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config.gateway import GatewayConfig, load_config
from gateway.errors import DrgwError
from gateway.ops.doctor.broker import check_broker
from gateway.ops.doctor.chain import check_chain
from gateway.ops.doctor.check import Check, fail, ok
from gateway.ops.doctor.devices import check_devices
from gateway.ops.doctor.host import (
    check_clock,
    check_disk,
    check_key,
    check_serial_ports,
    check_store,
    lookup_user,
    service_reads,
)

SERVICE_USER = "drgw"  # systemd/drgw.sysusers


def diagnose(path: Path, *, timeout: float, service_user: str = SERVICE_USER) -> list[Check]:
    """Every check, in the order an installer would fix things."""
    try:
        config = load_config(path)
    except DrgwError as exc:
        return [fail("config", str(exc), f"edit {path} as the message says (docs/config.md), or "
                     "write a fresh one with `drgw init`"), check_clock()]
    checks = [ok("config", f"{path}: {len(config.devices.buses)} bus(es), "
                 f"{len(config.devices.devices)} device(s), config hash {config.config_hash}")]
    user = lookup_user(service_user)
    checks += service_reads("config", path, user)
    key_checks, address = check_key(config, user)
    checks += key_checks
    checks += check_serial_ports(config, user)
    checks += asyncio.run(_network_checks(config, address, timeout))
    checks += check_chain(config, address, timeout)
    checks += [check_clock(), check_disk(config.store.path), check_store(config.store.path)]
    return checks


async def _network_checks(config: GatewayConfig, address: str | None,
                          timeout: float) -> list[Check]:
    devices = await check_devices(config)
    return devices + await check_broker(config, address, timeout)
