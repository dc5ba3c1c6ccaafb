"""bench/interop_ha.sh's Home Assistant side: `setup` creates HA's owner and its MQTT integration
through the REST APIs, `check` reads /api/states and the log and prints what HA shows.

Standard library only (urllib), so it runs in drgw's venv. The expected sensors are written out here
from the profiles' register tables (device_profiles/meters/eastron_sdm630.yaml, eastron_sdm120.yaml)
and the units HA documents per device class (developers.home-assistant.io/docs/core/entity/sensor/),
not read from drgw's discovery code.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

THREE_PHASE = {"Power": "W", "Energy import": "Wh", "Energy export": "Wh", "Voltage L1": "V",
               "Voltage L2": "V", "Voltage L3": "V", "Current L1": "A", "Current L2": "A",
               "Current L3": "A", "Frequency": "Hz", "Power factor": None}
ONE_PHASE = {"Power": "W", "Energy import": "Wh", "Energy export": "Wh", "Voltage": "V", "Current": "A",
             "Frequency": "Hz", "Power factor": None}
GATEWAY = {"DR event state": None, "DR award": "W", "DR delivered": "Wh", "DR required": "Wh",
           "DR projected": "Wh", "DR verdict": None}
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ (WARNING|ERROR|CRITICAL) ")


def call(ha: str, path: str, *, token: str | None = None, body: Any = None,
         form: dict[str, str] | None = None, timeout: float = 30) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    req = urllib.request.Request(ha + path, data=data, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
    try:
        return json.loads(text)
    except ValueError:
        return text


def wait_up(ha: str, deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            call(ha, "/api/onboarding", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            if time.monotonic() > end:
                raise SystemExit(f"Home Assistant did not answer on {ha} within {deadline_s:.0f} s: "
                                 f"{exc}") from None
            time.sleep(1)


def setup(args: argparse.Namespace) -> None:
    began = time.monotonic()
    wait_up(args.ha, 600)
    print(f"  hass answers after {time.monotonic() - began:.0f} s")
    client = args.ha + "/"
    code = call(args.ha, "/api/onboarding/users", body={
        "client_id": client, "name": "drgw bench", "username": "bench", "password": "bench-password-1",
        "language": "en"})["auth_code"]
    tokens = call(args.ha, "/auth/token", form={"grant_type": "authorization_code", "code": code,
                                                "client_id": client})
    Path(args.token_file).write_text(json.dumps({"client_id": client, **tokens}))
    token = tokens["access_token"]
    flow = call(args.ha, "/api/config/config_entries/flow", token=token,
                body={"handler": "mqtt", "show_advanced_options": False})
    result = call(args.ha, f"/api/config/config_entries/flow/{flow['flow_id']}", token=token,
                  body={"broker": "127.0.0.1", "port": args.mqtt_port})
    if result.get("type") != "create_entry":
        raise SystemExit(f"the MQTT config flow did not create an entry: {result}")
    print(f"  owner created (onboarding API), MQTT integration added: broker 127.0.0.1:{args.mqtt_port}")


def fresh_token(args: argparse.Namespace) -> str:
    saved = json.loads(Path(args.token_file).read_text())
    tokens = call(args.ha, "/auth/token", form={"grant_type": "refresh_token",
                                                "client_id": saved["client_id"],
                                                "refresh_token": saved["refresh_token"]})
    return str(tokens["access_token"])


def expected(gw: str) -> dict[str, str | None]:
    """friendly name -> unit: HA names a device's entity "<device name> <entity name>"."""
    out: dict[str, str | None] = {}
    for device, sensors in ((f"main ({gw})", THREE_PHASE), (f"pv ({gw})", ONE_PHASE),
                            (f"drgw gateway {gw}", GATEWAY)):
        out.update({f"{device} {name}": unit for name, unit in sensors.items()})
    return out


def check_states(states: list[dict[str, Any]], mqtt_ids: set[str]) -> list[str]:
    """Print every MQTT entity; return the failed checks."""
    ours = {s["attributes"].get("friendly_name", ""): s for s in states if s["entity_id"] in mqtt_ids}
    gw = next((m.group(1) for name in ours if (m := re.search(r"\((0x[0-9a-f]{8})\)", name))), "?")
    failures = []
    print(f"  {len(ours)} MQTT entities; gateway {gw}")
    print(f"  {'entity id':<62} {'state':>14} {'unit':<6} {'device class':<13} state class")
    for _, s in sorted(ours.items()):
        a = s["attributes"]
        print(f"  {s['entity_id']:<62} {s['state']:>14} {a.get('unit_of_measurement') or '':<6} "
              f"{a.get('device_class') or '':<13} {a.get('state_class') or ''}")
    for name, unit in expected(gw).items():
        s = ours.get(name)
        if s is None:
            failures.append(f"no entity named {name!r}")
            continue
        if s["attributes"].get("unit_of_measurement") != unit:
            failures.append(f"{name}: unit {s['attributes'].get('unit_of_measurement')!r}, expected {unit!r}")
        if s["state"] in ("unknown", "unavailable"):
            failures.append(f"{name}: state {s['state']}")
    state = ours.get(f"drgw gateway {gw} DR event state", {}).get("state")
    if state != "completed":
        failures.append(f"DR event state is {state!r}, expected 'completed' after the event")
    pv = ours.get(f"pv ({gw}) Power", {}).get("state")
    if pv is None or not pv.lstrip("-").replace(".", "", 1).isdigit() or float(pv) >= 0:
        failures.append(f"pv power {pv!r}: expected a negative number (export)")
    return failures


def log_lines(path: Path, since: float) -> tuple[list[str], list[str]]:
    """The WARNING/ERROR records of the log (first line of each): those logged before `since` (unix
    s: HA's own start-up, before the agent ran) and those from then on."""
    before: list[str] = []
    after: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if LOG_LINE.match(line):
            at = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()  # local time
            (before if at < since else after).append(line.rstrip())
    return before, after


def check(args: argparse.Namespace) -> int:
    token = fresh_token(args)
    states = call(args.ha, "/api/states", token=token)
    ids = call(args.ha, "/api/template", token=token,
               body={"template": "{{ integration_entities('mqtt') | join(',') }}"})
    failures = check_states(states, set(str(ids).split(",")))
    startup, warnings = log_lines(Path(args.log), args.since)
    print(f"  home-assistant.log before the agent started (HA's start-up): {len(startup)} WARNING/ERROR")
    for w in startup[:10]:
        print(f"    {w[:300]}")
    template = [w for w in warnings if "emplate" in w]
    print(f"  home-assistant.log while the agent ran ({args.run_s} s): {len(warnings)} WARNING/ERROR "
          f"line(s), {len(template)} about templates")
    for w in warnings[:40]:
        print(f"    {w[:300]}")
    if warnings:
        failures.append(f"{len(warnings)} WARNING/ERROR line(s) in home-assistant.log while the agent ran")
    print("  RESULT: " + ("PASS" if not failures else "FAIL\n    " + "\n    ".join(failures)))
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--ha", required=True)
    s.add_argument("--mqtt-port", type=int, required=True)
    s.add_argument("--token-file", required=True)
    c = sub.add_parser("check")
    c.add_argument("--ha", required=True)
    c.add_argument("--token-file", required=True)
    c.add_argument("--log", required=True)
    c.add_argument("--run-s", type=int, required=True)
    c.add_argument("--since", type=float, required=True, help="unix s the agent started at")
    args = parser.parse_args()
    if args.step == "setup":
        setup(args)
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
