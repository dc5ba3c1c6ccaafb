"""The suite's own report (tests/areas.py): counts per area, grouped skip reasons, the CI rule.

The skip texts below are the ones the suite's helpers really print (test_systemd_units.need,
chain/conftest.missing, test_architecture's skipif, the MDWE and --offline probes); the end-to-end
test runs pytest on test_systemd_units.py with systemd's tools off the PATH, as on a container
without the systemd package.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.areas import RunResult, ci_violations, summary
from tests.conftest import ROOT

MISSING = ("systemd-analyze is not installed (Debian package systemd)",
           "systemd's own units (sysinit.target) are not installed here",
           "the anvil binary (npm package @foundry-rs/anvil) is missing; install it with "
           "`npm ci --prefix gateway/chain/contracts`",
           "import-linter is not installed (.[test])")
LIMITS = ("the kernel has no PR_SET_MDWE (Linux < 6.3)",
          "systemd-analyze too old for --offline (systemd >= 252): unrecognized option",
          "no user 'nobody' to stand in for the service user")


def skipped(nodeid: str, reason: str) -> RunResult:
    return RunResult(nodeid=nodeid, outcome="skipped", reason=reason)


@pytest.mark.parametrize("reason", MISSING)
def test_a_missing_tool_fails_a_ci_run_unless_allowed(reason: str) -> None:
    tests = [skipped("tests/integration/test_systemd_units.py::test_x", reason)]
    assert ci_violations(tests, {"CI": "true"}) == tests
    assert ci_violations(tests, {"CI": "1"}) == tests
    assert ci_violations(tests, {"CI": "true", "DRGW_ALLOW_MISSING": "1"}) == []
    assert ci_violations(tests, {}) == []  # outside CI it is reported, not failed


@pytest.mark.parametrize("reason", LIMITS)
def test_a_limit_of_the_machine_stays_a_skip_in_ci(reason: str) -> None:
    assert ci_violations([skipped("tests/integration/test_x.py::test_y", reason)], {"CI": "true"}) == []


def test_areas_count_each_test_once_and_group_skips_by_their_own_area() -> None:
    tests = [RunResult(nodeid="tests/unit/test_a.py::test_1", outcome="passed"),
             RunResult(nodeid="tests/unit/test_a.py::test_2", outcome="failed"),
             RunResult(nodeid="tests/integration/chain/test_c.py::test_3", outcome="passed",
                       markers=frozenset({"anvil"})),
             skipped("tests/integration/test_systemd_units.py::test_4", MISSING[0]),
             skipped("tests/integration/test_systemd_units.py::test_5", MISSING[0]),
             skipped("tests/integration/test_systemd_units.py::test_6", LIMITS[0])]
    table, skips = summary(tests)
    rows = {line[:18].strip(): line[18:].split() for line in table[1:]}
    assert rows["unit"] == ["2", "2", "1", "1", "0"]  # tests, ran, passed, failed, skipped
    assert rows["integration"] == ["4", "1", "1", "0", "3"]
    assert rows["chain (EVM)"] == ["1", "1", "1", "0", "0"]
    assert rows["systemd units"] == ["3", "0", "0", "0", "3"]
    assert rows["marker anvil"] == ["1", "1", "1", "0", "0"]
    assert rows["e2e"] == ["0", "0", "0", "0", "0"]
    assert skips == [f"systemd units: 2 skipped: {MISSING[0]}", f"systemd units: 1 skipped: {LIMITS[0]}"]


def test_a_ci_run_without_systemds_tools_names_them_and_fails() -> None:
    env = {**os.environ, "PATH": "/nonexistent", "CI": "true"}
    env.pop("DRGW_ALLOW_MISSING", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "tests/integration/test_systemd_units.py"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "tests by area (tests/areas.py)" in out.stdout
    assert "systemd units: 3 skipped: systemd-analyze is not installed (Debian package systemd)" \
        in out.stdout
    assert "CI: 4 skipped for a missing tool: the run fails" in out.stdout
    assert "fix: run scripts/setup" in out.stdout

    allowed = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "-p", "no:xdist", "tests/integration/test_systemd_units.py"],
                             cwd=ROOT, env={**env, "DRGW_ALLOW_MISSING": "1"}, capture_output=True,
                             text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "systemd units: 3 skipped" in allowed.stdout
