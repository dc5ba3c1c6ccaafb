"""The master worker's Prometheus metrics, served by the agent's endpoint (gateway/ops/metrics.py):
this worker's counters and the alerts it raised by kind. Fleet-wide figures are in the database
(`drgw master status`), which every worker shares; per-worker rates are what a scrape can add up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from gateway.master.parts import MasterParts


class MasterCollector:
    def __init__(self, parts: MasterParts) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c, worker = self.parts.counters, self.parts.worker
        for name, doc, value in (
                ("payloads", "meas payloads taken from the broker", c.payloads),
                ("records_stored", "records verified and stored", c.stored),
                ("records_duplicate", "records already stored (redelivery, resend)", c.duplicates),
                ("records_quarantined", "records or payloads kept apart as forged/malformed",
                 c.quarantined),
                ("resends", "resend commands sent", c.resends),
                ("resend_replies", "signed replies to our resends", c.replies)):
            family = CounterMetricFamily(f"drgw_master_{name}", doc, labels=["worker"])
            family.add_metric([worker], value)
            yield family
        alerts = CounterMetricFamily("drgw_master_alerts", "alerts raised by this worker",
                                     labels=["worker", "kind"])
        for kind, n in sorted(c.alerts.items()):
            alerts.add_metric([worker, kind], n)
        yield alerts
        up = GaugeMetricFamily("drgw_master_broker_connected", "1 while subscribed",
                               labels=["worker"])
        up.add_metric([worker], int(c.connected))
        yield up


async def serve_metrics(parts: MasterParts) -> None:
    from gateway.config.gateway import parse_metrics
    from gateway.ops.metrics import AgentCollector, serve
    from gateway.schema import Fields

    text = parts.settings.prometheus
    config = parse_metrics(Fields({"prometheus": text}, where=f"{parts.settings.path}: [metrics]"))
    assert config is not None
    # serve() is typed for the agent's collector; it only calls collect() (prometheus_client's
    # Collector protocol), which MasterCollector has.
    await serve(config, collector=cast(AgentCollector, MasterCollector(parts)))
