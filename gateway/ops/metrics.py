"""The optional Prometheus endpoint of `drgw run` (`[metrics] prometheus`, docs/config.md): the
agent's health readings and counters in the text exposition format, at http://HOST:PORT/metrics.

Served by a small HTTP/1.1 responder on the agent's own asyncio loop, not by prometheus_client's
threaded WSGI server (start_http_server): every value comes from state the loop owns — the SQLite
connection (sqlite3 refuses use from another thread), the device counters, the sample queue — so
a scrape on the loop reads one consistent moment without locks, and a Pi gets no extra thread. A
scrape of a few dozen series costs well under a millisecond of loop time.

prometheus_client is imported only when the endpoint is on, and its metrics live in a registry of
our own, not the global default one (which would add the Python GC/platform collectors of whatever
process imported it, and clash when two agents run in one test process). Names follow Prometheus
conventions: `drgw_` prefix, base units in the name, `_total` on counters.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

from gateway.errors import ConfigError
from gateway.measurement.store.errors import BUSY, CORRUPT, DISK_FULL, IO_ERROR
from gateway.ops import http
from gateway.ops.health import ERROR_KINDS, HealthReadings
from gateway.ops.http import HEAD_LIMIT, Request

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from gateway.config.gateway import MetricsConfig

log = logging.getLogger(__name__)

# Agent/store counter name -> (metric name without _total, help).
COUNTERS: Mapping[str, tuple[str, str]] = {
    "measurements_committed": ("drgw_measurements_committed", "Signed measurements committed to the store"),
    "outbox_batches": ("drgw_outbox_batches", "Measurement batches queued in the outbox"),
    "outbox_acked": ("drgw_outbox_acked_batches", "Outbox batches removed after the broker's PUBACK"),
    "durable_commits": ("drgw_store_durable_commits",
                        "Store transactions committed with a WAL fsync (docs/storage.md)"),
    "published": ("drgw_published_batches", "Batches published since the agent started (incl. resends)"),
    "store_errors": ("drgw_store_errors", "Failed store commits (retried)"),
    "samples_dropped": ("drgw_samples_dropped",
                        "Samples the full sample queue dropped (oldest first) while the store refused"),
    "ack_failures": ("drgw_ack_failures", "Acks and outbox reads the store refused (retried)"),
    "retention_evicted": ("drgw_retention_evicted_measurements",
                          "Measurements deleted past the retention cap"),
}
# Why the store's last write failed (gateway/measurement/store/errors.py), one series each.
STORE_FAILURES = (DISK_FULL, IO_ERROR, CORRUPT, BUSY)


class AgentCollector:
    """A prometheus_client collector over callables of the agent (called once per scrape).
    `commands` gives the command dispatcher's health counters (`commands_<outcome>`)."""

    def __init__(self, *, readings: Callable[[], HealthReadings],
                 counters: Callable[[], Mapping[str, int]], info: Mapping[str, str],
                 started: float, commands: Callable[[], Mapping[str, int]] = dict) -> None:
        self.readings = readings
        self.started = started  # monotonic seconds, the clock of HealthReadings.now
        self.counters = counters
        self.commands = commands
        self.info = dict(info)

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        r, counts = self.readings(), self.counters()
        info = GaugeMetricFamily("drgw_info", "The agent: gateway address, version, config hash",
                                 labels=sorted(self.info))
        info.add_metric([self.info[k] for k in sorted(self.info)], 1)
        yield info
        yield GaugeMetricFamily("drgw_sample_queue_length", "Samples read, not yet committed",
                                value=r.sample_queue)
        yield from self._devices(r)
        s = r.store
        yield GaugeMetricFamily("drgw_outbox_rows", "Outbox batches awaiting a PUBACK",
                                value=s.outbox_rows)
        yield GaugeMetricFamily("drgw_outbox_bytes", "Payload bytes awaiting a PUBACK",
                                value=s.outbox_bytes)
        evicted = CounterMetricFamily("drgw_outbox_evicted_rows", "Outbox batches evicted by a cap",
                                      labels=["reason"])
        for reason, n in sorted(s.evictions.items()):
            evicted.add_metric([reason], n)
        yield evicted
        yield CounterMetricFamily("drgw_outbox_evicted_measurements",
                                  "Measurements inside evicted outbox batches",
                                  value=s.evicted_measurements)
        for key, (name, doc) in COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=counts.get(key, 0))
        yield from self._store_failure(s.failure)
        yield from self._commands(self.commands())
        files = GaugeMetricFamily("drgw_store_file_bytes", "Size of the store's files",
                                  labels=["file"])
        files.add_metric(["db"], s.db_bytes)
        files.add_metric(["wal"], s.wal_bytes)
        yield files
        yield GaugeMetricFamily("drgw_store_filesystem_free_bytes",
                                "Space left for the agent on the store's filesystem",
                                value=s.free_bytes)
        yield CounterMetricFamily("drgw_process_cpu_seconds", "User + system CPU time of the agent",
                                  value=r.process.cpu_s)
        yield GaugeMetricFamily("drgw_process_resident_memory_bytes", "Resident set size",
                                value=r.process.rss_bytes)
        yield GaugeMetricFamily("drgw_uptime_seconds", "Seconds since the agent started",
                                value=r.now - self.started)

    @staticmethod
    def _store_failure(failure: str | None) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        # The health topic's `disk_full` and `store_error`: one gauge to alert on, and the reason as
        # a label set that is always complete (1 on the current reason, 0 on the others).
        yield GaugeMetricFamily("drgw_store_disk_full", "1 while the store refuses writes because "
                                "the disk is full", value=1 if failure == DISK_FULL else 0)
        state = GaugeMetricFamily("drgw_store_failure", "1 on the reason the store's last write "
                                  "failed, 0 once a write succeeds", labels=["reason"])
        for reason in STORE_FAILURES:
            state.add_metric([reason], 1 if failure == reason else 0)
        yield state

    @staticmethod
    def _commands(counts: Mapping[str, int]) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        # gateway/network/dispatcher.py: `commands_received`, `commands_unanswered`, and one
        # `commands_<outcome>` per outcome (ok or an error code): the outcomes become a label.
        yield CounterMetricFamily("drgw_commands_received", "Payloads received on the command topic",
                                  value=counts.get("commands_received", 0))
        outcomes = CounterMetricFamily("drgw_commands", "Commands by outcome: ok or the error code "
                                       "of the refusal or failure", labels=["outcome"])
        for key, n in sorted(counts.items()):
            outcome = key.removeprefix("commands_")
            if outcome not in ("received", "unanswered"):
                outcomes.add_metric([outcome], n)
        yield outcomes
        yield CounterMetricFamily("drgw_commands_unanswered", "Refusals left without a reply by "
                                  "the reply budget", value=counts.get("commands_unanswered", 0))

    @staticmethod
    def _devices(r: HealthReadings) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        device = ["device"]
        reads = CounterMetricFamily("drgw_reads", "Modbus requests sent to a device", labels=device)
        cycles = CounterMetricFamily("drgw_device_cycles", "Poll cycles that gave readings",
                                     labels=device)
        failed = CounterMetricFamily("drgw_device_failed_cycles", "Poll cycles that failed",
                                     labels=device)
        errors = CounterMetricFamily(
            "drgw_device_errors", "Device errors by kind: timeout, protocol (garbled answer, bad "
            "CRC), exception (Modbus exception reply), link (transport)", labels=["device", "kind"])
        up = GaugeMetricFamily("drgw_device_up", "1 while the device answers, 0 after a failed "
                               "cycle", labels=device)
        for d in r.devices:
            reads.add_metric([d.name], d.requests)
            cycles.add_metric([d.name], d.cycles)
            failed.add_metric([d.name], d.failed_cycles)
            by_kind = d.errors()
            for kind in ERROR_KINDS:
                errors.add_metric([d.name, kind], by_kind[kind])
            up.add_metric([d.name], 1 if d.consecutive_failures == 0 and d.cycles > 0 else 0)
        yield from (reads, cycles, failed, errors, up)


