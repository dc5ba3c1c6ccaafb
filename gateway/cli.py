"""`drgw`: the command-line entry point. Parses arguments and hands over to a command module."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import DrgwError

# Command modules, in the order `drgw --help` lists them. Each has register(subparsers), which adds
# its parsers with `func` set to a callable taking the parsed namespace and returning an exit code.
COMMAND_MODULES = (
    "gateway.commands.init",
    "gateway.commands.provision",
    "gateway.commands.profiles",
    "gateway.commands.read",
    "gateway.commands.scan",
    "gateway.commands.simulate",
    "gateway.commands.run",
    "gateway.commands.doctor",
    "gateway.commands.service",
    "gateway.commands.keys",
    "gateway.commands.verify",
    "gateway.commands.prove",
    "gateway.commands.store",
    "gateway.commands.fleet",
    "gateway.commands.master",
    "gateway.commands.demo",
    "gateway.commands.market",
    "gateway.commands.event",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drgw", description="drgw: demand-response edge gateway and metering agent"
    )
    parser.add_argument("--version", action="version", version=f"drgw {__version__}")
    parser.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a module that exists but fails to import is a bug: say so
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s"
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args))
    except DrgwError as exc:
        print(f"drgw: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
