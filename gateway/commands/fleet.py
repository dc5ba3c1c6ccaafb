"""`drgw fleet list|watch|cmd`: the aggregator's view of gateways over MQTT."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.clock import wall_ms
from gateway.errors import ConfigError
from gateway.master.operations import fleet_cmd, fleet_list, fleet_watch
from gateway.master.watch import Finding
from gateway.measurement.record import measurement_domain
from gateway.network import command as core
from gateway.network.command_args import COMMANDS


def _tls_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True,
                        help="mqtt://host:port or mqtts://host:port (a login: mqtt://user:pass@host)")
    parser.add_argument("--ca", type=Path, help="CA file to verify an mqtts:// broker")
    parser.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--key", type=Path, help="client key (mutual TLS)")
    parser.add_argument("--username", metavar="USER", help="MQTT user name")
    parser.add_argument("--password-file", type=Path, metavar="FILE",
                        help="file holding the MQTT password (one line, mode 0600)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _tls(args: argparse.Namespace) -> dict[str, Any]:
    """The broker options for gateway.master.mqtt.connect: TLS files and the login."""
    from gateway.measurement.keyfile import read_password_file

    password = None if args.password_file is None else read_password_file(args.password_file)
    return {"ca": args.ca, "cert": args.cert, "key": args.key, "username": args.username,
            "password": password}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fleet = sub.add_parser("fleet", help="list, watch and command gateways over MQTT")
    actions = fleet.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)

    p = actions.add_parser("list", help="gateways from their retained status topics")
    _tls_args(p)
    p.add_argument("--wait", type=float, default=2.0, metavar="S",
                   help="seconds to collect status/health messages (default 2)")
    p.set_defaults(func=run_list)

    p = actions.add_parser("watch", help="verify the live measurement stream")
    _tls_args(p)
    p.add_argument("--gateway", metavar="GW", help="only this gateway (address)")
    p.add_argument("--seconds", type=float, default=10.0, metavar="S")
    p.add_argument("--chain-id", type=int, default=None,
                   help="EIP-712 chain id of the measurement domain (default: drgw's)")
    p.set_defaults(func=run_watch)

    p = actions.add_parser("cmd", help="sign a command, send it, wait for the reply")
    p.add_argument("gw", metavar="GW", help="target gateway address")
    p.add_argument("cmd", metavar="CMD", choices=sorted(COMMANDS))
    p.add_argument("--arg", action="append", default=[], metavar="K=V",
                   help="command argument; V is parsed as JSON when it is JSON (5, true, \"x\")")
    p.add_argument("--operator-key", type=Path, required=True, metavar="FILE",
                   help="operator key file or keystore (password in $DRGW_KEY_PASSWORD)")
    p.add_argument("--timeout", type=float, default=15.0, metavar="S")
    _tls_args(p)
    p.set_defaults(func=run_cmd)


def run_list(args: argparse.Namespace) -> int:
    rows = asyncio.run(fleet_list(args.broker, wait_s=args.wait, tls=_tls(args)))
    if args.json:
        print(json.dumps([r.as_json() for r in rows], indent=2))
        return 0
    now = wall_ms()
    print(f"{'GATEWAY':44} {'STATE':8} {'VERSION':10} {'CONFIG':12} {'LAST SEEN':>10} BACKLOG")
    for r in rows:
        state = {True: "online", False: "offline", None: "?"}[r.online]
        seen = f"{(now - r.last_seen_ms) / 1000:.0f}s ago" if r.last_seen_ms else "-"
        backlog = "-" if r.backlog_rows is None else str(r.backlog_rows)
        print(f"{r.gw:44} {state:8} {r.version[:10]:10} {r.config_hash[:12]:12} {seen:>10} "
              f"{backlog}")
    if not rows:
        print("no gateways seen: check --broker, or wait longer (--wait)", file=sys.stderr)
    return 0


def run_watch(args: argparse.Namespace) -> int:
    domain = measurement_domain() if args.chain_id is None else measurement_domain(args.chain_id)

    def report(f: Finding) -> None:
        if args.json:
            print(json.dumps(f.as_json()), flush=True)
        elif f.kind != "duplicate":
            span = f.seq_from if f.seq_from == f.seq_to else f"{f.seq_from}..{f.seq_to}"
            print(f"{f.kind.upper():9} {f.gw} seq {span}: {f.detail}", flush=True)

    checker = asyncio.run(fleet_watch(args.broker, seconds=args.seconds, gateway=args.gateway,
                                      domain=domain, tls=_tls(args), report=report))
    summary = checker.summary()
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        for gw, s in sorted(summary.items()):
            print(f"{gw}: {s['valid']} valid, last seq {s['last_seq']}, {s['missing']} missing, "
                  f"{s['duplicates']} duplicate(s), {s['forgeries']} forgery(ies), "
                  f"{s['malformed']} malformed")
    bad = any(s["forgeries"] or s["missing"] or s["malformed"] for s in summary.values())
    return 1 if bad else 0


def parse_args_kv(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arg {pair!r}: write KEY=VALUE, e.g. --arg level=INFO")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_cmd(args: argparse.Namespace) -> int:
    from gateway.measurement.keyfile import load_key

    key = load_key(args.operator_key, os.environ.get("DRGW_KEY_PASSWORD"))
    cmd_args = parse_args_kv(args.arg)
    try:
        core.check_args(args.cmd, cmd_args)
    except core.CommandRejected as exc:
        raise ConfigError(exc.message) from None
    reply = asyncio.run(fleet_cmd(args.broker, gw=args.gw, cmd=args.cmd, args=cmd_args,
                                  sign_digest=key.sign_digest, operator=key.address,
                                  timeout_s=args.timeout, tls=_tls(args)))
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        print(json.dumps(reply.get("result"), indent=2))
    else:
        err = reply.get("error") or {}
        print(f"drgw: {args.cmd} rejected by {args.gw}: {err.get('code')}: {err.get('message')}",
              file=sys.stderr)
    return 0 if reply.get("ok") else 1
