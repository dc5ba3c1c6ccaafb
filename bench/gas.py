"""Gas of the DR market at programme scale (issue 14) on the embedded EVM: per bid for place,
commit and reveal, clearing (total and largest single transaction), settlement and claim, and a
Report single and batched, for n bids from n households.

Goals: no transaction above 30M gas (a 30M block gas limit); clearing gas per bid falling with n;
a single Report <= 80_000 gas (issue 4).
Run: .venv/bin/python bench/gas.py [--bids 100 1000 10000] [--rpc http://127.0.0.1:8545]
(on the embedded EVM 10,000 bids take hours; on anvil started with --gas-limit 30000000, minutes)
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

from gateway.chain.bulk import BulkSender, BulkTx, Calldata
from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import ChainNode, embedded
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from gateway.market import model as m
from gateway.market.reputation import ReputationRules
from gateway.master.simulate_run import open_node

BLOCK_LIMIT = 30_000_000
REPORTS_BATCHED = 20


def measure(n: int, node: ChainNode | None = None) -> dict[str, Any]:
    """n households, one 1 kW bid each (every tenth sealed), half of them winning. Households
    are set up and bid through a BulkSender (batched JSON-RPC on anvil); the gas figures are the
    receipts' own."""
    from eth_account import Account
    from eth_utils import keccak

    node = node or embedded()
    outbox, dec = ChainOutbox(":memory:"), decoder()
    op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=outbox, decoder=dec)
    relayer = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=outbox, decoder=dec)
    config = MarketConfig(treasury=op.address, deposit_per_kw_mtok=100_000, tolerance_bps=500,
                          lockout_s=600, report_grace_s=0)
    d = deploy(op, w3=node.w3, mtok_per_currency=1_000_000, config=config, rules=ReputationRules())
    c = MarketClient(w3=node.w3, deployment=d)
    c.register_aggregator(op, relayer.address)
    c.mint(op, op.address, 10**15)
    c.approve(op, 10**15)
    bulk, market, token = BulkSender(w3=node.w3, decoder=dec), Calldata(c.market.abi), \
        Calldata(c.token.abi)
    gateway_keys = [keccak(f"bench/gw/{i}".encode()) for i in range(n)]
    keys = [keccak(f"bench/{i}".encode()) for i in range(n)]
    wallets = [bulk.address(k) for k in keys]
    funders = node.funded_keys[2:]
    op_key = node.funded_keys[0]

    def tx(key: bytes, to: str, data: str, gas: int, value: int = 0) -> BulkTx:
        return BulkTx(key=key, to=to, data=data, gas=gas, value=value, purpose=data[:10])

    bulk.send([t for i, w in enumerate(wallets) for t in (
        tx(op_key, d.market, market("registerHousehold", w,
                                    Account.from_key(gateway_keys[i]).address, relayer.address),
           250_000),
        tx(funders[i % len(funders)], w, "0x", 21_000, 10**18),
        tx(op_key, d.token, token("mint", w, 10**9), 100_000))])
    bulk.send([tx(k, d.token, token("approve", d.market, 10**9), 80_000) for k in keys])
    now = node.latest_timestamp()
    terms = [dict(from_s=now, to_s=now + 86_400, power_w=-1000, price_mtok=1000 + i % 7)
             for i in range(n)]
    salts = {i: keccak(f"salt/{i}".encode()) for i in range(n) if i % 10 == 9}
    placed = bulk.send([tx(keys[i], d.market, market(
        "commitBidFor", w, m.seal(household=w, salt=salts[i], **terms[i]), 1000), 250_000)
        if i in salts else tx(keys[i], d.market, market(
            "placeBid", terms[i]["from_s"], terms[i]["to_s"], -1000, 1000,
            terms[i]["price_mtok"]), 250_000) for i, w in enumerate(wallets)])
    place = [g.gas_used for i, g in enumerate(placed) if i not in salts]
    commit = [g.gas_used for i, g in enumerate(placed) if i in salts]
    ids = {i: int(c.events("BidCommitted", placed[i])[0]["bidId"]) for i in salts}
    omega = 80_000 * 1000 // (2 * (n // 2) * 1000)  # optimum = n/2 x 1 kW
    start = node.latest_timestamp() + 1200
    announce = c.announce(op, start_s=start, end_s=start + 600, retail_micro=600_000,
                          realtime_micro=680_000, omega_milli=omega, mode=0, reveal_s=300)
    reveal = [g.gas_used for g in bulk.send([tx(keys[i], d.market, market(
        "revealBid", ids[i], terms[i]["from_s"], terms[i]["to_s"], -1000, terms[i]["price_mtok"],
        salt), 150_000) for i, salt in salts.items()])]
    node.set_next_timestamp(start - 500)
    t0 = time.monotonic()
    cleared = c.clear(op, 1)
    clear_s = time.monotonic() - t0
    winners = [b for b in c.window_bids(1) if c.bid(b)["awardW"] > 0]
    by_address = {w: i for i, w in enumerate(wallets)}
    households = [c.bid(b)["household"] for b in winners[:REPORTS_BATCHED + 1]]
    for h in households:
        i = by_address[h]
        c.commit_baseline(relayer, sign_baseline(Baseline(
            household=h, window=1, method=2, input_hash=b"\x01" * 32, baseline_wh=900),
            key=gateway_keys[i], chain_id=d.chain_id, market=d.market))
    node.set_next_timestamp(start + 600)
    signed = [sign_report(Report(
        household=h, window=1, seq_from=1, seq_to=10, window_start=start, window_end=start + 600,
        baseline_method=2, baseline_input_hash=b"\x01" * 32, baseline_wh=900, actual_wh=700,
        delivered_wh=200, merkle_root=b"\x02" * 32), key=gateway_keys[by_address[h]],
        chain_id=d.chain_id, market=d.market) for h in households]
    single = c.submit_report(relayer, signed[0]).gas_used
    batched = c.submit_reports(relayer, signed[1:]).gas_used
    settle = c.settle(op, 1).gas_used
    checked = c.check(op, 1)
    claim = c.claim(relayer, households[0]).gas_used
    return {"n": n, "place": _avg(place), "commit": _avg(commit), "reveal": _avg(reveal),
            "announce": announce.gas_used, "clear_total": sum(x.gas_used for x in cleared),
            "clear_max": max(x.gas_used for x in cleared), "clear_txs": len(cleared),
            "clear_s": clear_s, "settle": settle,
            "check_total": sum(x.gas_used for x in checked),
            "check_max": max(x.gas_used for x in checked), "claim": claim,
            "report": single, "report_batched": batched // (len(signed) - 1)}


def _avg(values: list[int]) -> int:
    return sum(values) // len(values) if values else 0


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bids", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--rpc", metavar="URL", help="a JSON-RPC node with anvil's development "
                        "accounts funded, e.g. `anvil --gas-limit 30000000` (a fresh one per n: "
                        "the bench deploys each time); default: the embedded EVM")
    args = parser.parse_args()
    print("| bids | place | commit | reveal | clear/bid | clear max tx (txs) | settle | "
          "check/bid | check max tx | claim | Report | Report batched | clear wall s |")
    print("|---:" * 13 + "|")
    for n in args.bids:
        g = measure(n, open_node(args.rpc) if args.rpc else None)
        biggest = max(g["clear_max"], g["check_max"])
        print(f"| {n:,} | {g['place']:,} | {g['commit']:,} | {g['reveal']:,} | "
              f"{g['clear_total'] // n:,} | {g['clear_max']:,} ({g['clear_txs']}) | "
              f"{g['settle']:,} | {g['check_total'] // n:,} | {g['check_max']:,} | "
              f"{g['claim']:,} | {g['report']:,} | {g['report_batched']:,} | "
              f"{g['clear_s']:.1f} |", flush=True)
        if biggest > BLOCK_LIMIT:
            print(f"  over the {BLOCK_LIMIT:,} block gas limit: {biggest:,}")


if __name__ == "__main__":
    main()
