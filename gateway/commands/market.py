"""`drgw market`: simulate a DR window, operate a live DR market over --rpc, simulate reputation.

`simulate` runs a whole window on the embedded chain or a JSON-RPC node (--rpc), timed per
phase; deploy, register, announce, clear, settle,
check and status act on a live JSON-RPC node with the operator's key from a file; reputation-sim
compares aggregator choice by reputation with random choice. web3 is imported only inside the run
functions (through gateway.chain), so `drgw --help` stays light.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError

PHASES = ("clear", "settle", "check")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    market = sub.add_parser("market", help="the DR market: simulate a window or operate one",
                            description="The blockchain DR market (docs/market.md).")
    cmds = market.add_subparsers(dest="market_command", metavar="SUBCOMMAND", required=True)
    # In this order in `drgw market --help`.
    for add in (_add_simulate, _add_deploy, _add_register, _add_announce, _add_phases, _add_status,
                _add_reputation_sim):
        add(cmds)
    from gateway.commands import market_household

    market_household.register(cmds)


def _add_simulate(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("simulate", help="run one DR window of a scenario, timed per phase")
    p.add_argument("scenario", metavar="SCENARIO", type=Path, nargs="?",
                   help="scenario TOML, e.g. examples/market/evening-peak.toml")
    p.add_argument("--households", type=int, metavar="N",
                   help="instead of a file: N households with one generated bid each")
    p.add_argument("--seed", type=int, default=1, help="seed of --households (default 1)")
    p.add_argument("--rpc", metavar="URL", help="a JSON-RPC node, e.g. anvil started with "
                   "--gas-limit 30000000 (default: the embedded chain)")
    p.add_argument("--keys", metavar="FILE", help="with --rpc: funded private keys, one per line "
                   "(default: anvil's public development accounts)")
    p.add_argument("--json", action="store_true", help="print the settlement as one JSON object")
    p.set_defaults(func=run_simulate)


def _add_deploy(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("deploy", help="deploy the token and the market (the key becomes operator)")
    _live(p)
    p.add_argument("--token-per-currency", type=float, default=1000.0,
                   help="tokens per currency unit (default 1000)")
    p.add_argument("--deposit-per-kw", type=float, default=100.0,
                   help="tokens of deposit per kW of rated power (default 100)")
    p.add_argument("--tolerance", type=float, default=0.05, help="allowed shortfall (0.05)")
    p.add_argument("--lockout-minutes", type=int, default=10, help="announcement lead (10)")
    p.add_argument("--report-grace-minutes", type=int, default=5,
                   help="minutes after a window for Reports before settlement (5)")
    p.add_argument("--treasury", help="address that pays winners (default: the operator)")
    p.set_defaults(func=run_deploy)


def _add_register(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("register", help="register an aggregator or a household")
    _live(p)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--aggregator", metavar="ADDRESS", help="register this aggregator")
    who.add_argument("--household", metavar="WALLET", help="register this household wallet")
    p.add_argument("--gateway", metavar="ADDRESS", help="the household's gateway address")
    p.add_argument("--via", metavar="AGGREGATOR", help="the household's aggregator address")
    p.set_defaults(func=run_register)


def _add_announce(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("announce", help="announce a DR window")
    _live(p)
    p.add_argument("--start", required=True, help="ISO 8601 time or unix seconds")
    p.add_argument("--end", required=True, help="ISO 8601 time or unix seconds")
    p.add_argument("--retail", type=float, required=True, help="retail price, currency/kWh")
    p.add_argument("--realtime", type=float, required=True, help="real-time price, currency/kWh")
    p.add_argument("--omega", type=float, required=True, help="discomfort sensitivity")
    p.add_argument("--mode", choices=("shift", "curtail"), default="shift")
    p.add_argument("--pricing", default="uniform", metavar="uniform|pay-as-bid",
                   help="uniform: every winner is paid the marginal price (seed 003, default); "
                   "pay-as-bid: each winner its own price (seed 002)")
    p.add_argument("--reveal-minutes", default="0", metavar="MINUTES",
                   help="reveal phase for sealed bids after the announcement; clearing waits for "
                   "its end, which must come before --start (default 0: no sealed bids)")
    p.set_defaults(func=run_announce)


def _add_phases(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for phase in PHASES:
        p = cmds.add_parser(phase, help=f"{phase} a DR window")
        _live(p)
        p.add_argument("--window", type=int, help="window id (default: the latest)")
        p.set_defaults(func=run_phase, phase=phase)


def _add_status(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("status", help="show a window, its bids and the pending transactions")
    _live(p)
    p.add_argument("--window", type=int, help="window id (default: the latest)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_status)


def _add_reputation_sim(cmds: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = cmds.add_parser("reputation-sim", help="compare aggregator choice by reputation vs random")
    p.add_argument("--users", type=int, default=25)
    p.add_argument("--aggregators", type=int, default=4)
    p.add_argument("--rounds", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1, help="first seed")
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (populations)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_reputation_sim)


def _live(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", required=True, metavar="URL", help="JSON-RPC URL of the chain node")
    p.add_argument("--key", required=True, metavar="FILE",
                   help="file with the operator's private key (hex, mode 0600)")
    p.add_argument("--deployment", default="market-deployment.json", metavar="FILE",
                   help="deployment file (written by deploy; default market-deployment.json)")
    p.add_argument("--poa", action="store_true",
                   help="the chain is proof-of-authority (QBFT/Clique): add the PoA middleware")


def run_simulate(args: argparse.Namespace) -> int:
    from gateway.market.scenario import generate_scenario, load_scenario
    from gateway.master.simulate import simulate
    from gateway.master.simulate_run import open_node

    if (args.scenario is None) == (args.households is None):
        raise ConfigError("give a SCENARIO file or --households N (not both)")
    if args.keys and not args.rpc:
        raise ConfigError("--keys needs --rpc URL (the embedded chain funds its own accounts)")
    if args.households is not None:
        scenario = generate_scenario(households=args.households, seed=args.seed)
    else:
        try:
            text = args.scenario.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{args.scenario}: cannot read the scenario ({exc})") from exc
        scenario = load_scenario(text, source=str(args.scenario))
    node = open_node(args.rpc, keys_file=args.keys) if args.rpc else None
    result = simulate(scenario, node=node)
    if args.json:
        print(json.dumps(result.as_json()))
        return 0
    print(f"target {result.target_kw:g} kW   clearing price {result.clearing_price:g} tokens/kWh"
          f"   {result.pricing.replace('_', '-')} pricing   window {result.window_hours * 60:g} min")
    head = ("bid", "household", "award kW", "payment", "surplus", "performed", "deposit",
            "refunded", "forfeited", "note")
    rows = [(b.id, b.household, f"{b.awarded_kw:g}", f"{b.payment:.3f}", f"{b.surplus:.3f}",
             ("yes" if b.performed else "no") if b.awarded_kw else "-", f"{b.deposit:g}",
             f"{b.deposit_refunded:g}", f"{b.deposit_forfeited:g}",
             _note(b)) for b in result.bids]
    _table(head, rows)
    print(f"paid {sum(b.payment for b in result.bids):.3f} tokens   operator gain "
          f"{result.operator_gain:.3f} tokens   {result.tx_count} transactions, "
          f"{result.gas_total} gas (largest {result.gas_max})")
    print(f"the reference model agrees on all {result.model_checked} bids and the clearing price")
    print(f"{len(result.bids)} bids; seconds: " + "  ".join(
        f"{phase} {s:.1f}" for phase, s in result.timings.items()))
    return 0


def _note(b: Any) -> str:
    """A simulate row's note: sealed or not, and why it did not win."""
    why = b.reason or ("" if b.awarded_kw else "not awarded")
    return "; ".join(x for x in ("sealed" if b.sealed else "", why) if x)


