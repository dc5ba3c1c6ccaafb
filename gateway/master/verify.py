"""What the master keeps of one meas payload (pure): the records its gateway signed, and the rest
with the reason they are kept apart.

A record is accepted here when it parses (gateway/measurement/wire.py recomputes its struct hash),
is signed by the gateway of its topic (the same `signature_problem` that `drgw fleet watch` uses)
and, inside its batch, chains to the record before it. What one payload cannot show (a seq already
stored with other content, a prev hash against a record another worker stored) is judged by the
ledger against the database, because with shared subscriptions the neighbours of a batch may have
gone to another worker (gateway/master/ledger.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from gateway.errors import RemoteError
from gateway.master.watch import signature_problem
from gateway.measurement.eip712 import Domain
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.wire import decode_batch, to_wire

MAX_QUARANTINED_BYTES = 64 * 1024  # of a malformed payload kept as evidence


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A record signed by its gateway, as the ledger stores it (wire = the evidence, re-checkable)."""

    seq: int
    leaf: bytes
    prev: bytes
    time_ms: int
    synced: bool
    device: str
    wire: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A record (or a whole payload, seq None) that is not stored as valid, and why."""

    seq: int | None
    reason: str
    raw: bytes


@dataclass(slots=True)
class BatchCheck:
    """One payload's verdict: its gateway (topic form), accepted records in seq order, rejections."""

    gw: str
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def check_batch(gw: str, payload: bytes, domain: Domain, *,
                roster: Collection[str] = ()) -> BatchCheck:
    """Verify one meas payload of gateway `gw` (lower case, from the topic). `roster`, when not
    empty, is the set of gateways the operator runs; a payload from any other is refused whole."""
    out = BatchCheck(gw)
    if roster and gw not in roster:
        out.rejected.append(Rejected(seq=None, raw=payload[:MAX_QUARANTINED_BYTES],
                                     reason=f"gateway {gw} is not in the master's [fleet] gateways"))
        return out
    try:
        batch = decode_batch(payload)
    except (RemoteError, ValueError) as exc:
        out.rejected.append(Rejected(seq=None, reason=f"malformed batch: {str(exc)[:300]}",
                                     raw=payload[:MAX_QUARANTINED_BYTES]))
        return out
    previous: Accepted | None = None
    for sm in sorted(batch, key=lambda s: s.measurement.seq):
        problem = signature_problem(gw, sm, domain) or _link_problem(previous, sm)
        if problem is not None:
            out.rejected.append(Rejected(seq=sm.measurement.seq, reason=problem, raw=to_wire(sm)))
            continue
        previous = _accepted(sm)
        out.accepted.append(previous)
    return out


def _link_problem(previous: Accepted | None, sm: SignedMeasurement) -> str | None:
    """A record that does not chain to the accepted record just before it in the same batch."""
    m = sm.measurement
    if previous is None or previous.seq != m.seq - 1 or m.prev_hash == previous.leaf:
        return None
    return (f"prev hash of seq {m.seq} does not match the struct hash of seq {m.seq - 1}: "
            "the chain is broken")


def _accepted(sm: SignedMeasurement) -> Accepted:
    m = sm.measurement
    return Accepted(seq=m.seq, leaf=sm.leaf, prev=m.prev_hash, time_ms=m.time_ms,
                    synced=m.clock_synced, device=m.device, wire=to_wire(sm))