def make_registry(collector: AgentCollector) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


async def serve(config: MetricsConfig, *, collector: AgentCollector) -> None:
    """Serve /metrics until cancelled. A port that cannot be bound is a ConfigError."""
    registry = make_registry(collector)
    where = f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"
    try:
        server = await asyncio.start_server(lambda r, w: _answer(r, w, registry),
                                            config.host, config.port, limit=HEAD_LIMIT)
    except OSError as exc:  # asyncio words it "error while attempting to bind ...": say it plainly
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"[metrics] prometheus = \"{where}\": cannot listen there ({reason}); "
                          "choose a free port or remove [metrics]") from None
    log.warning("metrics: Prometheus endpoint on http://%s/metrics", where)
    async with server:
        await server.serve_forever()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  registry: CollectorRegistry) -> None:
    async def route(request: Request, _: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        status, ctype, body = _respond(request, registry)
        http.send(w, status, ctype, body, headers="Connection: close\r\n",
                  body=b"" if request.method == "HEAD" else None)

    await http.answer(reader, writer, route, log=log, what="metrics")


def _respond(request: Request, registry: CollectorRegistry) -> tuple[str, str, bytes]:
    """(status, content type, body) for one request."""
    text = "text/plain; charset=utf-8"
    if request.method not in ("GET", "HEAD"):
        return "405 Method Not Allowed", text, b"GET /metrics\n"
    if request.path not in ("/metrics", "/"):
        return "404 Not Found", text, b"the metrics are at /metrics\n"
    from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

    try:
        body = generate_latest(registry)
    except Exception as exc:  # a bug in a collector must not take the agent down: say so
        log.error("metrics: a scrape failed: %s", exc)
        return "500 Internal Server Error", text, f"scrape failed: {exc}\n".encode()
    return "200 OK", CONTENT_TYPE_LATEST, body
