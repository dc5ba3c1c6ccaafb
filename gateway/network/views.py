"""Views of the committed measurements (the plain stream and Sparkplug B): their settings, the feed
the measurement pipeline calls after each store commit, and the committed value in natural units.

A view is fed the very records the store just committed (gateway.agent.pipeline calls `committed`
after `Store.commit` returned), so its values and times are those of the signed stream: value =
the record's fixed-point value / 10^3 (docs/measurements.md), time = the record's `time_ms`. It is
never a second path around the store: a sample the store did not take reaches no view.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.measurement.record import QUALITY_CODES, VALUE_DECIMALS, Measurement
from gateway.perception.readings import Quality
from gateway.schema import Fields

log = logging.getLogger(__name__)

OK = QUALITY_CODES[Quality.OK]
_SCALE = 10 ** VALUE_DECIMALS
# An MQTT topic level we write: no wildcard, no separator, no NUL (MQTT 3.1.1 section 4.7).
LEVEL = re.compile(r"^[^/+#\x00]{1,128}$")
# Sparkplug IDs: no '/', '+' or '#' (spec 3.0, tck-id-intro-group-id-chars, -edge-node-id-chars).
_SPARKPLUG_ID = re.compile(r"^[^/+#\x00]{1,64}$")


class CommittedView(Protocol):
    """Something fed the records just committed, in seq order. Must not block or raise."""

    def committed(self, records: Sequence[Measurement]) -> None: ...


class ViewFeed:
    """Hands committed records to each view; a view that raises is logged (once per kind of fault)
    and counted, and never fails the commit that fed it (the pipeline would try it again)."""

    def __init__(self, views: Sequence[CommittedView]) -> None:
        self.views = tuple(views)
        self.faults = 0
        self._logged: set[str] = set()

    def committed(self, records: Sequence[Measurement]) -> None:
        for view in self.views:
            try:
                view.committed(records)
            except Exception as exc:  # a bug in a view: the signed stream goes on regardless
                self.faults += 1
                what = f"{type(view).__name__}: {type(exc).__name__}"
                if what not in self._logged:
                    self._logged.add(what)
                    log.exception("view %s failed on committed records; they stay in the signed "
                                  "stream", type(view).__name__)


def decimal_text(scaled: int) -> str:
    """A record's fixed-point value (x 10^3) as the shortest decimal: 230100 -> "230.1",
    1800000 -> "1800", -5 -> "-0.005". Exact: no float on the way."""
    whole, frac = divmod(abs(scaled), _SCALE)
    text = str(whole)
    if frac:
        text += "." + str(frac).rjust(VALUE_DECIMALS, "0").rstrip("0")
    return "-" + text if scaled < 0 else text


def json_number(scaled: int) -> int | float:
    """The value for a JSON number: an int when whole, else the double nearest the decimal (whose
    shortest repr is that decimal for the <= 15 significant digits meters give)."""
    if scaled % _SCALE == 0:
        return int(scaled // _SCALE)
    return float(decimal_text(scaled))


# --- settings: [mqtt.plain] and [mqtt.sparkplug] (docs/config.md, docs/mqtt.md) ------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlainSettings:
    prefix: str  # "{gw}" is replaced by the gateway id (drgw/v1/{gw}/plain by default)
    values: bool  # one topic per point, a plain number
    json: bool  # one JSON per device and measurement
    retain: bool
    qos: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SparkplugSettings:
    group: str
    edge_node: str | None  # None: drgw-<first 12 hex digits of the gateway address>


DEFAULT_PREFIX = "drgw/v1/{gw}/plain"


def parse_plain(f: Fields) -> PlainSettings | None:
    enabled = bool(f.optional_bool("enabled"))
    prefix = f.optional_str("prefix") or DEFAULT_PREFIX
    modes = f.list("modes") or ["values", "json"]
    retain = bool(f.optional_bool("retain"))
    qos = f.optional_int("qos", choices=(0, 1), default=0)
    f.reject_unknown()
    for mode in modes:
        if mode not in ("values", "json"):
            f.fail("modes", f"{mode!r} is not a mode; use \"values\" (one topic per point) and/or "
                   "\"json\" (one JSON per device and cycle)")
    levels = prefix.replace("{gw}", "gw").split("/")
    if prefix.startswith("$") or not all(LEVEL.match(level) for level in levels):
        f.fail("prefix", f"{prefix!r} is not a topic prefix: levels separated by '/', none empty, "
               "no '+' or '#', not starting with '$' (e.g. \"home/meters\" or "
               f"\"{DEFAULT_PREFIX}\")")
    if not enabled:
        return None
    return PlainSettings(prefix=prefix, values="values" in modes, json="json" in modes,
                         retain=retain, qos=qos)


def parse_sparkplug(f: Fields) -> SparkplugSettings | None:
    enabled = bool(f.optional_bool("enabled"))
    group = f.optional_str("group") or "drgw"
    edge_node = f.optional_str("edge_node")
    f.reject_unknown()
    for key, value in (("group", group), ("edge_node", edge_node)):
        if value is not None and not _SPARKPLUG_ID.match(value):
            f.fail(key, f"{value!r} cannot be a Sparkplug ID: 1-64 characters without '/', '+' "
                   "or '#' (Sparkplug 3.0, section 1.4.1.8)")
    return SparkplugSettings(group=group, edge_node=edge_node) if enabled else None
