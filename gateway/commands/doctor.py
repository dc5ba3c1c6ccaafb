"""`drgw doctor [CONFIG]`: checks an installation end to end and says, for each problem, the fix.

One line per check, OK / WARN / FAIL; a failed check is followed by its fix. The checks themselves
live in gateway.ops.doctor; this module parses the command line and prints them. Exit status 0 when
nothing FAILed, 1 otherwise; `--json` prints one object instead. The result is kept beside the
store (gateway/ops/doctor/record.py) for the installer's view of the local page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gateway.ops.doctor import SERVICE_USER, Check, Level, diagnose

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("doctor", help="check config, key, ports, devices, broker, chain, clock, "
                                           "disk and store; print the fix for each problem")
    parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG,
                        help=f"the gateway config (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds per network check (default 3)")
    parser.add_argument("--user", default=SERVICE_USER,
                        help=f"the user the service runs as (default {SERVICE_USER})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks = diagnose(args.config, timeout=args.timeout, service_user=args.user)
    failed = any(c.level is Level.FAIL for c in checks)
    _record(args.config, checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_json() for c in checks]}))
    else:
        _print(checks)
    return 1 if failed else 0


def _record(path: Path, checks: list[Check]) -> None:
    """Keep the result beside the store for the local page's installer view (best effort)."""
    from gateway.clock import wall_ms
    from gateway.config.gateway import load_config
    from gateway.errors import DrgwError
    from gateway.ops.doctor import record

    try:
        store = load_config(path).store.path
    except DrgwError:
        return  # no config to find the store by: the failed check says so
    record.save(store, checks, time_ms=wall_ms())


def _print(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{c.level!s:<5} {c.name:<{width}}  {c.detail}")
        if c.fix:
            print(f"{'':<5} {'':<{width}}  fix: {c.fix}")
