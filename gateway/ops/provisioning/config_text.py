"""The text of a first drgw.toml (docs/config.md), rendered from a `Setup`.

Only what a config holds: tables of strings, numbers, booleans and lists of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import ConfigError
from gateway.ops.provisioning.answers import Setup

# The line that ties a config to the provisioning bundle it came from (idempotent re-runs).
BUNDLE_MARK = "# drgw-provision-bundle: sha256:"

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def toml_str(value: str) -> str:
    """A TOML basic string (TOML 1.0 "String": quote, backslash and control characters escaped)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise ConfigError(f"{where}: a {type(value).__name__} value cannot go into the config")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_str(key)


def _table(header: str, table: Mapping[str, Any], where: str) -> list[str]:
    lines = [header]
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines += [f"{_key(k)} = {_value(v, f'{where}: {k}')}" for k, v in table.items() if k not in subs]
    name = header.strip("[]")
    for key, sub in subs.items():
        lines += _table(f"[{name}.{_key(key)}]", sub, f"{where}: {key}")
    return lines



def render_config(setup: Setup, *, gateway_id: str) -> str:
    where = str(setup.config)
    lines = [f"# drgw gateway config (docs/config.md), written by {setup.origin}.",
             f"# gateway id {gateway_id}"]
    if setup.bundle_hash:
        lines.append(BUNDLE_MARK + setup.bundle_hash)
    lines += ["", "[gateway]", f"key = {toml_str(str(setup.key))}"]
    if setup.chain_id is not None:
        lines.append(f"chain_id = {setup.chain_id}")
    lines += ["", "[mqtt]", f"broker = {toml_str(setup.broker)}"]
    if setup.tls and setup.ca_pem is not None:
        lines.append(f"ca = {toml_str(str(setup.ca))}")
    if setup.mutual_tls:
        lines += [f"cert = {toml_str(str(setup.cert))}  # signed from gateway.csr by the aggregator",
                  f"key = {toml_str(str(setup.tls_key))}"]
    lines += ["", "[store]", f"path = {toml_str(str(setup.state_dir / 'drgw.db'))}",
              "", "[operators]", f"allow = {_value(list(setup.operators), where)}"]
    if setup.chain is not None:
        c = setup.chain
        lines += ["", "[chain]", f"rpc = {toml_str(c.rpc)}", f"market = {toml_str(c.market)}",
                  f"household = {toml_str(c.household)}", f"poa = {_value(c.poa, where)}"]
    for i, bus in enumerate(setup.devices.buses):
        lines += ["", *_table("[[bus]]", bus, f"{where}: bus[{i}]")]
    for i, device in enumerate(setup.devices.devices):
        lines += ["", *_table("[[device]]", device, f"{where}: device[{i}]")]
    return "\n".join(lines) + "\n"
