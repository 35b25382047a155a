"""v1 proofs built without the chunk's bytes (issue 20, item 1): what ``Merkle.verify`` must refuse.

The splice (tests/support/forgery.py): an inner node whose children's bytes end in the challenged
index's digits passes, as a leaf of that index, a verifier that only follows the rows up to the
root. For index 0 that is one inner pair in 256, so most trees of 256 challenges (255 inner nodes)
have one. ``verify`` must bind the proof to the position the challenge names: exactly the tree's
depth of rows, the running hash on the side each bit of the index names, a leaf of the index and
size the challenge's leaf has, the state's own challenge."""

from __future__ import annotations

import hashlib
from itertools import combinations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from downstream_tx.heartbeat import (
    Challenge,
    Merkle,
    MerkleBranch,
    MerkleLeaf,
    MerkleTree,
    Proof,
    RandomIO,
    State,
    Tag,
)
from support.forgery import rows_only_verify, splices

TS = 1420070400.5
KEY = b"k" * 32


SEED = b"s" * 32


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def tree_of(blobs: list[bytes]) -> MerkleTree:
    return MerkleTree.build([MerkleLeaf(j, blob) for j, blob in enumerate(blobs)])


def issued(tree: MerkleTree, n: int, index: int, seed: bytes = SEED) -> tuple[Merkle, State, Challenge]:
    """The heartbeat, its signed state over ``tree``'s root for ``n`` challenges, and challenge
    ``index``, the one the state issued last (as ``gen_challenge`` leaves them)."""
    merkle = Merkle(None, KEY)
    state = State(index=index + 1, seed=seed, n=n, root=tree.root, timestamp=TS)
    merkle.sign_state(state)
    return merkle, state, Challenge(seed, index)


def honest(tree: MerkleTree, blobs: list[bytes], index: int) -> Proof:
    return Proof(MerkleLeaf(index, blobs[index]), tree.get_branch(index))


# --------------------------------------------------------------------------- the attack as reported


def _contract(number: int, n: int = 256) -> tuple[Merkle, Tag, State, Challenge]:
    """A seeded chunk as the node makes one (4 KiB, check fraction 0.01), its first challenge issued."""
    merkle = Merkle(0.01, KEY)
    tag, state = merkle.encode(RandomIO(f"chunk-{number}", 4096), n=n, seed=_sha256(b"root %d" % number),
                               timestamp=TS)
    return merkle, tag, state, merkle.gen_challenge(state)


def test_the_splice_forges_proofs_at_index_0_from_the_tag_alone_and_none_verifies() -> None:
    forgeable = 0
    for number in range(20):
        merkle, tag, state, challenge = _contract(number)
        assert challenge.index == 0
        forged = splices(tag.tree, challenge.index)
        forgeable += bool(forged)
        for proof in forged:
            # a real forgery: shorter than the tree, yet every row holds the running hash up to the root
            assert len(proof.branch.rows) < tag.tree.order
            assert rows_only_verify(proof, challenge, state)
            assert merkle.verify(proof, challenge, state) is False
    # (for these twenty fixed chunks: the construction is not vacuous)
    assert forgeable == 8


# --------------------------------------------------------------------------- property: only the honest proof


