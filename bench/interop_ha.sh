#!/usr/bin/env bash
# bench/interop_ha.sh: a real Home Assistant against a real drgw agent (not part of CI: it needs
# Python 3.13 and minutes to install). Prints what HA shows and exits non-zero on a failed check.
#
#   bench/interop_ha.sh            # RUN_S=300: the agent runs 5 minutes with HA watching
#   RUN_S=120 HA_VERSION=2025.4.4 bench/interop_ha.sh
#
# What it does, all on loopback:
#  1. a venv with Python 3.13 and homeassistant==$HA_VERSION (cached in $HA_VENV; 2025.4.4 is the
#     newest release whose Requires-Python admits 3.13.0, the pyenv build here);
#  2. mosquitto on a free port; `drgw simulate` serves a three-phase main meter (SDM630, TCP), a
#     one-phase PV meter that exports (SDM120, TCP) and an EV charger on an RTU pty;
#  3. `hass` with a config dir of http + api + onboarding + config only; the owner is created
#     through the onboarding API (POST /api/onboarding/users -> auth code -> POST /auth/token: an
#     access token, no browser), then the MQTT integration through the config-flow API
#     (POST /api/config/config_entries/flow {"handler": "mqtt"} and the "broker" step);
#  4. `drgw run` with ha_discovery = true and a [dr] section, and an aggregator DR event sent as a
#     signed `dr_event` fleet command (`drgw fleet cmd`), so the DR sensors move;
#  5. after RUN_S seconds: every expected entity in /api/states with a value, its unit and device
#     class; the DR event state and figures; and the WARNING/ERROR lines of home-assistant.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DRGW=${DRGW:-$ROOT/.venv/bin/drgw}
DRGW_PY=${DRGW_PY:-$ROOT/.venv/bin/python}
if [[ -z "${PY313:-}" ]]; then  # the first Python 3.13 that runs (a pyenv shim may not)
    for candidate in python3.13 "$HOME"/.pyenv/versions/3.13.*/bin/python3.13 /root/.pyenv/versions/3.13.*/bin/python3.13; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
            PY313=$candidate
            break
        fi
    done
fi
[[ -n "${PY313:-}" ]] || { echo "bench/interop_ha.sh: needs Python 3.13 (Home Assistant 2025.x); set PY313=/path/to/python3.13" >&2; exit 2; }
HA_VERSION=${HA_VERSION:-2025.4.4}
HA_VENV=${HA_VENV:-/tmp/drgw-interop-ha/venv-$HA_VERSION}
RUN_S=${RUN_S:-300}
WORK=$(mktemp -d /tmp/drgw-interop-ha.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
free_port() { "$DRGW_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# -- 1. Home Assistant ------------------------------------------------------------------------------
if [[ ! -x "$HA_VENV/bin/hass" ]]; then
    say "installing homeassistant==$HA_VERSION into $HA_VENV (minutes)"
    "$PY313" -m venv "$HA_VENV"
    "$HA_VENV/bin/pip" install -q --upgrade pip
    "$HA_VENV/bin/pip" install -q "homeassistant==$HA_VERSION"
fi
# the MQTT integration's requirement (its manifest.json), so hass need not install it at start-up
"$HA_VENV/bin/pip" install -q "paho-mqtt==2.1.0"
say "Home Assistant $("$HA_VENV/bin/python" -c 'from homeassistant.const import __version__; print(__version__)') on $("$HA_VENV/bin/python" -V)"

# -- 2. broker and simulated devices -----------------------------------------------------------------
MQTT_PORT=$(free_port)
HA_PORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$MQTT_PORT" > "$WORK/mosquitto.conf"
mosquitto -c "$WORK/mosquitto.conf" > "$WORK/mosquitto.log" 2>&1 &
PIDS+=($!)
cat > "$WORK/home.toml" <<'EOF'
[[bus]]
name = "rs485"
baud = 19200
parity = "E"
stopbits = 1

[[device]]
name = "main"
profile = "eastron_sdm630"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
power_factor = 0.97
[device.load]
kind = "constant"
power_w = 1500

[[device]]
name = "pv"
profile = "eastron_sdm120"
transport = "tcp"
address = "127.0.0.1:0"
unit = 1
[device.load]
kind = "constant"
power_w = -2400

[[device]]
name = "ev"
profile = "heidelberg_energycontrol"
transport = "rtu"
address = "rs485"
unit = 10
feeds = "main"
EOF
"$DRGW" simulate --json "$WORK/home.toml" > "$WORK/simulate.jsonl" 2> "$WORK/simulate.log" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s "$WORK/simulate.jsonl" ]] && break; sleep 0.1; done
"$DRGW" keys new --out "$WORK/gw.key" --json > "$WORK/gw.json"
"$DRGW" keys new --out "$WORK/op.key" --json > "$WORK/op.json"

