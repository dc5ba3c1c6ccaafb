"""`drgw run CONFIG`: the agent. SIGTERM/SIGINT stop it cleanly; a restart request re-executes it.

With `--on-restart exit` it exits with status 75 instead, for systemd to start it again.

A config on trial (a remote `config_set`, gateway.agent.trial) is a transaction across restarts:
when it does not load, or the agent fails before its verdict (store, metrics port, key, device
layer: any error), or a process before this one died trying it, the last good config is restored,
the reason recorded, and the agent starts again on it (exec, or 75 for systemd).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from gateway.config.gateway import GatewayConfig, load_config
from gateway.errors import ConfigError, DrgwError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("run", help="run the agent: devices -> signed measurements -> MQTT")
    parser.add_argument("config", type=Path, help="the gateway config file (docs/config.md)")
    parser.add_argument("--on-restart", choices=["exec", "exit"], default="exec",
                        help="when a restart is requested (remote command, new config): exec = "
                             "re-execute in place (default); exit = exit with status 75 so the "
                             "supervisor starts it again (systemd: RestartForceExitStatus=75)")
    parser.set_defaults(func=run)


def _rolled_back(path: Path, *, reason: str, tried: str | None = None) -> bool:
    from gateway.agent import trial  # here, not above: every drgw command imports this module

    if not trial.on_trial(path) or not trial.rollback(path, reason=reason, tried=tried):
        return False
    note = trial.last_rollback(path)
    log.warning("config %s on trial rolled back to the last good one (%s): %s",
                note.config_hash if note else "?", note.restored_hash if note else "?", reason)
    return True


def _load(path: Path) -> GatewayConfig:
    from gateway.agent import trial

    try:
        config = load_config(path)
    except ConfigError as exc:
        if _rolled_back(path, reason=f"does not load: {exc}"):
            return load_config(path)
        raise
    if trial.on_trial(path) and not trial.begin(path) and _rolled_back(
            path, tried=config.config_hash, reason="the agent stopped before a verdict on it "
            "(killed by the watchdog or a signal, crashed, or power lost)"):
        return load_config(path)
    return config


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, DrgwError) else f"{type(exc).__name__}: {exc}"


def _serve_trial(config: GatewayConfig) -> int:
    """Run the agent; a config on trial that fails is rolled back and RESTART asked for."""
    from gateway.agent import RESTART, trial

    trying = trial.on_trial(config.path)
    try:
        if trying:
            _check_store_continues(config)
        code = asyncio.run(_serve(config))
    except Exception as exc:
        if trying and _rolled_back(config.path, tried=config.config_hash,
                                   reason=f"failed to start: {_failure(exc)}"):
            return RESTART
        raise
    if code in (0, RESTART):
        trial.interrupt(config.path)  # a clean stop before the verdict: try it again next start
    return code


def _check_store_continues(config: GatewayConfig) -> None:
    """A config on trial that moves `[store] path` must not start the chain again: a new, empty
    store would issue seqs from 1 under the same key, reusing seqs the fleet already holds. Refused
    (and so rolled back) unless the new store already continues the last good config's chain."""
    from gateway.agent import trial
    from gateway.config.gateway import parse_config
    from gateway.measurement.store.reader import StoreReader

    good = trial.last_good(config.path)
    if not good.exists():
        return
    old_path = parse_config(good.read_text(encoding="utf-8"), path=config.path).store.path
    new_path = config.store.path
    if new_path.resolve() == old_path.resolve() or not old_path.exists() \
            or not new_path.parent.is_dir():  # a store that cannot open fails with its own reason
        return
    with StoreReader(old_path) as reader:
        old_seq = reader.high_water().seq or 0
    new_seq = 0
    if new_path.exists():
        with StoreReader(new_path) as reader:
            new_seq = reader.high_water().seq or 0
    if new_seq < old_seq:
        raise ConfigError(f"[store] path {new_path}: its chain is at seq {new_seq}, the store it "
                          f"replaces ({old_path}) at {old_seq}; starting there would issue seqs "
                          "again. Copy the store file to the new path first (docs/operations.md)")


async def _serve(config: GatewayConfig) -> int:
    from gateway.agent import Agent
    from gateway.measurement.keyfile import load_key

    password = None
    if config.key_password_file is not None:
        password = config.key_password_file.read_text(encoding="utf-8").strip()
    key = load_key(config.key, password)
    agent = Agent(config, key=key)
    # What is built by now (modules, profiles, the agent's parts) lives as long as the agent:
    # collected once, then frozen, so the collector's passes no longer walk it (Python's gc.freeze).
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop, 0)
    log.warning("drgw %s running as %s with %d device(s), config %s", config.path, key.address,
                len(config.devices.devices), config.config_hash)
    return await agent.run()


def run(args: argparse.Namespace) -> int:
    from gateway.agent import RESTART
    from gateway.ops.logs import configure

    config = _load(args.config)
    # Stdout, for journald (with "<N>" priorities when it is the journal stream); rate-limited.
    configure(level=config.log_level)
    code = _serve_trial(config)
    if code == RESTART and args.on_restart == "exec":
        from gateway.ops import sdnotify

        log.warning("restarting")
        # Same PID across the exec: tell systemd (if any) we are reloading; READY=1 follows.
        sdnotify.SocketNotifier.from_environment().send(
            sdnotify.RELOADING, sdnotify.monotonic_usec(), sdnotify.status("restarting"))
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "gateway.cli", *sys.argv[1:]])
    return code
