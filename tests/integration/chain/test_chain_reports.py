"""Reports, settlement, verification and reputation on the embedded EVM, and the Report outbox."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.chain.outbox import ChainOutbox
from gateway.chain.report import report_digest
from gateway.chain.revert import ChainRevert
from gateway.chain.submit import ReportSubmitter
from gateway.market.reputation import ReputationRules

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
RULES = ReputationRules()


def reverts(name: str, fn, *args, **kwargs) -> ChainRevert:  # type: ignore[no-untyped-def]
    with pytest.raises(ChainRevert) as info:
        fn(*args, **kwargs)
    assert info.value.revert.name == name, str(info.value)
    return info.value


def cleared(market, *powers: int):  # type: ignore[no-untyped-def]
    """Households h0.. each bid powers[i] W at rising prices; announce and clear one window."""
    hs = [market.household(f"h{i}") for i in range(len(powers))]
    bids = [market.bid(h, power_w=p, price_mtok=10_000 * (i + 1)) for i, (h, p)
            in enumerate(zip(hs, powers, strict=True))]
    window, start, end = market.announce()
    market.client.clear(market.op, window)
    for h in hs:  # each gateway commits its baseline before the window (market.report's defaults)
        market.commit(h, window)
    return hs, bids, window, start, end


def test_the_contract_hashes_a_report_as_the_gateway_signs_it(market) -> None:
    hs, _, window, _, _ = cleared(market, -2000)
    signed = market.report(hs[0], window, delivered=333)
    on_chain = market.client.market.functions.reportDigest(signed.report.as_tuple()).call()
    assert bytes(on_chain) == report_digest(signed.report, chain_id=market.deployment.chain_id,
                                            market=market.deployment.market)


def test_report_accepted_from_any_sender_and_replays_rejected(market) -> None:
    hs, _, window, _, end = cleared(market, -2000)
    signed = market.report(hs[0], window, delivered=333)
    reverts("WindowNotOver", market.client.submit_report, market.stranger, signed)
    market.at(end)
    mined = market.client.submit_report(market.stranger, signed)  # a relayer pays, gateway signs
    event = market.client.events("ReportAccepted", mined)[0]
    assert event["sender"] == market.stranger.address and event["deliveredWh"] == 333
    assert mined.gas_used <= 80_000
    reverts("DuplicateReport", market.client.submit_report, market.aggregator, signed)


def test_forged_and_malformed_reports_are_rejected(market) -> None:
    hs, _, window, start, end = cleared(market, -2000, -2000)
    market.at(end)
    forged = market.report(hs[0], window, delivered=333, key=hs[1].gateway_key)
    err = reverts("WrongSigner", market.client.submit_report, market.stranger, forged)
    assert err.revert.args["gateway"] == hs[0].gateway
    good = market.report(hs[0], window, delivered=333)
    tampered = dataclasses.replace(good, report=dataclasses.replace(good.report, delivered_wh=999))
    reverts("WrongSigner", market.client.submit_report, market.stranger, tampered)
    reverts("ReportWindowMismatch", market.client.submit_report, market.stranger,
            market.report(hs[0], window, delivered=1, window_start=start + 1))
    reverts("ReportInconsistent", market.client.submit_report, market.stranger,
            market.report(hs[0], window, delivered=1, delivered_wh=2))
    reverts("SeqOutOfOrder", market.client.submit_report, market.stranger,
            market.report(hs[0], window, delivered=1, seq_from=5, seq_to=4))
    loser = market.household("loser")
    reverts("NotAWinner", market.client.submit_report, market.stranger,
            market.report(loser, window, delivered=1))


def test_settle_pays_reporters_and_check_refunds_or_forfeits(market) -> None:
    # 3 winners (2 kW each, 10 minutes: 333 Wh awarded each); tolerance 5% -> 317 Wh needed
    hs, bids, window, _, end = cleared(market, -2000, -2000, -2000)
    market.at(end)
    market.client.submit_report(market.stranger, market.report(hs[0], window, delivered=317))
    market.client.submit_report(market.stranger, market.report(hs[1], window, delivered=316))
    balances = [market.client.balance(h.address) for h in hs]
    market.client.settle(market.op, window)
    checked = market.client.check(market.op, window)  # pull: payments and refunds accrue
    paid = market.client.events("BidPaid", checked)
    price = market.client.window(window)["clearingPrice"]
    assert price == 30_000
    assert {e["bidId"]: e["amount"] for e in paid} == {
        bids[0]: price * 2000 * 600 // 3_600_000, bids[1]: price * 2000 * 600 // 3_600_000}
    refunded = {e["bidId"] for e in market.client.events("DepositRefunded", checked)}
    forfeited = {e["bidId"] for e in market.client.events("DepositForfeited", checked)}
    assert refunded == {bids[0]} and forfeited == {bids[1], bids[2]}
    deposit, pay = 200_000, 10_000
    for h in hs:
        market.client.claim(market.stranger, h.address)  # anyone may claim for a household
    after = [market.client.balance(h.address) for h in hs]
    assert [a - b for a, b in zip(after, balances, strict=True)] == [deposit + pay, pay, 0]
    scores = [market.client.household(h.address)["score"] for h in hs]
    assert scores == [RULES.initial + RULES.gain, RULES.initial - RULES.shortfall_loss,
                      RULES.initial - RULES.no_report_loss]


def test_settle_waits_for_the_report_grace(market) -> None:
    market2 = type(market)(market.node, market.outbox, grace_s=300)
    _, _, window, _, end = cleared(market2, -2000)
    market2.at(end)
    err = reverts("ReportGraceRunning", market2.client.settle, market2.op, window)
    assert err.revert.args["until"] == end + 300
    reverts("WrongWindowState", market2.client.check, market2.op, window)
    market2.at(end + 300)
    market2.client.settle(market2.op, window)


def test_a_failing_household_is_suspended_and_recovers(market) -> None:
    h = market.household("h")
    until = 0
    for _ in range(3):  # three windows without a Report: 500 -> 350 -> 200 (< 300)
        market.bid(h, power_w=-1000, price_mtok=1)
        window, _, end = market.announce()
        market.client.clear(market.op, window)
        if market.client.window(window)["state"] == 5:
            break
        market.at(end)
        market.client.settle(market.op, window)
        market.client.check(market.op, window)
        until = market.client.household(h.address)["suspendedUntil"]
    assert window == 3 and until == 2 + 1 + RULES.suspension_windows
    assert market.client.household(h.address)["score"] == 200
    assert market.client.window(window)["state"] == 5  # window 3: the only bidder is suspended
    for _ in range(until - 4):  # windows 4..until-1 are void too
        window, _, _ = market.announce()
        market.client.clear(market.op, window)
        assert market.client.window(window)["state"] == 5
    window, _, _ = market.announce()  # window `until`: eligible again
    market.client.clear(market.op, window)
    assert window == until and market.client.window(window)["state"] == 2


def test_outbox_submission_is_durable_and_idempotent(market, tmp_path) -> None:
    hs, _, window, _, end = cleared(market, -2000)
    market.at(end)
    path = tmp_path / "outbox.sqlite"
    outbox = ChainOutbox(path)
    relayer = market.sender(market.node.funded_keys[3])
    relayer = type(relayer)(w3=market.node.w3, key=market.node.funded_keys[3], outbox=outbox,
                            decoder=market.decoder)
    submitter = ReportSubmitter(outbox=outbox, client=market.client, sender=relayer)
    signed = market.report(hs[0], window, delivered=400)
    first = submitter.queue(signed)
    assert submitter.queue(signed) == first  # queuing twice keeps one entry
    outbox.close()
    reopened = ChainOutbox(path)  # a restart of the gateway: the queue is still there
    relayer = type(relayer)(w3=market.node.w3, key=market.node.funded_keys[3], outbox=reopened,
                            decoder=market.decoder)
    submitter = ReportSubmitter(outbox=reopened, client=market.client, sender=relayer)
    assert [q.signed for q in reopened.reports(state="queued")] == [signed]
    result = submitter.drain()
    assert (result.accepted, result.waiting, result.rejected) == (1, 0, ())
    assert result.gas_used <= 80_000
    assert market.client.take(hs[0].address, window)["deliveredWh"] == 400
    assert submitter.queue(signed) == first  # the outbox keeps one Report per window
    reopened.finish_report(first, state="queued")  # as if the gateway died before marking it
    again = submitter.drain()  # the contract holds it already: accepted, no second tx
    assert (again.accepted, again.gas_used) == (1, 0)
    assert reopened.tx_totals()[0] == 1
