"""The real agent answers every fleet command over a real mosquitto (issue 19, item 2).

`drgw run` (a subprocess: the real CLI's config loading, logging, signal handling and restart loop)
polls a simulated home (an Eastron SDM630 main meter and a Heidelberg wallbox on Modbus TCP,
pymodbus servers in this process) and talks to a real mosquitto; an operator key on the config's
allow-list sends each command through the operator's path (gateway.master.operations.fleet_cmd).
Every reply is checked against values from outside the agent: the config file on disk and its
SHA-256 (docs/config.md), the installed package's version, the words the meter manuals' register
layouts give for a value the test set in the simulator (decoded by hand with struct), the
simulator's own state and request counters, the measurement stream as a QoS 1 subscriber and a
downstream de-duplicator (gateway.master.watch.StreamChecker) see it, and the agent's log.

One agent serves the module (tests/e2e/agent_site.py); each test leaves it as it found it, so the
order does not matter. Not repeated here: `scan` on a running agent (tests/e2e/test_agent_scan.py),
accepted `dr_event`s (tests/e2e/test_dr_mqtt.py), `restart` under systemd with `--on-restart exit`
exiting 75 (tests/e2e/test_agent_notify.py); the CLI's own behaviour against FakeAgent
(tests/integration/test_fleet_cli.py).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.master.watch import StreamChecker
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import measurement_domain
from gateway.network import command as core
from gateway.network.payloads import dumps
from tests.e2e.agent_site import Site, open_site

DOMAIN = measurement_domain(1)  # the config's default chain_id (docs/config.md [gateway] chain_id)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with open_site(tmp_path_factory.mktemp("agent_commands")) as s:
        yield s
        # Nothing any test sent stopped it; SIGTERM still ends it cleanly.
        assert s.agent is not None and s.agent.poll() is None, s.log_tail()
        assert s.stop_agent() == 0, s.log_tail()


def config_hash(text: str) -> str:
    """docs/config.md: the SHA-256 of the file, first 16 hex digits."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stream_findings(payloads: list[bytes], gw: str) -> tuple[StreamChecker, list[Any]]:
    checker = StreamChecker(DOMAIN)
    return checker, [f for p in payloads for f in checker.feed(gw, p)]


# ------------------------------------------------------------------------------ state queries


def test_ping_answers_with_the_gateways_signature(site: Site) -> None:
    before = int(time.time() * 1000)
    reply = site.cmd("ping")
    after = int(time.time() * 1000)
    assert reply["ok"] is True and reply["result"]["pong"] is True
    assert before - 1000 <= reply["result"]["time_ms"] <= after + 1000  # same machine's clock


def test_status_gives_version_config_hash_and_an_advancing_seq(site: Site) -> None:
    first = site.ok("status")
    assert first["version"] == importlib.metadata.version("drgw")
    assert first["config_hash"] == config_hash(site.config.read_text(encoding="utf-8"))
    # Records of both devices committed after that status, as a subscriber receives them.
    site.until(lambda: {d for d, s in site.tap.seqs() if s > first["seq"]} >= {"main", "ev"},
               "new records of both devices")
    newest = max(s for _, s in site.tap.seqs())
    second = site.ok("status")
    assert second["seq"] >= newest > first["seq"]
    assert second["devices"] == ["ev", "main"]
    assert second["config_hash"] == first["config_hash"]
    assert second["dr"] is None  # no [dr] section


