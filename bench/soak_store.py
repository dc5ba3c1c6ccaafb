"""The soak's authorities and its report: the agent's SQLite store read-only, and what a QoS 1
subscriber received, checked by gateway.master.watch.StreamChecker, compared seq by seq
(bench/soak.py)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.errors import RemoteError
from gateway.master.watch import StreamChecker
from gateway.measurement.record import measurement_domain, struct_hash
from gateway.measurement.wire import decode_batch, from_wire
from tests.mosquitto import Broker


def read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def last_mark(path: Path) -> tuple[int, bytes] | None:
    if not path.exists():
        return None
    with read_only(path) as conn:
        row = conn.execute("SELECT seq, leaf FROM measurements ORDER BY seq DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), bytes(row[1]))


def outbox_rows(path: Path) -> int:
    if not path.exists():
        return 0
    with read_only(path) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])


def stored_chain(path: Path) -> tuple[dict[int, bytes], list[tuple[int, str]]]:
    """seq -> leaf of every stored record, and what is wrong with the chain (gaps, bad links)."""
    leaves: dict[int, bytes] = {}
    problems: list[tuple[int, str]] = []
    prev_seq, prev_leaf = 0, bytes(32)
    with read_only(path) as conn:
        for seq, leaf, wire in conn.execute("SELECT seq, leaf, wire FROM measurements ORDER BY seq"):
            m = from_wire(bytes(wire)).measurement
            if seq != prev_seq + 1:
                problems.append((seq, f"stored seqs jump from {prev_seq} to {seq}"))
            if m.prev_hash != prev_leaf or struct_hash(m) != bytes(leaf) or m.seq != seq:
                problems.append((seq, f"stored seq {seq} does not chain to seq {prev_seq}"))
            leaves[int(seq)] = bytes(leaf)
            prev_seq, prev_leaf = int(seq), bytes(leaf)
    return leaves, problems


class Tally:
    """The subscriber's payloads fed, in arrival order, to a StreamChecker (signatures, chain)."""

    def __init__(self, gw: str) -> None:
        self.gw = gw.lower()
        self.checker = StreamChecker(measurement_domain(1), remember=10_000_000)
        self.fed = 0
        self.arrivals: Counter[int] = Counter()  # seq -> records received under it

    def feed(self, payloads: list[bytes]) -> None:
        for payload in payloads[self.fed:]:
            self.checker.feed(self.gw, payload)
            with contextlib.suppress(RemoteError, ValueError):  # the checker counts it malformed
                self.arrivals.update(sm.measurement.seq for sm in decode_batch(payload))
        self.fed = len(payloads)

    def seen(self) -> dict[int, bytes]:
        stream = self.checker.streams.get(self.gw)
        return dict(stream.leaves) if stream is not None else {}

    def compare(self, stored: dict[int, bytes]) -> dict[str, Any]:
        seen = self.seen()
        # Received under a seq the store holds in another version (first arrival compared).
        differs = sum(1 for seq, leaf in seen.items() if seq in stored and stored[seq] != leaf)
        summary = self.checker.summary().get(self.gw, {})
        return {"delivered": len(seen), "received": summary.get("received", 0),
                "duplicates": summary.get("duplicates", 0),
                "different": summary.get("forgeries", 0) + summary.get("malformed", 0) + differs,
                "lost": sorted(set(stored) - set(seen)),
                "unknown": sorted(set(seen) - set(stored))}


class Subscriber:
    """QoS 1, persistent session (clean_session=False): what the broker queued while this client
    was cut off by a broker restart arrives after the reconnect. Payloads are kept in arrival order."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.topic = topic
        self.payloads: list[bytes] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="drgw-soak-sub",
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError(f"soak: the subscriber got no SUBACK from {broker.url}")

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: object, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.payloads.append(bytes(msg.payload))

    def snapshot(self) -> list[bytes]:
        with self.lock:
            return list(self.payloads)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_delivered(sub: Subscriber, tally: Tally, stored: dict[int, bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        tally.feed(sub.snapshot())
        if set(stored) <= set(tally.seen()) or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def print_report(r: dict[str, Any]) -> None:
    print(f"soak: {r['meters']} TCP meters every {r['poll_s']:g} s, seed {r['seed']}, "
          f"{r['agent_starts']} agent starts, {r['kills']} SIGKILLs, {r['broker_restarts']} broker "
          f"restarts, {r['duration_s']:.0f} s")
    for ph in r["phases"]:
        if "not_run" in ph:
            print(f"  {ph['phase']:<15} not run: {ph['not_run']}")
            continue
        print(f"  {ph['phase']:<15} committed {ph['committed']:>6}, delivered {ph['delivered']:>6}"
              f", lost {ph['lost']}, duplicate {ph['duplicates']}, seq reused {ph['seq_reused']}")
        for note in ph["notes"]:
            print(f"      {note}")
        if ph["lost"]:
            print(f"      ! first lost seqs: {ph['lost_seqs']}")
    print(f"  {'total':<15} committed {r['committed']:>6}, delivered {r['delivered']:>6}, "
          f"lost {r['lost']}, duplicate {r['duplicates']}, seq reused {r['seq_reused']} "
          f"({r['messages_received']} records received; {r['measurements']} stored)")
    print(f"  different versions of a seq {r['different']}, outbox left {r['outbox_left']}, "
          f"unexpected agent exits {len(r['unexpected_exits'])}")
    print(f"  drgw verify --db: {r['verify_db']}")
    if r["unknown_seqs"]:
        print(f"  ! {r['unknown_seqs']} seq(s) were delivered that the store does not hold")
    for line in [*r["reuse_detail"], *r["unexpected_exits"]]:
        print(f"  ! {line}")
