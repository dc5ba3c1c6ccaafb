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

VERSION = 1
MAX_BYTES = 16 * 1024
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_NONCE = re.compile(r"^0x[0-9a-fA-F]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
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


# ---- argument shapes: one table, read like a manual page -------------------------------------

def _int(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"an integer in {lo}..{hi}"
    return check


def _choice(*values: str) -> Callable[[Any], str | None]:
    return lambda v: None if v in values else f"one of {', '.join(values)}"


def _name(v: Any) -> str | None:
    return None if isinstance(v, str) and _NAME.match(v) else "a name of [A-Za-z0-9_.-], 1-64 chars"


def _number(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and v == v and abs(v) != float("inf")
    return None if ok else "a finite number or true/false"


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def _text(limit: int) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, str) and len(v) <= limit else f"a string <= {limit} chars"


def _curve(v: Any) -> str | None:
    ok = isinstance(v, list) and 0 < len(v) <= 1440 and all(_number(x) is None for x in v)
    return None if ok else "a list of 1..1440 finite numbers (W per slot)"


def _params(v: Any) -> str | None:
    ok = isinstance(v, dict) and len(v) <= 16 and all(
        isinstance(k, str) and _number(x) is None for k, x in v.items())
    return None if ok else "an object of at most 16 numeric parameters"


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    check: Callable[[Any], str | None]
    required: bool = True


U16 = 65535
COMMANDS: Mapping[str, tuple[Arg, ...]] = {
    "ping": (),
    "status": (),
    "diagnostics": (),
    "read_register": (Arg("device", _name), Arg("table", _choice("holding", "input", "coil",
                      "discrete")), Arg("address", _int(0, U16)), Arg("count", _int(1, 125))),
    "write_point": (Arg("device", _name), Arg("name", _name), Arg("value", _number)),
    "scan": (Arg("bus", _name, False), Arg("unit_from", _int(0, 247), False),
             Arg("unit_to", _int(0, 247), False), Arg("timeout_s", _int(1, 600), False)),
    "resend": (Arg("seq_from", _int(0, 2**63 - 1)), Arg("seq_to", _int(0, 2**63 - 1))),
    "config_get": (),
    "config_set": (Arg("text", _text(12 * 1024)), Arg("dry_run", _bool, False)),
    "restart": (),
    "set_log_level": (Arg("level", _choice("DEBUG", "INFO", "WARNING", "ERROR")),),
    # A DR event run without a market (docs/closed-loop.md): the aggregator's own signed order.
    "dr_event": (Arg("event_id", _name), Arg("modification", _int(0, 2**31 - 1)),
                 Arg("start", _int(0, 2**40)), Arg("end", _int(0, 2**40)),
                 Arg("target_w", _int(0, 10**6)), Arg("direction", _choice("reduce", "increase"), False),
                 Arg("tolerance_bps", _int(0, 10_000), False), Arg("cancelled", _bool, False),
                 Arg("baseline", _choice("contracted", "pre_event", "ten_in_ten", "high_x_of_y",
                                         "recent_days"), False),
                 Arg("baseline_params", _params, False), Arg("curve_w", _curve, False)),
}
MAX_RESEND_SPAN = 100_000


def check_args(cmd: str, args: Any) -> dict[str, Any]:
    """Validate args against COMMANDS[cmd]; returns a plain dict or raises BAD_ARGS."""
    spec = COMMANDS[cmd]
    if not isinstance(args, dict):
        raise CommandRejected(Code.BAD_ARGS, f"{cmd}: args must be a JSON object")
    known = {a.name for a in spec}
    extra = sorted(set(args) - known)
    if extra:
        allowed = ", ".join(sorted(known)) or "none"
        raise CommandRejected(Code.BAD_ARGS, f"{cmd}: unknown arg(s) {extra}; allowed: {allowed}")
    for arg in spec:
        if arg.name not in args:
            if arg.required:
                raise CommandRejected(Code.BAD_ARGS, f"{cmd}: missing arg {arg.name!r}")
            continue
        problem = arg.check(args[arg.name])
        if problem:
            raise CommandRejected(Code.BAD_ARGS, f"{cmd}: arg {arg.name!r} must be {problem}, "
                                  f"got {args[arg.name]!r}"[:300])
    if cmd == "resend" and not 0 <= args["seq_to"] - args["seq_from"] < MAX_RESEND_SPAN:
        raise CommandRejected(Code.BAD_ARGS, f"resend: need seq_from <= seq_to and a span under "
                              f"{MAX_RESEND_SPAN}; split the range")
    if cmd == "scan" and args.get("unit_from", 0) > args.get("unit_to", 247):
        raise CommandRejected(Code.BAD_ARGS, "scan: unit_from must be <= unit_to")
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
    """Bytes -> envelope dict with a valid shape; CommandRejected (id if readable) otherwise."""
    if len(payload) > max_bytes:
        raise CommandRejected(Code.TOO_LARGE, f"command is {len(payload)} bytes; the limit is "
                              f"{max_bytes}: send config in smaller pieces")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CommandRejected(Code.MALFORMED, f"not UTF-8 JSON: {exc}"[:200]) from None
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


def verify(payload: bytes, policy: CommandPolicy, *, now_ms: int) -> Command:
    """Check everything but the nonce (the caller claims it in its replay cache).

    Order: shape, signature, operator, target, time, command, args: an unauthenticated sender
    learns nothing about which commands or args this gateway accepts.
    """
    env = parse(payload, max_bytes=policy.max_bytes)
    cid = env["id"]
    op = _authorised_operator(env, policy)
    _check_expiry(env["exp"], policy, now_ms=now_ms, cid=cid)
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


def _authorised_operator(env: Mapping[str, Any], policy: CommandPolicy) -> str:
    """The envelope's operator (lower case), once its signature, the allow-list and the target
    gateway agree; CommandRejected (FORGED, UNKNOWN_OPERATOR, WRONG_TARGET) otherwise."""
    cid = env["id"]
    try:
        signer = signer_of(env)
    except ValueError as exc:
        raise CommandRejected(Code.FORGED, f"bad signature: {exc}", id=cid) from None
    op: str = env["op"].lower()
    if signer != op:
        raise CommandRejected(Code.FORGED, f"signature is by {signer}, not by op {op}: the "
                              "command was altered or signed with another key", id=cid)
    if op not in policy.operators:
        raise CommandRejected(Code.UNKNOWN_OPERATOR, f"operator {op} is not on this gateway's "
                              "allow-list ([commands] operators in its config)", id=cid)
    if env["gw"].lower() != policy.gw.lower():
        raise CommandRejected(Code.WRONG_TARGET, f"command is for gateway {env['gw'].lower()}, "
                              f"this is {policy.gw.lower()}", id=cid)
    return op


def _check_expiry(exp: int, policy: CommandPolicy, *, now_ms: int, cid: str) -> None:
    """An expiry in the past (beyond the allowed clock skew) or too far ahead is refused."""
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
