"""`drgw profiles list|show`: validate and list the device profiles."""

from __future__ import annotations

import argparse
import json
import sys

from gateway.config.profiles import load_profile, parse_profile, profile_paths
from gateway.errors import ProfileError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("profiles", help="validate and list device profiles")
    psub = parser.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    listing = psub.add_parser("list", help="validate every profile and list them")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(func=run_list)
    show = psub.add_parser("show", help="show one profile's points as the gateway reads them")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)


def run_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, str | int | bool]] = []
    errors: list[str] = []
    for path in profile_paths():
        try:
            profile = parse_profile(path)
        except ProfileError as exc:
            errors.append(str(exc))
            continue
        rows.append({"name": profile.name, "kind": profile.kind, "vendor": profile.vendor,
                     "model": profile.model, "points": len(profile.points),
                     "probe": profile.probe is not None, "source": profile.source})
    if args.json:
        print(json.dumps({"profiles": rows, "errors": errors}, indent=None))
    else:
        width = max((len(str(r["name"])) for r in rows), default=4)
        print(f"{'NAME':<{width}}  {'KIND':<9}  {'VENDOR':<14}  {'MODEL':<22}  SOURCE")
        for r in rows:
            print(f"{r['name']:<{width}}  {r['kind']:<9}  {r['vendor']:<14}  {r['model']:<22}  "
                  f"{r['source']}")
        print(f"{len(rows)} profiles valid, {len(errors)} invalid")
    for message in errors:
        print(f"drgw: error: {message}", file=sys.stderr)
    return 2 if errors else 0


def run_show(args: argparse.Namespace) -> int:
    profile = load_profile(args.name)
    points = [{"name": p.name, "table": p.table, "address": p.address,
               "printed_address": p.printed_address, "type": p.type, "scale": p.scale,
               "unit": p.unit, "poll": p.poll, "writable": p.writable} for p in profile.points]
    if args.json:
        print(json.dumps({"name": profile.name, "vendor": profile.vendor, "model": profile.model,
                          "source": profile.source, "points": points}))
        return 0
    print(f"{profile.vendor} {profile.model} ({profile.kind}) — {profile.source}")
    for p in points:
        flag = " writable" if p["writable"] else ""
        print(f"  {p['name']:<32} {p['table']:<8} {p['printed_address']:>6} "
              f"(pdu {p['address']:>5}) {p['type']:<6} x{p['scale']:<8g} {p['unit']:<4} "
              f"{p['poll']}{flag}")
    return 0
