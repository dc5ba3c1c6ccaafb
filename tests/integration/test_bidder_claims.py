"""The bidder claims its household's market balance by itself (pull settlement, issue 14), against
the in-memory market: journalled, published as a `dr_bid` "claimed" change, counted in the summary.

The household and its evening EV block are tests/integration/test_bidder.py's `Home`; the balance
is credited by hand the way DRMarket.settleBatch credits a payment and a refunded deposit.
"""

from __future__ import annotations

from pathlib import Path

from gateway.testing.fake_market import FakeBiddingPort
from tests.integration.test_bidder import NOW, Home


def test_a_credited_balance_is_claimed_once_journalled_and_published(tmp_path: Path) -> None:
    port = FakeBiddingPort(now_s=NOW, balance_mtok=10**9)
    h = Home(tmp_path, port)
    assert [c.change for c in h.cycle()] == ["placed"]  # nothing credited yet: no claim
    assert port.claims == []
    # settleBatch credited payment 41_666 + refunded deposit 700_000 mtok
    port.claimable_mtok = 41_666 + 700_000
    before = port.balance_mtok
    changes = h.cycle(NOW + 900)
    assert [(c.change, dict(c.outcome or {})) for c in changes] == [
        ("claimed", {"claimed_mtok": 741_666})]
    assert (port.claims, port.balance_mtok - before, port.claimable_mtok) == ([741_666], 741_666, 0)
    claimed = [m for m in h.messages if m["change"] == "claimed"]
    assert claimed == [{**claimed[0], "type": "dr_bid", "outcome": {"claimed_mtok": 741_666}}]
    assert [amount for _, amount in h.journal.claims()] == [741_666]
    status = h.bidder.status()
    assert (status["claims"], status["claimed_mtok"]) == (1, 741_666)
    assert h.bidder.counters()["market.claimed_mtok"] == 741_666
    assert h.cycle(NOW + 1800) == []  # nothing left to claim: no second claim
    assert port.claims == [741_666]
    h.journal.close()


class ClaimRefused(FakeBiddingPort):
    """The market refuses the claim (as a revert would come back)."""

    def claim(self) -> int:
        raise ValueError("claim reverted with SafeERC20FailedOperation")


def test_a_refused_claim_is_not_journalled_and_bidding_goes_on(tmp_path: Path) -> None:
    port = ClaimRefused(now_s=NOW, claimable_mtok=5_000)
    h = Home(tmp_path, port)
    assert [c.change for c in h.cycle()] == ["placed"]
    assert h.journal.claims() == [] and h.bidder.status()["claims"] == 0
    h.journal.close()
