"""`drgw provision [BUNDLE]`: first-boot setup from a bundle an installer dropped on the boot partition.

The bundle (drgw-provision.toml, docs/install.md "Provisioning bundle") holds what is known before the
box reaches the home: broker, its CA, operators, chain, devices or how to scan for them. It is applied
once, like `drgw init --non-interactive`, then renamed `.applied-<time>` (or `.failed-<time>` with the
error beside it). It must not hold a secret: the gateway makes its own keys.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.commands.init import hand_over, report, scan_draft
from gateway.errors import ConfigError, DrgwError
from gateway.ops import provisioning as prov
from gateway.schema import Fields

# Raspberry Pi OS bookworm mounts the FAT boot partition at /boot/firmware; older releases at /boot.
BUNDLE_PLACES = (Path("/boot/firmware/drgw-provision.toml"), Path("/boot/drgw-provision.toml"))
BUNDLE_VERSION = 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("provision", help="first-boot setup from a provisioning bundle (applied once)",
                       description=__doc__)
    p.add_argument("bundle", nargs="?", type=Path,
                   help=f"the bundle (default: the first of {', '.join(map(str, BUNDLE_PLACES))})")
    p.add_argument("--bundle", dest="bundle_opt", type=Path, help="same as BUNDLE")
    p.add_argument("--config", type=Path, default=prov.DEFAULT_CONFIG,
                   help=f"config file to write (default {prov.DEFAULT_CONFIG})")
    p.add_argument("--state-dir", type=Path, default=prov.DEFAULT_STATE_DIR,
                   help=f"keys and store (default {prov.DEFAULT_STATE_DIR})")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class Bundle:
    path: Path
    sha256: str
    setup: prov.Setup


def _find_secret(value: Any, where: str) -> None:
    """A raw secp256k1 key (64 hex digits) or an eth-account keystore is a secret as much as PEM."""
    if isinstance(value, dict):
        if "ciphertext" in value or "crypto" in value:
            raise ConfigError(f"{where}: looks like an encrypted keystore; a gateway makes its own key,"
                              " so none may be shipped to it: remove it")
        for k, v in value.items():
            _find_secret(v, f"{where}: {k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _find_secret(v, f"{where}[{i}]")
    elif isinstance(value, str):
        prov.reject_private_key(value, where=where)
        digits = value[2:] if value[:2].lower() == "0x" else value
        if len(digits) == 64 and all(c in "0123456789abcdefABCDEF" for c in digits):
            raise ConfigError(f"{where}: 64 hex digits look like a private key; a gateway makes its own"
                              " key, so none may be shipped to it: remove it (and treat it as exposed)")


def _file(f: Fields, key: str, base: Path) -> bytes:
    path = base / f.require_str(key)
    try:
        data = path.read_bytes()
    except OSError as exc:
        f.fail(key, f"cannot read {path}: {exc.strerror}; put the file beside the bundle")
    prov.reject_private_key(data.decode("utf-8", errors="replace"), where=f"{f.where}: {key} ({path})")
    return data


def _only(f: Fields, *keys: str) -> Fields:
    """Unknown keys first: a typo ('brokr') reads better as "did you mean" than as a missing key."""
    for key in keys:
        f.peek(key)
    f.reject_unknown()
    return f


def _exactly_one(f: Fields, keys: tuple[str, ...], required: bool) -> str | None:
    present = [k for k in keys if k in f]
    if len(present) > 1 or (required and not present):
        f.fail("/".join(keys), f"give exactly one of {', '.join(keys)}")
    return present[0] if present else None


def _devices(f: Fields, base: Path) -> prov.DevicesDraft:
    _only(f, "draft", "draft_file", "scan_serial", "scan_tcp", "units", "bauds", "parity", "timeout",
          "main")
    how = _exactly_one(f, ("draft", "draft_file", "scan_serial", "scan_tcp"), required=True)
    units = f.optional_str("units") or "1-247"
    bauds = f.optional_str("bauds") or "9600"
    parity = f.optional_str("parity", choices=("N", "E", "O")) or "N"
    timeout = f.optional_number("timeout") or 0.15
    main = f.optional_str("main")
    where = f"{f.where}: {how}"
    if how == "draft":
        draft = prov.parse_draft(f.require_str("draft"), where=where)
    elif how == "draft_file":
        draft = prov.parse_draft(_file(f, "draft_file", base).decode("utf-8", errors="replace"),
                                 where=where)
    else:
        draft, unknown = scan_draft(serial=f.optional_str("scan_serial"),
                                         tcp=f.optional_str("scan_tcp"), units=units, bauds=bauds,
                                         parity=parity, timeout=timeout, where=where)
        if unknown:
            print(f"note: unit(s) {', '.join(map(str, unknown))} answered but matched no profile; "
                  "left out", file=sys.stderr)
    f.reject_unknown()
    return draft.with_main(main, where=f"{f.where}: main") if main else draft


def _mqtt(f: Fields, base: Path) -> tuple[str, bytes | None, bool]:
    _only(f, "broker", "ca", "ca_file", "client_cert")
    broker = prov.check_broker(f.require_str("broker"), where=f"{f.where}: broker")
    which = _exactly_one(f, ("ca", "ca_file"), required=False)
    ca = None
    if which == "ca":
        ca = prov.check_ca(f.require_str("ca").encode(), where=f"{f.where}: ca")
    elif which == "ca_file":
        ca = prov.check_ca(_file(f, "ca_file", base), where=f"{f.where}: ca_file")
    client_cert = f.optional_bool("client_cert")
    f.reject_unknown()
    if ca is not None and not broker.startswith("mqtts://"):
        f.fail("ca", "a CA is for a TLS broker: write the broker as mqtts://host:8883")
    return broker, ca, True if client_cert is None else client_cert


def _chain(f: Fields) -> prov.ChainAnswers:
    _only(f, "rpc", "market", "household", "poa")
    chain = prov.ChainAnswers(
        rpc=prov.check_rpc(f.require_str("rpc"), where=f"{f.where}: rpc"),
        market=prov.check_address(f.require_str("market"), where=f"{f.where}: market"),
        household=prov.check_address(f.require_str("household"), where=f"{f.where}: household"),
        poa=bool(f.optional_bool("poa")))
    f.reject_unknown()
    return chain


def read_bundle(path: Path, *, config: Path, state_dir: Path) -> Bundle:
    """Read a bundle strictly; errors name the file and the key."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _find_secret(data, str(path))
    prov.reject_private_key(text, where=str(path))  # also in comments
    top = Fields(data, where=str(path))
    if "wifi" in top:
        top.fail("wifi", "Wi-Fi is not set up by drgw: set it when flashing (Raspberry Pi Imager, "
                 "OS customisation) and remove this table")
    _only(top, "version", "mqtt", "operators", "gateway", "chain", "devices")
    version = top.require_int("version")
    if version != BUNDLE_VERSION:
        top.fail("version", f"this drgw reads bundle version {BUNDLE_VERSION}, not {version}")
    broker, ca, client_cert = _mqtt(top.sub("mqtt", required=True), path.parent)
    ops = _only(top.sub("operators"), "allow")
    operators = tuple(prov.check_address(str(a), where=f"{ops.where}: allow[{i}]")
                      for i, a in enumerate(ops.list("allow")))
    ops.reject_unknown()
    gw = _only(top.sub("gateway"), "chain_id")
    chain_id = gw.optional_int("chain_id")
    gw.reject_unknown()
    chain = _chain(top.sub("chain")) if "chain" in top else None
    devices = _devices(top.sub("devices", required=True), path.parent)
    top.reject_unknown()
    digest = hashlib.sha256(raw).hexdigest()
    setup = prov.Setup(
        config=config.absolute(), state_dir=state_dir.absolute(),
        key=state_dir.absolute() / "gateway.key", broker=broker, ca_pem=ca, client_cert=client_cert,
        operators=operators, chain=chain, devices=devices, chain_id=chain_id,
        # The key is this device's identity: a re-provisioned box keeps the one it has.
        keep_key=True, force=False, origin=f"`drgw provision` from {path.name}", bundle_hash=digest)
    return Bundle(path=path, sha256=digest, setup=setup)


