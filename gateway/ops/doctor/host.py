"""`drgw doctor`'s checks of this machine: key file, file owners, serial ports, clock, disk, store.

They write nothing: the store is opened read-only.
"""

from __future__ import annotations

import grp
import os
import pwd
import sqlite3
import stat
from pathlib import Path

from gateway.clock import clock_synchronised
from gateway.config.gateway import GatewayConfig
from gateway.errors import DrgwError
from gateway.ops.doctor.check import Check, fail, ok, warn

DISK_WARN = 500 * 1024 * 1024
DISK_FAIL = 50 * 1024 * 1024


def lookup_user(name: str) -> pwd.struct_passwd | None:
    """The service user's account, or None when it is not installed (yet)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _groups_of(user: pwd.struct_passwd) -> set[int]:
    return {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}


def check_key(config: GatewayConfig, user: pwd.struct_passwd | None) -> tuple[list[Check], str | None]:
    """The key file's checks and, when it loads, the gateway address the later checks need."""
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
            *service_reads("key", path, user)], key.address


def service_reads(name: str, path: Path, user: pwd.struct_passwd | None) -> list[Check]:
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
    return [_check_port(f"port {bus.name}", bus.serial, user)
            for bus in config.devices.buses if bus.serial is not None]


def _check_port(name: str, port: str, user: pwd.struct_passwd | None) -> Check:
    try:
        st = os.stat(port)
    except OSError:
        return fail(name, f"{port}: no such device", "plug the RS-485 adapter in "
                    "and use its stable name from `ls -l /dev/serial/by-id/`")
    if not stat.S_ISCHR(st.st_mode):
        return fail(name, f"{port} is not a serial device",
                    "use the adapter's name from `ls -l /dev/serial/by-id/`")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    where = f"{os.path.realpath(port)} ({group}, mode {stat.S_IMODE(st.st_mode):04o})"
    if not os.access(port, os.R_OK | os.W_OK):
        me = pwd.getpwuid(os.getuid()).pw_name
        return fail(name, f"{where}: this user ({me}) may not open it",
                    f"sudo usermod -aG {group} {me}, then log in again")
    if user is not None and not (st.st_gid in _groups_of(user) and st.st_mode & 0o060 == 0o060):
        return fail(name, f"{where}: the service user {user.pw_name} may not open it",
                    f"sudo usermod -aG {group} {user.pw_name} (`drgw install-service` "
                    "adds it to dialout)")
    return ok(name, where)


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


def _salvage_fix(path: Path) -> str:
    # Never "move it aside": a new store would issue seqs from 1 again, and seqs already published
    # would come back with different content. Salvage continues after the highest seq ever issued.
    return (f"stop the agent (systemctl stop drgw), keep a copy of the file, then `drgw store "
            f"salvage {path} {path.with_name(path.stem + '-salvaged' + path.suffix)}` and point "
            "[store] path at the new file (docs/operations.md, \"A damaged store\")")


def check_store(path: Path) -> Check:
    from gateway.measurement.store.errors import CORRUPT, classify
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
        if classify(exc) == CORRUPT:  # "file is not a database": a damaged header, not a bad path
            return fail("store", f"{path}: damaged ({exc})", _salvage_fix(path))
        return fail("store", f"{path}: cannot read it ({exc})", "check the path and its "
                    "permissions (the service user must own it: `drgw install-service` re-owns "
                    "/var/lib/drgw)")
    if result != "ok":
        return fail("store", f"{path}: damaged (quick_check says {result})", _salvage_fix(path))
    if version > LATEST:
        return fail("store", f"{path}: schema version {version}, newer than this drgw ({LATEST})",
                    "upgrade drgw")
    if version < LATEST:
        return ok("store", f"{path}: intact, schema {version} (upgraded to {LATEST} at next start)")
    return ok("store", f"{path}: intact, schema version {version}")
