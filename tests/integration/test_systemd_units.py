"""The systemd units and `drgw install-service`, checked by systemd's own tools.

- `systemd-analyze verify` on every unit in systemd/, inside a tree made by `install-service --root`
  (so ExecStart's /usr/local/bin/drgw exists there); skipped only when systemd-analyze is missing.
- `systemd-analyze security --offline` exposure of drgw.service stays <= 2.5.
- install-service --root: units byte-identical to systemd/, the drgw user in dialout, directory
  modes and owners, the unit enabled; --dry-run changes nothing; without root it says so.
- setup.cfg ships systemd/ as data files, so `pip install` installs the same files.
- The agent's native code paths run with no W+X memory (MemoryDenyWriteExecute=yes), checked with
  the kernel's PR_SET_MDWE (Linux >= 6.3), which refuses the same mappings.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.commands import service
from gateway.errors import DrgwError
from tests.conftest import ROOT

UNITS = ROOT / "systemd"
HOST_UNITS = next((p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
                   if (p / "sysinit.target").exists()), None)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (Debian package systemd)")
    return path


def drgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, timeout=120)


def make_tree(tmp_path: Path) -> tuple[Path, Path]:
    """An empty system tree holding systemd's own units and a stand-in drgw in /opt/drgw/bin."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)  # every system tree has one; sysusers locks etc/passwd there
    if HOST_UNITS is not None:  # verify resolves sysinit.target etc. inside the tree
        shutil.copytree(HOST_UNITS, tree / "usr/lib/systemd/system", symlinks=True)
    exe = tree / "opt/drgw/bin/drgw"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexec true\n")
    exe.chmod(0o755)
    return tree, exe