def test_diagnostics_counts_the_requests_the_simulated_devices_received(site: Site) -> None:
    # Read before the command: a record on the tap was committed before it was published, so
    # before the diagnostics; records published while the reply travels are not counted in it.
    published = {s for _, s in site.tap.seqs()}
    result = site.ok("diagnostics")
    received = site.loop.call(lambda: {n: site.device(n).counters.requests for n in ("main", "ev")})
    for name in ("main", "ev"):
        d = result["devices"][name]
        # Counted by the agent as it sends, by the simulator as it receives (since the simulator
        # started, across agent restarts): each bus has at most one request in flight.
        assert 0 < d["requests"] <= received[name] + 1, (name, d, received)
        assert d["requests"] >= d["cycles"] + d["failed_cycles"] and d["cycles"] > 0, d
        assert d["unsupported"] == [], d  # every register of both profiles is served
    counters = result["counters"]
    assert counters["device.main.requests"] == result["devices"]["main"]["requests"]
    assert counters["measurements_committed"] >= len(published)
    assert isinstance(result["health"], dict)
    for _ in range(3):  # ad-hoc reads count as requests too (docs/mqtt.md, health `reads`)
        site.ok("read_register", device="main", table="input", address=0, count=2)
    again = site.ok("diagnostics")["devices"]["main"]["requests"]
    assert again >= result["devices"]["main"]["requests"] + 3


def test_read_register_returns_the_words_the_meter_holds(site: Site) -> None:
    main = site.device("main")

    def volts(l1: float | None, l2: float | None) -> None:
        for name, value in (("voltage_l1_v", l1), ("voltage_l2_v", l2)):
            main.set_value(name, value) if value is not None else main.clear_value(name)

    site.loop.call(lambda: volts(231.25, 229.5))
    try:
        # SDM630 manual §1.2.1: 30001 phase 1 and 30003 phase 2 line-to-neutral volts, IEEE 754
        # float, high word first; input registers (function 04) at PDU address register - 30001.
        result = site.ok("read_register", device="main", table="input", address=30001 - 30001,
                         count=4)
    finally:
        site.loop.call(lambda: volts(None, None))
    assert result["words"] == [0x4367, 0x4000, 0x4365, 0x8000]  # 231.25 = 0x43674000, 229.5 = 0x43658000
    assert struct.unpack(">2f", struct.pack(">4H", *result["words"])) == (231.25, 229.5)


def test_config_get_returns_the_file_on_disk(site: Site) -> None:
    text = site.config.read_bytes().decode("utf-8")
    assert site.ok("config_get") == {"text": text, "config_hash": config_hash(text)}


# ------------------------------------------------------------------------------ actions


def test_write_point_changes_the_appliance(site: Site) -> None:
    ev = site.device("ev")
    before = site.loop.call(lambda: ev.values()["ev_current_limit_a"])
    try:
        result = site.ok("write_point", device="ev", name="ev_current_limit_a", value=8)
        assert result == {"device": "ev", "name": "ev_current_limit_a", "value": 8}
        assert site.loop.call(lambda: ev.values()["ev_current_limit_a"]) == 8
        # Heidelberg register table: holding 261 "maximal current command" in 0.1 A.
        assert site.ok("read_register", device="ev", table="holding", address=261,
                       count=1)["words"] == [80]
    finally:
        site.ok("write_point", device="ev", name="ev_current_limit_a", value=before)
    assert site.loop.call(lambda: ev.values()["ev_current_limit_a"]) == before


def test_resend_republishes_identical_bytes_that_downstream_counts_as_duplicates(site: Site) -> None:
    site.until(lambda: site.tap.meas, "a measurement batch")
    original = site.tap.meas[-1]
    seqs = [r["seq"] for r in json.loads(original)["m"]]
    lo, hi = seqs[0], seqs[-1]
    assert seqs == list(range(lo, hi + 1))
    copies = site.tap.meas.count(original)
    assert site.ok("resend", seq_from=lo, seq_to=hi) == {"queued": hi - lo + 1, "seq_from": lo,
                                                          "seq_to": hi}
    # batch_max = 5 holds the whole range: the copy is one batch, byte for byte the original.
    site.until(lambda: site.tap.meas.count(original) > copies, f"seqs {lo}..{hi} again")
    payloads = list(site.tap.meas)
    checker, findings = stream_findings(payloads, site.gw)
    duplicates = {s for f in findings if f.kind == "duplicate" for s in range(f.seq_from, f.seq_to + 1)}
    assert set(range(lo, hi + 1)) <= duplicates
    assert not [f for f in findings if f.kind in ("forgery", "malformed")], findings
    distinct = {s for p in payloads for s in (r["seq"] for r in json.loads(p)["m"])}
    assert checker.summary()[site.gw]["valid"] == len(distinct)  # nothing counted as new
    # Seqs not yet used: nothing to send, nothing made up.
    future = site.ok("status")["seq"] + 1000
    assert site.ok("resend", seq_from=future, seq_to=future + 9)["queued"] == 0


