"""The gateway's OpenADR 2.0b VEN: registers with the VTN, answers its events, sends its reports.

openleadr's client (OpenADRClient) speaks the protocol: TLS with the VEN's certificate, XML
signatures, registration, polling, oadrCreatedEvent, oadrRegisterReport and oadrUpdateReport. This
shell only moves values between it and the agent through `VenPort`: an event becomes an
`OadrRequest` (signals.py) that the agent offers to the closed loop, whose answer is the opt-in or
opt-out; a report the VTN asked for is filled from the committed measurements. openleadr is
imported when the VEN is built, so a gateway without `[openadr]` never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from gateway.errors import ConfigError
from gateway.network.openadr.settings import OpenAdrConfig
from gateway.network.openadr.signals import OadrEventError, OadrRequest, read_event

log = logging.getLogger(__name__)

REPORT_R_ID = "power"  # the one data point of the VEN's TELEMETRY_USAGE report
REPORT_SPAN = dt.timedelta(hours=1)  # the report buffer the VEN offers (its reportDuration)
# every opt answer is logged: the repeat filter (gateway/ops/logs.py) would fold them into one
ALWAYS = {"state_change": True}
LOOK_BACK_S = 60.0  # an interval without a reading reports the newest one up to this far back


class VenPort(Protocol):
    """What the VEN needs from the agent."""

    def offer(self, request: OadrRequest) -> tuple[bool, str]:
        """Opt in (True) or out of an event version, with the reason; a cancellation is an offer
        with `cancelled` set."""
        ...

    def power(self, start_s: float, end_s: float) -> list[tuple[float, float]]:
        """The main meter's committed active power, (time s, W) in time order, start <= t < end."""
        ...


def newest_per_slot(samples: Sequence[tuple[float, float]], start_s: float,
                    step_s: float) -> list[tuple[float, float]]:
    """One reading per sampling interval of the report: the newest in each [start + k step, + step)."""
    slots: dict[int, tuple[float, float]] = {}
    for t, watts in samples:
        slots[int((t - start_s) // step_s) if step_s > 0 else 0] = (t, watts)
    return [slots[k] for k in sorted(slots)]


class Ven:
    """A part of the agent (`run` until cancelled). `resource` names the metered resource in reports."""

    def __init__(self, *, config: OpenAdrConfig, port: VenPort, resource: str) -> None:
        if importlib.util.find_spec("openleadr") is None:
            raise ConfigError("[openadr] is configured but openleadr is not installed: pip install "
                              "'drgw[openadr]' (docs/openadr.md), or remove [openadr]")
        self.config, self.port, self.resource = config, port, resource
        self.registered = asyncio.Event()
        self.opted: dict[str, str] = {}  # the last answer per event id

    async def run(self) -> None:
        """Register, then serve the VTN until cancelled; register again after a refusal or failure."""
        while True:
            client = self._client()
            try:
                await client.run()
                if client.registration_id:
                    self.registered.set()
                    log.warning("OpenADR: registered with %s as VEN %s (registration %s, polling every "
                                "%s)", self.config.vtn_url, client.ven_id, client.registration_id,
                                client.poll_frequency, extra=ALWAYS)
                    await asyncio.Event().wait()  # openleadr's scheduler polls until we are cancelled
                log.error("OpenADR: the VTN %s did not register this VEN (see the lines above); "
                          "trying again in %g s", self.config.vtn_url, self.config.retry_s)
            finally:
                self.registered.clear()
                with contextlib.suppress(Exception):  # a client that never connected has no session
                    await client.stop()
            await asyncio.sleep(self.config.retry_s)

    def _client(self) -> Any:
        from openleadr import OpenADRClient, enums, objects, utils

        c = self.config
        if not log.isEnabledFor(logging.DEBUG):  # a line per poll and per report; ours say what matters
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
            logging.getLogger("openleadr").setLevel(logging.WARNING)
        log.info("OpenADR: this VEN's certificate fingerprint is %s (the VTN operator needs it)",
                 utils.certificate_fingerprint(c.cert.read_bytes()))
        client = OpenADRClient(ven_name=c.ven_name, vtn_url=c.vtn_url, cert=str(c.cert),
                               key=str(c.key), ca_file=str(c.vtn_ca), vtn_fingerprint=c.vtn_fingerprint,
                               show_fingerprint=False, ven_id=c.ven_id, check_hostname=c.check_hostname)
        client.add_handler("on_event", self._on_event)
        client.add_handler("on_update_event", self._on_event)
        client.add_report(
            callback=self._report, resource_id=self.resource, measurement="POWER_REAL", unit="W",
            data_collection_mode="full", report_specifier_id=f"{c.ven_name}-telemetry-usage",
            r_id=REPORT_R_ID, report_name=enums.REPORT_NAME.TELEMETRY_USAGE,
            reading_type=enums.READING_TYPE.DIRECT_READ, report_duration=REPORT_SPAN,
            sampling_rate=objects.SamplingRate(min_period=dt.timedelta(seconds=c.report_min_s),
                                               max_period=REPORT_SPAN, on_change=False))
        return client

    async def _on_event(self, event: dict[str, Any]) -> str:
        """openleadr's on_event and on_update_event: the opt answer for one event version."""
        try:
            request = read_event(event)
        except OadrEventError as exc:
            log.warning("%s; opting out", exc)
            return self._answer(str(event.get("event_descriptor", {}).get("event_id")), "optOut")
        try:
            opt_in, reason = self.port.offer(request)
        except Exception:  # a bug must not take the VEN down: the VTN gets an opt-out
            log.exception("OpenADR event %s: the closed loop failed on it; opting out", request.event_id)
            return self._answer(request.event_id, "optOut")
        answer = "optIn" if opt_in else "optOut"
        log.warning("OpenADR event %s (modification %d%s): %s, %s", request.event_id,
                    request.modification, ", cancelled" if request.cancelled else "", answer, reason,
                    extra=ALWAYS)
        return self._answer(request.event_id, answer)

    def _answer(self, event_id: str, answer: str) -> str:
        self.opted[event_id] = answer
        return answer

    def _report(self, date_from: dt.datetime, date_to: dt.datetime,
                sampling_interval: dt.timedelta) -> list[tuple[dt.datetime, float]]:
        """A TELEMETRY_USAGE report's values: the newest committed reading per sampling interval."""
        start, end = date_from.timestamp(), date_to.timestamp()
        samples = self.port.power(start - LOOK_BACK_S, end)
        inside = [s for s in samples if s[0] >= start]
        # No reading inside (a slow meter, a batch not yet committed): the newest before it, since an
        # empty report tells the VTN nothing (and openleadr's VTN fails on one).
        rows = newest_per_slot(inside, start, sampling_interval.total_seconds()) or samples[-1:]
        if not rows:
            log.warning("OpenADR report: no committed reading of %s since %s", self.resource,
                        dt.datetime.fromtimestamp(start - LOOK_BACK_S, dt.UTC).isoformat())
        return [(dt.datetime.fromtimestamp(t, dt.UTC), watts) for t, watts in rows]
