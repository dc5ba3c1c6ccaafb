"""Fault phases of bench/soak.py beyond SIGKILL and broker restarts: serial re-plug, wall-clock
steps and a full disk, each against a running `drgw run` and judged by the agent's own log lines.

Every phase returns notes (lines for the report); a note starting with "!" is a failure of the
agent (it did not recover in time, it exited). A phase that cannot be run here says why instead
of pretending: `Skipped(reason)`.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from gateway.measurement.wire import from_wire

DRGW = [sys.executable, "-m", "gateway.cli"]
RECOVER_S = 60.0  # generous: a loaded 2-core machine; the default reopen back-off tops out at 30 s


class Rig(Protocol):
    """What a phase needs of the soak: the agent's log, its store and the broker."""

    log: Path
    db: Path

    def start_agent(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]: ...

    def stop_agent(self, agent: subprocess.Popen[bytes], phase: str) -> None: ...

    def store_seq(self) -> int: ...

    def broker_down(self) -> None: ...

    def broker_up(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Skipped(Exception):
    reason: str


class LogWatch:
    """Counts a phrase in the agent's log from a byte offset on (the log is shared by all lives)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.start = log.stat().st_size if log.exists() else 0

    def count(self, phrase: str) -> int:
        if not self.log.exists():
            return 0
        with self.log.open("rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace").count(phrase)

    def wait(self, phrase: str, at_least: int, timeout: float) -> float | None:
        """Seconds until `phrase` appeared `at_least` times, None after `timeout`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.count(phrase) >= at_least:
                return time.monotonic() - t0
            time.sleep(0.2)
        return None


def after(seconds: float | None) -> str:
    return "never (!)" if seconds is None else f"after {seconds:.1f} s"


def flagged(notes: list[str]) -> list[str]:
    """A note that says the agent failed starts with "!"."""
    return [n if n.startswith("!") or ("(!)" not in n and "! " not in n) else "! " + n
            for n in notes]


def wait_until(ok: Callable[[], bool], timeout: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ok():
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


# -- serial re-plug ------------------------------------------------------------------------------

RTU_HOME = ('[[bus]]\nname = "rs485"\nbaud = 19200\n\n[[device]]\nname = "rtu"\n'
            'profile = "eastron_sdm630"\ntransport = "rtu"\naddress = "rs485"\nunit = 1\n'
            '[device.load]\nkind = "constant"\npower_w = 2300\n')


class RtuShim:
    """A simulated SDM630 on a Modbus RTU pty (`drgw simulate`): stopping it closes the pty's
    master, so the agent's open port reads and writes EIO, as a pulled USB RS-485 adapter does."""

    def __init__(self, work: Path) -> None:
        home = work / "rtu_home.toml"
        home.write_text(RTU_HOME)
        self.proc = subprocess.Popen([*DRGW, "simulate", str(home), "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        self.tty = str(json.loads(self.proc.stdout.readline())["devices"][0]["address"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def rtu_qualities(db: Path, after_seq: int) -> set[int]:
    """Quality codes of the rtu meter's readings committed after `after_seq` (0 ok, 2 error)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute("SELECT wire FROM measurements WHERE device = 'rtu' AND seq > ?",
                            [after_seq]).fetchall()
    return {r.quality for (wire,) in rows for r in from_wire(bytes(wire)).measurement.readings}


def rtu_errors_after(db: Path, after_seq: int) -> bool:
    return 2 in rtu_qualities(db, after_seq)


def rtu_ok_after(db: Path, after_seq: int) -> bool:
    return 0 in rtu_qualities(db, after_seq)


def point(link: Path, target: str) -> None:
    """Atomically re-point the symlink, as udev does for /dev/serial/by-id/..."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def replug_phase(rig: Rig, shims: list[RtuShim], link: Path, *, replugs: int,
                 hold: float) -> list[str]:
    """Pull the adapter (stop the shim), wait for the agent to notice, plug a new one in under
    another tty, and wait for the agent's "port back"; `shims[-1]` is the live one afterwards."""
    watch, notes = LogWatch(rig.log), []
    agent = rig.start_agent()
    try:
        for i in range(1, replugs + 1):
            time.sleep(hold)
            fresh = RtuShim(link.parent)  # started first, so that it gets another tty
            shims[-1].stop()
            link.unlink()  # udev removes the by-id link with the adapter
            shims.append(fresh)
            # Judged by the store (the authority): the agent's "port lost"/"port back" warnings
            # pass its RepeatFilter only once a minute, so a log line can be missing.
            pulled = rig.store_seq()
            lost = wait_until(partial(rtu_errors_after, rig.db, pulled), RECOVER_S)
            time.sleep(2.0)  # reopen attempts fail on the missing path meanwhile
            plugged = rig.store_seq()
            point(link, fresh.tty)
            back = wait_until(partial(rtu_ok_after, rig.db, plugged), RECOVER_S)
            notes.append(f"re-plug {i}: {fresh.tty}; rtu readings in error {after(lost)}, "
                         f"ok again {after(back)} after the re-plug")
        notes.append(f"agent log: {watch.count('port lost')} 'port lost', "
                     f"{watch.count('port back')} 'port back' line(s)")
        time.sleep(hold)
    finally:
        rig.stop_agent(agent, "serial re-plug")
    return flagged(notes)


# -- wall-clock steps ----------------------------------------------------------------------------

def faketime_library() -> Path | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return Path(found[0]) if found else None


def clock_phase(rig: Rig, work: Path, *, steps: list[str], hold: float) -> list[str]:
    """Run the agent under libfaketime with an offset file it rereads on every clock call: each
    step rewrites the offset (relative to the true time) and holds it. The monotonic clock is not
    faked, as a real step (NTP, an RTC-less boot) leaves CLOCK_MONOTONIC alone. The broker is down
    across the first step so that records wait in the outbox while the clock jumps: an age-based
    eviction triggered by the step would show as lost seqs."""
    lib = faketime_library()
    if lib is None:
        raise Skipped("libfaketime is not installed (Debian: apt-get install faketime; "
                      "scripts/setup does not install it)")
    offset = work / "faketime.offset"
    offset.write_text("+0s\n")
    env = {**os.environ, "LD_PRELOAD": str(lib), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    agent = rig.start_agent(env)
    notes = []
    try:
        time.sleep(hold)
        for i, step in enumerate(steps):
            if i == 0:
                rig.broker_down()
                time.sleep(2.0)
            before = rig.store_seq()
            offset.write_text(f"{step}\n")
            time.sleep(hold)
            if i == 0:
                rig.broker_up()
            gone = agent.poll()
            grew = rig.store_seq() - before
            notes.append(f"wall clock at true time {step}: {grew} record(s) committed in {hold:g} s"
                         f"{stamped(rig.db, before)}"
                         + (f"; ! agent exited with status {gone}" if gone is not None else ""))
            if gone is None and grew == 0:
                notes[-1] = "! " + notes[-1]
        offset.write_text("+0s\n")
        time.sleep(hold)
    finally:
        rig.stop_agent(agent, "clock steps")
    return notes


def stamped(db: Path, after_seq: int) -> str:
    """How far the newest record's time stamp is from the true time: proof the step took."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT max(time_ms) FROM measurements WHERE seq > ?",
                           [after_seq]).fetchone()
    if row is None or row[0] is None:
        return ""
    return f" (newest record stamped {(row[0] - time.time() * 1000) / 1000:+.0f} s from true time)"


# -- disk full -----------------------------------------------------------------------------------

def mount_tmpfs(where: Path, megabytes: int) -> str | None:
    """None when a tmpfs of `megabytes` is mounted at `where`, else why not."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        return f"cannot mount a {megabytes} MB tmpfs for the store: {done.stderr.strip()}"
    return None


def umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem refuses (ENOSPC); bytes written."""
    written = 0
    with path.open("wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block) or 0
                except OSError:
                    break
    return written


def disk_phase(rig: Rig, store_dir: Path, *, hold: float) -> list[str]:
    """Fill the store's filesystem while the agent runs, hold, free it, and check that the agent
    stayed up, said so in its log and committed again by itself."""
    watch, ballast = LogWatch(rig.log), store_dir / "ballast"
    agent = rig.start_agent()
    notes = []
    try:
        time.sleep(hold / 2)
        size = fill(ballast)
        refused = watch.wait("store: cannot commit", 1, max(hold, 30.0))
        notes.append(f"ballast {size / 1e6:.1f} MB fills the store's tmpfs; first refused commit "
                     f"{after(refused)}")
        time.sleep(hold)
        full_seq, gone = rig.store_seq(), agent.poll()
        notes.append(f"held full {hold:g} s: agent "
                     + ("up" if gone is None else f"! exited with status {gone}"))
        ballast.unlink()
        resumed = wait_until(lambda: rig.store_seq() > full_seq, RECOVER_S)
        said = watch.wait("store: committing again", 1, 5.0)
        notes.append(f"space back: committing again {after(resumed)}"
                     + ("" if said is not None else "; no 'committing again' log line"))
        time.sleep(hold / 2)
    finally:
        ballast.unlink(missing_ok=True)
        rig.stop_agent(agent, "disk full")
    return flagged(notes)
