"""A throwaway PostgreSQL cluster on a free loopback port: for the master's tests and bench/fleet.py.

`initdb` into a fresh folder, `postgres` listening on 127.0.0.1 only (trust login for the one user
`drgw`, nothing else can connect), `database(name)` makes a database and gives its URL, `stop()`
ends the server and removes the folder. PostgreSQL refuses to run as root (initdb(1)), so under
root the cluster belongs to the `postgres` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.network.localbroker import free_port

POSTGRES_FIX = ("PostgreSQL is not installed: run `apt-get install -y postgresql` (or scripts/setup "
                "--test, which installs it)")


def find_postgres_bin() -> Path:
    """The folder of initdb and postgres: Debian keeps them in /usr/lib/postgresql/<major>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not versions:
        raise RuntimeError(POSTGRES_FIX)
    return Path(versions[-1]).parent


class LocalPostgres:
    """One postgres process; use as a context manager."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.bin = find_postgres_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="drgw-pg-"))
        self.data = self.root / "data"
        self.fsync = fsync
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, PostgreSQL needs the `postgres` user that "
                                   "Debian's postgresql package creates") from None
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._user = "postgres"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, *argv: str) -> None:
        out = subprocess.run(argv, capture_output=True, text=True, user=self._user, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {out.stderr.strip()[-1500:]}")

    def start(self, timeout: float = 30.0) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "drgw", "--auth=trust",
                  "-E", "UTF8", "--no-sync", "--no-instructions")
        log = (self.root / "postgres.log").open("ab")
        self._proc = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p",
             str(self.port), "-k", str(self.root), "-c", f"fsync={'on' if self.fsync else 'off'}",
             "-c", "max_connections=50"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, user=self._user)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}: "
                                   f"{(self.root / 'postgres.log').read_text()[-2000:]}")
            if self._accepts():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not accept connections on 127.0.0.1:{self.port}")

    def _accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        import psycopg

        try:
            psycopg.connect(self.url("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:  # "the database system is starting up"
            return False
        return True

    def url(self, database: str) -> str:
        return f"postgresql://drgw@127.0.0.1:{self.port}/{database}"

    def database(self, name: str) -> str:
        """Create database `name` (letters, digits, _) and return its URL."""
        import psycopg

        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: use letters, digits and _")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # the name is checked above
        return self.url(name)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast shutdown" (postgres(1), "Signals")
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)
