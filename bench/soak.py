"""Crash soak of `drgw run`: SIGKILL at random moments, broker restarts, and a subscriber that must
end up with every committed measurement, none of them in two versions.

Setup (all on loopback): `drgw simulate` serves --meters simulated SDM630 meters over Modbus TCP;
a real mosquitto with persistence (tests/mosquitto.py); `drgw run` polls every point of every meter
every --poll seconds. A QoS 1 persistent-session subscriber (paho, reconnecting) listens on the
gateway's meas topic for the whole run.

Loop, --kills times: start `drgw run`; after a random life (--life MIN MAX seconds, seeded by
--seed) kill it with SIGKILL; with probability --broker-restarts, stop the broker during that life
(SIGTERM: mosquitto saves its persistence; --broker-kill uses SIGKILL, where the broker itself may
lose messages it acknowledged) and start it again after 0.2..2 s. After each kill the store's last
(seq, leaf) is noted. Then a final run drains the outbox and stops cleanly (SIGTERM), and the
subscriber gets --drain-timeout seconds to catch up.

Checks, against the SQLite store (the authority) and gateway.master.watch.StreamChecker:
- lost: seqs the store committed that the subscriber never received;
- duplicates: a seq received again with identical content (QoS 1 redelivery: allowed);
- different: a seq received in two versions, or a received record that differs from the stored one;
- reused: a (seq, leaf) noted after a kill that the final store no longer holds, a gap or a broken
  prev-hash link in the stored chain;
- unexpected exits: the agent ended before its SIGKILL.
Exit status 1 when lost, different, reused or unexpected exits are non-zero.

    .venv/bin/python bench/soak.py [--kills 100] [--seed 1] [--meters 10] [--poll 0.5] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.soak_faults import (  # noqa: E402
    RtuShim,
    Skipped,
    clock_phase,
    disk_phase,
    mount_tmpfs,
    point,
    replug_phase,
    umount,
)
from bench.soak_store import (  # noqa: E402
    Subscriber,
    Tally,
    last_mark,
    outbox_rows,
    print_report,
    stored_chain,
    wait_delivered,
)
from tests.mosquitto import Broker  # noqa: E402

DRGW = [sys.executable, "-m", "gateway.cli"]


@dataclass
class Phase:
    """One fault phase: the seqs committed while it ran are (first, last]; notes for the report."""

    name: str
    first: int
    last: int = 0
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class Soak:
    work: Path
    db: Path
    broker: Broker
    config: Path
    rng: random.Random
    broker_kill: bool
    log: Path = field(init=False)
    phases: list[Phase] = field(default_factory=list)
    kills: int = 0
    broker_restarts: int = 0
    starts: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    marks: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, leaf) after each kill

    def __post_init__(self) -> None:
        self.log = self.work / "agent.log"

    def start_agent(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.log.open("ab") as log:
            return subprocess.Popen([*DRGW, "run", str(self.config)], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)

    def stop_agent(self, agent: subprocess.Popen[bytes], phase: str) -> None:
        """A clean stop (SIGTERM, exit 0) ends a phase; anything else is an unexpected exit."""
        code = agent.poll()
        if code is not None:
            self.unexpected_exits.append(f"{phase}: the agent exited by itself, status {code}")
            return
        agent.send_signal(signal.SIGTERM)
        try:
            code = agent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
            code = agent.wait()
        if code != 0:
            self.unexpected_exits.append(f"{phase}: exit status {code} after SIGTERM")

    def store_seq(self) -> int:
        mark = last_mark(self.db)
        return 0 if mark is None else mark[0]

    def broker_down(self) -> None:
        self.broker.kill() if self.broker_kill else self.broker.stop()

    def broker_up(self) -> None:
        self.broker.start()
        self.broker_restarts += 1

    def restart_broker(self, down: float) -> None:
        self.broker_down()
        time.sleep(down)
        self.broker_up()

    def phase(self, name: str, body: Callable[[], list[str]]) -> None:
        """Run one phase and note the seqs it committed; a Skipped phase says why it did not run."""
        ph = Phase(name, first=self.store_seq())
        self.phases.append(ph)
        print(f"soak: phase {name} ...", file=sys.stderr, flush=True)
        try:
            ph.notes = body()
        except Skipped as why:
            ph.skipped = why.reason
        ph.last = self.store_seq()

    def one_life(self, life: tuple[float, float], broker_p: float) -> None:
        agent = self.start_agent()
        span = self.rng.uniform(*life)
        if self.rng.random() < broker_p:
            at, down = self.rng.uniform(0, span), self.rng.uniform(0.2, 2.0)
            time.sleep(at)
            self.restart_broker(down)
            time.sleep(max(0.0, span - at - down))
        else:
            time.sleep(span)
        code = agent.poll()
        if code is not None:
            self.unexpected_exits.append(f"start {self.starts}: exit status {code}")
        else:
            agent.send_signal(signal.SIGKILL)
            agent.wait(timeout=30)
            self.kills += 1
        mark = last_mark(self.db)
        if mark is not None:
            self.marks.append(mark)

    def kill_lives(self, args: argparse.Namespace, started: float) -> list[str]:
        for i in range(args.kills):
            self.one_life((args.life[0], args.life[1]), args.broker_restarts)
            if (i + 1) % 10 == 0:
                print(f"soak: {i + 1}/{args.kills} lives, seq {self.store_seq()}, "
                      f"{self.broker_restarts} broker restart(s), "
                      f"{time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        return [f"{self.kills} SIGKILL(s), {self.broker_restarts} broker restart(s)"]

    def final_drain(self, timeout: float) -> int:
        """Run the agent until its outbox is empty, then stop it cleanly; returns rows left."""
        for _ in range(3):
            agent = self.start_agent()
            deadline = time.monotonic() + timeout
            time.sleep(2.0)  # let it connect and commit a little: the clean stop is tested too
            while outbox_rows(self.db) and time.monotonic() < deadline:
                time.sleep(0.5)
            agent.send_signal(signal.SIGTERM)
            code = agent.wait(timeout=60)
            if code != 0:
                self.unexpected_exits.append(f"final run: exit status {code} after SIGTERM")
            left = outbox_rows(self.db)
            if not left:
                return 0
        return left


def setup(work: Path, broker: Broker, meters: int, poll: float, *, store: Path,
          link: Path | None) -> tuple[subprocess.Popen[str], Path, str]:
    home = work / "home.toml"
    home.write_text("".join(
        f'[[device]]\nname = "m{i}"\nprofile = "eastron_sdm630"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:0"\nunit = 1\n[device.load]\nkind = "constant"\n'
        f"power_w = {400 + 150 * i}\n\n" for i in range(meters)))
    sim = subprocess.Popen([*DRGW, "simulate", str(home), "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    assert sim.stdout is not None
    devices = json.loads(sim.stdout.readline())["devices"]
    out = subprocess.run([*DRGW, "keys", "new", "--out", str(work / "gw.key"), "--json"],
                         check=True, capture_output=True, text=True)
    gw = json.loads(out.stdout)["address"]
    # Merkle intervals of 5 s, so that intervals close before, across and after the clock steps.
    text = (f'[gateway]\nkey = "gw.key"\nlog_level = "WARNING"\n[mqtt]\nbroker = "{broker.url}"\n'
            f'health_interval = 5\n[store]\npath = "{store}"\nmerkle_interval_s = 5\n'
            f"[poll]\nfast = {poll}\nnormal = {poll}\nslow = {poll}\n")
    for i, d in enumerate(devices):
        text += (f'[[bus]]\nname = "b{i}"\ntcp = "{d["address"]}"\n[[device]]\n'
                 f'name = "{d["name"]}"\nprofile = "eastron_sdm630"\nbus = "b{i}"\nunit = 1\n')
    if link is not None:  # the re-plug phase's meter: an RTU bus behind a by-id style symlink
        text += (f'[[bus]]\nname = "rs485"\nserial = "{link}"\nbaud = 19200\n[[device]]\n'
                 f'name = "rtu"\nprofile = "eastron_sdm630"\nbus = "rs485"\nunit = 1\n'
                 f"timeout = 0.3\n")
    config = work / "drgw.toml"
    config.write_text(text)
    return sim, config, gw


def verify_store(db: Path) -> str:
    """`drgw verify --db`: the stored chain and every Merkle root, checked by the CLI itself."""
    done = subprocess.run([*DRGW, "verify", "--db", str(db)], capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return f"exit {done.returncode}: " + " | ".join(lines[-3:])


def disk_or_skip(run: Soak, reason: str | None, hold: float) -> list[str]:
    if reason is not None:
        raise Skipped(reason)
    return disk_phase(run, run.db.parent, hold=hold)


def run_phases(args: argparse.Namespace, run: Soak, shims: list[RtuShim], link: Path,
               disk_skip: str | None, started: float) -> int:
    """Every phase in turn (a disabled one is listed as not run); returns outbox rows left."""
    plan: list[tuple[str, str | None, Callable[[], list[str]]]] = [
        ("sigkill+broker", None if args.kills else "disabled (--kills 0)",
         lambda: run.kill_lives(args, started)),
        ("serial re-plug", None if args.replugs else "disabled (--replugs 0)",
         lambda: replug_phase(run, shims, link, replugs=args.replugs, hold=args.hold)),
        ("clock steps", None if args.clock_steps else "disabled (--clock-steps none)",
         lambda: clock_phase(run, run.work, steps=args.clock_steps, hold=args.hold)),
        ("disk full", None if args.disk_hold > 0 else "disabled (--disk-hold 0)",
         lambda: disk_or_skip(run, disk_skip, args.disk_hold)),
    ]
    for name, off, body in plan:
        if off is not None:
            run.phases.append(Phase(name, first=run.store_seq(), last=run.store_seq(), skipped=off))
        else:
            run.phase(name, body)
    left = [0]

    def drain() -> list[str]:
        left[0] = run.final_drain(args.drain_timeout)
        return [f"outbox rows left {left[0]}"]
    run.phase("final drain", drain)
    return left[0]


def phase_figures(ph: Phase, tally: Tally, reused: list[tuple[int, str]]) -> dict[str, Any]:
    if ph.skipped is not None:
        return {"phase": ph.name, "not_run": ph.skipped}
    seqs = range(ph.first + 1, ph.last + 1)
    seen = tally.seen()
    lost = [s for s in seqs if s not in seen]
    return {"phase": ph.name, "committed": len(seqs), "delivered": len(seqs) - len(lost),
            "lost": len(lost), "lost_seqs": lost[:20],
            "duplicates": sum(max(0, tally.arrivals[s] - 1) for s in seqs),
            "seq_reused": sum(1 for s, _ in reused if s in seqs), "notes": ph.notes}


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    started = time.monotonic()
    store_dir = work / "store"
    disk_skip = mount_tmpfs(store_dir, args.disk_mb) if args.disk_hold > 0 else None
    store_dir.mkdir(exist_ok=True)
    try:
        with Broker(work / "mosquitto", persistence=True) as broker:
            return soak_with(args, work, broker, store_dir / "drgw.db", disk_skip, started)
    finally:
        if args.disk_hold > 0 and disk_skip is None:
            umount(store_dir)


def soak_with(args: argparse.Namespace, work: Path, broker: Broker, db: Path,
              disk_skip: str | None, started: float) -> dict[str, Any]:
    link = work / "usb-FTDI_RS485-if00-port0"
    shims = [RtuShim(work)] if args.replugs else []
    if shims:
        point(link, shims[0].tty)
    sim, config, gw = setup(work, broker, args.meters, args.poll, store=db,
                            link=link if shims else None)
    sub = Subscriber(broker, f"drgw/v1/{gw.lower()}/meas")
    run = Soak(work=work, db=db, broker=broker, config=config, rng=random.Random(args.seed),
               broker_kill=args.broker_kill)
    try:
        left = run_phases(args, run, shims, link, disk_skip, started)
        stored, problems = stored_chain(db)
        tally = Tally(gw)
        wait_delivered(sub, tally, stored, args.drain_timeout)
        time.sleep(2.0)  # late redeliveries still count as duplicates (or worse)
        tally.feed(sub.snapshot())
        result = tally.compare(stored)
        verified = verify_store(db)
    finally:
        sub.stop()
        sim.terminate()
        sim.wait(timeout=10)
        for shim in shims:
            shim.stop()
    return figures(args, run, tally, result, stored, problems, left=left, verified=verified,
                   started=started)


def figures(args: argparse.Namespace, run: Soak, tally: Tally, result: dict[str, Any],
            stored: dict[int, bytes], problems: list[tuple[int, str]], *, left: int,
            verified: str, started: float) -> dict[str, Any]:
    reused = [(s, f"seq {s} changed after a kill") for s, leaf in run.marks if stored.get(s) != leaf]
    reused += problems
    return {
        "kills": run.kills, "agent_starts": run.starts, "broker_restarts": run.broker_restarts,
        "duration_s": round(time.monotonic() - started, 1), "meters": args.meters,
        "poll_s": args.poll, "seed": args.seed, "measurements": len(stored),
        "committed": max(stored, default=0),
        "delivered": result["delivered"], "messages_received": result["received"],
        "duplicates": result["duplicates"], "different": result["different"],
        "lost": len(result["lost"]), "lost_seqs": result["lost"][:20],
        "outbox_left": left, "seq_reused": len(reused), "reuse_detail": [t for _, t in reused][:10],
        "unknown_seqs": len(result["unknown"]), "unexpected_exits": run.unexpected_exits,
        "verify_db": verified,
        "phases": [phase_figures(ph, tally, reused) for ph in run.phases],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs of the agent (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill and restart moments")
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--poll", type=float, default=0.5, help="poll interval of every point, s")
    parser.add_argument("--life", type=float, nargs=2, default=(0.5, 6.0), metavar=("MIN", "MAX"),
                        help="seconds from starting the agent to its SIGKILL (uniform)")
    parser.add_argument("--broker-restarts", type=float, default=0.15, metavar="P",
                        help="probability that a life includes a broker restart (default 0.15)")
    parser.add_argument("--broker-kill", action="store_true",
                        help="restart the broker with SIGKILL instead of SIGTERM")
    parser.add_argument("--replugs", type=int, default=3,
                        help="serial re-plugs of the RTU meter (default 3; 0: no RTU meter)")
    parser.add_argument("--clock-steps", default="+40d,-20s",
                        help="wall-clock offsets from the true time, stepped to in turn, then back "
                             "to +0s (libfaketime syntax; default +40d,-20s; 'none' to skip)")
    parser.add_argument("--hold", type=float, default=6.0,
                        help="seconds between re-plugs and between clock steps (default 6)")
    parser.add_argument("--disk-hold", type=float, default=10.0,
                        help="seconds the store's filesystem is held full (default 10; 0 to skip)")
    parser.add_argument("--disk-mb", type=int, default=32, help="size of the store's tmpfs, MB")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    args.clock_steps = [] if args.clock_steps == "none" else args.clock_steps.split(",")
    if args.kills < 0 or args.meters < 1 or args.poll < 0.05 or not 0 < args.life[0] <= args.life[1]:
        parser.error("--kills >= 0, --meters >= 1, --poll >= 0.05, 0 < --life MIN <= MAX")
    if args.replugs < 0 or args.hold <= 0 or args.disk_hold < 0 or args.disk_mb < 4:
        parser.error("--replugs >= 0, --hold > 0, --disk-hold >= 0, --disk-mb >= 4")
    return args


def main() -> int:
    args = arguments()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        r = soak(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="drgw-soak-") as tmp:
            r = soak(args, Path(tmp))
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print_report(r)
    failed = (r["lost"] or r["different"] or r["seq_reused"] or r["unknown_seqs"]
              or r["unexpected_exits"] or not r["verify_db"].startswith("exit 0")
              or any(n.startswith("!") for ph in r["phases"] for n in ph.get("notes", [])))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
