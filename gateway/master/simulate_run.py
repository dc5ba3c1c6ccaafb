"""The accounts of one `drgw market simulate` run and its bulk phases (issue 14: programme scale).

Every household has its own wallet and gateway key (derived from its name, so a run is
reproducible). What scales with the number of households (registering, funding, minting,
approving, bidding, committing baselines, claiming, withdrawing) goes through a `BulkSender`:
signed with local nonces, broadcast in JSON-RPC batches, receipts collected afterwards; the
operator's few window-wide transactions (deploy, announce, clearing batches, settle, settlement
batches) go through `TxSender` as a real operator sends them. Gas money comes from the node's
funded accounts beyond the operator's and the aggregator's (round robin).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from gateway.chain.bulk import BulkSender, BulkTx, Calldata, event_logs
from gateway.chain.market_client import MarketClient, MarketConfig, decoder, deploy
from gateway.chain.node import ChainNode
from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import SignedBaseline
from gateway.chain.sender import Mined, TxSender
from gateway.errors import ConfigError
from gateway.market import model as m
from gateway.market.reputation import ReputationRules
from gateway.market.scenario import Scenario, ScenarioBid

DAY = 86_400
WALLET_WEI = 10**18  # gas money per wallet: gas limit x bulk.MAX_FEE_WEI must be covered per tx
# Gas limits of the bulk transactions (measured with bench/gas.py, then about doubled).
GAS = {"register": 250_000, "mint": 100_000, "fund": 21_000, "approve": 80_000, "bid": 250_000,
       "baseline": 150_000, "claim": 120_000, "withdraw": 120_000, "commit": 250_000,
       "reveal": 150_000}


class PhaseTimer:
    """Seconds spent per named phase, summed over every time a phase is entered."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = self._clock()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + self._clock() - t0


