"""Measurement record: golden bytes, eth-account cross-check, scaling, chaining, signing."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from gateway.measurement.eip712 import ZERO32
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import (
    Measurement,
    MeasurementChain,
    ScaledReading,
    measurement_domain,
    recover_signer,
    scale_reading,
    scale_value,
    sign,
    signing_digest,
    struct_hash,
)
from gateway.perception.readings import Quality, Reading

# TEST-ONLY KEY: a widely published example private key. Never use it for a real gateway.
TEST_SECRET = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
TEST_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


@pytest.fixture
def key() -> GatewayKey:
    return GatewayKey.from_secret(TEST_SECRET)


def golden_record(gateway: str) -> Measurement:
    return Measurement(
        gateway=gateway, device="meter-1", seq=42, time_ms=1_700_000_000_123, clock_synced=True,
        readings=(ScaledReading("power", 1234568, "W", 0), ScaledReading("energy", -3000, "kWh", 1),
                  ScaledReading("voltage", 0, "V", 2)),
        prev_hash=bytes.fromhex("11" * 32))


def test_golden_digest_and_signature(key: GatewayKey) -> None:
    """Pins the exact bytes that get signed: any change here breaks every verifier in the field."""
    assert key.address == TEST_ADDRESS
    domain = measurement_domain()
    m = golden_record(key.address)
    assert domain.separator.hex() == (
        "12ef0fb6e90d0139b3b6ea511ffce4e7e653a629d492b77df8b179e9c521792f")
    assert struct_hash(m).hex() == (
        "45ae22e5ca964772d256073e1b656820497585f63704be78ba0fba06e9f2d77a")
    assert signing_digest(m, domain).hex() == (
        "1261b086539bb37887588d2a10e6afea9dd4113845f3bd89a54734bfa539b9e6")
    assert sign(m, key, domain).signature.hex() == (
        "ac33553c9c3e0efec7155ad3ee83f46555090c7bae3222a4e619785e719707da"
        "4be26e327dee603df8bb06bb701abc039fea43348fd654ab96e3f2a20f57098a1c")


def typed_data(m: Measurement, chain_id: int) -> dict[str, object]:
    """The same record in eth-account's generic typed-data form (slow path, test only)."""
    return {
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"},
                             {"name": "version", "type": "string"},
                             {"name": "chainId", "type": "uint256"}],
            "Measurement": [{"name": "gateway", "type": "address"},
                            {"name": "device", "type": "string"},
                            {"name": "seq", "type": "uint64"}, {"name": "time", "type": "uint64"},
                            {"name": "clockSynced", "type": "bool"},
                            {"name": "readings", "type": "Reading[]"},
                            {"name": "prevHash", "type": "bytes32"}],
            "Reading": [{"name": "name", "type": "string"}, {"name": "value", "type": "int256"},
                        {"name": "unit", "type": "string"}, {"name": "quality", "type": "uint8"}],
        },
        "primaryType": "Measurement",
        "domain": {"name": "drgw", "version": "1", "chainId": chain_id},
        "message": {"gateway": m.gateway, "device": m.device, "seq": m.seq, "time": m.time_ms,
                    "clockSynced": m.clock_synced, "prevHash": m.prev_hash,
                    "readings": [{"name": r.name, "value": r.value, "unit": r.unit,
                                  "quality": r.quality} for r in m.readings]},
    }


@pytest.mark.parametrize("chain_id", [1, 1337])
@pytest.mark.parametrize("readings", [
    (), (ScaledReading("p", -(1 << 255), "", 2),),
    (ScaledReading("päwer ⚡", (1 << 255) - 1, "kWh", 1), ScaledReading("q", 7, "var", 0))])
def test_matches_eth_account(key: GatewayKey, chain_id: int,
                             readings: tuple[ScaledReading, ...]) -> None:
    domain = measurement_domain(chain_id)
    m = Measurement(gateway=key.address, device="dev", seq=(1 << 64) - 1, time_ms=0,
                    clock_synced=False, readings=readings, prev_hash=bytes(range(32)))
    signable = encode_typed_data(full_message=typed_data(m, chain_id))
    assert signable.header == domain.separator
    assert signable.body == struct_hash(m)
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert digest == signing_digest(m, domain)
    sm = sign(m, key, domain)
    assert Account.unsafe_sign_hash(digest, TEST_SECRET).signature == sm.signature
    assert Account.recover_message(signable, signature=sm.signature) == key.address


@pytest.mark.parametrize(("value", "scaled"), [
    (0.0025, 2), (0.0035, 4), (-0.0025, -2), (1234.5678, 1234568), (2, 2000), (True, 1000),
    (0.1, 100), (1e-9, 0), (-1.5, -1500)])
def test_scale_half_even_from_shortest_decimal(value: float, scaled: int) -> None:
    assert scale_value(value) == scaled


def test_unrepresentable_values_become_error_quality() -> None:
    for value in (float("nan"), float("inf"), 1e300, None):
        r = scale_reading(Reading("p", value, "W", Quality.OK, 0.0))
        assert (r.value, r.quality) == (0, 2)
    assert scale_reading(Reading("p", 1.0, "W", Quality.STALE, 0.0)).quality == 1
    with pytest.raises(ValueError, match="text"):
        scale_reading(Reading("serial", "ABC", "", Quality.OK, 0.0))


def test_chain_links_and_recovers(key: GatewayKey) -> None:
    domain = measurement_domain()
    chain = MeasurementChain(gateway=key.address)
    readings = [Reading("p", 1.5, "W", Quality.OK, 0.0), Reading("sn", "X1", "", Quality.OK, 0.0)]
    first = chain.next_signed(key, domain, device="m", time_ms=5, clock_synced=True,
                              readings=readings)
    second = chain.next_signed(key, domain, device="m", time_ms=6, clock_synced=True,
                               readings=readings)
    assert (first.measurement.seq, second.measurement.seq) == (1, 2)
    assert first.measurement.prev_hash == ZERO32
    assert second.measurement.prev_hash == first.leaf == struct_hash(first.measurement)
    assert [r.name for r in first.measurement.readings] == ["p"]  # text reading left out
    assert chain.last_seq == 2 and chain.last_hash == second.leaf
    assert recover_signer(second, domain) == key.address
    # another domain (chain id) recovers someone else
    assert recover_signer(second, measurement_domain(5)) != key.address


def test_chain_does_not_advance_on_invalid_record(key: GatewayKey) -> None:
    chain = MeasurementChain(gateway=key.address)
    with pytest.raises(ValueError):
        chain.next("m", -1, True, [])
    assert chain.last_seq == 0
    assert chain.next("m", 1, True, []).seq == 1


def test_chain_resumes_from_store_state(key: GatewayKey) -> None:
    chain = MeasurementChain(gateway=key.address, last_seq=41, last_hash=b"\x11" * 32)
    m = chain.next("meter-1", 1_700_000_000_123, True, golden_record(key.address).readings)
    assert m == golden_record(key.address)
    with pytest.raises(ValueError):
        MeasurementChain(gateway=key.address, last_seq=3, last_hash=ZERO32)


def test_sign_refuses_foreign_record(key: GatewayKey) -> None:
    other = GatewayKey.generate()
    with pytest.raises(ValueError, match="names gateway"):
        sign(golden_record(other.address), key, measurement_domain())
