"""The suite's areas for the terminal summary: how many tests ran, passed and skipped, and why.

Not a conftest: tests/conftest.py registers `AreaReport`, a plugin that keeps every test's outcome
(from xdist workers too) and prints `summary()` at the end of the run, so CI output says which
areas ran and which were skipped, with the reasons grouped. It also holds the CI rule for skips
(`ci_violations`):

- a skip whose reason says a tool "is not installed" / "is missing" fails a CI run (`CI` set to
  true, 1 or yes), because scripts/setup installs every tool the suite needs: such a skip in CI
  means the setup broke, and a green run would hide that systemd units or the chain went
  unchecked. `DRGW_ALLOW_MISSING=1` (already the switch that turns a missing anvil or solc from a
  failure into a skip, tests/integration/chain/conftest.py) allows them;
- a skip for a limit of the machine that no setup can lift (a kernel without PR_SET_MDWE, a
  systemd older than 252) stays a skip: it is printed here, it does not fail the run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest

# The phrases the suite's skip helpers use for a missing tool (test_systemd_units.need,
# chain/conftest.missing, test_architecture's skipif); an environment limit never says them.
MISSING_TOOL = re.compile(r"\b(?:is|are) (?:not installed|missing)\b")
CI_VALUES = ("true", "1", "yes")


@dataclass(frozen=True, slots=True, kw_only=True)
class Area:
    """A row of the summary: tests under a path prefix (a node id's start) or with a marker."""

    name: str
    path: str | None = None
    marker: str | None = None

    def holds(self, test: RunResult) -> bool:
        if self.path is not None and not test.nodeid.startswith(self.path):
            return False
        return self.marker is None or self.marker in test.markers


AREAS = (
    Area(name="unit", path="tests/unit/"),
    Area(name="integration", path="tests/integration/"),
    Area(name="  chain (EVM)", path="tests/integration/chain/"),
    Area(name="  systemd units", path="tests/integration/test_systemd_units.py"),
    Area(name="profiles", path="tests/profiles/"),
    Area(name="e2e", path="tests/e2e/"),
    Area(name="marker anvil", marker="anvil"),
    Area(name="marker slow", marker="slow"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """One test's outcome over its phases: passed, failed (a failure or an error) or skipped."""

    nodeid: str
    outcome: str
    reason: str = ""
    markers: frozenset[str] = frozenset()


RANK = {"passed": 0, "skipped": 1, "failed": 2}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The text given to pytest.skip / skipif, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr  # (path, line, message) for a skip
    three = isinstance(longrepr, tuple | list) and len(longrepr) == 3
    return str(longrepr[2] if three else longrepr).removeprefix("Skipped: ")  # type: ignore[index]


class Outcomes:
    """Every test's outcome as its reports arrive, from xdist workers too (one per run, in a stash)."""

    def __init__(self) -> None:
        self.tests: dict[str, RunResult] = {}

    def add(self, report: pytest.TestReport) -> None:
        if report.passed and report.when != "call":
            return  # a setup or teardown that went fine says nothing about the test
        if report.skipped and hasattr(report, "wasxfail"):
            outcome, reason = "passed", ""  # an expected failure behaved as expected
        elif report.skipped:
            outcome, reason = "skipped", skip_reason(report)
        else:
            outcome, reason = report.outcome, ""
        self._keep(RunResult(nodeid=test_id(report.nodeid), outcome=outcome, reason=reason,
                               markers=frozenset(str(k) for k in report.keywords)))

    def add_collect(self, report: pytest.CollectReport) -> None:
        """A module skipped at collection (pytest.skip(allow_module_level=True)) counts as one test."""
        if report.skipped:
            self._keep(RunResult(nodeid=test_id(report.nodeid), outcome="skipped",
                                   reason=skip_reason(report)))

    def _keep(self, new: RunResult) -> None:
        old = self.tests.get(new.nodeid)
        if old is None or RANK[new.outcome] > RANK[old.outcome]:
            self.tests[new.nodeid] = new


def test_id(nodeid: str) -> str:
    """The node id without the `@group` suffix that `--dist loadgroup` appends."""
    at, bracket = nodeid.rfind("@"), nodeid.rfind("]")
    return nodeid[:at] if at > bracket else nodeid


def missing_tool_skips(tests: Iterable[RunResult]) -> list[RunResult]:
    return [t for t in tests if t.outcome == "skipped" and MISSING_TOOL.search(t.reason)]


def ci_violations(tests: Iterable[RunResult], env: Mapping[str, str]) -> list[RunResult]:
    """The skips that fail a CI run: a missing tool, unless DRGW_ALLOW_MISSING=1 allows it."""
    if env.get("CI", "").lower() not in CI_VALUES or env.get("DRGW_ALLOW_MISSING") == "1":
        return []
    return missing_tool_skips(tests)


def home_area(nodeid: str) -> str:
    """The name of the most specific path area holding a test, for grouping its skip reason."""
    paths = [a for a in AREAS if a.path is not None and nodeid.startswith(a.path)]
    return max(paths, key=lambda a: len(a.path or "")).name.strip() if paths else "other"


def summary(tests: Iterable[RunResult]) -> tuple[list[str], list[str]]:
    """The area table's lines, and the skipped tests' lines grouped by area and reason."""
    tests = list(tests)
    table = [f"{'area':<18}{'tests':>7}{'ran':>6}{'passed':>8}{'failed':>8}{'skipped':>9}"]
    for area in AREAS:
        counts = Counter(t.outcome for t in tests if area.holds(t))
        ran = counts["passed"] + counts["failed"]
        table.append(f"{area.name:<18}{counts.total():>7}{ran:>6}{counts['passed']:>8}"
                     f"{counts['failed']:>8}{counts['skipped']:>9}")
    reasons = Counter((home_area(t.nodeid), t.reason) for t in tests if t.outcome == "skipped")
    skips = [f"{area}: {n} skipped: {reason}"
             for (area, reason), n in sorted(reasons.items(), key=lambda item: (item[0][0], -item[1]))]
    return table, skips


class AreaReport:
    """A pytest plugin (registered by tests/conftest.py): tallies the reports, prints the areas."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.outcomes = Outcomes()
        self.violations: list[RunResult] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.outcomes.add(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self.outcomes.add_collect(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.violations = ci_violations(self.outcomes.tests.values(), self.env)
        if self.violations and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        table, skips = summary(self.outcomes.tests.values())
        tr.write_sep("=", "tests by area (tests/areas.py)", bold=True, yellow=bool(skips))
        for line in table:
            tr.write_line(line)
        if skips:
            tr.write_sep("-", "skipped, by area and reason", yellow=True, bold=True)
            for line in skips:
                tr.write_line(line, yellow=True)
        if self.violations:
            tr.write_sep("=", f"CI: {len(self.violations)} skipped for a missing tool: the run fails",
                         red=True, bold=True)
            for test in sorted(self.violations, key=lambda t: t.nodeid):
                tr.write_line(f"{test.nodeid}: {test.reason}", red=True)
            tr.write_line("fix: run scripts/setup (it installs every tool the suite needs), or set "
                          "DRGW_ALLOW_MISSING=1 to let these skips pass", red=True)
