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
                    "the home's gateway bids by itself from its forecast flexibility (learned from "
                    "a few simulated weeks of history seeded into its journals), the neighbours "
                    "bid, announcement, clearing, the baseline committed on chain, delivery with "
                    "live actions, Report, settlement and verification, one reading proven on "
                    "chain. Ends with a summary and the event plot.")
    parser.add_argument("--speed", type=float, default=20.0,
                        help="clock compression: a 10-minute window lasts 600/SPEED s (default 20)")
    parser.add_argument("--confidence", type=float, default=0.8,
                        help="[market] confidence: the home bids what its levers delivered on at "
                             "least this share of the matched history days (0.5..0.999, default 0.8)")
    parser.add_argument("--history-weeks", type=int, default=6, metavar="WEEKS",
                        help="simulated weeks of history seeded into the gateway (1..6, default 6)")
    parser.add_argument("--price", type=float, default=30.0, metavar="TOK",
                        help="[market] min_price, tokens/kWh (default 30; the neighbours ask 25-40)")
    parser.add_argument("--no-boiler", action="store_true",
                        help="leave the boiler out of the levers: the home bids and acts with its "
                             "EV charger only")
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
    if not 0.5 <= args.confidence <= 0.999:
        raise ConfigError("--confidence: 0.5..0.999 (the [market] confidence range)")
    if not 1 <= args.history_weeks <= 6:
        raise ConfigError("--history-weeks: 1..6 (the forecast looks back six weeks at most)")
    if not 0 < args.price <= 1000 or abs(round(args.price * 1000) - args.price * 1000) > 1e-6:
        raise ConfigError("--price: 0.001..1000 tokens/kWh, at most three decimals")
    return main_sync(DemoOptions(
        speed=args.speed, confidence=args.confidence, history_weeks=args.history_weeks,
        bid_price=args.price, scenario=args.scenario, workdir=args.dir,
        keep_running=args.keep_running, plot=not args.no_plot,
        levers=("ev",) if args.no_boiler else ("ev", "boiler")))
