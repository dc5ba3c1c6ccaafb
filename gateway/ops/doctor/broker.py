"""`drgw doctor`'s broker checks: TCP reach, the TLS handshake against [mqtt] ca, an MQTT CONNECT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from typing import Any

from gateway.config.gateway import GatewayConfig
from gateway.errors import DrgwError
from gateway.ops.doctor.check import Check, fail, ok


async def check_broker(config: GatewayConfig, address: str | None, timeout: float) -> list[Check]:
    from gateway.network.settings import LinkSettings

    m = config.mqtt
    try:
        settings = LinkSettings.from_url(m.broker, client_id=m.client_id or "drgw-doctor",
                                         ca=m.ca, cert=m.cert, key=m.key, keepalive_s=m.keepalive,
                                         username=m.username, password=m.password)
        tls = settings.tls.context() if settings.broker.tls else None
    except DrgwError as exc:
        return [fail("broker", str(exc), "fix [mqtt] in the config (docs/config.md)")]
    b = settings.broker
    try:
        await _open(b.host, b.port, timeout)
    except (OSError, TimeoutError) as exc:
        return [fail("broker tcp", f"{b}: cannot connect ({exc or 'timeout'})",
                     f"is the broker up and {b.host}:{b.port} reachable from here (DNS, firewall)?")]
    checks = [ok("broker tcp", f"{b}: connected")]
    if tls is not None:
        try:
            await _open(b.host, b.port, timeout, tls=tls)
        except (OSError, TimeoutError) as exc:
            return [*checks, fail("broker tls", f"{b}: TLS handshake failed ({exc or 'timeout'})",
                                  f"[mqtt] ca ({m.ca or 'system store'}) must be the CA that signed "
                                  f"the broker's certificate, issued for {b.host}")]
        checks.append(ok("broker tls", f"{b}: certificate verified"))
    return [*checks, await _mqtt_connect(settings, tls, address, timeout)]


async def _open(host: str, port: int, timeout: float, *, tls: ssl.SSLContext | None = None) -> None:
    """Connect (and, with `tls`, finish the handshake), then close again."""
    if tls is None:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    else:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host), timeout)
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _mqtt_connect(settings: Any, tls: Any, address: str | None, timeout: float) -> Check:
    import aiomqtt

    b = settings.broker
    # Never the agent's own client id: the broker would disconnect the running agent.
    ident = f"{settings.client_id}-doctor-{os.getpid()}"
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout + 1):
            async with aiomqtt.Client(b.host, b.port, identifier=ident, timeout=timeout,
                                      tls_context=tls, clean_session=True,
                                      username=settings.username, password=settings.password):
                pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        return fail("broker mqtt", f"{b}: MQTT CONNECT failed ({exc or 'no CONNACK'})",
                    "the broker refused this client: check [mqtt] username and password or "
                    f"password_file, the broker's ACL for this gateway ({address or 'its id'}) "
                    "and, with mutual TLS, [mqtt] cert and key")
    return ok("broker mqtt", f"{b}: CONNACK in {(time.monotonic() - started) * 1000:.0f} ms")
