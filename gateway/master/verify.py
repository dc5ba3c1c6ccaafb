"""What the master keeps of one meas payload (pure): the records its gateway signed, and the rest
with the reason they are kept apart.

A record is accepted here when it parses (gateway/measurement/wire.py recomputes its struct hash),
is signed by the gateway of its topic and, inside its batch, chains to the record before it. What
one payload cannot show (a seq already stored with other content, a prev hash against a record
another worker stored) is judged by the ledger against the database, because with shared
subscriptions the neighbours of a batch may have gone to another worker (gateway/master/ledger.py).

This is the ingest hot path, so it takes three short cuts that change no verdict
(tests/integration/master/test_master_verify.py checks them against eth-account and against
`drgw fleet watch`'s `signature_problem`):
- the nesting guard of wire.py (a regex over the whole payload) is done by splitting on quotes when
  the payload holds no backslash, then the parsed object goes to `decode_batch`; anything else
  (a backslash, too deep, not JSON) goes to `decode_batch` as bytes, which words the error;
- the digest is built from the struct hash `decode_batch` has just recomputed, not hashed again;
- the recovered key is compared as 20 address bytes, not through an EIP-55 checksum string.
The recovery itself is split out (`Parsed` → `recover` → `finish`) so that a worker can run the C
part, which releases the GIL (cffi), on several threads (gateway/master/ingest.py).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import coincurve

from gateway.errors import RemoteError
from gateway.measurement.eip712 import Domain, keccak256, typed_digest
from gateway.measurement.identity import SECP256K1_N
from gateway.measurement.record import SignedMeasurement
from gateway.measurement.wire import decode_batch, to_wire

MAX_QUARANTINED_BYTES = 64 * 1024  # of a malformed payload kept as evidence
_MAX_DEPTH = 8  # as wire.py's guard: our payloads nest 4 deep
_HALF_N = SECP256K1_N // 2  # EIP-2: s above n/2 is refused
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_BRACKET_OR_QUOTE = bytes(b for b in range(256) if b not in b'[]{}"')
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


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


@dataclass(slots=True)
class Parsed:
    """A payload parsed, its records in seq order, each with the digest its signature must cover;
    `signers` is filled by `recover` (20 address bytes, or why the signature is bad)."""

    check: BatchCheck
    records: list[SignedMeasurement] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)
    signers: list[bytes | str] = field(default_factory=list)


def check_batch(gw: str, payload: bytes, domain: Domain, *,
                roster: Collection[str] = ()) -> BatchCheck:
    """Verify one meas payload of gateway `gw` (lower case, from the topic). `roster`, when not
    empty, is the set of gateways the operator runs; a payload from any other is refused whole."""
    parsed = parse(gw, payload, domain, roster=roster)
    recover(parsed)
    return finish(parsed)


def parse(gw: str, payload: bytes, domain: Domain, *, roster: Collection[str] = ()) -> Parsed:
    """Parse and hash (holds the GIL); a payload refused whole has its verdict already."""
    out = Parsed(BatchCheck(gw))
    if roster and gw not in roster:
        out.check.rejected.append(Rejected(
            seq=None, raw=payload[:MAX_QUARANTINED_BYTES],
            reason=f"gateway {gw} is not in the master's [fleet] gateways"))
        return out
    try:
        batch = decode_batch(_parsed_json(payload))
    except (RemoteError, ValueError) as exc:
        out.check.rejected.append(Rejected(seq=None, reason=f"malformed batch: {str(exc)[:300]}",
                                           raw=payload[:MAX_QUARANTINED_BYTES]))
        return out
    out.records = sorted(batch, key=lambda s: s.measurement.seq)
    separator = domain.separator
    out.digests = [typed_digest(separator, sm.leaf) for sm in out.records]
    return out


def _parsed_json(payload: bytes) -> bytes | dict[str, Any]:
    """The payload as a parsed object when that is safe and cheap, else the bytes for decode_batch
    to parse (and word the error). Without a backslash, JSON strings are exactly the runs between
    quote pairs, so the brackets outside them are the nesting the C scanner will recurse on; an
    unpaired quote can only hide brackets the scanner never reaches (an unterminated string)."""
    if b"\\" in payload:
        return payload
    # The payload cut down to its quotes and brackets: when no string holds a bracket, each
    # string is an adjacent quote pair there, and one left-to-right pass removing pairs leaves no
    # quote exactly when every string (quote 2k-1 to quote 2k) is bracket-free; what is left is
    # then the nesting. Otherwise the strings are cut out one by one.
    skeleton = payload.translate(None, _NOT_BRACKET_OR_QUOTE).replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = b"".join(payload.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    if max(accumulate(array("b", skeleton.translate(_BRACKET_STEP))), default=0) > _MAX_DEPTH:
        return payload
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return payload
    return obj if isinstance(obj, dict) else payload


def recover(parsed: Parsed) -> None:
    """Recover each record's signer (libsecp256k1; the C call releases the GIL). The checks are
    those of gateway.measurement.identity.recover_address: v 27/28, 0 < r < n, 0 < s <= n/2."""
    from_signature = coincurve.PublicKey.from_signature_and_message
    signers = parsed.signers = []
    for sm, digest in zip(parsed.records, parsed.digests, strict=True):
        sig = sm.signature
        v = sig[64]
        if v != 27 and v != 28:
            signers.append(f"signature v must be 27 or 28, got {v}")
            continue
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
        if not 0 < r < SECP256K1_N or not 0 < s <= _HALF_N:
            signers.append("signature r or s out of range (high s is rejected, EIP-2)")
            continue
        try:
            public = from_signature(sig[:64] + bytes((v - 27,)), digest, hasher=None)
        except Exception as exc:  # libsecp256k1 reports a failed recovery as a bare Exception
            signers.append(f"signature does not recover a public key: {exc}")
            continue
        signers.append(keccak256(public.format(compressed=False)[1:])[12:])


def finish(parsed: Parsed) -> BatchCheck:
    """The verdict from the recovered signers: each record signed by the topic's gateway and
    naming it, and chained to the accepted record just before it in the batch."""
    out = parsed.check
    gw = out.gw
    own = _address(gw) if parsed.records else b""
    previous: Accepted | None = None
    for sm, signer in zip(parsed.records, parsed.signers, strict=True):
        problem = _signature_problem(gw, own, sm, signer) or _link_problem(previous, sm)
        if problem is not None:
            out.rejected.append(Rejected(seq=sm.measurement.seq, reason=problem, raw=to_wire(sm)))
            continue
        previous = _accepted(sm)
        out.accepted.append(previous)
    return out


def _address(gw: str) -> bytes:
    """The 20 bytes of a topic's gateway; b"" (matching no signer) for anything else."""
    try:
        raw = bytes.fromhex(gw[2:]) if gw[:2] == "0x" else b""
    except ValueError:
        return b""
    return raw if len(raw) == 20 else b""


def _signature_problem(gw: str, own: bytes, sm: SignedMeasurement, signer: bytes | str) -> str | None:
    """The words of gateway.master.watch.signature_problem, from an already recovered signer."""
    if isinstance(signer, str):
        return f"bad signature: {signer}"
    m = sm.measurement
    if signer != own or m.gateway.lower() != gw:
        return (f"seq {m.seq} signed by 0x{signer.hex()}, record names {m.gateway.lower()}, topic "
                f"gateway is {gw}")
    return None


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


def check_run(run: Sequence[tuple[str, bytes]], domain: Domain, *,
              roster: Collection[str] = ()) -> list[BatchCheck]:
    """`check_batch` of each (gw, payload) of a run, in order."""
    return [check_batch(gw, payload, domain, roster=roster) for gw, payload in run]
