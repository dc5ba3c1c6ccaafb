"""Merkle tree with OpenZeppelin's sorted-pair hashing: roots, proofs, verification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.measurement import merkle
from gateway.measurement.eip712 import keccak256


def leaves(n: int) -> list[bytes]:
    return [keccak256(i.to_bytes(4, "big")) for i in range(n)]


def test_small_trees_by_hand() -> None:
    a, b, c = leaves(3)
    ab = keccak256(min(a, b) + max(a, b))
    assert merkle.root([a]) == a and merkle.proof([a], 0) == []
    assert merkle.root([a, b]) == ab == merkle.root([b, a])
    # odd node carried up unchanged, then paired with the pair's hash
    assert merkle.root([a, b, c]) == keccak256(min(ab, c) + max(ab, c))
    assert merkle.proof([a, b, c], 2) == [ab]
    assert merkle.proof([a, b, c], 0) == [b, c]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_proof_verifies(n: int, data: st.DataObject) -> None:
    xs = leaves(n)
    r = merkle.root(xs)
    i = data.draw(st.integers(0, n - 1))
    p = merkle.proof(xs, i)
    assert merkle.verify(p, r, xs[i])
    assert len(p) <= max(1, (n - 1).bit_length())
    assert not merkle.verify(p, r, keccak256(b"not a leaf"))
    if p:
        bad = list(p)
        bad[0] = keccak256(bad[0])
        assert not merkle.verify(bad, r, xs[i])


def test_root_changes_with_any_leaf_and_order_of_leaves() -> None:
    xs = leaves(9)
    r = merkle.root(xs)
    for i in range(9):
        changed = list(xs)
        changed[i] = keccak256(b"x")
        assert merkle.root(changed) != r
    assert merkle.root(xs[::-1]) != r


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        merkle.root([])
    with pytest.raises(ValueError):
        merkle.root([b"short"])
    with pytest.raises(IndexError):
        merkle.proof(leaves(3), 3)
