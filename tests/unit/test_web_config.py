"""`[web]`, the local page's config: loopback by default, a LAN address only with a token file,
every refusal naming the key and the fix (docs/operations.md, "The local web page")."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.gateway import parse_config
from gateway.config.web import WebConfig, read_token
from gateway.errors import ConfigError

HEAD = ('[gateway]\nkey = "gw.key"\n[[bus]]\nname = "rs485"\nserial = "/dev/ttyUSB0"\n'
        '[[device]]\nname = "main"\nprofile = "eastron_sdm630"\nbus = "rs485"\nunit = 1\n')


def web_of(tmp_path: Path, table: str) -> WebConfig | None:
    return parse_config(HEAD + table, path=tmp_path / "drgw.toml").web


def test_the_page_is_off_without_a_web_table_and_on_loopback_with_one(tmp_path: Path) -> None:
    assert web_of(tmp_path, "") is None
    assert web_of(tmp_path, "[web]\nenabled = false\nlisten = \"0.0.0.0\"\n") is None
    on = web_of(tmp_path, "[web]\n")
    assert on == WebConfig(host="127.0.0.1", port=9570, token_file=None)
    assert on is not None and on.url == "http://127.0.0.1:9570/"
    six = web_of(tmp_path, '[web]\nlisten = "[::1]"\nport = 8080\n')
    assert six is not None and (six.host, six.port, six.url) == ("::1", 8080, "http://[::1]:8080/")


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.168.1.20", "::", "fe80::1"])
def test_a_lan_address_without_a_token_is_refused_naming_the_key_and_the_fix(
        tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        web_of(tmp_path, f'[web]\nlisten = "{listen}"\n')
    message = str(caught.value)
    assert f"drgw.toml: web: listen: '{listen}' is not a loopback address" in message
    assert 'set token_file = "PATH" in [web]' in message and "openssl rand -hex 32" in message


def test_a_lan_address_with_a_token_file_is_taken(tmp_path: Path) -> None:
    web = web_of(tmp_path, '[web]\nlisten = "0.0.0.0"\ntoken_file = "web.token"\n')
    assert web == WebConfig(host="0.0.0.0", port=9570, token_file=tmp_path / "web.token")


@pytest.mark.parametrize(("table", "message"), [
    ('[web]\nlisten = "127.0.0.1:9570"\n', r"web: listen: '127.0.0.1:9570': give an IP address"
                                           r".*the port goes in 'port'"),
    ('[web]\nlisten = "my-pi.local"\n', r"web: listen: 'my-pi.local': give an IP address"),
    ("[web]\nport = 70000\n", r"web: port: 70000 is out of range; use a whole number from 0 to 65535"),
    ('[web]\ntoken = "x"\n', r"web: option 'token' is not valid; did you mean 'token_file'\?"),
])
def test_bad_web_tables_are_refused_naming_the_key(tmp_path: Path, table: str,
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        web_of(tmp_path, table)


def test_the_token_file_must_hold_a_long_token(tmp_path: Path) -> None:
    path = tmp_path / "web.token"
    with pytest.raises(ConfigError, match=r"\[web\] token_file = .*cannot read it"):
        read_token(path)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        read_token(path)
    path.write_text("  " + "a1" * 16 + "\n")
    assert read_token(path) == "a1" * 16
