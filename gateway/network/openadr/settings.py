"""The `[openadr]` table of the gateway config: the VTN this gateway's VEN registers with (pure).

Read strictly like the rest of the config (gateway/config/gateway.py). OpenADR 2.0b runs over TLS
with certificates on both sides (OpenADR 2.0b Profile Specification, "Security": TLS 1.2, and the
VEN and the VTN each present an X.509 certificate), so the VTN URL must be https, and the VEN's
certificate, its key and the CA that signed the VTN's certificate are required (docs/openadr.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gateway.schema import Fields

OPT_MODES = ("capacity", "always", "never")
# openleadr's fingerprint of a certificate: the last 10 bytes of its SHA-256, as colon-separated hex
# (openleadr/utils.py `certificate_fingerprint_from_der`).
_FINGERPRINT = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){9}$")
SIMPLE_LEVELS = 3  # SIMPLE signal levels 1..3; 0 is normal operation (OpenADR 2.0b, signal SIMPLE/level)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAdrConfig:
    vtn_url: str  # https://host:port/OpenADR2/Simple/2.0b
    ven_name: str
    cert: Path  # the VEN's certificate (TLS client certificate and XML signatures)
    key: Path
    vtn_ca: Path  # the CA that signed the VTN's TLS certificate
    vtn_fingerprint: str | None = None  # checks the VTN's XML signatures when set
    ven_id: str | None = None  # None: the VTN assigns one at registration
    opt: str = "capacity"  # capacity: opt in when the levers can deliver the target
    level_w: tuple[float, ...] | None = None  # W to shed at SIMPLE levels 1, 2, 3
    report_min_s: float = 1.0  # shortest report sampling the VEN offers
    check_hostname: bool = True
    retry_s: float = 30.0  # wait before registering again after a failure


def parse_openadr(f: Fields, *, base: Path) -> OpenAdrConfig:
    url = f.require_str("vtn_url")
    if not url.startswith("https://"):
        f.fail("vtn_url", f"{url!r}: OpenADR 2.0b requires TLS; write the VTN's https:// URL, e.g. "
               "https://vtn.example.org:8080/OpenADR2/Simple/2.0b")
    fingerprint = f.optional_str("vtn_fingerprint")
    if fingerprint is not None and not _FINGERPRINT.match(fingerprint):
        f.fail("vtn_fingerprint", f"{fingerprint!r} is not an OpenADR fingerprint: ten hex bytes "
               "separated by colons, e.g. 'AB:CD:...', as the VTN operator gives it")
    cfg = OpenAdrConfig(
        vtn_url=url, ven_name=f.require_str("ven_name"), cert=_file(f, "cert", base),
        key=_file(f, "key", base), vtn_ca=_file(f, "vtn_ca", base), vtn_fingerprint=fingerprint,
        ven_id=f.optional_str("ven_id"), opt=f.optional_str("opt", choices=OPT_MODES) or "capacity",
        level_w=_levels(f), report_min_s=f.optional_number(
            "report_min_seconds", minimum=1, maximum=3600, unit="seconds", default=1.0),
        check_hostname=f.optional_bool("check_hostname") is not False,
        retry_s=f.optional_number("retry_seconds", minimum=1, maximum=3600, unit="seconds",
                                  default=30.0))
    f.reject_unknown()
    return cfg


def _file(f: Fields, key: str, base: Path) -> Path:
    path = Path(f.require_str(key))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        f.fail(key, f"{path} is not a file; give the PEM file's path (relative to the config file)")
    return path


def _levels(f: Fields) -> tuple[float, ...] | None:
    raw = f.optional_list("level_w")
    if raw is None:
        return None
    if len(raw) != SIMPLE_LEVELS or not all(
            isinstance(w, int | float) and not isinstance(w, bool) and 0 <= w <= 1_000_000 for w in raw):
        f.fail("level_w", f"{raw!r}: write three numbers of W, 0..1000000, the load to shed at SIMPLE "
               "levels 1, 2 and 3, e.g. [1000, 2000, 4000]")
    return tuple(float(w) for w in raw)
