"""The gateway's own figures for Home Assistant: the DR event now (state, award, delivered, required,
projected, verdict) and the household's market earnings, as plain values on `state/_gateway`.

The DR figures come from the loop's event bodies as they pass the event publisher (the `event`
topic's schema, docs/mqtt.md); the earnings from the bidder's status (`Bidder.status`: the bid
journal's totals in milli-tokens), read by `MarketFeed` once per session and then every
`interval_s`. Both land in the same LatestValues map as the meters' points, so the gateway's state
message always carries every figure (null until known) and no template in Home Assistant warns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from gateway.network.latest import Value
from gateway.network.link import Connection

# The device level of the gateway's state topic, drgw/v1/<gw>/state/_gateway. A configured device
# may not use it (a leading "_" marks names the gateway keeps for itself).
GATEWAY_STATE = "_gateway"
DR_STATES = ("idle", "pending", "near", "active", "completed", "cancelled")  # docs/mqtt.md, dr_state
VERDICTS = ("performed", "short")
_EVENT_FIGURES = ("dr_delivered_wh", "dr_required_wh", "dr_projected_wh", "dr_verdict")


def dr_initial() -> dict[str, Value]:
    """Before any event: idle, and every figure unknown (null: HA shows "unknown", no warning)."""
    return {"dr_state": "idle", "dr_event": None, "dr_award_w": None,
            **dict.fromkeys(_EVENT_FIGURES)}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def dr_values(body: Mapping[str, Any]) -> dict[str, Value]:
    """The gateway figures one `event` body changes (empty for bodies that change none)."""
    kind = body.get("type")
    if kind == "dr_event":
        out: dict[str, Value] = {"dr_event": str(body.get("event_id")),
                                 "dr_award_w": _number(body.get("award_w"))}
        if isinstance(body.get("state"), str):
            out["dr_state"] = body["state"]
        if body.get("change") == "added":  # a new event: the last one's figures no longer apply
            out.update(dict.fromkeys(_EVENT_FIGURES))
        return out
    if kind == "dr_state" and isinstance(body.get("to"), str):
        return {"dr_state": body["to"], "dr_event": str(body.get("event_id"))}
    if kind == "dr_live":
        return {"dr_delivered_wh": _number(body.get("delivered_wh")),
                "dr_required_wh": _number(body.get("required_wh")),
                "dr_projected_wh": _number(body.get("projected_wh"))}
    if kind == "dr_verdict" and isinstance(body.get("performed"), bool):
        delivered = _number(body.get("delivered_wh"))
        return {"dr_delivered_wh": delivered, "dr_required_wh": _number(body.get("required_wh")),
                "dr_projected_wh": delivered,
                "dr_verdict": "performed" if body["performed"] else "short"}
    return {}


def market_values(status: Mapping[str, Any]) -> dict[str, Value]:
    """Earnings from the bidder's status (milli-tokens -> tokens): paid in total, net of forfeited
    deposits, and deposits held now."""
    def tokens(key: str) -> float | None:
        value = _number(status.get(key))
        return None if value is None else value / 1000

    return {"earned_tokens": tokens("paid_mtok"), "net_earned_tokens": tokens("net_mtok"),
            "deposit_held_tokens": tokens("held_deposit_mtok")}


class MarketFeed:
    """A SessionWorker: hands the market figures to `publish_state` (EventPublisher.publish_state)
    at the start of each session and then every `interval_s`; it publishes nothing itself."""

    def __init__(self, *, status: Callable[[], Mapping[str, Any]],
                 publish_state: Callable[[str, Mapping[str, Value]], None],
                 interval_s: float = 30.0) -> None:
        self.status = status
        self.publish_state = publish_state
        self.interval_s = interval_s

    async def run_session(self, conn: Connection) -> None:
        while True:
            self.publish_state(GATEWAY_STATE, market_values(self.status()))
            await asyncio.sleep(self.interval_s)


__all__ = ["DR_STATES", "GATEWAY_STATE", "MarketFeed", "dr_initial", "dr_values", "market_values"]
