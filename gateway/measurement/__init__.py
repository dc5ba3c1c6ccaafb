"""Measurement: signed EIP-712 records, wire format, Merkle roots, the gateway identity, the store."""
