"""`drgw init`: set up a gateway — its key, a device scan, the config, and the broker TLS key + CSR.

On a terminal it asks (with defaults, re-asking on a bad answer with the reason); with
--non-interactive, or when stdin is not a terminal, it takes flags only and names the missing flag.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from gateway.errors import ConfigError
from gateway.ops import provisioning as prov

T = TypeVar("T")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("init", help="set up this gateway: key, device scan, config, TLS key + CSR",
                       description=__doc__)
    p.add_argument("--config", type=Path, default=prov.DEFAULT_CONFIG,
                   help=f"config file to write (default {prov.DEFAULT_CONFIG})")
    p.add_argument("--state-dir", type=Path, default=prov.DEFAULT_STATE_DIR,
                   help=f"keys and store (default {prov.DEFAULT_STATE_DIR})")
    p.add_argument("--key", type=Path, help="gateway key file (default STATE_DIR/gateway.key)")
    p.add_argument("--broker", help="the aggregator's broker, mqtts://host:8883 (required)")
    p.add_argument("--ca", type=Path, help="PEM CA certificate of the broker (default: system store)")
    p.add_argument("--no-client-cert", action="store_true",
                   help="the mqtts:// broker does not want client certificates: no TLS key/CSR")
    p.add_argument("--operator", action="append", default=[], metavar="ADDRESS",
                   help="operator address allowed to sign commands (repeat, or comma-separated)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scan-serial", metavar="PORT", help="scan this RS-485 port for devices")
    where.add_argument("--scan-tcp", metavar="HOST:PORT", help="scan this Modbus TCP gateway")
    where.add_argument("--devices", type=Path, metavar="FILE",
                       help="a draft from `drgw scan` (TOML, or its --json output)")
    p.add_argument("--scan-units", default="1-247", help="unit ids to scan (default 1-247)")
    p.add_argument("--scan-bauds", default="9600", help="baud rates to try in order (default 9600)")
    p.add_argument("--scan-parity", choices=["N", "E", "O"], default="N")
    p.add_argument("--scan-timeout", type=float, default=0.15, help="seconds per unit (default 0.15)")
    p.add_argument("--framing", choices=["tcp", "rtu"], default=None,
                   help="with --scan-tcp: tcp = Modbus TCP (default), rtu = RTU over TCP (a "
                        "serial-to-Ethernet converter in transparent mode); the draft's bus keeps it")
    p.add_argument("--main", metavar="DEVICE", help="the household's main meter (role = \"main\")")
    p.add_argument("--rpc", help="DR chain JSON-RPC URL (with --market and --household)")
    p.add_argument("--market", help="DRMarket contract address")
    p.add_argument("--household", help="the household's wallet address")
    p.add_argument("--poa", action="store_true", help="the chain is QBFT/Clique (consortium)")
    p.add_argument("--chain-id", type=int, help="EIP-712 chain id of measurement signatures")
    p.add_argument("--keep-key", action="store_true", help="use the existing gateway key if there is one")
    p.add_argument("--force", action="store_true",
                   help="replace an existing config and keys (old files are kept, renamed)")
    p.add_argument("--non-interactive", action="store_true", help="never ask; flags only")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=run)


def _operators(values: list[str], where: str) -> tuple[str, ...]:
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return tuple(prov.check_address(v, where=where) for v in items)


def _ca(path: Path | None, where: str) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where} {path}: cannot read it: {exc.strerror}") from None
    return prov.check_ca(data, where=f"{where} {path}")


def _draft_file(path: Path, where: str) -> prov.DevicesDraft:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where} {path}: cannot read it: {exc.strerror}") from None
    return prov.parse_draft(text, where=f"{where} {path}")


def _scan(args: argparse.Namespace, tty: bool) -> prov.DevicesDraft:
    def progress(done: int, total: int, hits: int) -> None:
        if tty:
            print(f"\rscanning unit {done}/{total}: {hits} found", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    flag = "--scan-serial" if args.scan_serial else "--scan-tcp"
    draft, unknown = scan_draft(serial=args.scan_serial, tcp=args.scan_tcp, units=args.scan_units,
                                bauds=args.scan_bauds, parity=args.scan_parity,
                                timeout=args.scan_timeout, where=flag, progress=progress,
                                framing=args.framing or "tcp")
    if unknown:
        print(f"note: unit(s) {', '.join(map(str, unknown))} answered but no single profile fits "
              "(none, or several: `drgw scan` lists the candidates); left out (add them by hand: "
              "docs/config.md)", file=sys.stderr)
    return draft


def _chain(args: argparse.Namespace) -> prov.ChainAnswers | None:
    given = {"--rpc": args.rpc, "--market": args.market, "--household": args.household}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        raise ConfigError(f"the [chain] section needs --rpc, --market and --household; missing "
                          f"{', '.join(missing)}")
    return prov.ChainAnswers(rpc=prov.check_rpc(args.rpc, where="--rpc"),
                             market=prov.check_address(args.market, where="--market"),
                             household=prov.check_address(args.household, where="--household"),
                             poa=args.poa)


def setup_from_flags(args: argparse.Namespace) -> prov.Setup:
    """The Setup from flags alone (non-interactive): a missing required value names its flag."""
    if not args.broker:
        raise ConfigError("--broker is required: the aggregator's broker, e.g. "
                          "--broker mqtts://broker.esco.example:8883")
    broker = prov.check_broker(args.broker, where="--broker")
    # The cheap checks first: a typo in a flag should not wait for a bus scan.
    if args.framing is not None and not args.scan_tcp:
        raise ConfigError("--framing applies to --scan-tcp: a serial line always frames RTU, and a "
                          "--devices draft says it on its [[bus]] (framing = \"rtu\")")
    chain, ca = _chain(args), _ca(args.ca, "--ca")
    operators = _operators(args.operator, "--operator")
    if args.devices:
        devices = _draft_file(args.devices, "--devices")
    elif args.scan_serial or args.scan_tcp:
        devices = _scan(args, sys.stderr.isatty())
    else:
        raise ConfigError("name the devices: --scan-serial PORT or --scan-tcp HOST:PORT to scan a "
                          "bus, or --devices FILE with a draft from `drgw scan`")
    if args.main:
        devices = devices.with_main(args.main, where="--main")
    return _setup(args, broker=broker, devices=devices, chain=chain, ca=ca, operators=operators,
                  client_cert=not args.no_client_cert)


def _setup(args: argparse.Namespace, *, broker: str, devices: prov.DevicesDraft,
           chain: prov.ChainAnswers | None, ca: bytes | None, operators: tuple[str, ...],
           client_cert: bool) -> prov.Setup:
    config = args.config.absolute()
    state = args.state_dir.absolute()
    return prov.Setup(config=config, state_dir=state,
                      key=(args.key or state / "gateway.key").absolute(), broker=broker,
                      ca_pem=ca, client_cert=client_cert, operators=operators, chain=chain,
                      devices=devices, chain_id=args.chain_id, keep_key=args.keep_key,
                      force=args.force, origin="`drgw init`")


def scan_draft(*, serial: str | None, tcp: str | None, units: str, bauds: str, parity: str,
               timeout: float, where: str, progress: Callable[[int, int, int], None] | None = None,
               framing: str = "tcp") -> tuple[prov.DevicesDraft, list[int]]:
    """Scan one bus like `drgw scan` and return the draft of the identified devices, plus the units
    that answered but matched no profile (left out: a config needs a profile per device).
    `framing` applies to `tcp`: "tcp" (Modbus TCP) or "rtu" (RTU over TCP), kept on the draft's bus."""
    import asyncio

    from gateway.commands.scan import parse_units
    from gateway.config.profiles import load_all
    from gateway.device.probe import Found, draft_config, scan_link
    from gateway.device.transport import LinkError

    try:
        unit_ids = parse_units(units)
        speeds: list[int | None] = [None] if tcp else [int(b) for b in bauds.split(",")]
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; write units like 1-10,20 and bauds like 9600,19200") from None
    profiles = load_all()  # scan_link keeps those with a probe
    found: list[Found] = []
    for baud in speeds:
        link_args: dict[str, object] = ({"tcp": tcp, "framing": framing} if tcp else
                                        {"serial": serial, "baud": baud, "parity": parity})
        try:
            found = asyncio.run(scan_link(
                link_args=link_args, units=unit_ids, profiles=profiles, timeout=timeout, baud=baud,
                parity=parity if baud else None, progress=progress or (lambda done, total, hits: None)))
        except LinkError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        if found:
            break  # one RS-485 bus runs at one speed: the first that answers is the bus's
    known = [f for f in found if f.profile]  # one profile fits: a scan never picks among several
    if not known:
        what = "answered but matched no profile" if found else "answered"
        on = f"{tcp} (RTU over TCP)" if tcp and framing == "rtu" else tcp or serial
        raise ConfigError(f"{where}: no device {what} on {on} (units {units}"
                          f"{'' if tcp else f', {bauds} baud, parity {parity}'}): check the wiring "
                          "(A/B swapped?), the baud rate and parity, the unit ids; see docs/install.md, "
                          "Troubleshooting")
    text = draft_config(known, tcp=tcp, serial=serial, framing=framing)
    return prov.parse_draft(text, where=f"{where} (scan draft)"), [f.unit for f in found if not f.profile]


