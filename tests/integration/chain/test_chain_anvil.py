"""The JSON-RPC path against anvil: a whole window, and a node killed during Report submission."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from gateway.chain.node import connect
from gateway.chain.outbox import ChainOutbox
from gateway.chain.sender import TxSender
from gateway.chain.submit import ReportSubmitter
from tests.waits import wait_for

pytestmark = [pytest.mark.anvil, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def test_whole_window_over_json_rpc(anvil, market_class, tmp_path) -> None:
    outbox = ChainOutbox(tmp_path / "outbox.sqlite")
    market = market_class(anvil.node(), outbox)
    hs = [market.household(f"h{i}") for i in range(3)]
    bids = [market.bid(h, power_w=-20_000, price_mtok=price)
            for h, price in zip(hs, (30_000, 20_000, 30_000), strict=True)]
    window, _, end = market.announce()
    market.client.clear(market.op, window)
    awards = [market.client.bid(b)["awardW"] for b in bids]
    assert awards == [13_333, 20_000, 0]  # target 33_333 W; the tie goes to the earlier bid
    market.commit(hs[0], window)
    market.commit(hs[1], window)
    market.at(end)
    relayed = market.client.submit_report(market.aggregator,
                                          market.report(hs[0], window, delivered=2222))
    assert relayed.gas_used <= 80_000
    market.client.submit_report(market.aggregator, market.report(hs[1], window, delivered=1000))
    market.client.settle(market.op, window)
    checked = market.client.check(market.op, window)
    assert [e["bidId"] for e in market.client.events("DepositForfeited", checked)] == [bids[1]]
    poa = connect(anvil.url, poa=True)  # the consortium-chain middleware reads the same chain
    assert poa.w3.eth.get_block("latest")["number"] == market.node.w3.eth.block_number
    outbox.close()


def saved_block(state: Path) -> int:
    """The newest block in anvil's state dump (-1 while there is none, or it is half written)."""
    try:
        number = json.loads(state.read_text())["best_block_number"]
        return int(number, 0) if isinstance(number, str) else int(number)
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def test_node_killed_and_restarted_during_report_submission(anvil, market_class, tmp_path) -> None:
    market = market_class(anvil.node(), ChainOutbox(":memory:"))
    h = market.household("h")
    market.bid(h, power_w=-2000, price_mtok=30_000)
    window, _, end = market.announce()
    market.client.clear(market.op, window)
    market.commit(h, window)
    market.at(end)
    market.node.w3.eth.get_block("latest")  # nothing pending
    market.node.w3.provider.make_request("evm_mine", [])
    # anvil dumps its state every second: wait until a dump holds the block just mined
    mined = market.node.w3.eth.block_number
    wait_for(lambda: saved_block(anvil.state) >= mined, what=f"anvil's state dump of block {mined}")

    outbox = ChainOutbox(tmp_path / "gateway-outbox.sqlite")
    relayer = TxSender(w3=market.node.w3, key=market.node.funded_keys[3], outbox=outbox,
                       decoder=market.decoder, poll_s=0.05)
    submitter = ReportSubmitter(outbox=outbox, client=market.client, sender=relayer)
    submitter.queue(market.report(h, window, delivered=400))
    market.node.w3.provider.make_request("evm_setAutomine", [False])  # the tx will wait in the pool
    results = []
    worker = threading.Thread(target=lambda: results.append(submitter.drain()))
    worker.start()
    deadline = time.monotonic() + 20
    while not outbox.pending_txs(relayer.chain_id, relayer.address):
        assert time.monotonic() < deadline, "the Report transaction was never signed"
        time.sleep(0.02)
    kept = outbox.pending_txs(relayer.chain_id, relayer.address)[0]
    anvil.kill()  # SIGKILL with the transaction unmined
    worker.join(timeout=30)
    assert results and (results[0].accepted, results[0].waiting) == (0, 1)

    anvil.start()  # same port, state reloaded from disk, empty transaction pool
    w3 = market.node.w3
    assert w3.eth.block_number >= 1
    assert market.client.window(window)["state"] == 2  # the cleared window survived
    assert w3.provider.make_request("eth_getTransactionByHash", [kept.tx_hash])["result"] is None
    market.at(end + 5)  # a reloaded anvil restarts its clock at wall time: bring it back
    relayer = TxSender(w3=w3, key=market.node.funded_keys[3], outbox=outbox,
                       decoder=market.decoder)  # a fresh process: the outbox is all it has
    result = ReportSubmitter(outbox=outbox, client=market.client, sender=relayer).drain()
    assert (result.accepted, result.waiting, result.rejected) == (1, 0, ())
    receipt = w3.eth.get_transaction_receipt(kept.tx_hash)  # the very bytes signed before the kill
    assert receipt["status"] == 1
    raw = w3.provider.make_request("eth_getRawTransactionByHash", [kept.tx_hash])["result"]
    assert bytes.fromhex(raw.removeprefix("0x")) == kept.raw
    assert market.client.take(h.address, window)["deliveredWh"] == 400
    assert outbox.tx_state(kept.tx_hash) == "mined" and outbox.tx_totals()[0] == 1
    outbox.close()



def _send_value(node, to: str) -> int:
    """A plain transfer from the first funded account; the timestamp of the block it landed in."""
    from eth_account import Account

    sender = Account.from_key(node.funded_keys[0])
    w3 = node.w3
    tx = {"to": to, "value": 1, "gas": 21_000, "gasPrice": w3.eth.gas_price, "chainId": w3.eth.chain_id,
          "nonce": w3.eth.get_transaction_count(sender.address)}
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
    return int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def test_a_held_clock_keeps_the_pinned_time_while_the_wall_clock_moves_on(anvil) -> None:
    """What made seed 003's example flaky on a loaded machine: after set_next_timestamp(T) anvil
    stamps the following blocks by its clock, so an announce meant for T landed at T + 1. Here
    evm_increaseTime stands in for the seconds a loaded machine takes (anvil's clock moves on
    by 5 s): held, the transactions still land at T; released, they follow anvil's clock."""
    node = anvil.node()
    to = "0x000000000000000000000000000000000000dEaD"
    target = node.latest_timestamp() + 1000
    node.set_next_timestamp(target)
    node.w3.provider.make_request("evm_increaseTime", [5])
    assert _send_value(node, to) >= target + 5  # not held: the moved clock decides

    target += 1000
    node.set_next_timestamp(target, hold=True)
    node.w3.provider.make_request("evm_increaseTime", [5])
    assert [_send_value(node, to) for _ in range(3)] == [target] * 3
    node.set_next_timestamp(target + 1, hold=True)  # a step one second on is pinned too
    assert _send_value(node, to) == target + 1

    node.release_clock()
    node.w3.provider.make_request("evm_increaseTime", [5])
    assert _send_value(node, to) >= target + 6
