"""`drgw doctor [CONFIG]`: checks an installation end to end and says, for each problem, the fix.

One line per check, OK / WARN / FAIL; a failed check is followed by its fix. The checks go through
the same code the agent uses (config parser, key loader, device layer, TLS settings, chain client),
with short timeouts, and write nothing: the store is opened read-only. Exit status 0 when nothing
FAILed, 1 otherwise; `--json` prints one object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import json
import os
import pwd
import sqlite3
import stat
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.clock import clock_synchronised
from gateway.config.gateway import GatewayConfig, load_config
from gateway.errors import DrgwError

DEFAULT_CONFIG = Path("/etc/drgw/drgw.toml")
SERVICE_USER = "drgw"  # systemd/drgw.sysusers
DISK_WARN = 500 * 1024 * 1024
DISK_FAIL = 50 * 1024 * 1024


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "level": str(self.level), "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name=name, level=Level.OK, detail=detail)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, level=Level.WARN, detail=detail, fix=fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, level=Level.FAIL, detail=detail, fix=fix)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("doctor", help="check config, key, ports, devices, broker, chain, clock, "
                                           "disk and store; print the fix for each problem")
    parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG,
                        help=f"the gateway config (default {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds per network check (default 3)")
    parser.add_argument("--user", default=SERVICE_USER,
                        help=f"the user the service runs as (default {SERVICE_USER})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    checks = diagnose(args.config, timeout=args.timeout, service_user=args.user)
    failed = any(c.level is Level.FAIL for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.as_json() for c in checks]}))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.level!s:<5} {c.name:<{width}}  {c.detail}")
            if c.fix:
                print(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    return 1 if failed else 0


def diagnose(path: Path, *, timeout: float, service_user: str = SERVICE_USER) -> list[Check]:
    """Every check, in the order an installer would fix things."""
    try:
        config = load_config(path)
    except DrgwError as exc:
        return [fail("config", str(exc), f"edit {path} as the message says (docs/config.md), or "
                     "write a fresh one with `drgw init`"), check_clock()]
    checks = [ok("config", f"{path}: {len(config.devices.buses)} bus(es), "
                 f"{len(config.devices.devices)} device(s), config hash {config.config_hash}")]
    user = _service_user(service_user)
    checks += _service_reads("config", path, user)
    key_checks, address = check_key(config, user)
    checks += key_checks
    checks += check_serial_ports(config, user)
    checks += asyncio.run(_network_checks(config, address, timeout))
    checks += check_chain(config, address, timeout)
    checks += [check_clock(), check_disk(config.store.path), check_store(config.store.path)]
    return checks


async def _network_checks(config: GatewayConfig, address: str | None,
                          timeout: float) -> list[Check]:
    devices = await check_devices(config)
    return devices + await check_broker(config, address, timeout)


# ----------------------------------------------------------------------------------- key, ports


def _service_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _groups_of(user: pwd.struct_passwd) -> set[int]:
    return {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}


def check_key(config: GatewayConfig, user: pwd.struct_passwd | None) -> tuple[list[Check], str | None]:
    from gateway.measurement.keyfile import load_key

    path = config.key
    try:
        st = path.stat()
    except FileNotFoundError:
        return [fail("key", f"{path}: no such file", f"create it: `drgw keys new --out {path}`")], None
    except OSError as exc:
        return [fail("key", f"{path}: {exc.strerror}", "check the path and its directory's "
                     "permissions")], None
    if st.st_mode & 0o077:
        return [fail("key", f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                     f"chmod 600 {path}")], None
    try:
        password = None
        if config.key_password_file is not None:
            password = config.key_password_file.read_text(encoding="utf-8").strip()
        key = load_key(path, password)
    except (DrgwError, OSError) as exc:
        return [fail("key", str(exc), "point [gateway] key at the gateway's key file, or create "
                     f"one with `drgw keys new --out {path}`")], None
    return [ok("key", f"{path} (mode 0600): gateway {key.address}"),
            *_service_reads("key", path, user)], key.address


def _service_reads(name: str, path: Path, user: pwd.struct_passwd | None) -> list[Check]:
    """A WARN when the service user (if installed) could not read this file."""
    st = path.stat()
    if user is None or user.pw_uid == 0 or (st.st_uid == user.pw_uid and st.st_mode & 0o400) \
            or (st.st_gid in _groups_of(user) and st.st_mode & 0o040) or st.st_mode & 0o004:
        return []
    return [warn(f"{name} owner", f"{path}: the service user {user.pw_name} cannot read it (owner "
                 f"uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})",
                 f"chown {user.pw_name}:{user.pw_name} {path} (`drgw install-service` re-owns "
                 "/etc/drgw and /var/lib/drgw)")]


def check_serial_ports(config: GatewayConfig, user: pwd.struct_passwd | None) -> list[Check]:
    checks = []
    for bus in config.devices.buses:
        if bus.serial is None:
            continue
        name = f"port {bus.name}"
        try:
            st = os.stat(bus.serial)
        except OSError:
            checks.append(fail(name, f"{bus.serial}: no such device", "plug the RS-485 adapter in "
                               "and use its stable name from `ls -l /dev/serial/by-id/`"))
            continue
        if not stat.S_ISCHR(st.st_mode):
            checks.append(fail(name, f"{bus.serial} is not a serial device",
                               "use the adapter's name from `ls -l /dev/serial/by-id/`"))
            continue
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        where = f"{os.path.realpath(bus.serial)} ({group}, mode {stat.S_IMODE(st.st_mode):04o})"
        if not os.access(bus.serial, os.R_OK | os.W_OK):
            me = pwd.getpwuid(os.getuid()).pw_name
            checks.append(fail(name, f"{where}: this user ({me}) may not open it",
                               f"sudo usermod -aG {group} {me}, then log in again"))
            continue
        if user is not None and not (st.st_gid in _groups_of(user) and st.st_mode & 0o060 == 0o060):
            checks.append(fail(name, f"{where}: the service user {user.pw_name} may not open it",
                               f"sudo usermod -aG {group} {user.pw_name} (`drgw install-service` "
                               "adds it to dialout)"))
            continue
        checks.append(ok(name, where))
    return checks


# ------------------------------------------------------------------------------------- devices


async def check_devices(config: GatewayConfig) -> list[Check]:
    """Read each device's first point through the device layer, as the agent would."""
    from gateway.device.layer import DeviceLayer

    if not config.devices.devices:
        return [warn("devices", "none configured", "add [[bus]] and [[device]] tables "
                     "(`drgw scan` prints them)")]
    layer = DeviceLayer(config.devices, sink=lambda sample: None)
    polling = asyncio.create_task(layer.run(), name="doctor-devices")
    try:
        return list(await asyncio.gather(*(_read_device(layer, d, config)
                                           for d in config.devices.devices)))
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)


