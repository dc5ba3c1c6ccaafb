"""`drgw market wallet|approve|bid|withdraw|bids|earnings|mint|set-rate|set-gateway` on anvil.

Everything goes through `gateway.cli.main` with keys in files, as a household or the operator would
type it; only the gateway's signatures (Baseline, Report) are made here, as the gateway's agent
would. Expected figures are worked by hand from the contract's formulas (docs/market.md, Units).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.chain.market_client import MarketClient, decoder
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, sign_baseline, sign_report
from gateway.chain.sender import TxSender
from gateway.cli import main
from gateway.master.operator import read_deployment

pytestmark = [pytest.mark.anvil, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@dataclass
class Live:
    """A market deployed on anvil through the CLI: operator, aggregator and households A and B."""

    anvil: Any
    node: Any
    client: MarketClient
    capsys: Any
    args: list[str]  # --rpc and --deployment
    keys: dict[str, Path]  # name -> key file
    address: dict[str, str]
    gateway_key: dict[str, bytes]

    def run(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        with_key = ["--key", str(self.keys[key])] if key else []
        code = main(["market", *argv, *self.args, *with_key])
        out, err = self.capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    def json(self, *argv: str, key: str | None = None) -> Any:
        code, out, err = self.run(*argv, "--json", key=key)
        assert code == 0, err
        return json.loads(out)

    def ok(self, *argv: str, key: str | None = None) -> str:
        code, out, err = self.run(*argv, key=key)
        assert code == 0, err
        return out


def claim_for(live: Live, name: str) -> None:
    """The household claims its balance in the market (payments and refunds accrue there)."""
    from gateway.chain.market_client import decoder
    from gateway.chain.outbox import ChainOutbox
    from gateway.chain.sender import TxSender
    from gateway.measurement.keyfile import read_key

    sender = TxSender(w3=live.client.w3, key=read_key(live.keys[name]),
                      outbox=ChainOutbox(":memory:"), decoder=decoder())
    live.client.claim(sender, live.address[name])


def _key_file(tmp_path: Path, name: str, key: bytes) -> Path:
    path = tmp_path / f"{name}.key"
    path.write_text("0x" + key.hex() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def live(anvil, tmp_path: Path, capsys) -> Live:  # type: ignore[no-untyped-def]
    from eth_account import Account
    from eth_utils.crypto import keccak

    node = anvil.node()
    names = ("operator", "aggregator", "A", "B")
    keys = {n: _key_file(tmp_path, n, k) for n, k in zip(names, node.funded_keys, strict=True)}
    address = {n: Account.from_key(k).address for n, k in zip(names, node.funded_keys,
                                                               strict=True)}
    gateway_key = {h: keccak(f"test/{h}/gateway".encode()) for h in ("A", "B")}
    args = ["--rpc", anvil.url, "--deployment", str(tmp_path / "market.json")]
    live = Live(anvil=anvil, node=node, client=None, capsys=capsys,  # type: ignore[arg-type]
                args=args, keys=keys, address=address, gateway_key=gateway_key)
    live.ok("deploy", "--lockout-minutes", "10", "--report-grace-minutes", "0", key="operator")
    live.client = MarketClient(w3=node.w3, deployment=read_deployment(tmp_path / "market.json"))
    live.ok("register", "--aggregator", address["aggregator"], key="operator")
    for h in ("A", "B"):
        live.ok("register", "--household", address[h], "--gateway",
                Account.from_key(gateway_key[h]).address, "--via", address["aggregator"],
                key="operator")
        live.ok("mint", address[h], "1000", key="operator")
    return live


def test_household_approves_bids_lists_and_withdraws(live: Live) -> None:
    a = live.address["A"]
    wallet = live.json("wallet", key="A")
    assert (wallet["balance_mtok"], wallet["allowance_mtok"], wallet["held_mtok"]) == \
        (1_000_000, 0, 0)
    assert wallet["registered"] and wallet["aggregator"] == live.address["aggregator"]
    now = live.node.latest_timestamp()
    bid = ("bid", "--from", str(now), "--to", str(now + 86_400), "--kw", "-3.5", "--price", "25")
    code, _, err = live.run(*bid, key="A")  # no allowance yet
    assert code == 1 and "drgw market approve" in err and "ERC20InsufficientAllowance" in err
    assert "500.000 tokens" in live.ok("approve", "500", key="A")
    # deposit = depositPerKw x ratedW / 1000 = 100_000 mtok/kW x 3500 W / 1000 = 350_000 mtok
    assert "bid 1: -3.5 kW" in (out := live.ok(*bid, key="A"))
    assert "deposit 350.000 tokens" in out
    # 3 hours ahead in local time, to the minute: the next such HH:MM after the chain's now
    later = dt.datetime.fromtimestamp(now + 3 * 3600).astimezone().replace(second=0)
    second = ("bid", "--start", later.strftime("%H:%M"), "--hours", "2", "--kw", "-1",
              "--price", "30", "--rated-kw", "2")
    code, _, err = live.run(*second, key="A")  # deposit 200 tokens > 500 - 350 left to take
    assert code == 1
    assert "the deposit needs 200.000 tokens but the market may take only 150.000" in err
    live.ok("approve", "1000", key="A")
    assert "bid 2: -1 kW" in live.ok(*second, key="A")
    bids = live.json("bids", "--household", a.lower())["bids"]  # a read needs no key
    assert [(b["id"], b["power_w"], b["rated_w"], b["deposit_mtok"], b["state"]) for b in bids] \
        == [(1, -3500, 3500, 350_000, "open"), (2, -1000, 2000, 200_000, "open")]
    assert (bids[1]["from"], bids[1]["to"] - bids[1]["from"]) == (int(later.timestamp()), 7200)
    wallet = live.json("wallet", "--household", a)
    # 1000 - 350 - 200 = 450 tokens; allowance 1000 - 200; held 350 + 200
    assert (wallet["balance_mtok"], wallet["allowance_mtok"], wallet["held_mtok"]) == \
        (450_000, 800_000, 550_000)
    assert "bid 2 withdrawn: deposit 200.000 tokens returned" in live.ok("withdraw", "2", key="A")
    table = live.ok("bids", key="A").splitlines()
    assert table[0].split() == ["id", "from", "to", "kW", "price/kWh", "deposit", "state",
                                "sealed", "window", "award", "kW"]
    assert table[1].split()[3:] == ["-3.5", "25.000", "350.000", "open", "-", "-", "-"]
    assert table[2].split()[3:] == ["-1", "30.000", "200.000", "withdrawn", "-", "-", "-"]
    wallet = live.json("wallet", key="A")
    assert (wallet["balance_mtok"], wallet["held_mtok"]) == (650_000, 350_000)


def test_refusals_are_explained_without_a_traceback(live: Live) -> None:
    a = live.address["A"]
    live.ok("approve", "500", key="A")
    now = live.node.latest_timestamp()
    live.ok("bid", "--from", str(now), "--to", str(now + 86_400), "--kw", "-2", "--price", "20",
            key="A")
    code, _, err = live.run("withdraw", "1", key="B")  # someone else's bid
    assert code == 1 and f"bid 1 belongs to {a}" in err
    code, _, err = live.run("withdraw", "99", key="A")
    assert code == 2 and "BID_ID 99: there is no such bid" in err
    for bad in ("0", "-1", "abc"):
        code, _, err = live.run("withdraw", bad, key="A")
        assert code == 2 and "BID_ID" in err
    code, _, err = live.run("approve", "-5", key="A")
    assert code == 2 and "TOKENS -5: must be at least 0 tokens" in err
    code, _, err = live.run("bid", "--from", str(now), "--to", str(now + 60), "--kw", "-2",
                            "--price", "1.0001", key="A")
    assert code == 2 and "--price 1.0001: at most 3 decimals" in err
    code, _, err = live.run("bid", "--start", "25:00", "--hours", "1", "--kw", "-2", "--price",
                            "1", key="A")
    assert code == 2 and "--start '25:00': use HH:MM" in err
    code, _, err = live.run("wallet")
    assert code == 2 and "give --household ADDRESS" in err
    code, _, err = live.run("bids", "--household", "0x1234")
    assert code == 2 and "--household '0x1234': not an address" in err
    start = live.node.latest_timestamp() + 1200
    live.ok("announce", "--start", str(start), "--end", str(start + 600), "--retail", "0.6",
            "--realtime", "0.68", "--omega", "1.2", key="operator")
    code, _, err = live.run("withdraw", "1", key="A")
    assert code == 1 and "bid 1 is locked for window 1" in err
    code, _, err = live.run("bid", "--for", a, "--from", str(now), "--to", str(now + 86_400),
                            "--kw", "-1", "--price", "20", key="B")
    assert code == 1 and "is neither household" in err


def test_earnings_after_a_full_window(live: Live) -> None:
    a = live.address["A"]
    live.ok("mint", live.address["operator"], "100000", key="operator")
    live.ok("approve", "100000", key="operator")  # the treasury pays winners (transferFrom)
    for h in ("A", "B"):
        live.ok("approve", "1000", key=h)
    now = live.node.latest_timestamp()
    span = ("--from", str(now), "--to", str(now + 86_400))
    live.ok("bid", *span, "--kw", "-3.5", "--price", "25", key="A")  # deposit 350 tokens
    live.ok("bid", *span, "--kw", "-1", "--price", "20", key="B")  # deposit 100 tokens
    live.ok("bid", *span, "--kw", "-0.5", "--price", "22", key="B")  # deposit 50 tokens
    start = live.node.latest_timestamp() + 1200
    # spread = |0.68 - 0.6| x 10^6 x 1_000_000 / 10^6 = 80_000 mtok/kWh;
    # optimum = 80_000 x 1000 / (2 x 1200) = 33_333 W; target = min(33_333, 3500 + 1500) = 5000 W
    live.ok("announce", "--start", str(start), "--end", str(start + 600), "--retail", "0.6",
            "--realtime", "0.68", "--omega", "1.2", key="operator")
    # merit order: B (20) 1000 W, B (22) 500 W, then A (25) 3500 W; the price is A's, 25_000
    assert "window 1 cleared" in live.ok("clear", key="operator")
    d = live.client.deployment
    committed = Baseline(household=a, window=1, method=2, input_hash=b"\x11" * 32,
                         baseline_wh=5000)
    relay = TxSender(w3=live.node.w3, key=live.node.funded_keys[1],
                     outbox=ChainOutbox(":memory:"), decoder=decoder())
    live.client.commit_baseline(relay, sign_baseline(committed, key=live.gateway_key["A"],
                                                     chain_id=d.chain_id, market=d.market))
    live.node.set_next_timestamp(start + 600)
    # A delivers 600 Wh >= 3500 W x 600 s / 3600 x (1 - 5%) = 554.2 Wh: performs; B sends nothing
    report = Report(household=a, window=1, seq_from=1, seq_to=10, window_start=start,
                    window_end=start + 600, baseline_method=2, baseline_input_hash=b"\x11" * 32,
                    baseline_wh=5000, actual_wh=4400, delivered_wh=600, merkle_root=b"\x22" * 32)
    live.client.submit_report(relay, sign_report(report, key=live.gateway_key["A"],
                                                 chain_id=d.chain_id, market=d.market))
    live.ok("settle", key="operator")
    live.ok("check", key="operator")
    # A: payment = 25_000 x 3500 x 600 / 3_600_000 = 14_583 mtok (14_583.3 rounded down);
    # deposit 350_000 refunded, nothing forfeited
    earned = live.json("earnings", "--household", a)
    assert earned["windows"] == [{"window": 1, "award_w": 3500, "payment_mtok": 14_583,
                                  "refunded_mtok": 350_000, "forfeited_mtok": 0,
                                  "penalty_mtok": 0}]
    assert (earned["paid_mtok"], earned["forfeited_mtok"], earned["net_mtok"]) == \
        (14_583, 0, 14_583)
    # B: awarded 1000 + 500 W, no Report: no payment, both deposits (100 + 50 tokens) forfeited
    earned = live.json("earnings", key="B")
    assert earned["windows"] == [{"window": 1, "award_w": 1500, "payment_mtok": 0,
                                  "refunded_mtok": 0, "forfeited_mtok": 150_000,
                                  "penalty_mtok": 0}]
    assert (earned["paid_mtok"], earned["net_mtok"]) == (0, -150_000)
    out = live.ok("earnings", key="A").splitlines()
    assert out[1].split() == ["1", "3.5", "14.583", "350.000", "0.000", "0.000"]
    assert out[2] == ("total: paid 14.583, forfeited 0.000, unrevealed penalties 0.000, "
                      "net 14.583 tokens (refunded deposits 350.000)")
    claim_for(live, "A")  # pull settlement: the balance reaches the wallet when claimed
    wallet = live.json("wallet", key="A")  # 1000 - 350 + 350 + 14.583
    assert (wallet["balance_mtok"], wallet["held_mtok"]) == (1_014_583, 0)
    assert [x["state"] for x in live.json("bids", key="A")["bids"]] == ["done"]


def test_operator_mints_sets_the_rate_and_rotates_a_gateway(live: Live) -> None:
    from eth_account import Account

    a = live.address["A"]
    out = live.ok("mint", a.lower(), "2.5", key="operator")
    assert "minted 2.500 tokens" in out and "balance 1002.500 tokens" in out
    assert live.client.token.functions.balanceOf(a).call() == 1_002_500
    code, _, err = live.run("mint", "0x" + "ab" * 19, "1", key="operator")
    assert code == 2 and "ADDRESS" in err and "40 hex digits" in err
    wrong_case = a[:2] + a[2:].swapcase()
    code, _, err = live.run("mint", wrong_case, "1", key="operator")
    assert code == 2 and "checksum (EIP-55) is wrong" in err
    for amount, says in (("-1", "must be above 0"), ("0", "must be above 0"),
                         ("1.0005", "at most 3 decimals"), ("many", "not a number")):
        code, _, err = live.run("mint", a, amount, key="operator")
        assert code == 2 and says in err, (amount, err)
    code, _, err = live.run("mint", a, "1", key="A")
    assert code == 1 and f"{a} is not the operator" in err
    assert "rate 1200.000 tokens per currency unit" in live.ok("set-rate", "1200", key="operator")
    assert live.client.token.functions.mtokPerCurrency().call() == 1_200_000
    # its effect: spread = 80_000 x 1.2 = 96_000 mtok/kWh; optimum = 96_000 x 1000 / 2400 = 40 kW
    start = live.node.latest_timestamp() + 1200
    assert "optimum 40 kW" in live.ok(
        "announce", "--start", str(start), "--end", str(start + 600), "--retail", "0.6",
        "--realtime", "0.68", "--omega", "1.2", key="operator")
    code, _, err = live.run("set-rate", "0", key="operator")
    assert code == 2 and "TOKENS_PER_CURRENCY 0: must be above 0" in err
    new_gateway = Account.create().address
    assert f"signed by gateway {new_gateway}" in live.ok("set-gateway", a, new_gateway,
                                                         key="operator")
    assert live.client.household(a)["gateway"] == new_gateway
    assert live.json("wallet", key="A")["gateway"] == new_gateway
    stranger = Account.create().address
    code, _, err = live.run("set-gateway", stranger, new_gateway, key="operator")
    assert code == 1 and f"{stranger} is not a registered household" in err


def test_the_gateway_bids_for_its_household_within_the_wallets_allowance(
        live: Live, tmp_path: Path) -> None:
    from eth_account import Account

    from gateway.chain.node import fund

    a = live.address["A"]
    gateway = Account.from_key(live.gateway_key["A"]).address
    op = TxSender(w3=live.node.w3, key=live.node.funded_keys[0], outbox=ChainOutbox(":memory:"),
                  decoder=decoder())
    fund(live.node, op, gateway, 10**18)  # gas money for the gateway's own transactions
    live.keys["gateway-A"] = _key_file(tmp_path, "gateway-A", live.gateway_key["A"])
    live.ok("approve", "150", key="A")
    now = live.node.latest_timestamp()
    span = ("--from", str(now), "--to", str(now + 86_400))
    # deposit 100_000 mtok/kW x 1000 W / 1000 = 100 tokens, within the 150 the wallet allowed
    out = live.ok("bid", "--for", a, *span, "--kw", "-1", "--price", "20", key="gateway-A")
    assert "bid 1: -1 kW" in out and "deposit 100.000 tokens" in out
    # a second one would put 200 tokens at risk: the wallet's cap stops the gateway
    code, _, err = live.run("bid", "--for", a, *span, "--kw", "-1", "--price", "20",
                            key="gateway-A")
    assert code == 1 and "the market may take only 50.000" in err
    assert live.json("wallet", key="A")["held_mtok"] == 100_000
    assert "deposit 100.000 tokens returned" in live.ok("withdraw", "1", key="gateway-A")
    wallet = live.json("wallet", "--household", a)
    assert (wallet["balance_mtok"], wallet["held_mtok"]) == (1_000_000, 0)  # back to the wallet
    assert live.client.balance(gateway) == 0
