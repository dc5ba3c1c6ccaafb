"""Live stream checker (pure): verifies each measurement's signature against the gateway of its
topic, seq continuity and the prev-hash chain, and reports gaps, duplicates and forgeries.

A duplicate is the same seq with the same struct hash (a QoS 1 redelivery: harmless). The same seq
with a different struct hash, a signature by anyone but the topic's gateway, or a prev hash that
does not match the previous record is a forgery.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.errors import RemoteError
from gateway.measurement.eip712 import Domain
from gateway.measurement.record import Measurement, SignedMeasurement, recover_signer, struct_hash
from gateway.measurement.wire import decode_batch


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # gap | late | duplicate | forgery | malformed
    gw: str
    seq_from: int | None
    seq_to: int | None
    detail: str

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "gw": self.gw, "seq_from": self.seq_from,
                "seq_to": self.seq_to, "detail": self.detail}


@dataclass
class GatewayStream:
    next_seq: int | None = None
    leaves: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    received: int = 0
    valid: int = 0
    missing: set[int] = field(default_factory=set)


class StreamChecker:
    """Feed it meas payloads with their topic gateway; it returns findings as it goes."""

    def __init__(self, domain: Domain, *, remember: int = 200_000) -> None:
        self.domain = domain
        self.remember = remember
        self.streams: dict[str, GatewayStream] = {}
        self.findings: list[Finding] = []
        self._prev_of: dict[tuple[str, int], bytes] = {}  # (gw, seq) -> its prev hash

    def feed(self, gw: str, payload: bytes) -> list[Finding]:
        gw = gw.lower()
        stream = self.streams.setdefault(gw, GatewayStream())
        out: list[Finding] = []
        try:
            batch = decode_batch(payload)
        except (RemoteError, ValueError) as exc:
            out.append(Finding("malformed", gw, None, None, str(exc)[:300]))
            batch = []
        for sm in batch:
            out.extend(self._one(gw, stream, sm))
        self.findings.extend(out)
        return out

    def _one(self, gw: str, stream: GatewayStream, sm: SignedMeasurement) -> list[Finding]:
        m = sm.measurement
        seq = m.seq
        stream.received += 1
        problem = signature_problem(gw, sm, self.domain)
        if problem is not None:
            return [Finding("forgery", gw, seq, seq, problem)]
        leaf = struct_hash(m)
        seen = stream.leaves.get(seq)
        if seen is not None:
            if seen == leaf:
                return [Finding("duplicate", gw, seq, seq, "redelivery of identical record")]
            return [Finding("forgery", gw, seq, seq, f"seq {seq} seen before with other content")]
        found = self._chain_breaks(gw, stream, m, leaf) + _continuity(gw, stream, seq)
        self._remember(gw, stream, m, leaf)
        return found

    def _chain_breaks(self, gw: str, stream: GatewayStream, m: Measurement,
                      leaf: bytes) -> list[Finding]:
        """Forgeries a new record shows against the neighbours already seen: its prev hash against
        the struct hash of seq - 1, and the prev hash of seq + 1 against its own struct hash."""
        seq = m.seq
        found: list[Finding] = []
        prev = stream.leaves.get(seq - 1)
        if prev is not None and m.prev_hash != prev:
            found.append(Finding("forgery", gw, seq, seq, f"prev hash of seq {seq} does not match "
                                 f"the struct hash of seq {seq - 1}: the chain is broken"))
        nxt = stream.leaves.get(seq + 1)
        if nxt is not None and self._prev_of.get((gw, seq + 1)) not in (None, leaf):
            found.append(Finding("forgery", gw, seq, seq + 1, f"seq {seq + 1} does not chain to "
                                 f"seq {seq}"))
        return found

    def _remember(self, gw: str, stream: GatewayStream, m: Measurement, leaf: bytes) -> None:
        """Keep a valid record's struct hash and prev hash, the newest `remember` per gateway."""
        stream.leaves[m.seq] = leaf
        self._prev_of[(gw, m.seq)] = m.prev_hash
        stream.valid += 1
        while len(stream.leaves) > self.remember:
            old, _ = stream.leaves.popitem(last=False)
            self._prev_of.pop((gw, old), None)

    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for gw, s in self.streams.items():
            kinds = [f.kind for f in self.findings if f.gw == gw]
            out[gw] = {"received": s.received, "valid": s.valid, "missing": len(s.missing),
                       "duplicates": kinds.count("duplicate"), "forgeries": kinds.count("forgery"),
                       "malformed": kinds.count("malformed"),
                       "last_seq": (s.next_seq - 1) if s.next_seq is not None else -1}
        return out


def signature_problem(gw: str, sm: SignedMeasurement, domain: Domain) -> str | None:
    """Why a record is not the topic gateway's own (None when it is): a malformed signature, a
    signer other than `gw` (lower case), or a record that names another gateway. The master's
    ingest (gateway/master/verify.py) judges records with the same function."""
    m = sm.measurement
    try:
        signer = recover_signer(sm, domain).lower()
    except ValueError as exc:
        return f"bad signature: {exc}"
    if signer != gw or m.gateway.lower() != gw:
        return (f"seq {m.seq} signed by {signer}, record names {m.gateway.lower()}, topic "
                f"gateway is {gw}")
    return None


def _continuity(gw: str, stream: GatewayStream, seq: int) -> list[Finding]:
    """A gap before a new record's seq, or a late record filling one; moves the expected seq on."""
    found: list[Finding] = []
    if stream.next_seq is not None and seq > stream.next_seq:
        stream.missing.update(range(stream.next_seq, seq))
        found.append(Finding("gap", gw, stream.next_seq, seq - 1,
                             f"{seq - stream.next_seq} record(s) missing"))
    elif stream.next_seq is not None and seq < stream.next_seq:
        stream.missing.discard(seq)
        found.append(Finding("late", gw, seq, seq, "fills an earlier gap (resend)"))
    stream.next_seq = max(stream.next_seq or 0, seq + 1)
    return found