class Run:
    """The accounts and contracts of one simulation on `node`."""

    def __init__(self, scenario: Scenario, node: ChainNode) -> None:
        from eth_account import Account
        from eth_utils.crypto import keccak

        if len(node.funded_keys) < 3:
            raise ConfigError("the simulation needs at least three funded accounts on the chain "
                              "(operator, aggregator, gas money for the households)")
        self.s, self.node = scenario, node
        self.outbox = ChainOutbox(":memory:")
        dec = decoder()
        self.op = TxSender(w3=node.w3, key=node.funded_keys[0], outbox=self.outbox, decoder=dec)
        self.relayer = TxSender(w3=node.w3, key=node.funded_keys[1], outbox=self.outbox,
                                decoder=dec)
        self.bulk = BulkSender(w3=node.w3, decoder=dec)
        self.funders = node.funded_keys[2:]
        self.wallet_keys = {n: keccak(f"drgw-simulate/{n}/wallet".encode())
                            for n in scenario.households}
        self.wallets = {n: self.bulk.address(k) for n, k in self.wallet_keys.items()}
        self.gateways = {n: keccak(f"drgw-simulate/{n}/gateway".encode())
                         for n in scenario.households}
        self.gateway_address = {n: Account.from_key(k).address for n, k in self.gateways.items()}
        self.offset = 0
        self.client: MarketClient | None = None
        self.market_data: Calldata | None = None

    def at(self, t: int) -> None:
        """The chain's clock at scenario time `t` until the next step (held there on anvil, so a
        step's transactions do not slip past a deadline while a loaded machine sends them)."""
        self.node.set_next_timestamp(t + self.offset, hold=True)

    def tx_totals(self) -> tuple[int, int, int]:
        """(transactions, gas used, the most gas one transaction used)."""
        count, gas = self.outbox.tx_totals()
        return (count + self.bulk.count, gas + self.bulk.gas,
                max(self.outbox.tx_gas_max(), self.bulk.gas_max))

    def setup(self) -> MarketClient:
        """Deploy; register, fund and give every household its deposits; then fix the clock
        offset (scenario clocks shift by whole days to lie after the chain's latest block)."""
        s = self.s
        config = MarketConfig(treasury=self.op.address, deposit_per_kw_mtok=s.deposit_per_kw_mtok,
                              tolerance_bps=s.tolerance_bps, lockout_s=s.lockout_s,
                              report_grace_s=s.report_grace_s)
        deployment = deploy(self.op, w3=self.node.w3, mtok_per_currency=s.mtok_per_currency,
                            config=config, rules=ReputationRules())
        client = MarketClient(w3=self.node.w3, deployment=deployment)
        self.client, self.market_data = client, Calldata(client.market.abi)
        token = Calldata(client.token.abi)
        client.register_aggregator(self.op, self.relayer.address)
        deposits = {n: 0 for n in s.households}
        for b in s.bids:
            deposits[b.household] += m.deposit_mtok(b.rated_w, s.deposit_per_kw_mtok)
        op_key = self.node.funded_keys[0]
        txs = []
        for i, name in enumerate(s.households):
            wallet = self.wallets[name]
            txs.append(self._market_tx(op_key, "register", "registerHousehold", wallet,
                                       self.gateway_address[name], self.relayer.address))
            txs.append(BulkTx(key=self.funders[i % len(self.funders)], to=wallet, data="0x",
                              value=WALLET_WEI, gas=GAS["fund"], purpose=f"fund {name}"))
            if deposits[name]:
                txs.append(BulkTx(key=op_key, to=client.token.address, gas=GAS["mint"],
                                  data=token("mint", wallet, deposits[name]),
                                  purpose=f"mint {name}"))
        self.bulk.send(txs)
        self.bulk.send([BulkTx(key=self.wallet_keys[n], to=client.token.address,
                               data=token("approve", client.market.address, deposits[n]),
                               gas=GAS["approve"], purpose=f"approve {n}")
                        for n in s.households if deposits[n]])
        budget = _treasury_budget(s)
        client.mint(self.op, self.op.address, budget)
        client.approve(self.op, budget)
        first = min([s.announced_s, *(b.submitted_s for b in s.bids)])
        self.offset = -(-(self.node.latest_timestamp() + DAY - first) // DAY) * DAY
        return client

    def place(self, bids: list[ScenarioBid]) -> dict[str, int]:
        """Place `bids` in one bulk send, a sealed one as its commitment (`commitBid`, only the
        hash and the deposit for its rated power); their chain ids from the BidPlaced and
        BidCommitted logs."""
        client = self._client()
        mined = self.bulk.send([self._market_tx(
            self.wallet_keys[b.household], "commit", "commitBid", self._seal(b), b.rated_w)
            if b.sealed else self._market_tx(
            self.wallet_keys[b.household], "bid", "placeBid", b.from_s + self.offset,
            b.to_s + self.offset, b.power_w, b.rated_w, b.price_mtok) for b in bids])
        topics = {False: _topic(client, "BidPlaced"), True: _topic(client, "BidCommitted")}
        ids = {}
        for b, tx in zip(bids, mined, strict=True):
            (log,) = event_logs([tx], topics[b.sealed])
            ids[b.key] = int.from_bytes(bytes(log["topics"][1]), "big")  # bidId is indexed
        return ids

    def reveal(self, bids: list[tuple[ScenarioBid, int]]) -> list[Mined]:
        """Reveal sealed bids (the household's own terms and salt) in the reveal phase."""
        return self.bulk.send([self._market_tx(
            self.wallet_keys[b.household], "reveal", "revealBid", bid_id, b.from_s + self.offset,
            b.to_s + self.offset, b.power_w, b.price_mtok, self._salt(b)) for b, bid_id in bids])

    def _salt(self, b: ScenarioBid) -> bytes:
        from eth_utils.crypto import keccak

        return bytes(keccak(f"drgw-simulate/{b.key}/salt".encode()))

    def _seal(self, b: ScenarioBid) -> bytes:
        return m.seal(price_mtok=b.price_mtok, power_w=b.power_w, from_s=b.from_s + self.offset,
                      to_s=b.to_s + self.offset, salt=self._salt(b),
                      household=self.wallets[b.household])

    def commit_baselines(self, signed: list[SignedBaseline]) -> None:
        """Relay the gateways' signed baselines (the aggregator pays gas)."""
        self.bulk.send([self._market_tx(self.node.funded_keys[1], "baseline", "commitBaseline",
                                        b.baseline.as_tuple(), b.signature) for b in signed])

    def claim_all(self) -> list[Mined]:
        return self.bulk.send([self._market_tx(self.funders[i % len(self.funders)], "claim",
                                               "claim", wallet)
                               for i, wallet in enumerate(self.wallets.values())])

    def withdraw(self, bids: list[tuple[ScenarioBid, int]]) -> list[Mined]:
        return self.bulk.send([self._market_tx(self.wallet_keys[b.household], "withdraw",
                                               "withdrawBid", bid_id) for b, bid_id in bids])

    def _client(self) -> MarketClient:
        if self.client is None:
            raise RuntimeError("Run.setup() first")
        return self.client

    def _market_tx(self, key: bytes, kind: str, fn: str, *args: Any) -> BulkTx:
        assert self.market_data is not None
        return BulkTx(key=key, to=self._client().market.address, data=self.market_data(fn, *args),
                      gas=GAS[kind], purpose=f"{fn} {args[0] if args else ''}".strip())


def _treasury_budget(s: Scenario) -> int:
    """mtok the treasury needs at most: every bid awarded in full at the top price (any winner's
    price, uniform or pay-as-bid, is at most the top bid's), plus one mtok a bid of rounding."""
    top = max(b.price_mtok for b in s.bids)
    budget = top * sum(abs(b.power_w) for b in s.bids) * (s.end_s - s.start_s)
    return budget // m.MS_PER_HOUR_KW + len(s.bids)


def _topic(client: MarketClient, event: str) -> bytes:
    from eth_utils.abi import event_abi_to_log_topic

    abi: Any = next(e for e in client.market.abi
                    if e.get("type") == "event" and e.get("name") == event)
    return bytes(event_abi_to_log_topic(abi))


# The well-known development mnemonic of anvil and Hardhat: its accounts are PUBLIC test keys,
# funded with 10,000 ETH on a fresh anvil (https://getfoundry.sh/anvil/overview); never on a real
# network.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


def open_node(rpc: str, *, keys_file: str | None = None, accounts: int = 10) -> ChainNode:
    """A JSON-RPC node with funded keys: one hex key per line of `keys_file`, or else the first
    `accounts` of anvil's public development mnemonic (checked to hold gas money there)."""
    from pathlib import Path

    from eth_account import Account

    from gateway.chain.node import connect

    node = connect(rpc, timeout_s=120.0)
    if keys_file is not None:
        try:
            lines = Path(keys_file).read_text(encoding="utf-8").split()
            keys = tuple(bytes.fromhex(x.removeprefix("0x")) for x in lines)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{keys_file}: cannot read funded keys, one hex private key per "
                              f"line ({exc})") from exc
    else:
        Account.enable_unaudited_hdwallet_features()
        keys = tuple(bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
                           .key) for i in range(accounts))
    for key in keys[:3]:
        address = Account.from_key(key).address
        if int(node.w3.eth.get_balance(address)) < 10**18:
            where = keys_file or "anvil's public development accounts"
            raise ConfigError(f"--rpc {rpc}: account {address} ({where}) holds less than 1 ETH "
                              "there; fund it, or pass --keys FILE with funded private keys")
    return ChainNode(w3=node.w3, funded_keys=keys)