async def _read_device(layer: Any, device: Any, config: GatewayConfig) -> Check:
    from gateway.perception.readings import Quality

    bus = config.devices.bus(device.bus)
    where = f"{device.profile.name}, unit {device.unit} on {bus.tcp or bus.serial}"
    name = f"device {device.name}"
    point = device.profile.points[0]
    started = time.monotonic()
    try:
        readings = await asyncio.wait_for(layer.read_now(device.name, [point.name]),
                                          3 * device.timeout + 1.0)
    except (DrgwError, TimeoutError) as exc:
        text = str(exc) or f"no answer within {3 * device.timeout + 1.0:.0f} s"
        if "lock" in text:
            return warn(name, f"{where}: the port is in use ({text})",
                        "the agent holds it while it runs; `systemctl stop drgw` to test devices")
        if bus.tcp:
            hint = (f"that the device is on and answers unit {device.unit}: `drgw read --tcp "
                    f"{bus.tcp} --profile {device.profile.name} --unit {device.unit}`")
        else:
            hint = f"power, A/B wiring, baud/parity and unit id; `drgw scan --serial {bus.serial}`"
        return fail(name, f"{where}: {text}", f"check {hint}")
    took = (time.monotonic() - started) * 1000
    got = next((r for r in readings if r.name == point.name), None)
    if got is None or got.quality is not Quality.OK:
        error = got.error if got is not None else "no reading"
        return fail(name, f"{where}: {point.name}: {error}", "the device answers but not as the "
                    f"profile {device.profile.name} expects: is it that model? `drgw scan` identifies it")
    return ok(name, f"{where}: {point.name} = {got.value} {got.unit} in {took:.0f} ms")


# -------------------------------------------------------------------------------------- broker


async def check_broker(config: GatewayConfig, address: str | None, timeout: float) -> list[Check]:
    from gateway.network.settings import LinkSettings

    m = config.mqtt
    try:
        settings = LinkSettings.from_url(m.broker, client_id=m.client_id or "drgw-doctor",
                                         ca=m.ca, cert=m.cert, key=m.key, keepalive_s=m.keepalive)
        tls = settings.tls.context() if settings.broker.tls else None
    except DrgwError as exc:
        return [fail("broker", str(exc), "fix [mqtt] in the config (docs/config.md)")]
    b = settings.broker
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(b.host, b.port), timeout)
        await _close(writer)
    except (OSError, TimeoutError) as exc:
        return [fail("broker tcp", f"{b}: cannot connect ({exc or 'timeout'})",
                     f"is the broker up and {b.host}:{b.port} reachable from here (DNS, firewall)?")]
    checks = [ok("broker tcp", f"{b}: connected")]
    if tls is not None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                b.host, b.port, ssl=tls, server_hostname=b.host), timeout)
            await _close(writer)
        except (OSError, TimeoutError) as exc:
            return [*checks, fail("broker tls", f"{b}: TLS handshake failed ({exc or 'timeout'})",
                                  f"[mqtt] ca ({m.ca or 'system store'}) must be the CA that signed "
                                  f"the broker's certificate, issued for {b.host}")]
        checks.append(ok("broker tls", f"{b}: certificate verified"))
    return [*checks, await _mqtt_connect(settings, tls, address, timeout)]


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


