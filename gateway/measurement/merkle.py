"""Merkle roots and proofs over measurement leaves, verifiable with OpenZeppelin's MerkleProof.

Leaves are measurement struct hashes (32 bytes each), in seq order. Internal nodes are
keccak256(min(a, b) || max(a, b)): the sorted-pair ("commutative") hashing of OpenZeppelin 5's
`Hashes.commutativeKeccak256`, which `MerkleProof.verify(proof, root, leaf)` applies from the leaf up.
Because pairs are sorted, a proof is just the list of sibling hashes, no left/right flags.

Tree shape: leaves are paired left to right level by level; an odd last node is carried up
unchanged (no duplication, so no phantom leaf) and contributes no proof element at that level.
One leaf: the root is the leaf, the proof is empty.

Second preimages: OpenZeppelin warns against 64-byte leaves; ours are EIP-712 struct hashes, so an
internal node can only pass as a leaf by exhibiting a keccak preimage that is a Measurement encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.measurement.eip712 import keccak256


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin Hashes.commutativeKeccak256: keccak256 of the pair in ascending order."""
    return keccak256(a + b if a < b else b + a)


def _check(leaves: Sequence[bytes]) -> None:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if any(len(leaf) != 32 for leaf in leaves):
        raise ValueError("Merkle leaves are 32-byte hashes")


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    up = [hash_pair(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def root(leaves: Sequence[bytes]) -> bytes:
    _check(leaves)
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf `index` up to the root (OpenZeppelin MerkleProof order)."""
    _check(leaves)
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} is outside 0..{len(leaves) - 1}")
    out: list[bytes] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            out.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return out


def verify(proof_: Sequence[bytes], root_: bytes, leaf: bytes) -> bool:
    """MerkleProof.verify: fold the proof into the leaf with sorted-pair hashing, compare roots."""
    computed = leaf
    for sibling in proof_:
        computed = hash_pair(computed, sibling)
    return computed == root_
