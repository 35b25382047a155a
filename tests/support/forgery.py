"""The v1 proof forgery of issue 20 (item 1), for the tests that show the node refuses it.

The farmer's tag holds every node of the tree. Leaves are ``SHA256(blob ‖ ascii(index))`` and inner
nodes ``SHA256(L ‖ R)``, so wherever some inner pair ``L ‖ R`` happens to end in the challenged
index's digits, ``blob = (L ‖ R)[:-len(digits)]`` hashes, as a leaf of that index, to that inner
node: with the rows from that node up, a verifier that only asks "does each row hold the running
hash, and is the last hash the root?" accepts it without the chunk's bytes."""

from __future__ import annotations

import hashlib

from downstream_tx.heartbeat import Challenge, MerkleLeaf, MerkleTree, Proof, State


def splices(tree: MerkleTree, index: int) -> list[Proof]:
    """The forgeries the tag allows for ``index``: for every inner node whose children's bytes end in
    the index's digits, the leaf ``(index, (L ‖ R)[:-digits])`` with the rows from that node up."""
    digits = str(index).encode("ascii")
    out = []
    for node in range((1 << tree.order) - 1):  # the inner nodes (the root is node 0)
        pair = tree.nodes[2 * node + 1] + tree.nodes[2 * node + 2]
        if pair.endswith(digits):
            out.append(Proof(MerkleLeaf(index, pair[: -len(digits)]), tree.path_from(node)))
    return out


def rows_only_verify(proof: Proof, challenge: Challenge, state: State) -> bool:
    """The check ``Merkle.verify`` made before issue 20 (without its state signature check): each row
    holds the running hash and the last hash is the root. Shows that a forgery is a real one."""
    if proof.leaf.index != challenge.index:
        return False
    h = proof.leaf.get_hash()
    for left, right in proof.branch.rows:
        if h not in (left, right):
            return False
        h = hashlib.sha256(left + right).digest()
    return h == state.root