def test_config_set_dry_run_validates_without_applying(site: Site) -> None:
    text = site.config.read_text(encoding="utf-8")
    new = text.replace("health_interval = 30", "health_interval = 15")
    assert new != text
    assert site.ok("config_set", text=new, dry_run=True) == {
        "valid": True, "config_hash": config_hash(new), "dry_run": True, "devices": ["main", "ev"]}
    code, message = site.refused("config_set", text=text.replace("batch_max", "batch_mx"),
                                 dry_run=True)
    assert code == "bad_args" and message.startswith("config rejected: "), message
    assert "'batch_mx'" in message and "'batch_max'" in message, message  # the key and the fix
    code, message = site.refused("config_set", dry_run=True,
                                 text=text.replace('key = "gw.key"', 'key = "other.key"'))
    assert (code, message) == ("bad_args", "config: [gateway] key cannot change remotely")
    assert site.config.read_text(encoding="utf-8") == text
    assert not list(site.root.glob("drgw.toml.*")), "a dry run left a trial or last-good file"
    assert site.ok("status")["config_hash"] == config_hash(text)


def test_set_log_level_changes_what_the_agent_logs(site: Site) -> None:
    # Each command's INFO line ("command <id> <cmd> from <op>") is written before it runs.
    assert site.ok("set_log_level", level="WARNING") == {"level": "WARNING"}
    try:
        hidden = site.cmd("ping")["id"]
    finally:
        assert site.ok("set_log_level", level="INFO") == {"level": "INFO"}
    shown = site.cmd("ping")["id"]
    site.until(lambda: f"command {shown} ping" in site.log.read_text(), "the INFO line of a ping")
    # Commands run one at a time, in order: had the earlier ping been logged, it would be there.
    assert f"command {hidden} ping" not in site.log.read_text()


def test_restart_re_executes_drgw_run_in_place_and_the_chain_goes_on(site: Site) -> None:
    assert site.agent is not None
    pid, before, mark = site.agent.pid, site.ok("status"), len(site.tap.status)
    asked = time.monotonic()
    assert site.ok("restart") == {"restarting": True}

    def down_and_up() -> bool:
        bodies = site.tap.status[mark:]
        down = next((i for i, b in enumerate(bodies) if b["online"] is False), None)
        return down is not None and bodies[down].get("reason") == "shutdown" and any(
            b["online"] for b in bodies[down:])
    site.until(down_and_up, "the offline status (shutdown), then a new birth")
    site.online()
    after = site.ok("status")
    # drgw run's restart loop (gateway/commands/run.py) re-executes itself: same process, new agent.
    assert site.agent.poll() is None and site.agent.pid == pid
    # Not a speed claim: the new agent started after we asked (0.1 s for the rounding of uptime_s).
    assert after["uptime_s"] <= time.monotonic() - asked + 0.1
    assert "restarting" in site.log.read_text()
    assert after["seq"] >= before["seq"]
    site.until(lambda: max(s for _, s in site.tap.seqs()) > after["seq"], "records after the restart")
    _, findings = stream_findings(list(site.tap.meas), site.gw)
    assert not [f for f in findings if f.kind in ("forgery", "malformed")], findings  # no seq reused


# ------------------------------------------------------------------------------ refusals


