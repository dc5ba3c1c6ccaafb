"""`drgw master run|status`: the aggregator's master station (docs/master.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    master = sub.add_parser("master", help="the master station: ingest, verify and repair the "
                                           "fleet's measurements into a database")
    actions = master.add_subparsers(dest="master_command", metavar="ACTION", required=True)
    p = actions.add_parser("run", help="run one worker (systemd: drgw-master.service)")
    p.add_argument("config", type=Path, metavar="CONFIG", help="the master's TOML file")
    p.add_argument("--worker", metavar="NAME",
                   help="this worker's name in the database (default: [service] worker, "
                        "else host-pid)")
    p.set_defaults(func=run)
    p = actions.add_parser("status", help="the fleet, gaps and alerts as the database has them")
    p.add_argument("config", type=Path, metavar="CONFIG")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=status)


def run(args: argparse.Namespace) -> int:
    from gateway.master.service import serve
    from gateway.master.settings import load

    return asyncio.run(serve(load(args.config), worker=args.worker))


def status(args: argparse.Namespace) -> int:
    from gateway.master.ledger import summary
    from gateway.master.settings import load
    from gateway.master.sql import Sql

    settings = load(args.config)
    if settings.database_url is not None:
        from gateway.master.db_postgres import open_postgres

        sql: Sql = open_postgres(settings.database_url)
    else:
        from gateway.master.db_sqlite import open_sqlite

        assert settings.sqlite is not None
        sql = open_sqlite(settings.sqlite)
    try:
        data = summary(sql)
    finally:
        sql.close()
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"{'GATEWAY':44} {'STATE':8} {'RECORDS':>9} {'LAST SEQ':>9} {'DUPS':>6} {'FORGED':>6}")
    for g in data["gateways"]:  # type: ignore[attr-defined]
        state = {1: "online", 0: "offline", None: "?"}[g["online"]]
        print(f"{g['gw']:44} {state:8} {g['records']:>9} {g['max_seq'] or '-':>9} "
              f"{g['duplicates']:>6} {g['forgeries']:>6}")
    for gap in data["gaps"]:  # type: ignore[attr-defined]
        print(f"gap {gap['gw']} seq {gap['seq_from']}..{gap['seq_to']}: {gap['state']}"
              f"{' (' + gap['reason'] + ')' if gap['reason'] else ''}")
    for alert in data["alerts"][:10]:  # type: ignore[index]
        print(f"alert {alert['kind']} {alert['gw']}: {alert['detail']}")
    _print_market(data)
    return 0


def _print_market(data: dict[str, Any]) -> None:
    """The relay's rows by kind and state (and those not accepted), the market task's windows."""
    relay, windows = data.get("relay"), data.get("windows")
    if relay is not None:
        counts = ", ".join(f"{c['kind']} {c['state']} {c['count']}" for c in relay["counts"])
        print(f"relay: {counts or 'nothing received'}")
        for r in relay["open"]:
            print(f"relay {r['kind']} household {r['household']} window {r['win']}: {r['state']}"
                  f"{' (' + r['error'] + ')' if r['error'] else ''}")
    for w in windows or []:
        print(f"window {w['win'] if w['win'] is not None else '-'} {w['start_s']}..{w['end_s']} "
              f"{w['mode']}: {w['state']}{' ' + w['outcome'] if w['outcome'] else ''}"
              f"{' (' + w['error'] + ')' if w['error'] else ''}")
