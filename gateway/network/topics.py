"""The versioned MQTT topic contract drgw/v1/<gw>/<kind> (docs/mqtt.md): pure builders and parsers.

<gw> is the gateway's Ethereum address in lower case with its 0x prefix. MQTT topics are
case-sensitive, and an EIP-55 checksum address would let two spellings of one gateway exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

PREFIX = "drgw"
VERSION = "v1"
HA_DISCOVERY_PREFIX = "homeassistant"
_ADDRESS = re.compile(r"^0x[0-9a-f]{40}$")
_DEVICE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Kind(str, Enum):  # noqa: UP042 - StrEnum changes format(); keep plain str mixin
    """The leaf of a gateway topic. `state` carries plain values for Home Assistant."""

    STATUS = "status"
    MEAS = "meas"
    EVENT = "event"
    HEALTH = "health"
    CMD = "cmd"
    REPLY = "reply"
    STATE = "state"
    CHAIN = "chain"  # signed Reports and baseline commitments for a relayer (gateway/chain/relay_wire.py)


@dataclass(frozen=True, slots=True)
class GatewayTopic:
    """A parsed drgw topic: which gateway, which kind, and the device for `state` topics."""

    gw: str
    kind: Kind
    device: str | None = None


def gw_id(address: str) -> str:
    """The topic form of a gateway address (lower case, 0x prefix); ValueError names the fix."""
    text = address.strip().lower()
    if not text.startswith("0x"):
        text = "0x" + text
    if not _ADDRESS.match(text):
        raise ValueError(
            f"{address!r} is not a gateway address: expected 0x followed by 40 hex digits "
            "(see `drgw keys show`)")
    return text


def topic(address: str, kind: Kind) -> str:
    if kind is Kind.STATE:
        raise ValueError("state topics name a device: use state_topic(address, device)")
    return f"{PREFIX}/{VERSION}/{gw_id(address)}/{kind.value}"


def state_topic(address: str, device: str) -> str:
    if not _DEVICE.match(device):
        raise ValueError(f"device name {device!r} cannot be a topic level: use [A-Za-z0-9_.-]")
    return f"{PREFIX}/{VERSION}/{gw_id(address)}/{Kind.STATE.value}/{device}"


def fleet_filter(kind: Kind, gw: str | None = None) -> str:
    """A subscription filter for one kind on one gateway, or on every gateway (`+`)."""
    return f"{PREFIX}/{VERSION}/{gw_id(gw) if gw else '+'}/{kind.value}"


def parse(name: str) -> GatewayTopic | None:
    """Parse a drgw/v1 topic; None for anything else (other versions, foreign topics)."""
    parts = name.split("/")
    if len(parts) not in (4, 5) or parts[0] != PREFIX or parts[1] != VERSION:
        return None
    if not _ADDRESS.match(parts[2]):
        return None
    try:
        kind = Kind(parts[3])
    except ValueError:
        return None
    if kind is Kind.STATE:
        if len(parts) != 5 or not _DEVICE.match(parts[4]):
            return None
        return GatewayTopic(parts[2], kind, parts[4])
    if len(parts) != 4:
        return None
    return GatewayTopic(parts[2], kind)


def ha_config_topic(node_id: str, object_id: str) -> str:
    """Home Assistant MQTT discovery: <prefix>/sensor/<node_id>/<object_id>/config."""
    return f"{HA_DISCOVERY_PREFIX}/sensor/{node_id}/{object_id}/config"