def run_deploy(args: argparse.Namespace) -> int:
    from gateway.chain.market_client import MarketConfig, deploy
    from gateway.market.reputation import ReputationRules
    from gateway.master.operator import open_session, write_deployment

    if not 0 <= args.tolerance <= 1:
        raise ConfigError(f"--tolerance {args.tolerance:g}: use a fraction between 0 and 1")
    if args.token_per_currency <= 0:
        raise ConfigError("--token-per-currency must be above 0")
    s = open_session(rpc=args.rpc, key_file=args.key, deployment_file=args.deployment,
                     poa=args.poa, deployed=False)
    config = MarketConfig(treasury=args.treasury or s.sender.address,
                          deposit_per_kw_mtok=round(args.deposit_per_kw * 1000),
                          tolerance_bps=round(args.tolerance * 10_000),
                          lockout_s=args.lockout_minutes * 60,
                          report_grace_s=args.report_grace_minutes * 60)
    d = deploy(s.sender, w3=s.node.w3, mtok_per_currency=round(args.token_per_currency * 1000),
               config=config, rules=ReputationRules())
    write_deployment(args.deployment, d)
    print(f"token {d.token}\nmarket {d.market}\nchain {d.chain_id}; written to {args.deployment}")
    return 0


def run_register(args: argparse.Namespace) -> int:
    from gateway.master.operator import open_session

    if args.household and not (args.gateway and args.via):
        raise ConfigError("--household needs --gateway ADDRESS and --via AGGREGATOR")
    s = _session(args, open_session)
    if args.aggregator:
        mined = s.client.register_aggregator(s.sender, args.aggregator)
    else:
        mined = s.client.register_household(s.sender, wallet=args.household,
                                            gateway=args.gateway, aggregator=args.via)
    print(f"registered in {mined.tx_hash} ({mined.gas_used} gas)")
    return 0