def test_commands_from_outside_the_allow_list_or_out_of_time_are_refused(site: Site) -> None:
    stranger = GatewayKey.generate()
    code, message = site.refused("ping", signer=stranger)
    assert code == "unknown_operator"
    assert message.startswith(f"operator {stranger.address.lower()} is not on"), message
    assert "[operators] allow" in message  # where the fix goes (docs/config.md)
    # The operator's address, a stranger's signature.
    code, message = site.refused("ping", signer=stranger, op=site.operator.address)
    assert code == "forged" and f"signature is by {stranger.address.lower()}, not by op" in message
    code, message = site.refused("ping", lifetime_ms=-60_000)  # past the 30 s of allowed skew
    assert code == "expired" and "sign a new one" in message, message
    code, message = site.refused("ping", lifetime_ms=20 * 60_000)  # more than 15 min ahead
    assert code == "lifetime_too_long", message
    other = GatewayKey.generate().address.lower()
    env = core.sign(core.make(gw=other, cmd="ping", args={}, op=site.operator.address, id="elsewhere",
                              nonce=1, exp_ms=int(time.time() * 1000) + 60_000),
                    site.operator.sign_digest)
    reply = site.send_raw(dumps(env), "elsewhere")
    assert reply["error"] == {"code": "wrong_target", "message":
                              f"command is for gateway {other}, this is {site.gw}"}
    reply = site.send_raw(b"not json", None)
    assert reply["ok"] is False and reply["error"]["code"] == "malformed"
    site.online()


def test_a_replayed_command_is_refused(site: Site) -> None:
    reply = site.cmd("ping")
    assert reply["ok"] is True
    cid = reply["id"]

    def captured() -> bytes | None:  # the envelope as an eavesdropper on the cmd topic saw it
        return next((p for p in list(site.tap.cmd) if f'"id":"{cid}"'.encode() in p), None)
    site.until(captured, "the ping on the cmd topic")
    envelope = captured()
    assert envelope is not None
    nonce = core.nonce_key(json.loads(envelope)["nonce"])
    again = site.send_raw(envelope, cid)
    assert again["error"] == {"code": "replayed", "message": f"nonce {nonce} of operator "
                              f"{site.operator.address.lower()} was already used: sign a new command"}


# (cmd, args, how the reason starts): refused by the command table (gateway.network.command.COMMANDS,
# whose every rule tests/unit/test_commands.py covers); here, that the real agent answers them.
BAD_ARGS: list[tuple[str, dict[str, Any], str]] = [
    ("read_register", {"device": "main", "table": "input", "address": 0, "count": 0},
     "read_register: arg 'count' must be an integer in 1..125, got 0"),
    ("resend", {"seq_from": 9, "seq_to": 3}, "resend: need seq_from <= seq_to"),
]


def test_unknown_commands_and_bad_args_are_refused_with_the_reason(site: Site) -> None:
    code, message = site.refused("reboot")
    assert code == "unknown_command" and message.startswith("unknown command 'reboot'; known: ")
    assert "read_register" in message and "config_set" in message
    for cmd, args, reason in BAD_ARGS:
        code, message = site.refused(cmd, **args)
        assert code == "bad_args" and message.startswith(reason), (cmd, args, message)


def test_the_agent_refuses_what_its_devices_and_config_do_not_allow(site: Site) -> None:
    code, message = site.refused("read_register", device="attic", table="input", address=0, count=1)
    assert (code, message) == ("bad_args", "no configured device is named 'attic'; known: ev, main")
    code, message = site.refused("write_point", device="ev", name="ev_current_limit_a", value=99)
    # The wallbox's register table: 261 takes 60..160 (0.1 A), i.e. 6..16 A.
    assert code == "bad_args" and "ev_current_limit_a" in message and "6..16" in message, message
    code, message = site.refused("write_point", device="ev", name="power_active_total_w", value=1)
    assert code == "bad_args" and "'power_active_total_w' is not writable" in message, message
    # Holding 0 is no register of the SDM630: the meter answers exception 02, which the Modbus
    # Application Protocol (v1.1b3, 7) calls ILLEGAL DATA ADDRESS.
    code, message = site.refused("read_register", device="main", table="holding", address=0, count=1)
    assert (code, message) == ("failed", "main answered: illegal data address")
    code, message = site.refused("dr_event", event_id="e1", modification=0, start=10, end=20,
                                 target_w=1000)
    assert code == "failed" and "no [dr] section" in message, message
    assert site.ok("ping")["pong"] is True  # none of it hurt the agent
