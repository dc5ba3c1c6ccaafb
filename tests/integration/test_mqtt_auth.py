"""MQTT username/password (issue 12, fault 8) against a real mosquitto that refuses anonymous clients.

The broker's password file is hashed by mosquitto's own `mosquitto_passwd`; the agent is the real
`drgw run` (a subprocess) and the aggregator the real `drgw fleet`. The password holds characters a
URL must percent-encode (RFC 3986 userinfo), and it must never show in the agent's DEBUG log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import aiomqtt
import pytest

from gateway.config.gateway import load_config
from gateway.errors import ConfigError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import write_key
from gateway.network import topics
from tests.mosquitto import Broker, make_password_file

USER = "gw-17"
PASSWORD = "s@cret: 1/%x"  # '@', ':', ' ', '/', '%': each must be percent-encoded in a URL
WAIT_S = 30.0  # generous: a loaded 2-core machine
GW_KEY = GatewayKey.from_secret(bytes([7]) * 32)


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Broker]:
    logins = make_password_file(tmp_path / "mosquitto" / "passwd", {USER: PASSWORD})
    with Broker(tmp_path / "mosquitto", password_file=logins) as broker:
        yield broker


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def agent_config(tmp_path: Path, mqtt: str) -> Path:
    key = tmp_path / "gw.key"
    if not key.exists():
        write_key(key, GW_KEY)
    path = tmp_path / "drgw.toml"
    # A meter nobody answers for keeps the agent polling (with backoff) while the test watches it.
    path.write_text(f'[gateway]\nkey = "gw.key"\nlog_level = "DEBUG"\n[mqtt]\n{mqtt}\n'
                    '[store]\npath = "drgw.db"\n[[bus]]\nname = "lan"\ntcp = "127.0.0.1:1"\n'
                    '[[device]]\nname = "main"\nprofile = "eastron_sdm630"\nbus = "lan"\nunit = 1\n')
    path.chmod(0o600)
    return path


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_agent(config: Path) -> Iterator[Callable[[], str]]:
    """`drgw run config` in the background; yields a function that returns its log so far."""
    log = config.with_name("agent.log")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=config.parent)
    try:
        yield lambda: log.read_text(errors="replace")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def retained_status(broker: Broker, *, username: str, password: str) -> dict[str, object] | None:
    """The agent's retained status as a plain aiomqtt client with the right login sees it (None:
    none yet)."""
    async def read() -> dict[str, object] | None:
        async with aiomqtt.Client(broker.host, broker.port, username=username,
                                  password=password) as client:
            await client.subscribe(topics.topic(topics.gw_id(GW_KEY.address), topics.Kind.STATUS))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    async for message in client.messages:
                        return dict(json.loads(bytes(message.payload)))
        return None

    return asyncio.run(read())


def online(broker: Broker) -> Callable[[], bool]:
    def check() -> bool:
        status = retained_status(broker, username=USER, password=PASSWORD)
        return status is not None and status.get("online") is True
    return check


# ------------------------------------------------------------------------------- the agent

@pytest.mark.parametrize("login", ["password_file", "url"])
def test_the_agent_logs_in_with_the_right_password_and_never_logs_it(
        auth_broker: Broker, tmp_path: Path, login: str) -> None:
    if login == "password_file":
        secret_file(tmp_path / "mqtt.pass", PASSWORD)
        mqtt = f'broker = "{auth_broker.url}"\nusername = "{USER}"\npassword_file = "mqtt.pass"'
    else:
        url = f"mqtt://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{auth_broker.port}"
        mqtt = f'broker = "{url}"'
    with running_agent(agent_config(tmp_path, mqtt)) as log:
        until(online(auth_broker), f"the agent's online status on {auth_broker.url}")
        until(lambda: "connected to" in log(), "the agent's 'connected' log line")
    text = log()
    assert PASSWORD not in text and quote(PASSWORD, safe="") not in text, text
    assert "Traceback" not in text


def test_a_wrong_password_is_refused_with_the_broker_and_the_settings_to_check(
        auth_broker: Broker, tmp_path: Path) -> None:
    wrong = "not-the-password"
    secret_file(tmp_path / "mqtt.pass", wrong)
    config = agent_config(tmp_path, f'broker = "{auth_broker.url}"\nusername = "{USER}"\n'
                                    'password_file = "mqtt.pass"')
    with running_agent(config) as log:
        until(lambda: "connection refused" in log(), "the refusal in the agent's log")
        until(lambda: "reconnecting" in log(), "the agent retrying (it keeps running)")
    line = next(x for x in log().splitlines() if "connection refused" in x)
    # mosquitto refuses a wrong password as "not authorised" (CONNACK 5; MQTT 5: 135)
    assert re.search(rf"broker {re.escape(auth_broker.url)}: connection refused: (not authorised|"
                     r"bad username or password): check \[mqtt\] username and password or "
                     r"password_file, or the login in the broker URL", line), line
    assert "[broker]" not in log() and wrong not in log()
    assert retained_status(auth_broker, username=USER, password=PASSWORD) is None  # never got in


def test_a_password_file_others_can_read_stops_the_agent_before_it_starts(tmp_path: Path) -> None:
    secret_file(tmp_path / "mqtt.pass", PASSWORD, mode=0o644)
    config = agent_config(tmp_path, 'broker = "mqtt://127.0.0.1:1"\nusername = "u"\n'
                                    'password_file = "mqtt.pass"')
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "run", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert (f"{config}: mqtt: password_file: password file {tmp_path / 'mqtt.pass'} is accessible "
            f"by group or others (mode 0644); fix with: chmod 600") in out.stderr
    assert PASSWORD not in out.stderr


def test_a_password_inside_a_config_others_can_read_is_refused(tmp_path: Path) -> None:
    """Decision (docs/config.md, "Broker login"): the group may read it (0640 root:drgw), others not."""
    config = agent_config(tmp_path, f'broker = "mqtt://127.0.0.1:1"\nusername = "u"\n'
                                    f'password = "{PASSWORD}"')
    config.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mqtt: the broker password is in this file and every "
                                          r"user can read it \(mode 0644\): chmod o-rwx") as info:
        load_config(config)
    assert PASSWORD not in str(info.value)
    config.chmod(0o640)
    loaded = load_config(config)
    assert (loaded.mqtt.username, loaded.mqtt.password) == ("u", PASSWORD)
    assert PASSWORD not in repr(loaded)


# ------------------------------------------------------------------------------- drgw fleet

def fleet_list(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "fleet", "list", "--wait", "0.3",
                           *args], capture_output=True, text=True, timeout=60)


def test_drgw_fleet_takes_the_login_from_options_or_the_url(auth_broker: Broker,
                                                            tmp_path: Path) -> None:
    right = secret_file(tmp_path / "right.pass", PASSWORD)
    out = fleet_list("--broker", auth_broker.url, "--username", USER, "--password-file", str(right))
    assert out.returncode == 0, out.stderr
    url = f"mqtt://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{auth_broker.port}"
    out = fleet_list("--broker", url)
    assert out.returncode == 0, out.stderr

    wrong = secret_file(tmp_path / "wrong.pass", "nope")
    out = fleet_list("--broker", auth_broker.url, "--username", USER, "--password-file", str(wrong))
    assert out.returncode == 3, out.stderr
    assert f"broker {auth_broker.url}: connection refused: " in out.stderr
    assert "(drgw fleet: --username, --password-file)" in out.stderr
    out = fleet_list("--broker", auth_broker.url)  # anonymous: refused the same way
    assert out.returncode == 3 and "--password-file" in out.stderr, out.stderr

    out = fleet_list("--broker", url, "--username", USER)
    assert out.returncode == 2, out.stderr
    assert "carries a login and the username/password settings give one too" in out.stderr
    assert PASSWORD not in out.stderr and quote(PASSWORD, safe="") not in out.stderr