def run_announce(args: argparse.Namespace) -> int:
    from gateway.chain.market_client import PAY_AS_BID, UNIFORM
    from gateway.master.operator import open_session, parse_time

    if args.omega <= 0:
        raise ConfigError(f"--omega {args.omega:g}: must be above 0")
    pricing = {"uniform": UNIFORM, "pay-as-bid": PAY_AS_BID}.get(args.pricing.replace("_", "-"))
    if pricing is None:
        raise ConfigError(f"--pricing {args.pricing!r}: use uniform (every winner is paid the "
                          "marginal price) or pay-as-bid (each winner its own price)")
    start_s, end_s = parse_time(args.start, "--start"), parse_time(args.end, "--end")
    reveal_s = _reveal_seconds(args.reveal_minutes)
    s = _session(args, open_session)
    now_s = s.node.latest_timestamp()
    if reveal_s and now_s + 1 + reveal_s >= start_s:  # the announcement is mined after now
        raise ConfigError(f"--reveal-minutes {args.reveal_minutes}: the reveal phase would end at "
                          f"{_iso(now_s + 1 + reveal_s)}, not before --start {_iso(start_s)}; "
                          "shorten it or announce a later start")
    mined = s.client.announce(
        s.sender, start_s=start_s, end_s=end_s,
        retail_micro=round(args.retail * 1e6), realtime_micro=round(args.realtime * 1e6),
        omega_milli=round(args.omega * 1000), mode=0 if args.mode == "shift" else 1,
        pricing=pricing, reveal_s=reveal_s)
    event = s.client.events("WindowAnnounced", mined)[0]
    reveal = f", sealed bids reveal until {_iso(event['revealEnd'])}" if reveal_s else ""
    print(f"window {event['window']} announced: optimum {event['optimumW'] / 1000:g} kW, "
          f"{'reduce' if event['reduce'] else 'increase'} load, "
          f"{'pay-as-bid' if event['pricing'] == PAY_AS_BID else 'uniform'} pricing{reveal} "
          f"({mined.gas_used} gas)")
    return 0


