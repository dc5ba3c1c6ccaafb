"""A local mosquitto broker on a free loopback port: for `drgw demo`, the tests and the benchmarks.

It listens on 127.0.0.1 only. `restart()` comes back on the SAME port, so clients with a reconnect
loop find it again (the outage tests and the soak rely on that). TLS files, when given, are any
object with `ca`, `server_cert` and `server_key` paths (tests/mosquitto.py makes throwaway ones). With
a `password_file` (mosquitto_passwd(1) format) the broker refuses clients without a valid login.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

MOSQUITTO_FIX = (
    "mosquitto is not installed: run `apt-get install -y mosquitto` "
    "(or scripts/setup, which installs it) and run the tests again"
)


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a RuntimeError that says how to install it."""
    for candidate in ("/usr/sbin/mosquitto", shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(MOSQUITTO_FIX)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process on 127.0.0.1:<port>; start/stop/kill/restart keep the same port."""

    def __init__(self, workdir: Path, *, persistence: bool = False, tls: Any = None,
                 port: int | None = None, password_file: Path | None = None) -> None:
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.tls = tls
        self.persistence = persistence
        self.password_file = password_file
        self.log_path = workdir / "mosquitto.log"
        self.config_path = workdir / "mosquitto.conf"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.password_file is None else 'false'}",
            "set_tcp_nodelay true",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # mosquitto started as root drops to user "mosquitto", which cannot read pytest's
            # 0700 tmp dirs (certs, persistence); a throwaway test broker may keep root.
            lines.append("user root")
        if self.persistence:
            data = self.workdir / "data"
            data.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {data}/", "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca}", f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}", "require_certificate true",
                "tls_version tlsv1.2",
            ]
        self.config_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)], stdout=log, stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode} on port {self.port}; "
                    f"its log {self.log_path}:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not accept connections on 127.0.0.1:{self.port} "
                           f"within {timeout}s; see {self.log_path}")

    def _end(self, sig: int) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): mosquitto saves its persistence file if enabled."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Hard stop (SIGKILL): clients see the socket drop, nothing is flushed."""
        self._end(signal.SIGKILL)

    def restart(self, *, down_for: float = 0.0, hard: bool = True) -> None:
        """Kill (or stop) the broker, stay down for `down_for` seconds, start it on the same port."""
        self.kill() if hard else self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