# -- 3. the gateway config ---------------------------------------------------------------------------
"$DRGW_PY" - "$WORK" "$MQTT_PORT" <<'EOF'
import json, sys
from pathlib import Path
work, port = Path(sys.argv[1]), sys.argv[2]
devices = json.loads((work / "simulate.jsonl").read_text().splitlines()[0])["devices"]
operator = json.loads((work / "op.json").read_text())["address"]
lines = ["[gateway]", f'key = "{work / "gw.key"}"', 'log_level = "WARNING"',
         "[mqtt]", f'broker = "mqtt://127.0.0.1:{port}"', "ha_discovery = true", "health_interval = 10",
         "[store]", f'path = "{work / "drgw.db"}"', "[operators]", f'allow = ["{operator}"]',
         "[poll]", "fast = 1.0", "normal = 5.0", "slow = 30.0"]
buses = {}
for d in devices:
    where = ("tcp", d["address"]) if d["transport"] == "tcp" else ("serial", d["address"])
    if where not in buses:
        buses[where] = f"bus{len(buses) + 1}"
        lines += ["[[bus]]", f'name = "{buses[where]}"', f'{where[0]} = "{where[1]}"']
        if where[0] == "serial":
            lines += ["baud = 19200", 'parity = "E"']
    lines += ["[[device]]", f'name = "{d["name"]}"', f'profile = "{d["profile"]}"',
              f'bus = "{buses[where]}"', f'unit = {d["unit"]}', "timeout = 0.5"]
    if d["name"] == "main":
        lines.append('role = "main"')
lines += ["[dr]", 'baseline = "pre_event"', "pre_event_minutes = 1", "lead_minutes = 0.5", "slot_s = 5",
          "[[dr.lever]]", 'device = "ev"', 'point = "ev_current_limit_a"', 'kind = "setpoint"', "min = 6",
          "priority = 1", "expected_w = 2760", "power_w_per_unit = 690"]
(work / "drgw.toml").write_text("\n".join(lines) + "\n")
EOF
GW=$("$DRGW_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"].lower())' "$WORK/gw.json")

# -- 4. hass, its owner and the MQTT integration -----------------------------------------------------
mkdir -p "$WORK/ha"
cat > "$WORK/ha/configuration.yaml" <<EOF
homeassistant:
  name: drgw interop
  latitude: 52.5
  longitude: 13.4
  elevation: 30
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: DE
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
api:
onboarding:
config:
EOF
say "starting hass on 127.0.0.1:$HA_PORT, mosquitto on $MQTT_PORT"
"$HA_VENV/bin/hass" -c "$WORK/ha" --log-file "$WORK/ha/home-assistant.log" > "$WORK/hass.out" 2>&1 &
PIDS+=($!)
"$DRGW_PY" "$ROOT/bench/interop_ha_check.py" setup --ha "http://127.0.0.1:$HA_PORT" \
    --mqtt-port "$MQTT_PORT" --token-file "$WORK/token"

# -- 5. the agent, a DR event, and the checks --------------------------------------------------------
say "starting drgw run (gateway $GW)"
STARTED=$(date +%s)
"$DRGW" run "$WORK/drgw.toml" > "$WORK/agent.log" 2>&1 &
PIDS+=($!)
sleep 20
kill -0 "${PIDS[-1]}" || { cat "$WORK/agent.log"; exit 1; }  # the agent is still running
# the pre-event baseline needs a minute of the main meter: the event starts 80 s from now
START=$(( $(date +%s) + 60 ))
"$DRGW" fleet cmd "$GW" dr_event --operator-key "$WORK/op.key" --broker "mqtt://127.0.0.1:$MQTT_PORT" \
    --arg event_id=bench-1 --arg modification=0 --arg "start=$START" --arg "end=$(( START + 120 ))" \
    --arg target_w=1000 --arg baseline=pre_event --timeout 30 --json | tee "$WORK/dr_event.json"
REMAINING=$(( RUN_S - ($(date +%s) - STARTED) ))
say "the agent runs $RUN_S s with HA watching ($REMAINING s to go; the event ends at $(date -d @$(( START + 120 )) +%H:%M:%S))"
sleep "$(( REMAINING > 0 ? REMAINING : 0 ))"
"$DRGW_PY" "$ROOT/bench/interop_ha_check.py" check --ha "http://127.0.0.1:$HA_PORT" \
    --token-file "$WORK/token" --log "$WORK/ha/home-assistant.log" --run-s "$RUN_S" --since "$STARTED"
say "files kept in $WORK"
