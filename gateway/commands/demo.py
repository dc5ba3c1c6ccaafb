"""`drgw demo`: the whole closed loop on embedded defaults (gateway/demo/run.py does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "demo", help="run one whole DR window: simulated home, local broker, embedded chain",
        description="Runs a simulated home (meters, an EV charger, a relay-switched boiler), a local "
                    "mosquitto and the DR market on an embedded chain, then one DR window end to end: "
                    "bids, announcement, clearing, delivery with live actions, Report, settlement "
                    "and verification. Ends with a summary and the event plot.")
    parser.add_argument("--speed", type=float, default=20.0,
                        help="clock compression: a 10-minute window lasts 600/SPEED s (default 20)")
    parser.add_argument("--award", type=float, default=4.0, metavar="KW",
                        help="load reduction the home bids, kW (default 4)")
    parser.add_argument("--no-boiler", action="store_true",
                        help="leave the boiler out of the loop's levers (the home under-delivers)")
    parser.add_argument("--scenario", type=Path, help="another simulated home (docs/simulation.md)")
    parser.add_argument("--dir", type=Path, help="keep the demo's files here (default: a temp dir)")
    parser.add_argument("--keep-running", action="store_true",
                        help="keep the gateway and the simulated home running after the window")
    parser.add_argument("--no-plot", action="store_true", help="skip the event plot")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gateway.demo.run import DemoOptions, main_sync

    if not 1 <= args.speed <= 600:
        raise ConfigError("--speed: 1..600 (600 makes a 10-minute window last 1 s)")
    if not 0.5 <= args.award <= 20:
        raise ConfigError("--award: 0.5..20 kW")
    return main_sync(DemoOptions(
        speed=args.speed, award_kw=args.award, scenario=args.scenario, workdir=args.dir,
        keep_running=args.keep_running, plot=not args.no_plot,
        levers=("ev",) if args.no_boiler else ("ev", "boiler")))
