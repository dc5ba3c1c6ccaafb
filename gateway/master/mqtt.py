"""The aggregator's MQTT client: broker URL + TLS files + login -> a connected aiomqtt client, with
errors translated to drgw's (the CLI prints them with the fix). The login comes from the URL
(`mqtt://user:pass@host`) or from `username`/`password`, as the agent's [mqtt] section."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt

from gateway.network.errors import translate
from gateway.network.settings import LinkSettings


@contextlib.asynccontextmanager
async def connect(url: str, *, ca: Path | None = None, cert: Path | None = None,
                  key: Path | None = None, client_id: str | None = None,
                  username: str | None = None, password: str | None = None
                  ) -> AsyncIterator[aiomqtt.Client]:
    settings = LinkSettings.from_url(url, client_id=client_id or f"drgw-fleet-{secrets.token_hex(4)}",
                                     ca=ca, cert=cert, key=key, username=username, password=password)
    client = aiomqtt.Client(
        settings.broker.host, settings.broker.port, identifier=settings.client_id,
        tls_context=settings.tls.context() if settings.broker.tls else None,
        timeout=settings.timeout_s, username=settings.username, password=settings.password)
    try:
        await client.__aenter__()
    except (aiomqtt.MqttError, OSError) as exc:
        raise translate(exc, broker=str(settings.broker), connecting=True) from None
    try:
        yield client
    finally:
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            await client.__aexit__(None, None, None)
