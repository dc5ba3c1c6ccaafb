"""One reading proven on chain: a Report's measurement Merkle root is stored and verifyReading checks a
leaf (a signed measurement's EIP-712 struct hash) and its proof with OpenZeppelin's MerkleProof."""

from __future__ import annotations

import pytest

from gateway.measurement import merkle
from gateway.measurement.identity import GatewayKey
from gateway.measurement.record import MeasurementChain, ScaledReading, measurement_domain

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
KEY = GatewayKey.from_secret(  # TEST-ONLY key
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"))


def records(n: int, t0_ms: int):  # type: ignore[no-untyped-def]
    chain = MeasurementChain(gateway=KEY.address)
    return [chain.next_signed(KEY, measurement_domain(), device="meter", time_ms=t0_ms + 1000 * i,
                              clock_synced=True,
                              readings=[ScaledReading("power", 1_500_000 - 1000 * i, "W", 0)])
            for i in range(n)]


def eip712_struct_hash(record) -> bytes:  # type: ignore[no-untyped-def]
    """The Measurement's hashStruct by eth-account's EIP-712 encoder (independent of ours)."""
    from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_struct

    m = record.measurement
    types = {
        "Measurement": [{"name": "gateway", "type": "address"}, {"name": "device", "type": "string"},
                        {"name": "seq", "type": "uint64"}, {"name": "time", "type": "uint64"},
                        {"name": "clockSynced", "type": "bool"},
                        {"name": "readings", "type": "Reading[]"},
                        {"name": "prevHash", "type": "bytes32"}],
        "Reading": [{"name": "name", "type": "string"}, {"name": "value", "type": "int256"},
                    {"name": "unit", "type": "string"}, {"name": "quality", "type": "uint8"}],
    }
    data = {"gateway": m.gateway, "device": m.device, "seq": m.seq, "time": m.time_ms,
            "clockSynced": m.clock_synced, "prevHash": m.prev_hash,
            "readings": [{"name": r.name, "value": r.value, "unit": r.unit, "quality": r.quality}
                         for r in m.readings]}
    return bytes(hash_struct("Measurement", types, data))


def test_a_reading_is_proven_on_chain_and_tampering_fails(market) -> None:
    h = market.household("h")
    market.bid(h, power_w=-2000, price_mtok=30_000)
    window, start, end = market.announce()
    market.client.clear(market.op, window)
    market.commit(h, window)
    signed = records(7, start * 1000)  # 7 leaves: an odd node is carried up at two levels
    leaves = [s.leaf for s in signed]
    assert leaves[3] == eip712_struct_hash(signed[3])  # the leaf is the record's EIP-712 hash
    root = merkle.root(leaves)
    market.at(end)
    assert market.client.report_root(h.address, window) == bytes(32)
    assert not market.client.verify_reading(h.address, window, leaves[0], [])  # no root yet
    market.client.submit_report(market.stranger, market.report(
        h, window, delivered=340, seq_from=1, seq_to=7, merkle_root=root))
    assert market.client.report_root(h.address, window) == root
    for i in (0, 3, 6):  # first, middle, the carried-up last leaf
        assert market.client.verify_reading(h.address, window, leaves[i], merkle.proof(leaves, i))
    proof = merkle.proof(leaves, 3)
    tampered_leaf = bytes([leaves[3][0] ^ 1]) + leaves[3][1:]
    assert not market.client.verify_reading(h.address, window, tampered_leaf, proof)
    assert not market.client.verify_reading(h.address, window, leaves[3], proof[:-1])
    assert not market.client.verify_reading(h.address, window, leaves[3],
                                            [bytes(32), *proof[1:]])
    assert not market.client.verify_reading(h.address, window, leaves[4], proof)  # wrong proof
    assert not market.client.verify_reading(h.address, window + 1, leaves[3], proof)