def hand_over(setup: prov.Setup, user: str = "drgw") -> list[str]:
    """When run as root: the service user gets its secrets and the config's group. Returns notes."""
    import grp
    import pwd

    if os.geteuid() != 0:
        return []
    try:
        pw = pwd.getpwnam(user)
        gid = grp.getgrnam(user).gr_gid
    except KeyError:
        return [f"user {user!r} does not exist yet: `drgw install-service` creates it and hands it "
                "/etc/drgw and /var/lib/drgw"]
    for path in (setup.state_dir, setup.key, setup.tls_key):
        if path.exists():
            os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chown(setup.config, 0, gid)  # 0640 root:drgw, the service reads, only root writes
    return [f"{setup.config} is readable by group {user}; the keys belong to user {user}"]


class Terminal:
    """Questions on a terminal: a default in brackets, Enter takes it, a bad answer is asked again."""

    def __init__(self, ask: Callable[[str], str] = input) -> None:
        self._input = ask

    def line(self, question: str, default: str | None = None) -> str:
        shown = f" [{default}]" if default else ""
        try:
            answer = self._input(f"{question}{shown}: ").strip()
        except EOFError:
            raise ConfigError("input ended: init cancelled, nothing was written") from None
        return answer or (default or "")

    def ask(self, question: str, check: Callable[[str], T], default: str | None = None) -> T:
        while True:
            answer = self.line(question, default)
            try:
                return check(answer)
            except ConfigError as exc:
                print(f"  {exc}")

    def yes(self, question: str, default: bool) -> bool:
        def check(answer: str) -> bool:
            if answer.lower() in ("y", "yes", "n", "no"):
                return answer.lower().startswith("y")
            raise ConfigError("answer y or n")

        return self.ask(question + (" (Y/n)" if default else " (y/N)"), check,
                        "y" if default else "n")


