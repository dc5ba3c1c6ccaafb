"""`[web]`: the household's and installer's local page served by `drgw run` (gateway/agent/web/).

Loopback only unless a token guards it: the page shows the home's consumption, its DR events and
its earnings, so a non-loopback `listen` without `token_file` is refused at config load, naming the
key and the fix (docs/operations.md, "The local web page").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.schema import Fields

DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_PORT = 9570  # beside the Prometheus endpoint's 9560 and the master dashboard's 9580
MIN_TOKEN = 16  # characters
TOKEN_FIX = ("the page shows the home's consumption, DR events and earnings, so a LAN address "
             "needs a token: set token_file = \"PATH\" in [web] (a file holding a long random "
             "token, e.g. `openssl rand -hex 32 > /etc/drgw/web.token`), or keep listen = "
             "\"127.0.0.1\" and reach the page through an SSH tunnel")


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    """Where the page listens and the token that guards it (None: open, loopback only)."""

    host: str  # an IP address or "localhost"; IPv6 without brackets
    port: int  # 0: any free port (the agent logs the one it got)
    token_file: Path | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_web(f: Fields, *, base: Path) -> WebConfig | None:
    """The `[web]` table; None when `enabled = false`. Present means on (enabled defaults to true)."""
    enabled = f.optional_bool("enabled")
    listen = f.optional_str("listen") or DEFAULT_LISTEN
    port = f.optional_int("port", minimum=0, maximum=65535, default=DEFAULT_PORT)
    token = f.optional_str("token_file")
    f.reject_unknown()
    if enabled is False:
        return None
    host = listen[1:-1] if listen.startswith("[") and listen.endswith("]") else listen
    if not host or (not is_loopback(host) and not _is_address(host)):
        f.fail("listen", f"{listen!r}: give an IP address to listen on, e.g. \"127.0.0.1\", "
               "\"0.0.0.0\" (every IPv4 address) or \"::1\"; the port goes in 'port'")
    if not is_loopback(host) and token is None:
        f.fail("listen", f"{listen!r} is not a loopback address: {TOKEN_FIX}")
    token_path = None if token is None else (Path(token) if Path(token).is_absolute()
                                             else base / token)
    return WebConfig(host=host, port=port, token_file=token_path)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def read_token(path: Path) -> str:
    """The token in `path` (surrounding white space dropped); a ConfigError naming the fix when it
    cannot be read or is too short to guess-proof."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"[web] token_file = \"{path}\": cannot read it ({why}); write a long "
                          "random token there (`openssl rand -hex 32`), readable by the "
                          "service's user") from None
    if len(token) < MIN_TOKEN:
        raise ConfigError(f"[web] token_file = \"{path}\": the token is shorter than {MIN_TOKEN} "
                          "characters; use a long random one (`openssl rand -hex 32`)")
    return token
