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
    b = _Bench(node or embedded(), n)
    b.households()
    bids = b.bids()
    window = b.window()
    reports = b.reports(window["start"])
    settle = b.c.settle(b.op, 1).gas_used
    checked = b.c.check(b.op, 1)
    claim = b.c.claim(b.relayer, reports["first"]).gas_used
    return {"n": n, **bids, **window, "settle": settle,
            "check_total": sum(x.gas_used for x in checked),
            "check_max": max(x.gas_used for x in checked), "claim": claim,
            "report": reports["report"], "report_batched": reports["report_batched"]}


class _Bench:
    """One deployment with n households, each with a wallet and a gateway key (bench keys)."""

    def __init__(self, node: ChainNode, n: int) -> None:
        from eth_utils.crypto import keccak

        self.node, self.n = node, n
        outbox, dec = ChainOutbox(":memory:"), decoder()
        self.op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=outbox, decoder=dec)
        self.relayer = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=outbox, decoder=dec)
        config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=100_000,
                              tolerance_bps=500, lockout_s=600, report_grace_s=0)
        self.d = deploy(self.op, w3=node.w3, mtok_per_currency=1_000_000, config=config,
                        rules=ReputationRules())
        self.c = MarketClient(w3=node.w3, deployment=self.d)
        self.c.register_aggregator(self.op, self.relayer.address)
        self.c.mint(self.op, self.op.address, 10**15)
        self.c.approve(self.op, 10**15)
        self.bulk = BulkSender(w3=node.w3, decoder=dec)
        self.market, self.token = Calldata(self.c.market.abi), Calldata(self.c.token.abi)
        self.gateway_keys = [keccak(f"bench/gw/{i}".encode()) for i in range(n)]
        self.keys = [keccak(f"bench/{i}".encode()) for i in range(n)]
        self.wallets = [self.bulk.address(k) for k in self.keys]
        now = node.latest_timestamp()
        self.terms = [dict(from_s=now, to_s=now + 86_400, power_w=-1000, price_mtok=1000 + i % 7)
                      for i in range(n)]
        self.salts = {i: keccak(f"salt/{i}".encode()) for i in range(n) if i % 10 == 9}
        self.ids: dict[int, int] = {}

    def tx(self, key: bytes, to: str, data: str, gas: int, value: int = 0) -> BulkTx:
        return BulkTx(key=key, to=to, data=data, gas=gas, value=value, purpose=data[:10])

    def households(self) -> None:
        """Register, fund (gas), mint deposits to and approve the market from every wallet."""
        from eth_account import Account

        d, funders, op_key = self.d, self.node.funded_keys[2:], self.node.funded_keys[0]
        self.bulk.send([t for i, w in enumerate(self.wallets) for t in (
            self.tx(op_key, d.market, self.market(
                "registerHousehold", w, Account.from_key(self.gateway_keys[i]).address,
                self.relayer.address), 250_000),
            self.tx(funders[i % len(funders)], w, "0x", 21_000, 10**18),
            self.tx(op_key, d.token, self.token("mint", w, 10**9), 100_000))])
        self.bulk.send([self.tx(k, d.token, self.token("approve", d.market, 10**9), 80_000)
                        for k in self.keys])

    def bids(self) -> dict[str, int]:
        """Every household's bid, every tenth as a sealed commitment: gas per place and commit."""
        placed = self.bulk.send([self._bid(i, w) for i, w in enumerate(self.wallets)])
        self.ids = {i: int(self.c.events("BidCommitted", placed[i])[0]["bidId"])
                    for i in self.salts}
        return {"place": _avg([g.gas_used for i, g in enumerate(placed) if i not in self.salts]),
                "commit": _avg([g.gas_used for i, g in enumerate(placed) if i in self.salts])}

    def _bid(self, i: int, wallet: str) -> BulkTx:
        t = self.terms[i]
        if i in self.salts:
            sealed = m.seal(household=wallet, salt=self.salts[i], **t)
            return self.tx(self.keys[i], self.d.market,
                           self.market("commitBidFor", wallet, sealed, 1000), 250_000)
        return self.tx(self.keys[i], self.d.market, self.market(
            "placeBid", t["from_s"], t["to_s"], -1000, 1000, t["price_mtok"]), 250_000)

    def window(self) -> dict[str, Any]:
        """Announce (optimum = n/2 x 1 kW), reveal the sealed bids, clear: gas and wall time."""
        omega = 80_000 * 1000 // (2 * (self.n // 2) * 1000)
        start = self.node.latest_timestamp() + 1200
        announce = self.c.announce(self.op, start_s=start, end_s=start + 600,
                                   retail_micro=600_000, realtime_micro=680_000,
                                   omega_milli=omega, mode=0, reveal_s=300)
        reveal = [g.gas_used for g in self.bulk.send([self.tx(
            self.keys[i], self.d.market, self.market(
                "revealBid", self.ids[i], self.terms[i]["from_s"], self.terms[i]["to_s"], -1000,
                self.terms[i]["price_mtok"], salt), 150_000) for i, salt in self.salts.items()])]
        self.node.set_next_timestamp(start - 500)
        t0 = time.monotonic()
        cleared = self.c.clear(self.op, 1)
        return {"start": start, "reveal": _avg(reveal), "announce": announce.gas_used,
                "clear_total": sum(x.gas_used for x in cleared),
                "clear_max": max(x.gas_used for x in cleared), "clear_txs": len(cleared),
                "clear_s": time.monotonic() - t0}

    def reports(self, start: int) -> dict[str, Any]:
        """REPORTS_BATCHED + 1 winners commit baselines; one Report alone, the rest batched."""
        d, c = self.d, self.c
        winners = [b for b in c.window_bids(1) if c.bid(b)["awardW"] > 0]
        by_address = {w: i for i, w in enumerate(self.wallets)}
        households = [c.bid(b)["household"] for b in winners[:REPORTS_BATCHED + 1]]
        for h in households:
            c.commit_baseline(self.relayer, sign_baseline(Baseline(
                household=h, window=1, method=2, input_hash=b"\x01" * 32, baseline_wh=900),
                key=self.gateway_keys[by_address[h]], chain_id=d.chain_id, market=d.market))
        self.node.set_next_timestamp(start + 600)
        signed = [sign_report(Report(
            household=h, window=1, seq_from=1, seq_to=10, window_start=start,
            window_end=start + 600, baseline_method=2, baseline_input_hash=b"\x01" * 32,
            baseline_wh=900, actual_wh=700, delivered_wh=200, merkle_root=b"\x02" * 32),
            key=self.gateway_keys[by_address[h]], chain_id=d.chain_id, market=d.market)
            for h in households]
        single = c.submit_report(self.relayer, signed[0]).gas_used
        batched = c.submit_reports(self.relayer, signed[1:]).gas_used
        return {"first": households[0], "report": single,
                "report_batched": batched // (len(signed) - 1)}


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
