"""The plain reading stream (opt-in, [mqtt.plain]): committed measurements for Node-RED, Telegraf,
Grafana and friends, in the two shapes mbmd and Tasmota made common (docs/mqtt.md, "plain").

- `values`: `<prefix>/<device>/<point>` -> `230.1`, one plain number per point in the point's own
  unit (the unit is the point name's suffix: `voltage_l1_v`), like mbmd's `<topic>/<device>/<reading>`
  (volkszaehler/mbmd server/mqtt.go, MqttRunner.Run). Not retained by default, as in mbmd: a bare
  number says nothing of its age, so a retained one could show a dead meter's last value as current.
- `json`: `<prefix>/<device>` -> one object per measurement, mbmd's `/api/last` shape
  (server/json.go: `device`, `timestamp` RFC 3339, then one key per reading) with an ISO 8601 UTC
  timestamp to the millisecond, `unix_ms`, the record's `seq`, and the units in `units` (Tasmota
  puts units beside values, e.g. `TempUnit`; one map keeps the value keys plain numbers).

Only readings of quality ok are sent; values and times are the committed record's (gateway.network
.views). While the broker is away, messages wait in a bounded queue (the oldest dropped, counted).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from gateway.measurement.record import Measurement
from gateway.network import payloads, topics
from gateway.network.link import Connection
from gateway.network.views import LEVEL, OK, PlainSettings, decimal_text, json_number

log = logging.getLogger(__name__)

MAX_QUEUED = 20_000  # messages waiting for the broker: ~20 minutes of 2 meters x 15 points at 1 Hz


class PlainMessage(NamedTuple):
    topic: str
    payload: bytes


def iso_utc(time_ms: int) -> str:
    """ISO 8601 in UTC to the millisecond: 1700000000250 -> 2023-11-14T22:13:20.250Z."""
    when = dt.datetime.fromtimestamp(time_ms // 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{time_ms % 1000:03d}Z"


def messages(m: Measurement, *, prefix: str, values: bool, json: bool) -> Iterator[PlainMessage]:
    """The plain messages of one committed record (pure)."""
    good = [r for r in m.readings if r.quality == OK and LEVEL.match(r.name)]
    base = f"{prefix}/{m.device}"
    if values:
        for r in good:
            yield PlainMessage(f"{base}/{r.name}", decimal_text(r.value).encode())
    if json and good:
        body: dict[str, object] = {r.name: json_number(r.value) for r in good}
        body.update(device=m.device, timestamp=iso_utc(m.time_ms), unix_ms=m.time_ms, seq=m.seq,
                    units={r.name: r.unit for r in good})
        yield PlainMessage(base, payloads.dumps(body))


class PlainStream:
    """A CommittedView and a SessionWorker of the agent's MQTT link."""

    def __init__(self, *, settings: PlainSettings, gw: str, max_queued: int = MAX_QUEUED) -> None:
        self.settings = settings
        self.prefix = settings.prefix.replace("{gw}", topics.gw_id(gw))
        self._queue: collections.deque[PlainMessage] = collections.deque(maxlen=max_queued)
        self._ready = asyncio.Event()
        self.sent = 0
        self.dropped = 0

    def committed(self, records: Sequence[Measurement]) -> None:
        s = self.settings
        for m in records:
            if not LEVEL.match(m.device):
                continue  # device names are checked at start-up (gateway.device.config)
            for message in messages(m, prefix=self.prefix, values=s.values, json=s.json):
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append(message)
        if self._queue:
            self._ready.set()

    async def run_session(self, conn: Connection) -> None:
        s = self.settings
        while True:
            self._ready.clear()
            while self._queue:
                message = self._queue[0]
                await conn.publish(message.topic, message.payload, qos=s.qos, retain=s.retain)
                self._queue.popleft()
                self.sent += 1
            await self._ready.wait()