def _need(where: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise ConfigError(f"{where}: a value is needed")
        return value

    return check


def _ask_devices(term: Terminal, args: argparse.Namespace) -> prov.DevicesDraft:
    default = "t" if args.scan_tcp else "f" if args.devices else "s"
    while True:
        how = term.ask("Devices: scan a serial RS-485 port (s), a Modbus TCP gateway (t), or read a "
                       "draft file (f)?", lambda a: _choice(a, "stf"), default)
        try:
            if how == "f":
                path = term.ask("Draft file", _need("draft file"), str(args.devices or "") or None)
                return _draft_file(Path(path), "draft file")
            if how == "s":
                args.scan_serial = term.ask("Serial port", _need("serial port"),
                                            args.scan_serial or "/dev/ttyUSB0")
                args.scan_bauds = term.line("Baud rates to try", args.scan_bauds)
                args.scan_parity = term.ask("Parity (N/E/O)", lambda a: _choice(a.upper(), "NEO"),
                                            args.scan_parity)
            else:
                args.scan_tcp = term.ask("Modbus TCP gateway host:port", _need("host:port"),
                                         args.scan_tcp)
            args.scan_units = term.line("Unit ids", args.scan_units)
            return _scan(args, True)
        except ConfigError as exc:
            print(f"  {exc}")
            default = how


def _choice(answer: str, letters: str) -> str:
    if len(answer) != 1 or answer not in letters:
        raise ConfigError(f"answer one of {', '.join(letters)}")
    return answer


def setup_from_terminal(args: argparse.Namespace, term: Terminal) -> prov.Setup:
    print("drgw init: answers in [brackets] are the defaults; Enter takes them.\n")
    broker = term.ask("Aggregator's MQTT broker (mqtts://host:8883)",
                      lambda a: prov.check_broker(_need("broker")(a), where="broker"), args.broker)
    ca = None
    client_cert = not args.no_client_cert
    if broker.startswith("mqtts://"):
        ca = term.ask("CA certificate file of the broker (empty: the system's CA store)",
                      lambda a: _ca(Path(a), "CA file") if a else None, str(args.ca or "") or None)
        client_cert = term.yes("Does the broker want client certificates (mutual TLS)?", client_cert)
    operators = term.ask("Operator addresses allowed to sign commands (comma-separated, may be empty)",
                         lambda a: _operators([a], "operators"), ",".join(args.operator) or None)
    devices = _ask_devices(term, args)
    print(f"  devices: {', '.join(devices.names)}")
    main = term.ask("Which device is the household's main meter? ('none': no main meter)",
                    lambda a: devices if a == "none" else devices.with_main(a, where="main meter"),
                    args.main or devices.names[0])
    chain = None
    if term.yes("Does this gateway report to a DR chain?", bool(args.rpc)):
        chain = prov.ChainAnswers(
            rpc=term.ask("Chain JSON-RPC URL", lambda a: prov.check_rpc(a, where="rpc"), args.rpc),
            market=term.ask("DRMarket contract address",
                            lambda a: prov.check_address(a, where="market"), args.market),
            household=term.ask("Household wallet address",
                               lambda a: prov.check_address(a, where="household"), args.household),
            poa=term.yes("Is it a QBFT/Clique consortium chain?", args.poa))
    key = (args.key or args.state_dir / "gateway.key")
    if key.exists() and not args.keep_key and not args.force:
        args.keep_key = term.yes(f"{key} exists. Keep it (the gateway keeps its id)?", True)
        args.force = not args.keep_key
    if args.config.exists() and not args.force:
        if not term.yes(f"{args.config} exists. Replace it (the old one is kept as .bak)?", False):
            raise ConfigError(f"{args.config} exists and was kept; nothing was written")
        args.force = True
    return _setup(args, broker=broker, devices=main, chain=chain, ca=ca, operators=operators,
                  client_cert=client_cert)


def next_steps(setup: prov.Setup, outcome: prov.Outcome) -> list[str]:
    steps = []
    if setup.mutual_tls:
        steps.append(f"send {setup.csr} to your aggregator (ESC) to have it signed by the broker's "
                     f"client CA; install the certificate they return as {setup.cert} (mode 0644)")
    if not setup.operators:
        steps.append("no operator is allowed: fleet commands are refused until [operators] allow "
                      "lists one")
    steps += [f"drgw doctor {setup.config}", "drgw install-service  (installs and starts the service)"]
    return steps


def report(setup: prov.Setup, outcome: prov.Outcome, notes: list[str], as_json: bool) -> None:
    steps = next_steps(setup, outcome)
    if as_json:
        print(json.dumps({
            "gateway_id": outcome.gateway_id, "config": str(setup.config),
            "written": [{"file": str(p), "what": w} for p, w in outcome.written],
            "kept": [{"file": str(p), "what": w} for p, w in outcome.kept],
            "moved": [{"from": str(a), "to": str(b)} for a, b in outcome.moved],
            "csr": str(setup.csr) if setup.mutual_tls else None,
            "devices": setup.devices.names, "notes": notes, "next": steps}))
        return
    print(f"\ngateway id {outcome.gateway_id}")
    for path, what in outcome.written:
        print(f"  wrote {path}  ({what})")
    for path, what in outcome.kept:
        print(f"  kept  {path}  ({what})")
    for old, new in outcome.moved:
        print(f"  kept the old {old.name} as {new}")
    print(f"  devices: {', '.join(setup.devices.names)}; broker {setup.broker}")
    for note in notes:
        print(f"  note: {note}")
    print("\nNext steps:")
    for i, step in enumerate(steps, 1):
        print(f"  {i}. {step}")


def run(args: argparse.Namespace) -> int:
    interactive = not args.non_interactive and sys.stdin.isatty()
    setup = setup_from_terminal(args, Terminal()) if interactive else setup_from_flags(args)
    if interactive:
        prov.prepare(setup)  # every check, before the question
        if not Terminal().yes(f"Write {setup.config} and the keys now?", True):
            print("nothing was written")
            return 1
    outcome = prov.apply(setup, now=datetime.now(UTC))
    report(setup, outcome, hand_over(setup), args.json)
    return 0
