"""Measurement: the signed EIP-712 record of each poll sample, its wire form, Merkle roots, the store.

What is public, by module (import from the module: this face re-exports nothing, because importing
any one of them, say `merkle` alone, would then load them all, coincurve included; the pure modules
load no SQLite, no eth-account and no clock):

    record    the signed measurement: ScaledReading, Measurement, SignedMeasurement, MeasurementChain
              (the hash chain; `next_signed` is the hot path), measurement_domain, DEFAULT_CHAIN_ID,
              scale_value / scale_reading / scale_readings, struct_hash, sign, signing_digest,
              recover_signer
    wire      the wire form: to_wire, from_wire, encode_batch, decode_batch, batch_from_wire,
              MeasurementFormatError, WIRE_VERSION and the MAX_* bounds of a payload
    merkle    root, proof and verify over measurement leaves (as OpenZeppelin's MerkleProof checks)
    eip712    the EIP-712 encoder and keccak256 the record is built on: Domain, typed_digest
    identity  the gateway's key and address: GatewayKey, recover_address

At the edge (I/O):
    keyfile   key files on disk (plain hex or an eth-account keystore): load_key, read_key, write_key
    store     the SQLite store (measurements, the MQTT outbox, Merkle intervals): `Store` and the
              rest of its own face, gateway.measurement.store
"""
