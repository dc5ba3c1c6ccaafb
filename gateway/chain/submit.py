"""The Report path: queue signed Reports durably, submit them, and record the contract's verdict.

`ReportSubmitter.drain()` first lets the sender finish any transaction it kept (re-sent as is), then
submits every queued Report. Relayer mode is simply a submitter whose sender is the aggregator's
account: the gateway only signs, the aggregator pays gas. A Report the contract already holds
(DuplicateReport) counts as accepted, so resubmission is idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.chain.market_client import MarketClient
from gateway.chain.outbox import ChainOutbox, QueuedReport
from gateway.chain.report import SignedReport
from gateway.chain.revert import ChainRevert
from gateway.chain.sender import NodeUnavailable, TxSender
from gateway.errors import RemoteError


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainResult:
    """What one drain did: Reports accepted, rejected (with reasons), still waiting."""

    accepted: int
    rejected: tuple[str, ...]
    waiting: int
    gas_used: int


class ReportSubmitter:
    """Moves Reports from the outbox to the market through one sender (own account or relayer)."""

    def __init__(self, *, outbox: ChainOutbox, client: MarketClient, sender: TxSender) -> None:
        self._outbox, self._client, self._sender = outbox, client, sender

    def queue(self, signed: SignedReport) -> int:
        d = self._client.deployment
        return self._outbox.queue_report(signed, chain_id=d.chain_id, market=d.market)

    def drain(self) -> DrainResult:
        accepted, gas, rejected = 0, 0, []
        try:
            self._sender.resume()
        except NodeUnavailable:
            return DrainResult(accepted=0, rejected=(), waiting=len(self._waiting()), gas_used=0)
        except RemoteError:
            pass  # a kept transaction failed on chain; its Report is judged below
        for queued in self._waiting():
            try:
                mined = self._client.submit_report(self._sender, queued.signed)
            except NodeUnavailable:
                break
            except ChainRevert as exc:
                if exc.revert.name == "WindowNotOver":
                    continue  # the node's clock has not reached the end yet: stays queued
                if exc.revert.name == "DuplicateReport":
                    self._outbox.finish_report(queued.id, state="accepted",
                                               error="already on chain")
                    accepted += 1
                else:
                    self._outbox.finish_report(queued.id, state="rejected", error=str(exc))
                    rejected.append(str(exc))
                continue
            self._outbox.set_report_tx(queued.id, mined.tx_hash)
            self._outbox.finish_report(queued.id, state="accepted")
            accepted += 1
            gas += mined.gas_used
        return DrainResult(accepted=accepted, rejected=tuple(rejected),
                           waiting=len(self._waiting()), gas_used=gas)

    def _waiting(self) -> tuple[QueuedReport, ...]:
        d = self._client.deployment
        return tuple(q for q in self._outbox.reports(state="queued")
                     if q.chain_id == d.chain_id and q.market == d.market)