def _locate(args: argparse.Namespace) -> Path | None:
    given = args.bundle_opt or args.bundle
    places = (given,) if given else BUNDLE_PLACES
    return next((p for p in places if p.is_file()), None)


def _already_applied(config: Path, digest: str) -> bool:
    try:
        text = config.read_text(encoding="utf-8")
    except OSError:
        return False
    return (prov.BUNDLE_MARK + digest) in text.splitlines()


def _consume(path: Path, label: str, now: datetime) -> Path:
    target = path.with_name(f"{path.name}.{label}-{prov.stamp(now)}")
    os.replace(path, target)
    return target


def _copy_csr_beside(bundle: Path, setup: prov.Setup, gateway_id: str) -> str:
    """The CSR also goes to the boot partition, where an installer without SSH can pick it up."""
    target = bundle.with_name(f"drgw-{gateway_id}.csr")
    try:
        target.write_bytes(setup.csr.read_bytes())
    except OSError as exc:
        return f"could not copy the CSR to {target}: {exc.strerror}"
    return f"the CSR is also at {target}"


def run(args: argparse.Namespace) -> int:
    path = _locate(args)
    if path is None:
        where = args.bundle_opt or args.bundle or " or ".join(map(str, BUNDLE_PLACES))
        print(f"drgw provision: no bundle at {where}: nothing to do")
        return 0
    now = datetime.now(UTC)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if _already_applied(args.config, digest):
        # Applied before, but the rename did not happen (power cut): only finish the rename.
        done = _consume(path, "applied", now)
        print(f"drgw provision: {path} was already applied to {args.config}; renamed to {done}")
        return 0
    try:
        if args.config.exists():
            raise ConfigError(f"{args.config} exists and was not written from this bundle; a bundle "
                              "never replaces a config: move it away to re-provision (the gateway "
                              "key is kept)")
        bundle = read_bundle(path, config=args.config, state_dir=args.state_dir)
        outcome = prov.apply(bundle.setup, now=now)
    except DrgwError as exc:
        failed = _consume(path, "failed", now)
        failed.with_name(failed.name + ".txt").write_text(f"drgw provision: {exc}\n", encoding="utf-8")
        raise ConfigError(f"{exc}\n(the bundle was renamed {failed.name}; the error is in "
                          f"{failed.name}.txt; fix it and rename it back to {path.name})") from exc
    notes = hand_over(bundle.setup)
    if bundle.setup.mutual_tls:
        notes.append(_copy_csr_beside(path, bundle.setup, outcome.gateway_id))
    done = _consume(path, "applied", now)
    notes.append(f"the bundle was renamed {done.name}")
    report(bundle.setup, outcome, notes, args.json)
    return 0