async def _mqtt_connect(settings: Any, tls: Any, address: str | None, timeout: float) -> Check:
    import aiomqtt

    b = settings.broker
    # Never the agent's own client id: the broker would disconnect the running agent.
    ident = f"{settings.client_id}-doctor-{os.getpid()}"
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout + 1):
            async with aiomqtt.Client(b.host, b.port, identifier=ident, timeout=timeout,
                                      tls_context=tls, clean_session=True):
                pass
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        return fail("broker mqtt", f"{b}: MQTT CONNECT failed ({exc or 'no CONNACK'})",
                    "the broker refused this client: check its ACL/auth for this gateway "
                    f"({address or 'its id'}) and, with mutual TLS, [mqtt] cert and key")
    return ok("broker mqtt", f"{b}: CONNACK in {(time.monotonic() - started) * 1000:.0f} ms")


# --------------------------------------------------------------------------------------- chain


def check_chain(config: GatewayConfig, address: str | None, timeout: float) -> list[Check]:
    chain = config.chain
    if chain is None:
        return [ok("chain", "no [chain] table: this gateway sends no Reports")]
    from gateway.chain.node import connect

    try:
        node = connect(chain.rpc, poa=chain.poa, timeout_s=timeout)
        chain_id, block = node.w3.eth.chain_id, node.w3.eth.block_number
    except Exception as exc:  # web3 raises many kinds (requests, JSON-RPC, middleware)
        return [fail("chain", f"{chain.rpc}: {exc}", "is the node up and the [chain] rpc URL right?")]
    checks = [ok("chain", f"{chain.rpc}: chain id {chain_id}, block {block}")]
    if address is None:
        return [*checks, warn("household", "not checked: no usable gateway key", "fix the key first")]
    return [*checks, _household(node.w3, chain_id, chain.market, chain.household, address)]


def _household(w3: Any, chain_id: int, market: str, wallet: str, gateway: str) -> Check:
    from web3 import Web3

    from gateway.chain.artifacts import load_artifact
    from gateway.chain.market_client import Deployment, MarketClient

    market, wallet = Web3.to_checksum_address(market), Web3.to_checksum_address(wallet)
    if not w3.eth.get_code(market):
        return fail("household", f"no contract at market {market} on chain {chain_id}",
                    "set [chain] market to the address `drgw market deploy` printed, on this rpc")
    token = w3.eth.contract(address=market, abi=load_artifact("DRMarket").abi).functions.token().call()
    client = MarketClient(w3=w3, deployment=Deployment(chain_id=chain_id, token=token, market=market))
    registered = str(client.household(wallet)["gateway"])
    if int(registered, 16) == 0:
        return fail("household", f"{wallet} is not registered on market {market}",
                    f"the operator runs `drgw market register --household {wallet} --gateway "
                    f"{gateway} --via AGGREGATOR`")
    if registered.lower() != gateway.lower():
        return fail("household", f"{wallet} is registered with gateway {registered}, not with this "
                    f"gateway {gateway}", "use the key that was registered ([gateway] key), or have "
                    "the operator register this gateway for the household")
    return ok("household", f"{wallet} is registered with this gateway {gateway}")


# ---------------------------------------------------------------------------- clock, disk, store


def check_clock() -> Check:
    if clock_synchronised():
        return ok("clock", "synchronised (NTP)")
    return warn("clock", "not synchronised: measurements are signed with clock_synced = false",
                "enable NTP: `timedatectl set-ntp true` (systemd-timesyncd) or start chrony")


def check_disk(store: Path) -> Check:
    folder = store.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    vfs = os.statvfs(folder)
    free = vfs.f_bavail * vfs.f_frsize
    text = f"{free / 1024**2:.0f} MB free on the store's filesystem ({folder})"
    if free < DISK_FAIL:
        return fail("disk", text, "free space: the store stops committing when the disk is full; "
                    "lower [store] caps or move [store] path to a bigger filesystem")
    if free < DISK_WARN:
        return warn("disk", text, "less than 500 MB: free space or lower [store] outbox/measurement caps")
    return ok("disk", text)


def check_store(path: Path) -> Check:
    from gateway.measurement.store.migrations import LATEST, schema_version

    if not path.exists():
        return ok("store", f"{path}: not created yet (the agent creates it at its first start)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
            version = schema_version(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return fail("store", f"{path}: cannot read it ({exc})", "check its permissions; if it is "
                    "damaged, stop the agent, move it aside and let the agent start a new one")
    if result != "ok":
        return fail("store", f"{path}: quick_check says {result}", "stop the agent, keep a copy, "
                    "export what is readable (`drgw export`) and move the file aside")
    if version > LATEST:
        return fail("store", f"{path}: schema version {version}, newer than this drgw ({LATEST})",
                    "upgrade drgw")
    if version < LATEST:
        return ok("store", f"{path}: intact, schema {version} (upgraded to {LATEST} at next start)")
    return ok("store", f"{path}: intact, schema version {version}")
