"""`drgw keys new|show`: create and inspect the gateway's secp256k1 identity key."""

from __future__ import annotations

import argparse
import json

from gateway.errors import ConfigError
from gateway.measurement.identity import GatewayKey
from gateway.measurement.keyfile import load_key, read_password_file, write_key

DEFAULT_KEY = "gateway.key"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("keys", help="create and show the gateway's signing key")
    ksub = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    new = ksub.add_parser("new", help="create a new key file (mode 0600); prints the gateway id")
    new.add_argument("--out", default=None,
                     help=f"file to create (default {DEFAULT_KEY}, or gateway.keystore.json "
                          "with --keystore); never overwritten")
    new.add_argument("--keystore", action="store_true",
                     help="write an encrypted eth-account keystore (scrypt) instead of a plain key")
    new.add_argument("--password-file", help="file holding the keystore password (mode 0600)")
    new.add_argument("--json", action="store_true")
    new.set_defaults(func=run_new)
    show = ksub.add_parser("show", help="print the gateway id (Ethereum address) of a key file")
    show.add_argument("--key", default=DEFAULT_KEY, help=f"key or keystore file (default "
                                                         f"{DEFAULT_KEY})")
    show.add_argument("--password-file", help="password file, for a keystore")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_show)


def _print(key: GatewayKey, path: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"address": key.address, "public_key": "0x" + key.public_key.hex(),
                          "file": path}))
    else:
        print(f"gateway id {key.address}  ({path})")


def run_new(args: argparse.Namespace) -> int:
    if args.keystore and not args.password_file:
        raise ConfigError("keys new --keystore needs --password-file FILE: a file of mode 0600 "
                          "holding the keystore password")
    password = read_password_file(args.password_file) if args.keystore else None
    out = args.out or ("gateway.keystore.json" if args.keystore else DEFAULT_KEY)
    key = GatewayKey.generate()
    write_key(out, key, password=password)
    _print(key, out, args.json)
    return 0


def run_show(args: argparse.Namespace) -> int:
    password = read_password_file(args.password_file) if args.password_file else None
    _print(load_key(args.key, password), args.key, args.json)
    return 0