def _reveal_seconds(text: str) -> int:
    """--reveal-minutes (decimal minutes, whole seconds) -> seconds for DRMarket.announce."""
    from gateway.commands.market_input import parse_decimal

    minutes = parse_decimal(text, "--reveal-minutes", unit="minutes")
    seconds = minutes * 60
    if minutes < 0 or seconds != seconds.to_integral_value() or seconds >= 2**32:
        raise ConfigError(f"--reveal-minutes {text}: use whole seconds' worth of minutes from 0 "
                          "(e.g. 5 or 2.5), shorter than the time to --start")
    return int(seconds)


def _iso(unix_s: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(unix_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_phase(args: argparse.Namespace) -> int:
    from gateway.chain.sender import Mined
    from gateway.master.operator import WINDOW_STATES, open_session

    s = _session(args, open_session)
    window = args.window or s.client.window_count()
    result = getattr(s.client, args.phase)(s.sender, window)  # clear and check send batches
    txs = (result,) if isinstance(result, Mined) else tuple(result)
    state = WINDOW_STATES[s.client.window(window)["state"]]
    where = ", ".join(m.tx_hash for m in txs) or "no transaction"
    print(f"window {window} {state} in {where} ({sum(m.gas_used for m in txs)} gas)")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from gateway.master.operator import BID_STATES, WINDOW_STATES, open_session

    s = _session(args, open_session)
    window = args.window or s.client.window_count()
    info: dict[str, Any] = {"market": s.client.deployment.market, "window": window,
                            "pending_txs": len(s.outbox.pending_txs(s.sender.chain_id,
                                                                    s.sender.address))}
    if window:
        w = s.client.window(window)
        info.update(state=WINDOW_STATES[w["state"]], start=w["start"], end=w["end"],
                    target_kw=w["targetW"] / 1000, clearing_price=w["clearingPrice"] / 1000,
                    bids=[{"id": b, "award_kw": s.client.bid(b)["awardW"] / 1000,
                           "state": BID_STATES[s.client.bid(b)["state"]]}
                          for b in s.client.window_bids(window)])
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


def run_reputation_sim(args: argparse.Namespace) -> int:
    """Two-way selection by reputation vs random on the registry's rules (gateway/market/selection)."""
    from gateway.market.selection import study

    for flag in ("users", "aggregators", "rounds", "seeds"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1")
    seeds = range(args.seed, args.seed + args.seeds)
    r = study(users=args.users, aggregators=args.aggregators, rounds=args.rounds, seeds=seeds)
    arms = {"by_reputation": r.spread(by_reputation=True),
            "at_random": r.spread(by_reputation=False), "difference": r.difference()}
    if args.json:
        print(json.dumps({"users": r.users, "aggregators": r.aggregators, "rounds": r.rounds,
                          "seeds": list(r.seeds), "per_seed": {"by_reputation": r.by_reputation,
                                                               "at_random": r.at_random},
                          "reputation_wins": r.reputation_wins(),
                          **{k: {"mean": v.mean, "std": v.std, "min": v.min, "max": v.max}
                             for k, v in arms.items()}}))
        return 0
    print(f"{r.users} households, {r.aggregators} aggregators, {r.rounds} rounds, "
          f"seeds {seeds.start}..{seeds.stop - 1}; DR completion (performed / awarded)")
    _table(("selection", "mean", "std", "min", "max"),
           [(k.replace("_", " "), *(f"{x:.1%}" for x in (v.mean, v.std, v.min, v.max)))
            for k, v in arms.items()])
    print(f"reputation ahead on {r.reputation_wins()} of {len(r.seeds)} seeds")
    return 0


def _session(args: argparse.Namespace, open_session: Any) -> Any:
    return open_session(rpc=args.rpc, key_file=args.key, deployment_file=args.deployment,
                        poa=args.poa)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    for row in (head, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.flush()
