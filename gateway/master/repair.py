"""The repair task: every `scan_s`, find and settle gaps in the database, lease the due ones and
send each a `resend` command signed with the operator key; fold in the gateways' signed replies.

The command is the fleet envelope of gateway/network/command.py (EIP-191 by the operator key, a
fresh nonce, 5 minutes to live); the gateway must list the operator in its `[operators] allow`.
A reply counts only when the gateway's own key signed it (a spoofed "queued: 0" would otherwise
close a gap as lost). Without an operator key the master still finds gaps and alerts, but cannot
repair them: it says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from typing import TYPE_CHECKING, Any

from gateway.clock import wall_ms
from gateway.master.gaps import Claim
from gateway.network import command as core
from gateway.network import topics
from gateway.network.payloads import dumps

if TYPE_CHECKING:
    from gateway.master.parts import MasterParts

log = logging.getLogger(__name__)
COMMAND_LIFETIME_MS = 5 * 60_000
BACKLOG_NO_REPAIR = 200  # queued payloads above which a worker sends no resends
ID_PREFIX = "rs-"  # ids of the master's resends: replies to other commands are not ours


async def run_repair(parts: MasterParts, stopped: asyncio.Event) -> None:
    warned = False
    while not stopped.is_set():
        try:
            claims = await parts.in_db(lambda: _scan_and_claim(parts))
        except Exception as exc:  # the database went away: the ingest's watchdog reports it
            log.error("repair: database %s: %s", parts.sql.name, exc)
            claims = []
        if claims and parts.operator is None and not warned:
            log.error("repair: %d gap(s) due but no [operator] key: cannot send resend commands; "
                      "add the operator key to the master's config", len(claims))
            warned = True
        elif claims and parts.operator is not None and parts.client is not None:
            for claim in claims:
                await _resend(parts, claim)
        with_timeout = parts.settings.repair.scan_ms / 1000
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), with_timeout)


def _scan_and_claim(parts: MasterParts) -> list[Claim]:
    """Scan (new gaps, and the links of the records stored since the last scan) and lease. A
    worker with an ingest backlog leases nothing: its missing records are likely still in its own
    queue, and resends would only add to the backlog (a storm)."""
    now = wall_ms()
    alerts = parts.gaps.scan(now_ms=now)
    parts.counters.alerted([a.kind for a in alerts])
    if parts.counters.queued > BACKLOG_NO_REPAIR:
        return []
    return parts.gaps.claim(now_ms=now)


async def _resend(parts: MasterParts, claim: Claim) -> None:
    assert parts.operator is not None and parts.client is not None
    key = parts.operator
    cid = ID_PREFIX + secrets.token_hex(8)
    envelope = core.sign(core.make(
        gw=claim.gw, cmd="resend", args={"seq_from": claim.seq_from, "seq_to": claim.seq_to},
        op=key.address, id=cid, nonce="0x" + secrets.token_hex(16),
        exp_ms=wall_ms() + COMMAND_LIFETIME_MS), key.sign_digest)
    try:
        await parts.client.publish(topics.topic(claim.gw, topics.Kind.CMD), dumps(envelope), qos=1)
    except Exception as exc:  # aiomqtt.MqttError: the session is gone; the lease retries it
        log.warning("repair: resend to %s not sent (%s)", claim.gw, exc)
        return
    await parts.in_db(lambda: parts.gaps.sent(claim, cmd_id=cid, now_ms=wall_ms()))
    parts.counters.resends += 1
    log.info("repair: resend %s seq %d..%d (attempt %d, id %s)", claim.gw, claim.seq_from,
             claim.seq_to, claim.attempts + 1, cid)


async def on_reply(parts: MasterParts, gw: str, payload: bytes) -> None:
    """A reply on drgw/v1/<gw>/reply: ours if its id is a resend's and the gateway signed it."""
    reply = _reply(gw, payload)
    if reply is None:
        return
    cid, queued, error = reply
    matched = await parts.in_db(lambda: parts.gaps.replied(cmd_id=cid, queued=queued, error=error))
    if matched:
        parts.counters.replies += 1
        if error is not None:
            log.warning("repair: %s refused resend %s: %s", gw, cid, error)


def _reply(gw: str, payload: bytes) -> tuple[str, int | None, str | None] | None:
    """(id, queued, error) of a signed resend reply; None for anything else."""
    try:
        body: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(body, dict) or not str(body.get("id", "")).startswith(ID_PREFIX):
        return None
    try:
        if core.signer_of(body) != gw:
            log.warning("repair: a reply on %s's topic is not signed by it: ignored", gw)
            return None
    except ValueError:
        return None
    if body.get("ok") is True:
        result = body.get("result")
        queued = result.get("queued") if isinstance(result, dict) else None
        return str(body["id"]), queued if isinstance(queued, int) else None, None
    err = body.get("error")
    text = f"{err.get('code')}: {err.get('message')}" if isinstance(err, dict) else str(err)
    return str(body["id"]), None, text[:300]
