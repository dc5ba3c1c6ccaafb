"""FakeMarketPort: an in-memory MarketPort for tests of the DR loop that need no chain (the real one
is gateway/chain/port.py's Web3MarketPort). Tests queue awards and read back the submitted Reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.chain.port import Award, MarketPort, Submission
from gateway.chain.report import Report


@dataclass
class FakeMarketPort:
    """In-memory stand-in: tests queue awards and read back the Reports the loop submitted."""

    household: str = "0x" + "11" * 20
    awards: list[Award] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    settlements: dict[int, dict[str, Any]] = field(default_factory=dict)

    def poll_awards(self) -> list[Award]:
        out, self.awards = self.awards, []
        return out

    def submit(self, report: Report) -> Submission:
        self.reports.append(report)
        return Submission(state="accepted", report_id=len(self.reports))

    def settlement(self, window: int) -> dict[str, Any] | None:
        return self.settlements.get(window)

    def report_state(self, report_id: int) -> str:
        return "accepted" if 0 < report_id <= len(self.reports) else "unknown"


if TYPE_CHECKING:  # mypy checks that the fake still has the shape of the port it stands in for
    _PORT: MarketPort = FakeMarketPort()
