"""Property tests for the heartbeat package (Merkle scheme, RandomIO, hash challenges)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from downstream_tx.heartbeat import (
    BytesReader,
    Challenge,
    FileReader,
    HeartbeatError,
    HeartbeatFormatError,
    Merkle,
    MerkleBranch,
    MerkleLeaf,
    MerkleTree,
    Proof,
    RandomIO,
    State,
    Tag,
    answer,
    batch_answers,
    derive_seeds,
    keyed_prf,
    merkle_root,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TS = 1420070400.5

fractions = st.one_of(st.none(), st.floats(0.0, 1.0), st.sampled_from([0.01, 0.1, 0.5, 1]))


@st.composite
def encoded(draw: st.DrawFn) -> tuple[Merkle, bytes, Tag, State]:
    size = draw(st.integers(0, 20000))
    data = RandomIO(draw(st.integers(0, 2**32)), size).read()
    merkle = Merkle(draw(fractions), draw(st.binary(min_size=1, max_size=32)))
    n = draw(st.integers(1, 20))
    chunksz = draw(st.one_of(st.none(), st.integers(0, 25000)))
    tag, state = merkle.encode(
        BytesReader(data), n=n, seed=draw(st.binary(min_size=32, max_size=32)),
        chunksz=chunksz, timestamp=TS,
    )
    return merkle, data, tag, state


def _window(challenge: Challenge, tag: Tag) -> tuple[int, int]:
    chunksz = min(tag.chunksz, tag.filesz)
    return keyed_prf(challenge.seed, tag.filesz - chunksz + 1, 0), chunksz


# --------------------------------------------------------------------------- Merkle


@FAST
@given(encoded())
def test_round_trip_all_challenges_verify(enc: tuple[Merkle, bytes, Tag, State]) -> None:
    merkle, data, tag, state = enc
    public = Merkle.from_dict(merkle.public_dict())
    wire_tag = Tag.from_dict(json.loads(json.dumps(tag.to_dict())))
    for i in range(state.n):
        challenge = merkle.gen_challenge(state)
        assert challenge.index == i
        proof = public.prove(BytesReader(data), challenge, wire_tag)
        wire_proof = Proof.from_dict(json.loads(json.dumps(proof.to_dict())))
        assert merkle.verify(wire_proof, challenge, state)
    with pytest.raises(HeartbeatError, match="Out of challenges."):
        merkle.gen_challenge(state)


@FAST
@given(encoded(), st.data())
def test_corrupted_window_fails(enc: tuple[Merkle, bytes, Tag, State], data: st.DataObject) -> None:
    merkle, raw, tag, state = enc
    challenge = merkle.gen_challenge(state)
    offset, length = _window(challenge, tag)
    assume(length > 0)
    pos = offset + data.draw(st.integers(0, length - 1))
    bad = bytearray(raw)
    bad[pos] ^= data.draw(st.integers(1, 255))
    proof = merkle.prove(BytesReader(bytes(bad)), challenge, tag)
    assert not merkle.verify(proof, challenge, state)
    # bytes outside the window do not matter (this is a spot check, not a full hash)
    assert merkle.verify(merkle.prove(BytesReader(raw), challenge, tag), challenge, state)


@FAST
@given(encoded(), st.data())
def test_wrong_index_fails(enc: tuple[Merkle, bytes, Tag, State], data: st.DataObject) -> None:
    merkle, raw, tag, state = enc
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(raw), challenge, tag)
    other = data.draw(st.integers(0, 2**20).filter(lambda v: v != challenge.index))
    moved = Proof(MerkleLeaf(other, proof.leaf.blob), proof.branch)
    assert not merkle.verify(moved, challenge, state)
    assert not merkle.verify(proof, Challenge(challenge.seed, other), state)


@FAST
@given(encoded(), st.data())
def test_wrong_branch_fails(enc: tuple[Merkle, bytes, Tag, State], data: st.DataObject) -> None:
    merkle, raw, tag, state = enc
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(raw), challenge, tag)
    # a tampered node anywhere in the branch
    cells = [(r, c) for r, row in enumerate(proof.branch.rows) for c in (0, 1) if row[c]]
    if cells:
        r, c = data.draw(st.sampled_from(cells))
        rows = [list(row) for row in proof.branch.rows]
        cell = bytearray(rows[r][c])
        cell[data.draw(st.integers(0, len(cell) - 1))] ^= 1
        rows[r][c] = bytes(cell)
        tampered = MerkleBranch([(a, b) for a, b in rows])
        assert not merkle.verify(Proof(proof.leaf, tampered), challenge, state)
    # the branch of a leaf that is not the sibling (a sibling's first row holds both)
    others = [j for j in range(1 << tag.tree.order) if j // 2 != challenge.index // 2]
    if others:
        j = data.draw(st.sampled_from(others))
        assert not merkle.verify(Proof(proof.leaf, tag.tree.get_branch(j)), challenge, state)


@FAST
@given(encoded())
def test_tampered_state_rejected(enc: tuple[Merkle, bytes, Tag, State]) -> None:
    merkle, raw, tag, state = enc
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(raw), challenge, tag)
    for change in ({"index": state.index + 1}, {"n": state.n + 1}, {"timestamp": TS + 1}):
        bad = State(**{**state.__dict__, **change})
        with pytest.raises(HeartbeatError, match="Signature invalid on state."):
            merkle.verify(proof, challenge, bad)
    with pytest.raises(HeartbeatError, match="Signature invalid on state."):
        Merkle(merkle.check_fraction, merkle.key + b"x").verify(proof, challenge, state)


@FAST
@given(encoded())
def test_dict_round_trips(enc: tuple[Merkle, bytes, Tag, State]) -> None:
    merkle, raw, tag, state = enc
    full_tree = MerkleTree(tag.tree.nodes, tag.tree.order, [MerkleLeaf(0, b"x" * 32)])
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(raw), challenge, tag)
    for cls, obj in [
        (Merkle, merkle), (Tag, tag), (State, state), (Challenge, challenge),
        (Proof, proof), (MerkleTree, full_tree), (MerkleBranch, proof.branch),
        (MerkleLeaf, proof.leaf),
    ]:
        d = json.loads(json.dumps(obj.to_dict()))
        assert cls.from_dict(d) == obj
        assert cls.from_dict(d).to_dict() == d


def test_file_reader_matches_bytes(tmp_path: Path) -> None:
    path = RandomIO("file-reader", 30000).genfile(30000, str(tmp_path / "f"))
    merkle = Merkle(0.05, b"k" * 32)
    with FileReader(path) as reader:
        assert reader.size == 30000
        tag, state = merkle.encode(reader, n=5, seed=b"s" * 32, timestamp=TS)
        tag2, _ = merkle.encode(RandomIO("file-reader", 30000), n=5, seed=b"s" * 32, timestamp=TS)
        assert tag == tag2
        challenge = merkle.gen_challenge(state)
        assert merkle.verify(merkle.prove(reader, challenge, tag), challenge, state)


# --------------------------------------------------------------------------- from_dict on junk

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**2000), 2**2000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["", "=", "====", "AAAA", "AA=A", "é", "\ud800", "A" * 2000, "QUFB" * 30]),
)
junk = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(
            st.sampled_from(["index", "blob", "seed", "n", "root", "hmac", "timestamp", "tree",
                             "nodes", "order", "leaves", "rows", "leaf", "branch", "chunksz",
                             "filesz", "key", "check_fraction", "x"]),
            inner, max_size=6,
        ),
    ),
    max_leaves=30,
)
CLASSES = [Merkle, Tag, State, Challenge, Proof, MerkleTree, MerkleBranch, MerkleLeaf]


def _valid_dicts() -> list[tuple[type, dict]]:
    merkle = Merkle(0.01, b"k" * 32)
    tag, state = merkle.encode(BytesReader(b"z" * 5000), n=5, seed=b"s" * 32, timestamp=TS)
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(b"z" * 5000), challenge, tag)
    return [
        (Merkle, merkle.to_dict()), (Tag, tag.to_dict()), (State, state.to_dict()),
        (Challenge, challenge.to_dict()), (Proof, proof.to_dict()),
    ]


VALID = _valid_dicts()


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            out += _paths(v, (*prefix, i))
    return out


def _only_format_errors(cls: type, value: Any) -> None:
    try:
        obj = cls.from_dict(value)
    except HeartbeatFormatError:
        return
    # accepted input must round-trip through its own dict
    assert cls.from_dict(obj.to_dict()) == obj


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(CLASSES), junk)
def test_from_dict_on_junk(cls: type, value: Any) -> None:
    _only_format_errors(cls, value)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(VALID), st.data(), junk)
def test_from_dict_on_mutated_valid(pair: tuple[type, dict], data: st.DataObject, value: Any) -> None:
    cls, good = pair
    path = data.draw(st.sampled_from(_paths(good)[1:]))
    bad = copy.deepcopy(good)
    target = bad
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans()) and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = value
    _only_format_errors(cls, bad)


def test_from_dict_edge_cases() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    bad_inputs: list[tuple[type, Any]] = [
        (MerkleBranch, {"rows": deep}),
        (MerkleBranch, {"rows": [["", ""]] * 65}),
        (MerkleLeaf, {"index": 2**4000, "blob": ""}),
        (MerkleLeaf, {"index": True, "blob": ""}),
        (MerkleLeaf, {"index": 0, "blob": "A"}),  # bad padding
        (MerkleLeaf, {"index": 0, "blob": "QUFB" * 22}),  # 66 bytes
        (MerkleLeaf, {"index": 0, "blob": "\udcff"}),
        (State, {**VALID[2][1], "timestamp": float("nan")}),
        (State, {**VALID[2][1], "timestamp": 10**5000}),
        (Challenge, {"seed": "AAAA", "index": 0}),  # not an AES key size
        (Merkle, {"key": "", "check_fraction": 2.5}),
        (Tag, {**VALID[1][1], "filesz": -1}),
        (MerkleTree, {"nodes": [""] * 4, "order": 30, "leaves": []}),  # order too big
        (MerkleTree, {"nodes": ["", ""], "order": 1, "leaves": []}),
        (Proof, None), (Proof, []), (Proof, "x"), (Tag, {"tree": deep}),
    ]
    for cls, value in bad_inputs:
        with pytest.raises(HeartbeatFormatError):
            cls.from_dict(value)
    # Python's non-strict decoder ignores characters outside the alphabet
    assert MerkleLeaf.from_dict({"index": 1, "blob": "QU!FB"}).blob == b"AAA"


# --------------------------------------------------------------------------- RandomIO


@FAST
@given(st.one_of(st.text(max_size=20), st.binary(max_size=20), st.integers()),
       st.integers(0, 5000), st.integers(0, 5000))
def test_randomio_random_access(seed: Any, offset: int, length: int) -> None:
    full = RandomIO(seed).read_at(0, 10000)
    assert RandomIO(seed).read_at(offset, length) == full[offset : offset + length]
    sized = RandomIO(seed, 6000)
    assert sized.read_at(offset, length) == full[offset : min(offset + length, 6000)]
    sized.seek(offset)
    chunks = [sized.read(7), sized.read(length), sized.read()]
    assert b"".join(chunks) == full[offset:6000]
    assert sized.tell() == max(offset, 6000)


# --------------------------------------------------------------------------- hash challenges


def _ref_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    pairs = [leaves[i : i + 2] for i in range(0, len(leaves), 2)]
    return _ref_root([hashlib.sha256(p[0] + p[1]).digest() if len(p) == 2 else p[0]
                      for p in pairs])


@FAST
@given(st.binary(max_size=5000), st.lists(st.binary(min_size=32, max_size=32), max_size=8),
       st.integers(1, 700))
def test_batch_answers_equals_single(data: bytes, seeds: list[bytes], bufsize: int) -> None:
    expected = [hmac.new(s, data, hashlib.sha256).hexdigest() for s in seeds]
    assert [answer(s, data) for s in seeds] == expected
    assert batch_answers(seeds, data, bufsize) == expected
    assert batch_answers(seeds, io.BytesIO(data), bufsize) == expected
    assert batch_answers(seeds, BytesReader(data), bufsize) == expected


def test_batch_answers_from_path(tmp_path: Path) -> None:
    path = RandomIO("chal").genfile(3 * 1024 * 1024 + 5, str(tmp_path / "c"))
    seeds = derive_seeds(b"secret", b"root", 10)
    data = Path(path).read_bytes()
    assert batch_answers(seeds, path) == [answer(s, data) for s in seeds]
    assert batch_answers(seeds, Path(path), bufsize=1 << 16) == [answer(s, data) for s in seeds]
    with FileReader(path) as reader:
        assert batch_answers(seeds, reader) == [answer(s, data) for s in seeds]


@FAST
@given(st.integers(1, 33), st.binary(max_size=8))
def test_merkle_root_matches_reference(count: int, root_seed: bytes) -> None:
    seeds = derive_seeds(b"k", root_seed, count)
    answers = [answer(s, b"chunk") for s in seeds]
    leaves = [hashlib.sha256(s + bytes.fromhex(a)).digest() for s, a in zip(seeds, answers)]
    assert merkle_root(seeds, answers) == _ref_root(leaves)
    if count == 1:
        assert merkle_root(seeds, answers) == leaves[0]


def test_merkle_root_errors() -> None:
    with pytest.raises(ValueError):
        merkle_root([], [])
    with pytest.raises(ValueError):
        merkle_root([b"a"], [])


@FAST
@given(st.binary(max_size=40), st.binary(max_size=40), st.integers(0, 200))
def test_derive_seeds(secret: bytes, root_seed: bytes, count: int) -> None:
    seeds = derive_seeds(secret, root_seed, count)
    assert seeds == derive_seeds(secret, root_seed, count)
    assert len(seeds) == count == len(set(seeds))
    assert all(len(s) == 32 for s in seeds)
    assert seeds[:3] == derive_seeds(secret, root_seed, min(3, count))
    if count:
        assert seeds[0] == hmac.new(secret, root_seed + bytes(4), hashlib.sha256).digest()
        assert seeds != derive_seeds(secret + b"x", root_seed, count)


def _either(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except HeartbeatFormatError:
        return HeartbeatFormatError


B64ISH = st.one_of(st.sampled_from(["", "=", "YQ==", "YWJj", "Y", "YQ", "é", "YQ==é", "A" * 88, "A" * 600,
                                    "QUFB\n", " YQ== ",
                                    # over 512 characters, yet (non-alphabet characters skipped) 3 bytes
                                    "!" * 509 + "QUFB", "!" * 508 + "QUFB"]),
                   st.text(max_size=12), junk)


@settings(max_examples=300, deadline=None)
@given(st.data(), B64ISH, st.integers(-2, 1 << 33))
def test_the_fast_proof_parse_equals_the_checked_one(data: st.DataObject, value: Any, index: int) -> None:
    """Proof.from_dict's fast path gives exactly what the checked parse gives (or the same error)."""
    good = dict(VALID)[Proof]
    bad = copy.deepcopy(good)
    path = data.draw(st.sampled_from(_paths(good)))
    if path:
        target = bad
        for key in path[:-1]:
            target = target[key]
        choice = data.draw(st.sampled_from(["value", "index", "delete", "keep"]))
        if choice == "delete" and isinstance(target, dict):
            del target[path[-1]]
        elif choice != "keep":
            target[path[-1]] = value if choice == "value" else index
    assert _either(Proof.from_dict, bad) == _either(Proof._checked, bad)
