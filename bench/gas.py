"""Gas of the DR market on the embedded EVM: one baseline commitment and one Report, and announce +
clear with N bids.

Goals (issue 4): a Report <= 80_000 gas; announce + clear <= 40_000 gas per bid at 100 bids.
Run: .venv/bin/python bench/gas.py [--bids 100]
"""

from __future__ import annotations

import argparse
import warnings

from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import embedded, fund
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from gateway.market.reputation import ReputationRules

REPORT_GOAL = 80_000
PER_BID_GOAL = 40_000


def measure(bids: int, *, winners: int) -> dict[str, int]:
    """Deploy, place `bids` bids of 1 kW from `bids` households, clear so `winners` win."""
    from eth_account import Account
    from eth_utils import keccak

    node, outbox, dec = embedded(), ChainOutbox(":memory:"), decoder()
    op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=outbox, decoder=dec)
    relayer = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=outbox, decoder=dec)
    config = MarketConfig(treasury=op.address, deposit_per_kw_mtok=100_000, tolerance_bps=500,
                          lockout_s=600, report_grace_s=0)
    d = deploy(op, w3=node.w3, mtok_per_currency=1_000_000, config=config,
               rules=ReputationRules())
    c = MarketClient(w3=node.w3, deployment=d)
    c.register_aggregator(op, relayer.address)
    gateway_key = keccak(b"bench/gateway")
    wallets = []
    for i in range(bids):
        w = TxSender(w3=node.w3, key=keccak(f"bench/{i}".encode()), outbox=outbox, decoder=dec)
        c.register_household(op, wallet=w.address, gateway=Account.from_key(gateway_key).address,
                             aggregator=relayer.address)
        fund(node, op, w.address, 10**17)
        c.mint(op, w.address, 10**9)
        c.approve(w, 10**9)
        wallets.append(w)
    now = node.latest_timestamp()
    place = [c.place_bid(w, from_s=now, to_s=now + 86_400, power_w=-1000, rated_w=1000,
                         price_mtok=1000 + i % 7)[1].gas_used for i, w in enumerate(wallets)]
    # optimum W = spread x 1000 / (2 omega): choose omega so that `winners` x 1 kW is the target
    spread = 80_000
    omega = spread * 1000 // (2 * winners * 1000)
    start = node.latest_timestamp() + 1200
    announce = c.announce(op, start_s=start, end_s=start + 600, retail_micro=600_000,
                          realtime_micro=680_000, omega_milli=omega, mode=0).gas_used
    clear = c.clear(op, 1).gas_used
    won = [b for b in c.window_bids(1) if c.bid(b)["awardW"] > 0]
    household = c.bid(won[0])["household"]
    commit = sign_baseline(Baseline(household=household, window=1, method=2,
                                    input_hash=b"\x01" * 32, baseline_wh=900),
                           key=gateway_key, chain_id=d.chain_id, market=d.market)
    commit_gas = c.commit_baseline(relayer, commit).gas_used
    node.set_next_timestamp(start + 600)
    report = Report(household=household, window=1, seq_from=1, seq_to=10, window_start=start,
                    window_end=start + 600, baseline_method=2, baseline_input_hash=b"\x01" * 32,
                    baseline_wh=900, actual_wh=700, delivered_wh=200, merkle_root=b"\x02" * 32)
    signed = sign_report(report, key=gateway_key, chain_id=d.chain_id, market=d.market)
    report_gas = c.submit_report(relayer, signed).gas_used
    return {"bids": bids, "winners": len(won), "place_bid": max(place), "announce": announce,
            "clear": clear, "report": report_gas, "commit": commit_gas}


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bids", type=int, default=100)
    args = parser.parse_args()
    for winners in (args.bids // 2, args.bids):
        g = measure(args.bids, winners=winners)
        per_bid = (g["announce"] + g["clear"]) / g["bids"]
        print(f"{g['bids']} bids, {g['winners']} winners: announce {g['announce']} gas, "
              f"clear {g['clear']} gas -> {per_bid:,.0f} gas/bid "
              f"({per_bid / PER_BID_GOAL:.0%} of the {PER_BID_GOAL:,} goal); "
              f"placeBid {g['place_bid']} gas")
        print(f"  Report (relayed, first of its gateway): {g['report']} gas "
              f"({g['report'] / REPORT_GOAL:.0%} of the {REPORT_GOAL:,} goal); "
              f"baseline commitment (relayed, first) {g['commit']} gas")


if __name__ == "__main__":
    main()