@st.composite
def attacked(draw: st.DrawFn) -> tuple[Merkle, MerkleTree, list[bytes], Challenge, State]:
    """A tree of ``n`` leaves (32-byte blobs), its signed state with challenge ``index`` outstanding.
    For a one-digit index some inner pair is made to end in that digit (a forgeable tree)."""
    n = draw(st.integers(1, 40))
    index = draw(st.integers(0, n - 1))
    blobs = [draw(st.binary(min_size=32, max_size=32)) for _ in range(n)]
    if n > 1 and index < 10:
        # the pair of slots (2m, 2m + 1): change the blob of its last used slot until the pair's bytes
        # end in the digit (the right slot's hash, or the left's when the right one is empty)
        m = draw(st.integers(0, (n - 1) // 2))
        last = min(2 * m + 1, n - 1)
        digit = str(index).encode("ascii")
        salt = 0
        while not _sha256(blobs[last] + str(last).encode("ascii")).endswith(digit):
            salt += 1
            blobs[last] = _sha256(blobs[last] + bytes([salt % 256]))
    tree = tree_of(blobs)
    merkle, state, challenge = issued(tree, n, index, draw(st.binary(min_size=32, max_size=32)))
    return merkle, tree, blobs, challenge, state


def without_the_bytes(tree: MerkleTree, blobs: list[bytes], index: int, extra: list[bytes]) -> list[Proof]:
    """What an attacker holding the tag, the state's root and n, the challenge and every OTHER leaf's
    blob (from answers it gave earlier) can send: splices of inner nodes as leaves, nodes and other
    leaves' blobs as the blob, other leaves' branches and indices, and some bytes of its own."""
    nodes = [v for v in tree.nodes if v]
    branch = tree.get_branch(index)
    proofs = list(splices(tree, index))
    for node in range((1 << tree.order) - 1):  # every inner node spliced, whatever its bytes end in
        pair = tree.nodes[2 * node + 1] + tree.nodes[2 * node + 2]
        for blob in (pair, pair[:-1], pair[:32], pair[32:]):
            proofs += [Proof(MerkleLeaf(index, blob), tree.path_from(node)), Proof(MerkleLeaf(index, blob), branch)]
    for blob in [*nodes, *extra, *(b for j, b in enumerate(blobs) if j != index)]:
        proofs.append(Proof(MerkleLeaf(index, blob), branch))
    for j in range(len(blobs)):
        if j != index:
            # another leaf's proof: as sent for that index, and relabelled as the challenged one
            proofs.append(Proof(MerkleLeaf(j, blobs[j]), tree.get_branch(j)))
            proofs.append(Proof(MerkleLeaf(index, blobs[j]), tree.get_branch(j)))
    return proofs


def reshaped(proof: Proof, tree: MerkleTree, extra: bytes) -> list[Proof]:
    """The honest ``proof`` with its structure changed: rows dropped, added, reordered or swapped,
    the leaf at another index with the same low bits, the blob cut or grown."""
    rows, leaf = proof.branch.rows, proof.leaf
    out = []
    for k in range(1, len(rows) + 1):
        out += [rows[k:], rows[:-k]]
    out += [[*rows, (tree.root, extra)], [*rows, (extra, tree.root)], [(leaf.get_hash(), extra), *rows],
            [(extra, leaf.get_hash()), *rows]]
    for a, b in combinations(range(len(rows)), 2):
        if rows[a] != rows[b]:
            moved = list(rows)
            moved[a], moved[b] = moved[b], moved[a]
            out.append(moved)
    for k, (left, right) in enumerate(rows):
        out.append([*rows[:k], (right, left), *rows[k + 1:]])
    proofs = [Proof(leaf, MerkleBranch(r)) for r in out]
    proofs.append(Proof(MerkleLeaf(leaf.index + (1 << tree.order), leaf.blob), proof.branch))
    proofs += [Proof(MerkleLeaf(leaf.index, blob), proof.branch)
               for blob in (leaf.blob[:-1], leaf.blob + b"\0", leaf.blob + str(leaf.index).encode())]
    return proofs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attacked(), st.lists(st.binary(max_size=64), max_size=4))
def test_no_proof_built_without_the_chunk_bytes_verifies(case, extra: list[bytes]) -> None:
    merkle, tree, blobs, challenge, state = case
    index = challenge.index
    good = honest(tree, blobs, index)
    assert merkle.verify(good, challenge, state) is True
    # (a guess may hit the blob, or another leaf's blob may equal it: then it is the honest proof)
    for proof in without_the_bytes(tree, blobs, index, extra):
        assert merkle.verify(proof, challenge, state) is (proof == good), proof
    for proof in reshaped(good, tree, extra[0] if extra else b"x" * 32):
        assert merkle.verify(proof, challenge, state) is (proof == good), proof


# --------------------------------------------------------------------------- each check on its own


def _blobs(n: int) -> list[bytes]:
    return [_sha256(b"blob %d" % j) for j in range(n)]


def test_a_proof_answers_only_the_challenge_its_state_issued_last() -> None:
    """The challenge is bound to the state: its index is the state's last issued one and its seed
    the state's. An honest proof of another index, with that index's challenge, is refused."""
    blobs = _blobs(5)
    tree = tree_of(blobs)
    merkle, state, challenge = issued(tree, 5, 2)
    assert merkle.verify(honest(tree, blobs, 2), challenge, state) is True
    for j in (0, 1, 3, 4):
        assert merkle.verify(honest(tree, blobs, j), Challenge(SEED, j), state) is False
    assert merkle.verify(honest(tree, blobs, 2), Challenge(b"t" * 32, 2), state) is False


def test_the_index_must_be_below_n() -> None:
    """A state the key signed with its index past ``n`` (never issued by gen_challenge) verifies
    nothing at or past ``n``, even for a tree whose leaf slot there was filled."""
    blobs = _blobs(4)
    tree = tree_of(blobs)
    for n, index, verdict in ((4, 3, True), (3, 3, False), (3, 2, True)):
        merkle, state, challenge = issued(tree, n, index)
        assert merkle.verify(honest(tree, blobs, index), challenge, state) is verdict


def test_the_leaf_is_the_challenged_index() -> None:
    blobs = _blobs(5)
    tree = tree_of(blobs)
    merkle, state, challenge = issued(tree, 5, 2)
    proof = honest(tree, blobs, 2)
    proof.leaf.index = 3
    assert merkle.verify(proof, challenge, state) is False


def test_the_leaf_blob_is_32_bytes() -> None:
    """A leaf's blob is an HMAC-SHA256: a shorter or longer one is refused (with a tree built on
    such a blob, only the size check refuses it)."""
    for size in (0, 31, 33, 64):
        blobs = _blobs(4)
        blobs[1] = bytes(size)
        tree = tree_of(blobs)
        merkle, state, challenge = issued(tree, 4, 1)
        assert merkle.verify(honest(tree, blobs, 1), challenge, state) is False


def test_the_branch_has_exactly_the_depth_of_the_tree_of_n_leaves() -> None:
    """The depth comes from the signed state's ``n``: ceil(log2 n) rows, 0 for one leaf."""
    for n, depth in ((1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4), (256, 8), (257, 9)):
        blobs = _blobs(n)
        tree = tree_of(blobs)
        merkle, state, challenge = issued(tree, n, n - 1)
        proof = honest(tree, blobs, n - 1)
        assert len(proof.branch.rows) == depth == tree.order
        assert merkle.verify(proof, challenge, state) is True
        longer = Proof(proof.leaf, MerkleBranch([*proof.branch.rows, (tree.root, b"")]))
        assert merkle.verify(longer, challenge, state) is False


def test_a_root_made_of_the_leaf_itself_is_refused_past_depth_0() -> None:
    """A tree whose root's children end in the index's digits: the leaf ``(L ‖ R)[:-1]`` hashes to
    the root itself, so with no rows at all it 'reaches' the root. Only a tree of one leaf has no rows."""
    salt = 0
    while True:
        blobs = [_sha256(b"a"), _sha256(b"b %d" % salt)]
        tree = tree_of(blobs)
        if (tree.nodes[1] + tree.nodes[2]).endswith(b"0"):
            break
        salt += 1
    merkle, state, challenge = issued(tree, 2, 0)
    forged = Proof(MerkleLeaf(0, (tree.nodes[1] + tree.nodes[2])[:-1]), MerkleBranch([]))
    assert rows_only_verify(forged, challenge, state)
    assert merkle.verify(forged, challenge, state) is False
    assert merkle.verify(honest(tree, blobs, 0), challenge, state) is True


def test_the_running_hash_is_on_the_side_each_index_bit_names() -> None:
    """A row holding the running hash on the side the index's bit does not name is refused, though it
    hashes on to the root. (In a tree the node builds a leaf's hash names its index, which binds the
    slot at the leaf level anyway; in this one the leaf of index 0 sits in slot 1.)"""
    blob = _sha256(b"blob")
    tree = MerkleTree.build([MerkleLeaf(5, _sha256(b"other")), MerkleLeaf(0, blob)])
    merkle, state, challenge = issued(tree, 2, 0)
    proof = Proof(MerkleLeaf(0, blob), tree.get_branch(1))  # the row (slot 0, slot 1): the hash on the right
    assert rows_only_verify(proof, challenge, state)
    assert merkle.verify(proof, challenge, state) is False
    # and at every level of a deeper tree: the honest branch with one row's sides swapped
    blobs = _blobs(8)
    tree = tree_of(blobs)
    merkle, state, challenge = issued(tree, 8, 5)
    proof = honest(tree, blobs, 5)
    assert merkle.verify(proof, challenge, state) is True
    for k in range(3):
        rows = list(proof.branch.rows)
        rows[k] = rows[k][::-1]
        assert merkle.verify(Proof(proof.leaf, MerkleBranch(rows)), challenge, state) is False
