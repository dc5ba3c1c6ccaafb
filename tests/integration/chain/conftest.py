"""Fixtures for the DR market on a real EVM: the embedded eth-tester chain and anvil over JSON-RPC.

`market` deploys a fresh token and market on a fresh chain; `Market` gives tests households with
their own wallet and gateway keys and the phases in contract units. `anvil` starts the anvil binary
of the npm package @foundry-rs/anvil on a free loopback port; it fails with the fix when the binary
is missing, unless DRGW_ALLOW_MISSING=1 (then it skips).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import ChainNode, connect, embedded, fund
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import Baseline, Report, SignedReport, sign_baseline, sign_report
from gateway.chain.sender import Mined, TxSender
from gateway.market.model import delivered_wh
from gateway.market.reputation import ReputationRules

CONTRACTS = Path(__file__).resolve().parents[3] / "gateway" / "chain" / "contracts"
FIX = "npm ci --prefix gateway/chain/contracts"
RATE = 1_000_000  # 1 currency = 1000 tokens
RULES = ReputationRules()


def missing(what: str) -> None:
    """Fail naming the fix, or skip when DRGW_ALLOW_MISSING=1."""
    message = f"{what} is missing; install it with `{FIX}`"
    if os.environ.get("DRGW_ALLOW_MISSING") == "1":
        pytest.skip(message)
    pytest.fail(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Household:
    name: str
    wallet_key: bytes
    wallet: TxSender
    gateway_key: bytes
    gateway: str

    @property
    def address(self) -> str:
        return self.wallet.address


class Market:
    """A deployed market and helpers to drive it, in contract units."""

    def __init__(self, node: ChainNode, outbox: ChainOutbox, *, lockout_s: int = 600,
                 grace_s: int = 0, tolerance_bps: int = 500, deposit_per_kw: int = 100_000) -> None:
        self.node, self.outbox, self.decoder = node, outbox, decoder()
        self.op = self.sender(node.funded_keys[0])
        self.aggregator = self.sender(node.funded_keys[1])
        self.stranger = self.sender(node.funded_keys[2])
        self.config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=deposit_per_kw,
                                   tolerance_bps=tolerance_bps, lockout_s=lockout_s,
                                   report_grace_s=grace_s)
        self.deployment = deploy(self.op, w3=node.w3, mtok_per_currency=RATE, config=self.config,
                                 rules=RULES)
        self.client = MarketClient(w3=node.w3, deployment=self.deployment)
        self.client.register_aggregator(self.op, self.aggregator.address)
        self.client.mint(self.op, self.op.address, 10**12)
        self.client.approve(self.op, 10**12)
        self.households: dict[str, Household] = {}

    def sender(self, key: bytes) -> TxSender:
        return TxSender(w3=self.node.w3, key=key, outbox=self.outbox, decoder=self.decoder)

    def now(self) -> int:
        return self.node.latest_timestamp()

    def at(self, t: int) -> None:
        self.node.set_next_timestamp(t)

    def household(self, name: str, *, register: bool = True) -> Household:
        from eth_account import Account
        from eth_utils import keccak

        wallet_key = keccak(f"test/{name}/wallet".encode())
        gateway_key = keccak(f"test/{name}/gateway".encode())
        h = Household(name=name, wallet_key=wallet_key, wallet=self.sender(wallet_key),
                      gateway_key=gateway_key,
                      gateway=Account.from_key(gateway_key).address)
        fund(self.node, self.op, h.address, 10**18)
        self.client.mint(self.op, h.address, 10**9)
        self.client.approve(h.wallet, 10**9)
        if register:
            self.client.register_household(self.op, wallet=h.address, gateway=h.gateway,
                                           aggregator=self.aggregator.address)
        self.households[name] = h
        return h

    def bid(self, h: Household, *, power_w: int, price_mtok: int, rated_w: int | None = None,
            from_s: int | None = None, to_s: int | None = None) -> int:
        now = self.now()
        bid_id, _ = self.client.place_bid(
            h.wallet, from_s=now if from_s is None else from_s,
            to_s=now + 10 * 86_400 if to_s is None else to_s, power_w=power_w,
            rated_w=abs(power_w) if rated_w is None else rated_w, price_mtok=price_mtok)
        return bid_id

    def announce(self, *, lead_s: int = 1200, seconds: int = 600, retail: int = 600_000,
                 realtime: int = 680_000, omega: int = 1200, mode: int = 0, pricing: int = 0,
                 reveal_s: int = 0) -> tuple[int, int, int]:
        start = self.now() + 1 + lead_s  # the announcement is mined in the next block
        self.client.announce(self.op, start_s=start, end_s=start + seconds, retail_micro=retail,
                             realtime_micro=realtime, omega_milli=omega, mode=mode,
                             pricing=pricing, reveal_s=reveal_s)
        return self.client.window_count(), start, start + seconds

    def commit(self, h: Household, window: int, *, baseline_wh: int = 5000, method: int = 2,
               input_hash: bytes = b"\x11" * 32, key: bytes | None = None,
               sender: TxSender | None = None) -> Mined:
        """The household's gateway signs its baseline for `window`; a stranger relays it. The
        defaults are the ones `report` puts into a Report."""
        signed = sign_baseline(Baseline(household=h.address, window=window, method=method,
                                        input_hash=input_hash, baseline_wh=baseline_wh),
                               key=key or h.gateway_key, chain_id=self.deployment.chain_id,
                               market=self.deployment.market)
        return self.client.commit_baseline(sender or self.stranger, signed)

    def report(self, h: Household, window: int, *, delivered: int, seq_from: int = 1,
               seq_to: int = 10, key: bytes | None = None, baseline_wh: int = 5000,
               **changes: Any) -> SignedReport:
        w = self.client.window(window)
        baseline = baseline_wh
        actual = baseline - delivered if w["reduce"] else baseline + delivered
        fields: dict[str, Any] = dict(
            household=h.address, window=window, seq_from=seq_from, seq_to=seq_to,
            window_start=w["start"], window_end=w["end"], baseline_method=2,
            baseline_input_hash=b"\x11" * 32, baseline_wh=baseline, actual_wh=actual,
            delivered_wh=delivered_wh(reduce=w["reduce"], baseline_wh=baseline, actual_wh=actual),
            merkle_root=b"\x22" * 32)
        fields.update(changes)
        return sign_report(Report(**fields), key=key or h.gateway_key,
                           chain_id=self.deployment.chain_id, market=self.deployment.market)


@pytest.fixture
def market() -> Iterator[Market]:
    outbox = ChainOutbox(":memory:")
    yield Market(embedded(), outbox)
    outbox.close()


@pytest.fixture(scope="session")
def market_class() -> type[Market]:
    """The Market helper, for module-scoped fixtures that deploy once."""
    return Market


def anvil_binary() -> Path | None:
    override = os.environ.get("DRGW_ANVIL")
    if override:
        return Path(override)
    found = sorted((CONTRACTS / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process on 127.0.0.1; `restart()` kills it and starts it again on the same port.
    With `state` None it keeps no state file (dumping a 10,000-household state every second made
    a 10,000-bid simulation time out after 5 minutes; without it the run takes about 3)."""

    def __init__(self, binary: Path, state: Path | None, *extra: str) -> None:
        self.binary, self.state, self.extra = binary, state, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        state = () if self.state is None else ("--state", str(self.state), "--state-interval", "1")
        self.proc = subprocess.Popen(
            [str(self.binary), "--host", "127.0.0.1", "--port", str(self.port), "--silent",
             "--hardfork", "prague", *state, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"anvil exited with {self.proc.returncode}: {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"anvil did not listen on port {self.port} within 20 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def node(self) -> ChainNode:
        node = connect(self.url)
        # anvil's default mnemonic accounts, funded with 10000 ETH each
        from eth_account import Account

        Account.enable_unaudited_hdwallet_features()
        phrase = "test test test test test test test test test test test junk"
        keys = tuple(bytes(Account.from_mnemonic(phrase, account_path=f"m/44'/60'/0'/0/{i}").key)
                     for i in range(4))
        return ChainNode(w3=node.w3, funded_keys=keys)


@pytest.fixture
def anvil(tmp_path: Path) -> Iterator[Anvil]:
    binary = anvil_binary()
    if binary is None or not binary.exists():
        missing("the anvil binary (npm package @foundry-rs/anvil)")
    assert binary is not None
    a = Anvil(binary, tmp_path / "anvil-state.json")
    a.start()
    yield a
    a.kill()


@pytest.fixture
def anvil_30m() -> Iterator[Anvil]:
    """anvil for programme-scale runs: a 30M block gas limit named explicitly, no state file, and
    no per-block state history kept (--prune-history: 10,000 households otherwise grow anvil to
    about 4.5 GB; calls read the latest state)."""
    binary = anvil_binary()
    if binary is None or not binary.exists():
        missing("the anvil binary (npm package @foundry-rs/anvil)")
    assert binary is not None
    a = Anvil(binary, None, "--gas-limit", "30000000", "--prune-history")
    a.start()
    yield a
    a.kill()
