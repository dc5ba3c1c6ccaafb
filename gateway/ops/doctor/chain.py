"""`drgw doctor`'s chain checks: the [chain] node answers, and the household is registered on the
market with this gateway's key."""

from __future__ import annotations

from typing import Any

from gateway.config.gateway import GatewayConfig
from gateway.ops.doctor.check import Check, fail, ok, warn


def check_chain(config: GatewayConfig, address: str | None, timeout: float) -> list[Check]:
    chain = config.chain
    if chain is None:
        return [ok("chain", "no [chain] table: this gateway sends no Reports")]
    from gateway.chain.node import connect

    try:
        node = connect(chain.rpc, poa=chain.poa, timeout_s=timeout)
        chain_id, block = node.w3.eth.chain_id, node.w3.eth.block_number
    except Exception as exc:  # web3 raises many kinds (requests, JSON-RPC, middleware)
        return [fail("chain", f"{chain.rpc}: {exc}", "is the node up and the [chain] rpc URL right?")]
    checks = [ok("chain", f"{chain.rpc}: chain id {chain_id}, block {block}")]
    if address is None:
        return [*checks, warn("household", "not checked: no usable gateway key", "fix the key first")]
    return [*checks, _household(node.w3, chain_id, chain.market, chain.household, address)]


def _household(w3: Any, chain_id: int, market: str, wallet: str, gateway: str) -> Check:
    from web3 import Web3

    from gateway.chain.artifacts import load_artifact
    from gateway.chain.market_client import Deployment, MarketClient

    market, wallet = Web3.to_checksum_address(market), Web3.to_checksum_address(wallet)
    if not w3.eth.get_code(market):
        return fail("household", f"no contract at market {market} on chain {chain_id}",
                    "set [chain] market to the address `drgw market deploy` printed, on this rpc")
    token = w3.eth.contract(address=market, abi=load_artifact("DRMarket").abi).functions.token().call()
    client = MarketClient(w3=w3, deployment=Deployment(chain_id=chain_id, token=token, market=market))
    registered = str(client.household(wallet)["gateway"])
    if int(registered, 16) == 0:
        return fail("household", f"{wallet} is not registered on market {market}",
                    f"the operator runs `drgw market register --household {wallet} --gateway "
                    f"{gateway} --via AGGREGATOR`")
    if registered.lower() != gateway.lower():
        return fail("household", f"{wallet} is registered with gateway {registered}, not with this "
                    f"gateway {gateway}", "use the key that was registered ([gateway] key), or have "
                    "the operator register this gateway for the household")
    return ok("household", f"{wallet} is registered with this gateway {gateway}")
