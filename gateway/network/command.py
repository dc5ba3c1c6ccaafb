"""Fleet command envelopes: canonical bytes, EIP-191 signing, and verification (pure; time is an
argument, the replay cache is the caller's).

Envelope (docs/mqtt.md): {"v":1,"id":..,"gw":..,"cmd":..,"args":{..},"nonce":..,"exp":..,"op":..,
"sig":..}. The operator signs the canonical JSON of the envelope without "sig" (keys sorted, no
whitespace, UTF-8) as an EIP-191 personal message ("\\x19Ethereum Signed Message:\\n" + length +
bytes). Why personal_sign and not EIP-712: every wallet, hardware key and `cast wallet sign` can
produce it and shows the operator the readable command it signs; the args differ per command, which
EIP-712 would force into one fixed struct. Cross-gateway and cross-protocol replay are prevented by
the signed "gw" and "v" fields, same-gateway replay by nonce + expiry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.measurement.eip712 import keccak256
from gateway.measurement.identity import recover_address
from gateway.network.command_args import COMMANDS, args_problem

VERSION = 1
MAX_BYTES = 16 * 1024
# How much of a payload we read to find the id of one we refuse (too large, or not JSON): the most
# the broker hands us (gateway.network.link.RECEIVE_MAX_BYTES); in MQTT 3.1.1 fallback, larger
# payloads still get their id read from this prefix only, so the cost per message stays bounded.
PEEK_BYTES = 4 * MAX_BYTES
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_NONCE = re.compile(r"^0x[0-9a-fA-F]{1,64}$")
ENVELOPE_KEYS = frozenset({"v", "id", "gw", "cmd", "args", "nonce", "exp", "op", "sig"})


class Code:
    """Error codes of a rejected or failed command (the reply's error.code)."""

    MALFORMED = "malformed"
    TOO_LARGE = "too_large"
    FORGED = "forged"
    UNKNOWN_OPERATOR = "unknown_operator"
    WRONG_TARGET = "wrong_target"
    EXPIRED = "expired"
    LIFETIME = "lifetime_too_long"
    REPLAYED = "replayed"
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    FAILED = "failed"
    TIMEOUT = "timeout"
    BUSY = "busy"
    INTERNAL = "internal"


class CommandRejected(Exception):
    """A command we refuse or that failed: `code` (see Code), a message naming the field and the
    fix, and the correlation id when one could be read (None otherwise)."""

    def __init__(self, code: str, message: str, *, id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id


@dataclass(frozen=True, slots=True)
class Command:
    """A verified command, ready to execute (still subject to the nonce claim)."""

    id: str
    gw: str
    cmd: str
    args: Mapping[str, Any]
    nonce: str
    exp_ms: int
    op: str


@dataclass(frozen=True, slots=True)
class CommandPolicy:
    """What a gateway accepts. Addresses are compared case-insensitively."""

    gw: str
    operators: frozenset[str]
    skew_ms: int = 30_000
    max_lifetime_ms: int = 15 * 60_000
    max_bytes: int = MAX_BYTES

    @classmethod
    def build(cls, *, gw: str, operators: Any, **kw: int) -> CommandPolicy:
        return cls(gw=gw.lower(), operators=frozenset(o.lower() for o in operators), **kw)


def check_args(cmd: str, args: Any) -> dict[str, Any]:
    """Validate args against COMMANDS[cmd] (gateway/network/command_args.py); returns a plain dict
    or raises BAD_ARGS."""
    problem = args_problem(cmd, args)
    if problem is not None:
        raise CommandRejected(Code.BAD_ARGS, problem)
    return dict(args)


# ---- canonical bytes and signatures -----------------------------------------------------------

def canonical(envelope: Mapping[str, Any]) -> bytes:
    """The signed bytes: the envelope without "sig", keys sorted, no whitespace, UTF-8."""
    body = {k: v for k, v in envelope.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def personal_digest(message: bytes) -> bytes:
    """EIP-191 version 0x45 ("personal_sign") digest of `message`."""
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def sign(envelope: Mapping[str, Any], sign_digest: Callable[[bytes], bytes]) -> dict[str, Any]:
    """Return the envelope with "sig" set; `sign_digest` is GatewayKey.sign_digest (r||s||v)."""
    body = {k: v for k, v in envelope.items() if k != "sig"}
    return {**body, "sig": "0x" + sign_digest(personal_digest(canonical(body))).hex()}


def signer_of(envelope: Mapping[str, Any]) -> str:
    """The lower-case address whose key signed the envelope; ValueError if the sig is garbage."""
    sig = envelope.get("sig")
    if not isinstance(sig, str) or not re.fullmatch(r"0x[0-9a-fA-F]{130}", sig):
        raise ValueError('"sig" must be 0x followed by 130 hex digits (65 bytes r||s||v)')
    return recover_address(personal_digest(canonical(envelope)), bytes.fromhex(sig[2:])).lower()


def nonce_key(nonce: Any) -> str:
    """Normalise a nonce (int >= 0 below 2**256, or 0x-hex) to one canonical string."""
    if isinstance(nonce, int) and not isinstance(nonce, bool) and 0 <= nonce < 2**256:
        return hex(nonce)
    if isinstance(nonce, str) and _HEX_NONCE.match(nonce):
        return hex(int(nonce, 16))
    raise ValueError('"nonce" must be an integer >= 0 or 0x-hex up to 32 bytes')


# ---- verification -----------------------------------------------------------------------------

def parse(payload: bytes, *, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Bytes -> envelope dict with a valid shape; CommandRejected (id if readable) otherwise.

    The size is checked first, so an oversized payload is never parsed whole: only its id is read,
    from the first PEEK_BYTES (peek_id).
    """
    if len(payload) > max_bytes:
        raise CommandRejected(Code.TOO_LARGE, f"command is {len(payload)} bytes; the limit is "
                              f"{max_bytes}: send config in smaller pieces", id=peek_id(payload))
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandRejected(Code.MALFORMED, f"not UTF-8 JSON: {exc}"[:200],
                              id=peek_id(payload)) from None
    if not isinstance(obj, dict):
        raise CommandRejected(Code.MALFORMED, "a command is a JSON object")
    raw_id = obj.get("id")
    if not (isinstance(raw_id, str) and _ID.match(raw_id)):
        raise CommandRejected(Code.MALFORMED, '"id" must be a string of [A-Za-z0-9_.:-], 1-64 chars')
    problem = _envelope_problem(obj)
    if problem:
        raise CommandRejected(Code.MALFORMED, problem, id=raw_id)
    return obj


def _envelope_problem(obj: dict[str, Any]) -> str | None:
    """What is wrong with an envelope's fields besides "id" (the first problem found), or None."""
    unknown = sorted(set(obj) - ENVELOPE_KEYS)
    if unknown:
        return f"unknown envelope field(s) {unknown}"
    if obj.get("v") != VERSION:
        return f'"v" must be {VERSION} (this gateway speaks drgw command envelope v{VERSION})'
    for key in ("gw", "op"):
        if not isinstance(obj.get(key), str) or not _ADDRESS.match(obj[key]):
            return f'"{key}" must be an address: 0x and 40 hex digits'
    if not isinstance(obj.get("cmd"), str) or not obj["cmd"]:
        return '"cmd" must be a command name'
    if "args" in obj and not isinstance(obj["args"], dict):
        return '"args" must be a JSON object'
    exp = obj.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool) or exp < 0:
        return '"exp" must be the expiry as unix time in milliseconds (integer)'
    try:
        nonce_key(obj.get("nonce"))
    except ValueError as exc:
        return str(exc)
    if not isinstance(obj.get("sig"), str):
        return '"sig" is missing: sign the command with the operator key'
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_WS = re.compile(r"[ \t\n\r]*")  # JSON whitespace (RFC 8259 section 2)


def _skip_ws(text: str, at: int) -> int:
    found = _WS.match(text, at)
    return found.end() if found else at


def peek_id(payload: bytes, *, limit: int = PEEK_BYTES) -> str | None:
    """The top-level "id" of a payload we refuse, read from its first `limit` bytes, or None.

    Walks the members of the outer object in order and stops at "id": members before it are decoded
    one by one (bounded by `limit`), and whatever follows it (a truncated tail, NaN, a byte that is
    not UTF-8) does not matter. A nested "id" (inside "args") is never taken for the envelope's.
    """
    text = payload[:limit].decode("utf-8", errors="replace")
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    at, opener = _skip_ws(text, 0), "{"
    try:
        while text[at:at + 1] == opener:
            opener, at = ",", _skip_ws(text, at + 1)
            if text[at:at + 1] != '"':
                return None
            key, at = decoder.raw_decode(text, at)
            at = _skip_ws(text, at)
            if text[at:at + 1] != ":":
                return None
            value, at = decoder.raw_decode(text, _skip_ws(text, at + 1))
            if key == "id":
                return value if isinstance(value, str) and _ID.match(value) else None
            at = _skip_ws(text, at)
    except (ValueError, RecursionError):
        return None
    return None


def verify(payload: bytes, policy: CommandPolicy, *, now_ms: int) -> Command:
    """Check everything but the nonce (the caller claims it in its replay cache).

    Order: size, JSON, envelope shape; then the claims that cost nothing to check (target gateway,
    operator on the allow-list, expiry window); then the one signature recovery; then command and
    args. So junk costs at most one bounded parse, a forgery at most one recovery, and an
    unauthenticated sender learns nothing about which commands or args this gateway accepts.
    """
    env = parse(payload, max_bytes=policy.max_bytes)
    cid = env["id"]
    op = _allowed_operator(env, policy)
    check_expiry(env["exp"], policy, now_ms=now_ms, cid=cid)
    _check_signature(env, op)
    cmd = env["cmd"]
    if cmd not in COMMANDS:
        raise CommandRejected(Code.UNKNOWN_COMMAND, f"unknown command {cmd[:64]!r}; known: "
                              f"{', '.join(sorted(COMMANDS))}", id=cid)
    try:
        args = check_args(cmd, env.get("args", {}))
    except CommandRejected as exc:
        exc.id = cid
        raise
    return Command(id=cid, gw=env["gw"].lower(), cmd=cmd, args=args,
                   nonce=nonce_key(env["nonce"]), exp_ms=env["exp"], op=op)


def _allowed_operator(env: Mapping[str, Any], policy: CommandPolicy) -> str:
    """The envelope's claimed operator (lower case) if the command is for this gateway and the
    operator is on the allow-list; CommandRejected (WRONG_TARGET, UNKNOWN_OPERATOR) otherwise.
    Not yet authenticated: _check_signature proves the claim."""
    cid = env["id"]
    if env["gw"].lower() != policy.gw.lower():
        raise CommandRejected(Code.WRONG_TARGET, f"command is for gateway {env['gw'].lower()}, "
                              f"this is {policy.gw.lower()}", id=cid)
    op: str = env["op"].lower()
    if op not in policy.operators:
        raise CommandRejected(Code.UNKNOWN_OPERATOR, f"operator {op} is not on this gateway's "
                              "allow-list ([operators] allow in its config)", id=cid)
    return op


def _check_signature(env: Mapping[str, Any], op: str) -> None:
    """The signature must recover `op`; CommandRejected (FORGED) otherwise."""
    cid = env["id"]
    try:
        signer = signer_of(env)
    except ValueError as exc:
        raise CommandRejected(Code.FORGED, f"bad signature: {exc}", id=cid) from None
    if signer != op:
        raise CommandRejected(Code.FORGED, f"signature is by {signer}, not by op {op}: the "
                              "command was altered or signed with another key", id=cid)


def check_expiry(exp: int, policy: CommandPolicy, *, now_ms: int, cid: str) -> None:
    """An expiry in the past (beyond the allowed clock skew) or too far ahead is refused.

    `now_ms` is the gateway's wall clock (`exp` is the operator's wall time). Bounding exp - now
    to [-skew, max_lifetime + skew] bounds how long a used nonce must be remembered (nonces.py).
    """
    if exp < now_ms - policy.skew_ms:
        raise CommandRejected(Code.EXPIRED, f"command expired at {exp} ms; gateway time is "
                              f"{now_ms} ms: sign a new one (check the operator's clock)", id=cid)
    if exp > now_ms + policy.max_lifetime_ms + policy.skew_ms:
        raise CommandRejected(Code.LIFETIME, f"expiry {exp} is more than "
                              f"{policy.max_lifetime_ms // 1000} s ahead of gateway time "
                              f"{now_ms}: use a shorter expiry", id=cid)


def make(*, gw: str, cmd: str, args: Mapping[str, Any], op: str, id: str, nonce: int | str,
         exp_ms: int) -> dict[str, Any]:
    """An unsigned envelope (pass it to sign())."""
    return {"v": VERSION, "id": id, "gw": gw.lower(), "cmd": cmd, "args": dict(args),
            "nonce": nonce, "exp": exp_ms, "op": op.lower()}


def reply(*, id: str | None, gw: str, result: Any = None,
          error: CommandRejected | None = None) -> dict[str, Any]:
    """The reply body: {v, id, gw, ok, result} or {v, id, gw, ok:false, error:{code, message}}."""
    body: dict[str, Any] = {"v": VERSION, "id": id, "gw": gw.lower()}
    if error is None:
        body.update(ok=True, result=result)
    else:
        body.update(ok=False, error={"code": error.code, "message": error.message})
    return body
