"""Byte-for-byte checks against the vectors produced by the original 2015 libraries."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import pytest

from downstream_tx.heartbeat import (
    BytesReader,
    Challenge,
    HeartbeatError,
    Merkle,
    MerkleTree,
    Proof,
    RandomIO,
    State,
    Tag,
    encode_seeded,
    keyed_prf,
    keyed_prf_attempts,
    next_seed,
)

VECTORS = Path(__file__).parent / "vectors"


@cache
def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


def _seed(entry: dict) -> bytes | str | int:
    if entry["seed_type"] == "bytes":
        return bytes.fromhex(entry["seed_hex"])
    if entry["seed_type"] == "int":
        assert isinstance(entry["seed"], int)
    return entry["seed"]


# --------------------------------------------------------------------------- RandomIO

RIO = load("randomio.json")


@pytest.mark.parametrize("entry", RIO["streams"], ids=lambda e: f"{e['seed_type']}-{e['size']}")
def test_randomio_stream(entry: dict) -> None:
    stream = RandomIO(_seed(entry), entry["size"]).read()
    assert len(stream) == entry["size"]
    assert hashlib.sha256(stream).hexdigest() == entry["sha256"]
    assert stream[:64].hex() == entry["first64_hex"]


@pytest.mark.parametrize("entry", RIO["seek_reads"], ids=lambda e: f"{e['offset']}+{e['length']}")
def test_randomio_seek_read(entry: dict) -> None:
    rio = RandomIO(entry["seed"], entry["size"])
    rio.seek(entry["offset"])
    assert rio.read(entry["length"]).hex() == entry["data_hex"]
    assert rio.tell() == entry["offset"] + len(bytes.fromhex(entry["data_hex"]))
    assert rio.read_at(entry["offset"], entry["length"]).hex() == entry["data_hex"]


def test_randomio_spec_vector(tmp_path: Path) -> None:
    seed = "70aacdc6a2f7ef0e7c1effde27299eda"
    assert RandomIO(seed, 1000).read(32).hex() == (
        "f373de8ab83680ee2224f5fa2fc9664c7cc5e4acdabfe5e16a5d822575616723"
    )
    rio = RandomIO(seed)
    rio.seek(1000)
    assert rio.read(16).hex() == "a17e288cfee2ce86c574ed8ddf3c5909"
    # genfile into a directory: random 32-hex name, exact bytes, 64 KiB pieces
    path = RandomIO(seed).genfile(200_000, str(tmp_path))
    name = Path(path).name
    assert len(name) == 32 and int(name, 16) >= 0
    assert Path(path).read_bytes() == RandomIO(seed).read_at(0, 200_000)
    explicit = tmp_path / "chunk"
    assert RandomIO(seed).genfile(1000, str(explicit)) == str(explicit)
    assert explicit.read_bytes() == RandomIO(seed, 1000).read()


# --------------------------------------------------------------------------- KeyedPRF

PRF = load("keyedprf.json")


@pytest.mark.parametrize("entry", PRF["samples"], ids=lambda e: f"{e['range_str'][:12]}-{e['x']}")
def test_keyed_prf(entry: dict) -> None:
    key = bytes.fromhex(entry["key_hex"])
    range_ = int(entry["range_str"])
    value, attempts = keyed_prf_attempts(key, range_, entry["x"])
    assert value == int(entry["output_str"])
    assert attempts == entry["attempts"]
    assert keyed_prf(key, range_, entry["x"]) == value


def test_prf_vectors_cover_16_byte_keys() -> None:
    assert {len(e["key_hex"]) for e in PRF["samples"]} >= {32, 64}


def test_spec_inline_prf_and_next_seed() -> None:
    k = hashlib.sha256(b"k").digest()
    assert keyed_prf(k, 33218889, 0) == 10085642
    assert keyed_prf(k, 257, 0) == 153
    assert next_seed(bytes(32), b"\x01" * 32).hex() == (
        "80a09de3bfe30da90116e588ade2f812d49b55625be8b4abbff775fa5a5a74e9"
    )


def test_prf_rejects_empty_range() -> None:
    with pytest.raises(ValueError):
        keyed_prf(bytes(32), 0, 0)


# --------------------------------------------------------------------------- Merkle

HB = load("heartbeat-merkle.json")
TS = HB["fixed_timestamp"]


def _case_id(case: dict) -> str:
    return f"{case['file_seed']}-{case['file_size']}-n{case['n']}-cf{case['check_fraction']}"


def _encode(case: dict) -> tuple[Merkle, Tag, State]:
    data = RandomIO(case["file_seed"], case["file_size"]).read()
    assert hashlib.sha256(data).hexdigest() == case["file_sha256"]
    merkle = Merkle(case["check_fraction"], bytes.fromhex(case["key_hex"]))
    tag, state = merkle.encode(
        BytesReader(data),
        n=case["n"],
        seed=bytes.fromhex(case["root_seed_hex"]),
        filesz=case["file_size"],
        timestamp=TS,
    )
    return merkle, tag, state


@pytest.mark.parametrize("case", HB["cases"], ids=_case_id)
def test_merkle_case(case: dict) -> None:
    merkle, tag, state = _encode(case)
    assert merkle.to_dict() == case["merkle"]
    assert merkle.public_dict() == case["public"]
    assert merkle.get_public().to_dict() == case["public"]
    assert Merkle.from_dict(case["merkle"]) == merkle
    assert tag.chunksz == case["chunksz"]
    assert tag.to_dict() == case["tag"]
    assert state.to_dict() == case["state"]
    assert Tag.from_dict(case["tag"]) == tag
    assert State.from_dict(case["state"]) == state
    nodes = case["tag"]["tree"]["nodes"]
    assert len(nodes) == 2 << case["tag"]["tree"]["order"] and nodes[-1] == ""

    # the farmer side uses only public objects, parsed from the wire dicts
    public = Merkle.from_dict(case["public"])
    wire_tag = Tag.from_dict(json.loads(json.dumps(case["tag"])))
    reader = RandomIO(case["file_seed"], case["file_size"])
    for step in case["challenges"]:
        challenge = merkle.gen_challenge(state)
        assert challenge.to_dict() == step["challenge"]
        assert state.to_dict() == step["state_after"]
        assert Challenge.from_dict(step["challenge"]) == challenge
        proof = public.prove(reader, challenge, wire_tag)
        assert proof.to_dict() == step["proof"]
        assert Proof.from_dict(step["proof"]) == proof
        assert merkle.verify(proof, challenge, state) is step["verify"]
        # the server verifies from stored dicts too
        assert (
            merkle.verify(
                Proof.from_dict(step["proof"]),
                Challenge.from_dict(step["challenge"]),
                State.from_dict(step["state_after"]),
            )
            is step["verify"]
        )

    if "after_last_challenge" in case:
        kind, _, message = case["after_last_challenge"].partition(": ")
        assert kind == "HeartbeatError"
        with pytest.raises(HeartbeatError) as info:
            merkle.gen_challenge(state)
        assert str(info.value) == message


@pytest.mark.parametrize("case", HB["cases"][-3:], ids=_case_id)
def test_encode_seeded_matches(case: dict) -> None:
    tag, state = encode_seeded(
        bytes.fromhex(case["key_hex"]),
        case["file_seed"],
        case["file_size"],
        n=case["n"],
        check_fraction=case["check_fraction"],
        root_seed=bytes.fromhex(case["root_seed_hex"]),
        timestamp=TS,
    )
    assert tag.to_dict() == case["tag"]
    assert state.to_dict() == case["state"]


def test_vector_cases_cover_expected_shapes() -> None:
    assert len(HB["cases"]) == 30
    assert {c["n"] for c in HB["cases"]} >= {1, 2, 3, 7, 256}


NEG = HB["negative"]


def _negative_merkle() -> Merkle:
    case = HB["cases"][NEG["case_index"]]
    return Merkle(case["check_fraction"], bytes.fromhex(case["key_hex"]))


@pytest.mark.parametrize("entry", NEG["proofs"], ids=lambda e: e["description"])
def test_negative_proofs(entry: dict) -> None:
    merkle = _negative_merkle()
    proof = Proof.from_dict(entry["proof"])
    challenge = Challenge.from_dict(NEG["challenge"])
    state = State.from_dict(NEG["state"])
    assert merkle.verify(proof, challenge, state) is entry["verify"]
    assert entry["verify"] is (entry["description"] == "unmodified proof (control)")


def test_negative_tampered_state() -> None:
    merkle = _negative_merkle()
    kind, _, message = NEG["tampered_state_index_plus_1"].partition(": ")
    assert kind == "HeartbeatError"
    state = State.from_dict(NEG["state"])
    state.index += 1
    control = next(e for e in NEG["proofs"] if e["verify"])
    proof = Proof.from_dict(control["proof"])
    challenge = Challenge.from_dict(NEG["challenge"])
    with pytest.raises(HeartbeatError) as info:
        merkle.verify(proof, challenge, state)
    assert str(info.value) == message
    with pytest.raises(HeartbeatError) as info:
        merkle.gen_challenge(state)
    assert str(info.value) == message


# --------------------------------------------------------------------------- spec §6.9


def test_spec_end_to_end_vector() -> None:
    merkle = Merkle(0.1, bytes(range(32)))
    data = RandomIO("70aacdc6a2f7ef0e7c1effde27299eda", 1000)
    tag, state = merkle.encode(data, n=4, seed=bytes(range(32, 64)), filesz=1000, timestamp=1.0)
    assert tag.chunksz == 100
    assert tag.tree.order == 2
    assert state.root.hex() == "6610f77e6fa28a2ca501d1ceddd669481f1ff60d5c426a22a1988a3e44b309ff"
    nodes = [
        "ZhD3fm+iiiylAdHO3dZpSB8f9g1cQmoioZiKPkSzCf8=",
        "VYMJxZ6c9GQ/+xdMp95PaoMaN4iygbBa0vtt317l4H4=",
        "OAdARjJ2XuOAU3gIPlQk3SMtihCYBRk2CR96WibVNcU=",
        "mTlb2aqmAU3MSwcIMvWJQBBKTqS6RaTF2rq+5nlo088=",
        "k6Yrd/1mVrNFJRJcDxXoIMUAY1aePPQ8a9ra/3iuHFc=",
        "FwJ6mJqqTUNnBKQl8gi6UEWC0PWpmyIvyrq5usfdHaM=",
        "rNmjpYSrpfH00Haw/Zi/az+etcxB0cIqba3vsvkXcEQ=",
        "",
    ]
    assert tag.to_dict()["tree"]["nodes"] == nodes
    assert tag.to_dict()["tree"]["leaves"] == []
    challenge = merkle.gen_challenge(state)
    assert challenge.to_dict() == {
        "seed": "YiFd573c6n4sQEf/a7lPjRgmL8iz82SBNLt9RBWP+E0=",
        "index": 0,
    }
    assert keyed_prf(challenge.seed, 1000 - 100 + 1, 0) == 702
    proof = merkle.get_public().prove(data, challenge, tag)
    assert proof.to_dict()["leaf"]["blob"] == "OgKVRY/FIYC3sDLS8UYNFPT1DYQeamp17/yVamWU49g="
    assert proof.to_dict()["branch"]["rows"] == [[nodes[3], nodes[4]], [nodes[1], nodes[2]]]
    assert merkle.verify(proof, challenge, state)


def test_tree_of_one_leaf() -> None:
    merkle = Merkle(None, b"k" * 32)
    tag, state = merkle.encode(BytesReader(b"abc"), n=1, seed=b"s" * 32, timestamp=TS)
    assert tag.tree.order == 0 and len(tag.tree.nodes) == 2 and tag.tree.nodes[1] == b""
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(b"abc"), challenge, tag)
    assert proof.branch.rows == []
    assert merkle.verify(proof, challenge, state)
    assert MerkleTree.from_dict(tag.tree.to_dict()) == tag.tree
