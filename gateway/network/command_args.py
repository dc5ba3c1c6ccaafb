"""The fleet commands' arguments: one table, read like a manual page, and the check of args against it.

Pure. Used by gateway/network/command.py after the envelope's signature is verified (so a sender
without a key learns nothing about what the gateway accepts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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


def args_problem(cmd: str, args: Any) -> str | None:
    """What is wrong with `args` for COMMANDS[cmd], in words for the reply; None when they fit."""
    spec = COMMANDS[cmd]
    if not isinstance(args, dict):
        return f"{cmd}: args must be a JSON object"
    known = {a.name for a in spec}
    extra = sorted(set(args) - known)
    if extra:
        allowed = ", ".join(sorted(known)) or "none"
        return f"{cmd}: unknown arg(s) {extra}; allowed: {allowed}"
    for arg in spec:
        if arg.name not in args:
            if arg.required:
                return f"{cmd}: missing arg {arg.name!r}"
            continue
        problem = arg.check(args[arg.name])
        if problem:
            return f"{cmd}: arg {arg.name!r} must be {problem}, got {args[arg.name]!r}"[:300]
    if cmd == "resend" and not 0 <= args["seq_to"] - args["seq_from"] < MAX_RESEND_SPAN:
        return (f"resend: need seq_from <= seq_to and a span under {MAX_RESEND_SPAN}; "
                "split the range")
    if cmd == "scan" and args.get("unit_from", 0) > args.get("unit_to", 247):
        return "scan: unit_from must be <= unit_to"
    return None
