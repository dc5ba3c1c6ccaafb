"""Errors of the MQTT network layer: aiomqtt/paho exceptions translated once, with reason codes."""

from __future__ import annotations

from gateway.errors import ConfigError, RemoteError


class LinkConfigError(ConfigError):
    """Bad broker settings (URL, TLS files): names the setting and the fix."""


class MqttLinkError(RemoteError):
    """The broker or the network failed us. `reason_code` is the MQTT/paho code when there is one."""

    def __init__(self, message: str, *, broker: str, reason_code: int | None = None) -> None:
        code = f" [reason code {reason_code}]" if reason_code is not None else ""
        super().__init__(f"broker {broker}: {message}{code}")
        self.broker = broker
        self.reason_code = reason_code


class BrokerUnreachable(MqttLinkError):
    """TCP or TLS connect failed (broker down, wrong port, certificate refused)."""


class BrokerRefused(MqttLinkError):
    """The broker answered CONNACK with a refusal (bad credentials, not authorised, ...)."""


class ConnectionLost(MqttLinkError):
    """An established session dropped, or an operation timed out waiting for the broker."""


# CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3) and MQTT 5 (3.2.2.2) and what to do about them;
# the settings named are the agent's [mqtt] keys (docs/config.md) and `drgw fleet`'s options.
_LOGIN = ("check [mqtt] username and password or password_file, or the login in the broker URL "
          "(drgw fleet: --username, --password-file)")
_CONNACK_FIX = {
    1: "the broker does not speak MQTT 3.1.1: upgrade it",
    2: "the broker rejected the client id: set a shorter [mqtt] client_id",
    3: "the broker is unavailable: retrying",
    4: f"bad username or password: {_LOGIN}",
    # mosquitto answers 5 to a wrong password as well as to an ACL or certificate refusal
    5: f"not authorised: {_LOGIN}; with mutual TLS [mqtt] cert and key; and the broker's ACL",
    128: "unspecified error",
    133: "client identifier not valid: set [mqtt] client_id",
    134: f"bad username or password: {_LOGIN}",
    135: f"not authorised: {_LOGIN}; with mutual TLS [mqtt] cert and key; and the broker's ACL",
}


def translate(exc: BaseException, *, broker: str, connecting: bool) -> MqttLinkError:
    """Map an aiomqtt/paho/OSError exception to one of ours, once, at the edge."""
    from aiomqtt.exceptions import MqttCodeError, MqttConnectError

    if isinstance(exc, MqttLinkError):
        return exc
    rc = getattr(exc, "rc", None)
    code = int(getattr(rc, "value", rc)) if rc is not None else None
    if isinstance(exc, MqttConnectError):
        fix = _CONNACK_FIX.get(code or 0, "see the broker log")
        return BrokerRefused(f"connection refused: {fix}", broker=broker, reason_code=code)
    if isinstance(exc, MqttCodeError):
        return ConnectionLost(str(exc), broker=broker, reason_code=code)
    text = str(exc) or type(exc).__name__
    if connecting:
        hint = ""
        low = text.lower()
        if "certificate" in low or "ssl" in low or "tls" in low:
            hint = ": check [mqtt] ca, cert and key and that the broker trusts the client certificate"
        elif "refused" in low:
            hint = ": is the broker running on that port?"
        return BrokerUnreachable(f"cannot connect ({text}){hint}", broker=broker)
    return ConnectionLost(text, broker=broker)
