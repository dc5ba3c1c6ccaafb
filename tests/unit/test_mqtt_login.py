"""The MQTT login in the config and the broker URL (issue 12, fault 8): parsing, conflicts, and that the
password shows in no message and no repr. Expected decodings follow RFC 3986 percent-encoding
(urllib.parse.quote is the independent encoder)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from gateway.config.gateway import parse_config
from gateway.errors import ConfigError
from gateway.network.errors import LinkConfigError
from gateway.network.settings import LinkSettings, redact, split_login

PASSWORD = "p@ss:w/rd %"
URL = f"mqtts://gw%2017:{quote(PASSWORD, safe='')}@broker.example:8883"


def test_a_url_login_is_percent_decoded_and_taken_out_of_the_url() -> None:
    assert split_login(URL) == ("mqtts://broker.example:8883", "gw 17", PASSWORD)
    assert split_login("mqtt://user@h") == ("mqtt://h", "user", None)
    assert split_login("mqtt://h:1883") == ("mqtt://h:1883", None, None)
    assert redact(URL) == "mqtts://gw%2017:***@broker.example:8883"
    settings = LinkSettings.from_url(URL, client_id="c")
    assert (settings.username, settings.password) == ("gw 17", PASSWORD)
    assert str(settings.broker) == "mqtts://broker.example:8883"
    assert quote(PASSWORD, safe="") not in repr(settings) and PASSWORD not in repr(settings)


@pytest.mark.parametrize(("url", "kwargs", "message"), [
    (URL, {"username": "x"}, "carries a login and the username/password settings give one too"),
    ("mqtt://h", {"password": PASSWORD}, r"an MQTT password needs a user name: set \[mqtt\] username"),
    (f"mqtt://:{quote(PASSWORD, safe='')}@h", {}, "the login has no user name"),
    (f"ftp://u:{quote(PASSWORD, safe='')}@h", {}, r"broker URL 'ftp://h' is not valid"),
    (f"mqtt://u:{quote(PASSWORD, safe='')}@h/x", {}, "drop the path"),
])
def test_login_mistakes_are_refused_without_showing_the_password(url: str, kwargs: dict[str, str],
                                                                 message: str) -> None:
    with pytest.raises(LinkConfigError, match=message) as info:
        LinkSettings.from_url(url, client_id="c", username=kwargs.get("username"),
                              password=kwargs.get("password"))
    assert PASSWORD not in str(info.value) and quote(PASSWORD, safe="") not in str(info.value)


HEAD = '[gateway]\nkey = "gw.key"\n[mqtt]\n'


def test_the_config_takes_the_login_from_keys_or_from_the_url(tmp_path: Path) -> None:
    config = parse_config(HEAD + f'broker = "{URL}"\n', path=tmp_path / "drgw.toml")
    assert (config.mqtt.broker, config.mqtt.username, config.mqtt.password) == (
        "mqtts://broker.example:8883", "gw 17", PASSWORD)
    assert PASSWORD not in repr(config.mqtt)
    (tmp_path / "mqtt.pass").write_text(PASSWORD + "\n")
    (tmp_path / "mqtt.pass").chmod(0o600)
    config = parse_config(HEAD + 'username = "u"\npassword_file = "mqtt.pass"\n',
                          path=tmp_path / "drgw.toml")
    assert (config.mqtt.username, config.mqtt.password) == ("u", PASSWORD)
    assert config.mqtt.password_file == tmp_path / "mqtt.pass"


@pytest.mark.parametrize(("mqtt", "message"), [
    ('username = "u"\npassword = "x"\npassword_file = "f"\n',
     r"mqtt: password: give the password once: 'password' or 'password_file', not both"),
    ('password = "x"\n', r"mqtt: password: a password needs 'username' too"),
    (f'broker = "{URL}"\nusername = "u"\n',
     r"mqtt: broker: 'mqtts://gw%2017:\*\*\*@broker\.example:8883' carries a login and "
     r"'username'/'password'/'password_file' give one too"),
    ('username = "u"\npassword_file = "missing.pass"\n',
     r"mqtt: password_file: password file .*missing\.pass does not exist; write the password in it "
     r"\(one line\) and run: chmod 600"),
    ('usrname = "u"\n', r"mqtt: option 'usrname' is not valid; did you mean 'username'\?"),
])
def test_login_settings_errors_name_the_real_keys(tmp_path: Path, mqtt: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_config(HEAD + mqtt, path=tmp_path / "drgw.toml")
    assert PASSWORD not in str(info.value)
