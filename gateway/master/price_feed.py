"""The real-time price feed the market operation decides from: slots of (start, price).

Two formats, read strictly (a bad row names the source, the row and the fix):

    CSV   start,realtime            JSON  [{"start": ..., "realtime": ...}, ...]
          2026-12-05T18:00Z,0.68          (or {"prices": [...]})
          1764957600,0.71

`start` is unix seconds or ISO 8601 with a zone; `realtime` is currency/kWh, as the retail price
in the master's [market] (docs/market.md, "Units"). The source is a file (read again each poll,
so an upstream process may rewrite it), an http(s) URL serving either format, or a topic on the
master's broker (`mqtt:TOPIC`): each message there, normally retained so that a worker gets the
current one when it subscribes, replaces the feed (`TopicFeed`).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceSlot:
    start_s: int
    realtime_micro: int  # micro-currency/kWh, the contract's unit


class FeedError(ConfigError):
    """A feed that cannot be read; the message names the source, the row and the fix."""


def read_feed(source: str) -> list[PriceSlot]:
    """Read and parse the feed (blocking: call it off the event loop)."""
    if source.startswith(("http://", "https://")):
        import urllib.request

        try:
            with urllib.request.urlopen(source, timeout=FETCH_TIMEOUT_S) as response:
                text = response.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FeedError(f"price feed {source}: cannot fetch it ({exc})") from None
        return parse_feed(text, source=source)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedError(f"price feed {source}: cannot read it ({exc}); check [market] "
                        "price_feed") from None
    return parse_feed(text, source=source)


class TopicFeed:
    """The feed of an `mqtt:TOPIC` source: the slots of the newest message that parsed. A message
    that does not parse is refused with its reason and the last good slots stay, as a file that
    an upstream process left half-written would only delay the next round."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.slots: list[PriceSlot] = []
        self.received = 0  # messages that parsed
        self.error: str | None = None  # why the newest message was refused, None once one parses

    def take(self, payload: bytes) -> None:
        """One message of the topic (raises nothing: a bad one is logged and kept as `error`)."""
        try:
            self.slots = parse_feed(payload.decode("utf-8"), source=f"price feed topic {self.topic}")
        except (FeedError, UnicodeDecodeError) as exc:
            self.error = str(exc) if isinstance(exc, FeedError) else (
                f"price feed topic {self.topic}: the message is not UTF-8 text ({exc})")
            log.error("%s; the last good feed (%d slots) stays", self.error, len(self.slots))
            return
        self.received += 1
        self.error = None


def parse_feed(text: str, *, source: str) -> list[PriceSlot]:
    """Slots sorted by start; JSON when the text starts with [ or {, else CSV."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FeedError(f"price feed {source}: not valid JSON ({exc})") from None
        rows = data.get("prices") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise FeedError(f"price feed {source}: expected a list of {{\"start\", \"realtime\"}} "
                            "objects (or {\"prices\": [...]})")
        items = [(f"item {i}", r) for i, r in enumerate(rows)]
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or not {"start", "realtime"} <= set(reader.fieldnames):
            raise FeedError(f"price feed {source}: the CSV header must name start and realtime "
                            f"(found {reader.fieldnames})")
        items = [(f"line {i + 2}", dict(r)) for i, r in enumerate(reader)]
    slots = [_slot(where, row, source) for where, row in items]
    return sorted(slots, key=lambda s: s.start_s)


def _slot(where: str, row: Any, source: str) -> PriceSlot:
    if not isinstance(row, dict):
        raise FeedError(f"price feed {source}: {where} must be an object with start and realtime")
    try:
        price = float(row["realtime"])
    except (KeyError, TypeError, ValueError):
        raise FeedError(f"price feed {source}: {where}: realtime {row.get('realtime')!r} must be "
                        "a price in currency/kWh, e.g. 0.68") from None
    if not 0 <= price <= 100:
        raise FeedError(f"price feed {source}: {where}: realtime {price} is out of range "
                        "(0 to 100 currency/kWh)")
    return PriceSlot(start_s=_start(row.get("start"), where, source),
                     realtime_micro=round(price * 1e6))


def _start(value: Any, where: str, source: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value or "").strip()
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise FeedError(f"price feed {source}: {where}: start {value!r} must be unix seconds or "
                        "ISO 8601 with a zone, e.g. 2026-12-05T18:00+01:00")
    return int(when.timestamp())
