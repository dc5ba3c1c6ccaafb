"""Gateway identity: key files, permissions, keystores, low-s signatures, address derivation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement.identity import SECP256K1_N, GatewayKey, recover_address
from gateway.measurement.keyfile import KeyFileError, load_key, write_key

TEST_SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def test_address_matches_eth_account_and_repr_hides_secret() -> None:
    key = GatewayKey.from_secret(TEST_SECRET)
    assert key.address == Account.from_key(TEST_SECRET).address
    assert TEST_SECRET.hex() not in repr(key) and TEST_SECRET.hex() not in str(key)
    assert "_private" not in repr(key)


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_signatures_are_low_s_and_recover(digest: bytes) -> None:
    key = GatewayKey.from_secret(TEST_SECRET)
    sig = key.sign_digest(digest)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert int.from_bytes(sig[32:64], "big") <= SECP256K1_N // 2
    assert recover_address(digest, sig) == key.address
    assert Account.unsafe_sign_hash(digest, TEST_SECRET).signature == sig


def test_high_s_and_bad_v_are_rejected() -> None:
    key = GatewayKey.from_secret(TEST_SECRET)
    digest = bytes(range(32))
    sig = key.sign_digest(digest)
    s = int.from_bytes(sig[32:64], "big")
    high = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - sig[64],))
    with pytest.raises(ValueError, match="high s"):
        recover_address(digest, high)
    with pytest.raises(ValueError, match="v must be"):
        recover_address(digest, sig[:64] + b"\x01")


def test_plain_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gw.key"
    key = GatewayKey.generate()
    write_key(path, key)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert load_key(path).address == key.address
    with pytest.raises(KeyFileError, match="never overwritten"):
        write_key(path, GatewayKey.generate())


def test_group_readable_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "gw.key"
    write_key(path, GatewayKey.generate())
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        load_key(path)


def test_missing_and_garbage_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="drgw keys new"):
        load_key(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="64 hex digits"):
        load_key(bad)
    zero = tmp_path / "zero.key"
    zero.write_text("00" * 32)
    zero.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_key(zero)


def test_keystore_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "gw.json"
    key = GatewayKey.from_secret(TEST_SECRET)
    write_key(path, key, password="correct horse")
    assert json.loads(path.read_text())["crypto"]["kdf"] == "scrypt"
    assert load_key(path, "correct horse").address == key.address
    with pytest.raises(KeyFileError, match="password"):
        load_key(path)
    with pytest.raises(KeyFileError, match="wrong password"):
        load_key(path, "wrong")
