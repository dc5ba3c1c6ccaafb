"""The embedded chain's wall clock (`embedded(clock_lag_s=...)`): a burst of transactions mined while
the lag is large stays in the past, and after `set_clock_lag(0)` each block carries the wall-clock
time it is mined at, however long ago its parent was mined."""

from __future__ import annotations

import itertools
import time

import pytest

from gateway.chain.node import ChainNode, embedded
from gateway.errors import ConfigError


def _transfer(node: ChainNode) -> int:
    """One value transfer, mined at once; the timestamp of its block."""
    accounts = node.w3.eth.accounts
    tx = node.w3.eth.send_transaction({"from": accounts[0], "to": accounts[1], "value": 1})
    return int(node.w3.eth.get_block(node.w3.eth.get_transaction_receipt(tx)["blockNumber"])["timestamp"])


def _next_second() -> int:
    """Wait (on the clock, not a fixed sleep) until the wall clock enters a new second."""
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.02)
    return int(time.time())


def test_a_burst_mined_in_the_past_leaves_the_chain_behind_the_wall_clock() -> None:
    before = int(time.time())
    node = embedded(clock_lag_s=3600)
    assert before - 3600 <= node.latest_timestamp() <= int(time.time()) - 3600
    stamps = [_transfer(node) for _ in range(30)]
    # timestamps still increase from block to block (the EVM requires it), an hour ago
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert stamps[-1] < int(time.time()) - 3600 + 60


def test_after_catching_up_blocks_carry_the_wall_clock_time_they_are_mined_at() -> None:
    node = embedded(clock_lag_s=3600)
    for _ in range(10):
        _transfer(node)
    node.set_clock_lag(0)
    before = int(time.time())
    assert before <= _transfer(node) <= int(time.time())
    # the next block is stamped when it is filled, not when its parent was mined (eth-tester's
    # own clock would give it the parent's time + 1, two seconds behind the wall clock by now)
    _next_second()
    later = _next_second()
    assert later <= _transfer(node) <= int(time.time())


def test_time_travel_still_moves_the_clock_ahead() -> None:
    node = embedded(clock_lag_s=0)
    target = int(time.time()) + 1000
    node.set_next_timestamp(target)
    assert _transfer(node) == target
    assert _transfer(node) == target + 1  # ahead of the wall clock: one second after the parent


def test_set_clock_lag_needs_a_wall_clock_chain() -> None:
    with pytest.raises(ConfigError, match="clock_lag_s"):
        embedded().set_clock_lag(0)