def install(tree: Path, exe: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    out = drgw("install-service", "--root", str(tree), "--drgw", str(exe), *extra)
    assert out.returncode == 0, out.stderr
    return out


def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze")
    need("systemd-sysusers")
    need("systemctl")
    if HOST_UNITS is None:
        pytest.skip("systemd's own units (sysinit.target) are not installed here")
    tree, exe = make_tree(tmp_path)
    install(tree, exe)
    units = sorted(p.name for p in UNITS.glob("*.service"))
    assert {"drgw.service", "drgw-sim.service"} <= set(units)
    out = subprocess.run([analyze, "verify", f"--root={tree}", *units], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_a_missing_executable_is_what_verify_catches(tmp_path: Path) -> None:
    """The check above can fail: without the drgw link, ExecStart points at nothing."""
    analyze = need("systemd-analyze")
    need("systemd-sysusers")
    need("systemctl")
    if HOST_UNITS is None:
        pytest.skip("systemd's own units (sysinit.target) are not installed here")
    tree, exe = make_tree(tmp_path)
    install(tree, exe)
    (tree / "usr/local/bin/drgw").unlink()
    out = subprocess.run([analyze, "verify", f"--root={tree}", "drgw.service"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert "/usr/local/bin/drgw is not executable" in out.stderr


def test_drgw_service_exposure_is_at_most_2_5() -> None:
    analyze = need("systemd-analyze")
    out = subprocess.run([analyze, "security", "--offline=yes", str(UNITS / "drgw.service")],
                         capture_output=True, text=True, timeout=120)
    if "--offline" in out.stderr and out.returncode != 0:
        pytest.skip(f"systemd-analyze too old for --offline (systemd >= 252): {out.stderr.strip()}")
    found = re.search(r"Overall exposure level for drgw\.service: ([0-9.]+)", out.stdout)
    assert found, out.stdout + out.stderr
    assert float(found.group(1)) <= 2.5, out.stdout


def test_install_service_into_a_tree(tmp_path: Path) -> None:
    need("systemd-sysusers")
    need("systemctl")
    tree, exe = make_tree(tmp_path)
    out = install(tree, exe, "--sim")
    assert "next: write /etc/drgw/drgw.toml" in out.stdout
    for unit in UNITS.glob("*.service"):
        copied = tree / "usr/local/lib/systemd/system" / unit.name
        assert copied.read_bytes() == unit.read_bytes()
        assert stat.S_IMODE(copied.stat().st_mode) == 0o644
    assert (tree / "usr/local/lib/sysusers.d/drgw.conf").read_bytes() == \
        (UNITS / "drgw.sysusers").read_bytes()
    assert os.readlink(tree / "usr/local/bin/drgw") == "/opt/drgw/bin/drgw"  # as the booted system sees it

    passwd = {line.split(":")[0]: line.split(":") for line in
              (tree / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (tree / "etc/group").read_text().splitlines()}
    assert passwd["drgw"][5] == "/var/lib/drgw"
    assert "drgw" in groups["dialout"][3].split(",")
    for folder, mode in (("var/lib/drgw", 0o700), ("etc/drgw", 0o750)):
        st = (tree / folder).stat()
        assert stat.S_IMODE(st.st_mode) == mode
        if os.geteuid() == 0:
            assert st.st_uid == int(passwd["drgw"][2])
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "drgw.service").is_symlink()
    assert (wants / "drgw-sim.service").is_symlink()

    install(tree, exe)  # a second run changes nothing that breaks the first
    assert (wants / "drgw.service").is_symlink()


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    out = drgw("install-service", "--dry-run", "--root", str(tree), "--drgw", sys.executable)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "dry run: nothing was changed"
    text = "\n".join(lines)
    for expected in ("drgw.service (mode 0644)", "sysusers.d/drgw.conf", "usr/local/bin/drgw ->",
                     f"systemd-sysusers --root={tree}", "var/lib/drgw (mode 0700",
                     "etc/drgw (mode 0750", f"systemctl --root={tree} enable drgw.service"):
        assert expected in text, text
    assert list(tree.iterdir()) == []

    real = drgw("install-service", "--dry-run", "--drgw", sys.executable)
    assert real.returncode == 0, real.stderr
    assert "`systemctl daemon-reload`" in real.stdout
    assert "systemctl enable" in real.stdout


def test_refuses_without_root_and_says_how(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests may run as root; the check reads the effective uid, so present an ordinary one.
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = argparse.Namespace(dry_run=False, root=Path("/"), drgw=Path(sys.executable), sim=False,
                              no_start=False)
    with pytest.raises(DrgwError, match=r"run it as root \(`sudo drgw install-service`\)"):
        service.run(args)


def test_refuses_a_drgw_that_protecthome_hides() -> None:
    with pytest.raises(DrgwError, match="ProtectHome=yes"):
        service.check_executable(Path("/home/pi/.venv/bin/drgw"))


def test_pip_ships_the_units_from_setup_cfg() -> None:
    from setuptools.config.setupcfg import read_configuration

    data_files = read_configuration(ROOT / "setup.cfg")["options"]["data_files"]
    patterns = dict(data_files)["share/drgw/systemd"]
    shipped = {Path(p).name for pattern in patterns for p in ROOT.glob(pattern)}
    assert shipped == {p.name for p in UNITS.iterdir() if p.suffix in (".service", ".sysusers")}
    assert "drgw.service" in shipped and "drgw.sysusers" in shipped
    assert service.units_source() == UNITS  # a checkout uses the same folder


MDWE_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    print("unsupported"); sys.exit(0)
import asyncio, sqlite3, ssl
from gateway.clock import clock_synchronised
from gateway.measurement.eip712 import KECCAK_BACKEND
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, measurement_domain
from gateway.perception.readings import Quality, Reading
import aiomqtt, serial
key = GatewayKey.from_secret(bytes(range(1, 33)))
chain = MeasurementChain(gateway=key.address, last_seq=0, last_hash=bytes(32))
signed = chain.next_signed(key, measurement_domain(1), device="main", time_ms=1, clock_synced=
    clock_synchronised(), readings=(Reading("p", 1.5, "W", Quality.OK, 0.0),))
sqlite3.connect(":memory:").execute("select 1")
ssl.create_default_context()
asyncio.run(asyncio.sleep(0))
print("ok", signed.measurement.seq, KECCAK_BACKEND)
"""


def test_the_agent_code_paths_need_no_writable_executable_memory() -> None:
    out = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    if out.stdout.strip() == "unsupported":
        pytest.skip("the kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert out.returncode == 0, out.stderr
    from gateway.measurement.eip712 import KECCAK_BACKEND  # the backend this machine signs with

    assert out.stdout.strip() == f"ok 1 {KECCAK_BACKEND}"
