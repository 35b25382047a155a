"""The Merkle heartbeat (downstream_tx/heartbeat/merkle.py) called directly: chunk_hash on a reader
shorter than the file size it is told (a truncated file: the window ends at the short read instead of
looping), which size ``prove`` uses, the limits and their exact boundaries, error messages that name the
bad field, defaults, equality and repr, FileReader's descriptor, ``from_dict`` on untrusted JSON and the
proofs' fast parse. (Vectors of the original libraries, properties and forgeries: the other
tests/test_heartbeat_*.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

import pytest

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
    chunk_hash,
    encode_seeded,
    hb_decode,
    hb_encode,
    keyed_prf,
    reader_size,
)


class ShortReader:
    """``size`` bytes of data; reads past the end give b"" (a few times at most, then it fails)."""

    def __init__(self, data: bytes):
        self.data = data
        self.empty_reads = 0

    def read_at(self, pos: int, n: int) -> bytes:
        piece = self.data[pos:pos + n]
        if not piece:
            self.empty_reads += 1
            if self.empty_reads > 3:
                raise AssertionError("chunk_hash kept reading past the end")
        return piece


@pytest.mark.parametrize("filesz", [10_000, 1 << 20])
def test_a_short_read_ends_the_window(filesz):
    data = bytes(range(256)) * 4  # 1024 bytes, less than filesz
    reader = ShortReader(data)
    got = chunk_hash(reader, b"s" * 32, filesz, filesz)  # the window starts at 0 and covers the file
    assert reader.empty_reads == 1
    assert got == hmac.new(b"s" * 32, data, "sha256").digest()


def test_a_full_reader_hashes_the_whole_window():
    data = bytes(range(256)) * 40
    reader = ShortReader(data)
    assert chunk_hash(reader, b"k" * 32, len(data), len(data)) == hmac.new(b"k" * 32, data, "sha256").digest()
    assert reader.empty_reads == 0


TS = 1420070400.5
KEY = b"k" * 32


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _encoded(size: int = 5000, n: int = 8, chunksz: int | None = 100) -> tuple[Merkle, bytes, Tag, State]:
    data = RandomIO("pins", size).read()
    merkle = Merkle(None, KEY)
    tag, state = merkle.encode(BytesReader(data), n=n, seed=b"s" * 32, chunksz=chunksz, timestamp=TS)
    return merkle, data, tag, state


# --------------------------------------------------------------------------- which size prove uses


def test_prove_uses_the_tag_size_not_the_reader_size() -> None:
    """A farmer's file may be longer than the tagged size (padding, a reused buffer): the window is
    chosen over tag.filesz, so every proof still verifies."""
    merkle, data, tag, state = _encoded()
    longer = BytesReader(data + b"\0" * (1 << 16))  # (a size of another bit length: another PRF range)
    for _ in range(state.n):
        challenge = merkle.gen_challenge(state)
        assert merkle.verify(merkle.prove(longer, challenge, tag), challenge, state)


def test_prove_without_a_tagged_size_uses_the_reader_size() -> None:
    merkle, data, tag, state = _encoded()
    untagged = Tag(tag.tree, tag.chunksz, None)
    challenge = merkle.gen_challenge(state)
    assert merkle.verify(merkle.prove(BytesReader(data), challenge, untagged), challenge, state)
    # ... so a longer reader moves the window
    longer = data + b"\0" * (1 << 16)
    offset = keyed_prf(challenge.seed, len(longer) - 100 + 1, 0)
    expected = hmac.new(challenge.seed, longer[offset : offset + 100], hashlib.sha256).digest()
    assert merkle.prove(BytesReader(longer), challenge, untagged).leaf.blob == expected
    assert not merkle.verify(merkle.prove(BytesReader(longer), challenge, untagged), challenge, state)


class _SizeOnly:
    def __init__(self, data: bytes) -> None:
        self._data, self.size = data, len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class _LenOnly(_SizeOnly):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        del self.size

    def __len__(self) -> int:
        return len(self._data)


def test_reader_size_takes_the_size_attribute_else_len() -> None:
    assert reader_size(_SizeOnly(b"x" * 7)) == 7
    assert reader_size(_LenOnly(b"x" * 9)) == 9
    assert reader_size(RandomIO("r", 11)) == 11
    merkle = Merkle(0.5, KEY)
    tag, state = merkle.encode(_SizeOnly(b"y" * 3000), n=2, seed=b"s" * 32, timestamp=TS)
    assert tag.filesz == 3000 and tag.chunksz == 1500
    challenge = merkle.gen_challenge(state)
    assert merkle.verify(merkle.prove(_SizeOnly(b"y" * 3000), challenge, tag), challenge, state)


# --------------------------------------------------------------------------- chunk_hash on short readers


class _CountingReader(BytesReader):
    """Records every read; fails the test instead of looping forever."""

    def __init__(self, data: bytes, max_reads: int = 100) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []
        self.max_reads = max_reads

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        assert len(self.reads) <= self.max_reads, "chunk_hash keeps reading past the end of the reader"
        return super().read_at(offset, length)


def test_chunk_hash_on_a_truncated_reader_ends_the_window() -> None:
    """Proving on a file shorter than the tag says: the hash of the bytes there are (which will not
    verify), after one empty read; never an endless loop (the original's behaviour)."""
    data = RandomIO("short", 4000).read()
    seed = b"q" * 32
    offset = keyed_prf(seed, 4000 - 3000 + 1, 0)
    reader = _CountingReader(data[:2000])
    got = chunk_hash(reader, seed, 4000, 3000)
    assert got == hmac.new(seed, data[offset:2000], hashlib.sha256).digest()
    assert reader.reads[-1][0] == max(offset, 2000) and len(reader.reads) <= 2
    merkle, full, tag, state = _encoded(size=4000, chunksz=3000)
    challenge = merkle.gen_challenge(state)
    truncated = _CountingReader(full[:2000])
    assert not merkle.verify(merkle.prove(truncated, challenge, tag), challenge, state)
    assert len(truncated.reads) <= 2


def test_chunk_hash_reads_at_most_one_mebibyte_at_a_time() -> None:
    """Memory stays flat whatever the window: contiguous reads of at most 1 MiB."""
    size = (1 << 21) + 12345
    data = RandomIO("big", size).read()
    seed = b"w" * 32
    reader = _CountingReader(data)
    got = chunk_hash(reader, seed, size, size)
    assert got == hmac.new(seed, data, hashlib.sha256).digest()
    assert max(length for _, length in reader.reads) == 1 << 20
    assert [o for o, _ in reader.reads] == [0, 1 << 20, 2 << 20]


# --------------------------------------------------------------------------- limits and their boundaries


def test_base64_string_length_limit_is_512_characters() -> None:
    # non-strict base64 ignores characters outside the alphabet: a long string can decode to 3 bytes
    at_limit = "QUFB" + "!" * 508
    assert MerkleLeaf.from_dict({"index": 0, "blob": at_limit}).blob == b"AAA"
    with pytest.raises(HeartbeatFormatError, match="^blob must be a short base64 string$"):
        MerkleLeaf.from_dict({"index": 0, "blob": at_limit + "!"})


def test_decoded_fields_hold_at_most_64_bytes() -> None:
    assert MerkleLeaf.from_dict({"index": 0, "blob": _b64(b"x" * 64)}).blob == b"x" * 64
    with pytest.raises(HeartbeatFormatError, match="^blob has a bad length$"):
        MerkleLeaf.from_dict({"index": 0, "blob": _b64(b"x" * 65)})
    assert Merkle.from_dict({"key": _b64(b"k" * 64), "check_fraction": None}).key == b"k" * 64


@pytest.mark.parametrize("size", [16, 24, 32])
def test_challenge_seeds_of_every_aes_key_size_are_accepted_and_prove(size: int) -> None:
    merkle, data, tag, state = _encoded()
    seed = bytes(range(size))
    challenge = Challenge.from_dict({"seed": _b64(seed), "index": 3})
    assert challenge == Challenge(seed, 3)
    proof = merkle.prove(BytesReader(data), challenge, tag)
    offset = keyed_prf(seed, len(data) - 100 + 1, 0)
    assert proof.leaf == MerkleLeaf(3, hmac.new(seed, data[offset : offset + 100], hashlib.sha256).digest())


@pytest.mark.parametrize("size", [0, 15, 17, 23, 25, 31, 33, 64])
def test_challenge_seeds_of_other_sizes_are_refused(size: int) -> None:
    with pytest.raises(HeartbeatFormatError, match="^seed has a bad length$"):
        Challenge.from_dict({"seed": _b64(b"s" * size), "index": 0})


def test_index_range_is_0_to_2_power_32() -> None:
    for ok in (0, 1 << 32):
        assert MerkleLeaf.from_dict({"index": ok, "blob": ""}).index == ok
        assert Challenge.from_dict({"seed": _b64(b"s" * 16), "index": ok}).index == ok
    for bad in (-1, (1 << 32) + 1):
        with pytest.raises(HeartbeatFormatError, match="^index out of range$"):
            MerkleLeaf.from_dict({"index": bad, "blob": ""})


def _tag_dict(**change: Any) -> dict[str, Any]:
    _, _, tag, _ = _encoded(n=2)
    return {**tag.to_dict(), **change}


def test_sizes_range_is_0_to_2_power_63() -> None:
    for field in ("chunksz", "filesz"):
        assert getattr(Tag.from_dict(_tag_dict(**{field: 1 << 63})), field) == 1 << 63
        assert getattr(Tag.from_dict(_tag_dict(**{field: 0})), field) == 0
        for bad in (-1, (1 << 63) + 1):
            with pytest.raises(HeartbeatFormatError, match=f"^{field} out of range$"):
                Tag.from_dict(_tag_dict(**{field: bad}))
    assert Tag.from_dict(_tag_dict(filesz=None)).filesz is None


def _state_dict(**change: Any) -> dict[str, Any]:
    merkle = Merkle(None, KEY)
    _, state = merkle.encode(BytesReader(b"z" * 300), n=3, seed=b"s" * 32, timestamp=TS)
    return {**state.to_dict(), **change}


def test_integer_timestamps_are_kept_as_integers_below_2_power_63() -> None:
    """The state's timestamp is signed as str(timestamp): an int must stay an int (1420070400, not
    1420070400.0) or the signature of a state made with an integer time would no longer check."""
    merkle = Merkle(None, KEY)
    _, state = merkle.encode(BytesReader(b"z" * 300), n=3, seed=b"s" * 32, timestamp=1420070400)
    back = State.from_dict(state.to_dict())
    assert back == state and type(back.timestamp) is int and merkle.check_state(back)
    for ok in ((1 << 63) - 1, -((1 << 63) - 1), 0):
        assert State.from_dict(_state_dict(timestamp=ok)).timestamp == ok
    for bad in (1 << 63, -(1 << 63)):
        with pytest.raises(HeartbeatFormatError, match="^timestamp out of range$"):
            State.from_dict(_state_dict(timestamp=bad))
    for bad in (float("inf"), "1", None, True):
        with pytest.raises(HeartbeatFormatError, match="^timestamp must be a finite number$"):
            State.from_dict(_state_dict(timestamp=bad))


def test_tree_order_is_at_most_20() -> None:
    # order 20 is in range (so the node count is what is wrong), 21 is not
    with pytest.raises(HeartbeatFormatError, match="^nodes must hold 2 \\* 2\\^order entries$"):
        MerkleTree.from_dict({"order": 20, "nodes": [""] * 4, "leaves": []})
    with pytest.raises(HeartbeatFormatError, match="^order out of range$"):
        MerkleTree.from_dict({"order": 21, "nodes": [""] * 4, "leaves": []})
    with pytest.raises(HeartbeatFormatError, match="^order out of range$"):
        MerkleTree.from_dict({"order": -1, "nodes": [""], "leaves": []})
    tree = MerkleTree.from_dict({"order": 0, "nodes": ["", ""], "leaves": []})
    assert tree == MerkleTree([b"", b""], 0, [])


def test_tree_leaves_at_most_one_per_slot() -> None:
    nodes = [""] * 4
    leaf = {"index": 0, "blob": ""}
    assert len(MerkleTree.from_dict({"order": 1, "nodes": nodes, "leaves": [leaf] * 2}).leaves) == 2
    with pytest.raises(HeartbeatFormatError, match="^leaves is too long$"):
        MerkleTree.from_dict({"order": 1, "nodes": nodes, "leaves": [leaf] * 3})
    with pytest.raises(HeartbeatFormatError, match="^nodes is too long$"):
        MerkleTree.from_dict({"order": 1, "nodes": nodes + [""], "leaves": []})


def test_branch_rows_are_pairs_and_at_most_64() -> None:
    pair = ["", _b64(b"r")]
    assert MerkleBranch.from_dict({"rows": [pair] * 64}).rows == [(b"", b"r")] * 64
    with pytest.raises(HeartbeatFormatError, match="^rows is too long$"):
        MerkleBranch.from_dict({"rows": [pair] * 65})
    for bad_row in (["", "", ""], [""], [], {"a": "", "b": ""}, "ab", None):
        with pytest.raises(HeartbeatFormatError, match=r"^a branch row must be a \[left, right\] pair$"):
            MerkleBranch.from_dict({"rows": [pair, bad_row]})
        with pytest.raises(HeartbeatFormatError):
            Proof.from_dict({"leaf": {"index": 0, "blob": ""}, "branch": {"rows": [bad_row]}})
    # left and right stay in their places
    assert MerkleBranch.from_dict({"rows": [[_b64(b"L"), _b64(b"R")]]}).rows == [(b"L", b"R")]


def test_check_fraction_is_null_or_within_0_and_1() -> None:
    for ok in (None, 0, 1, 0.0, 1.0, 0.25):
        assert Merkle.from_dict({"key": "", "check_fraction": ok}).check_fraction == ok
    for bad in (-0.01, 1.01, 2, float("nan"), float("inf"), True, "0.5", [0.5]):
        with pytest.raises(HeartbeatFormatError, match=r"^check_fraction must be null or a number in \[0, 1\]$"):
            Merkle.from_dict({"key": "", "check_fraction": bad})


# --------------------------------------------------------------------------- messages name the bad field


def _valid() -> dict[str, Any]:
    merkle, data, tag, state = _encoded(n=2)
    challenge = merkle.gen_challenge(state)
    proof = merkle.prove(BytesReader(data), challenge, tag)
    return {
        "leaf": proof.leaf.to_dict(), "branch": proof.branch.to_dict(), "tree": tag.tree.to_dict(),
        "challenge": challenge.to_dict(), "tag": tag.to_dict(), "state": state.to_dict(),
        "merkle": merkle.to_dict(),
    }


FIELDS = [
    (MerkleLeaf, "leaf", "index", "index"), (MerkleLeaf, "leaf", "blob", "blob"),
    (MerkleBranch, "branch", "rows", "rows"),
    (MerkleTree, "tree", "order", "order"), (MerkleTree, "tree", "nodes", "nodes"),
    (MerkleTree, "tree", "leaves", "leaves"),
    (Challenge, "challenge", "seed", "seed"), (Challenge, "challenge", "index", "index"),
    (Tag, "tag", "chunksz", "chunksz"), (Tag, "tag", "filesz", "filesz"),
    (State, "state", "index", "index"), (State, "state", "seed", "seed"), (State, "state", "n", "n"),
    (State, "state", "root", "root"), (State, "state", "hmac", "hmac"),
    (State, "state", "timestamp", "timestamp"),
    (Merkle, "merkle", "key", "key"), (Merkle, "merkle", "check_fraction", "check_fraction"),
]


@pytest.mark.parametrize(("cls", "which", "key", "name"), FIELDS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_or_missing_field_is_named_in_the_error(cls: type, which: str, key: str, name: str) -> None:
    good = _valid()[which]
    assert cls.from_dict(good) is not None
    with pytest.raises(HeartbeatFormatError, match=rf"^{name} |^{name}: |check_fraction must"):
        cls.from_dict({**good, key: {"wrong": "type"}})
    with pytest.raises(HeartbeatFormatError, match=rf"^missing field '{key}'$"):
        cls.from_dict({k: v for k, v in good.items() if k != key})


def test_nested_fields_are_named_too() -> None:
    valid = _valid()
    with pytest.raises(HeartbeatFormatError, match="^node must be a short base64 string$"):
        MerkleTree.from_dict({**valid["tree"], "nodes": [None] * len(valid["tree"]["nodes"])})
    with pytest.raises(HeartbeatFormatError, match="^row must be a short base64 string$"):
        MerkleBranch.from_dict({"rows": [["", 5]]})
    with pytest.raises(HeartbeatFormatError, match="^row must be a short base64 string$"):
        MerkleBranch.from_dict({"rows": [[5, ""]]})
    with pytest.raises(HeartbeatFormatError, match="^expected an object, got list$"):
        Proof.from_dict({"leaf": [], "branch": valid["branch"]})
    with pytest.raises(HeartbeatFormatError, match="^missing field 'branch'$"):
        Proof.from_dict({"leaf": valid["leaf"]})
    with pytest.raises(HeartbeatFormatError, match="^missing field 'tree'$"):
        Tag.from_dict({"chunksz": 1, "filesz": 1})
    with pytest.raises(HeartbeatFormatError, match="^index must be an integer$"):
        MerkleLeaf.from_dict({"index": 1.0, "blob": ""})
    with pytest.raises(HeartbeatFormatError, match="^rows must be a list$"):
        MerkleBranch.from_dict({"rows": "[]"})
    with pytest.raises(HeartbeatFormatError, match=r"^blob: bad base64 \("):
        MerkleLeaf.from_dict({"index": 0, "blob": "A"})


def test_protocol_errors_say_what_happened() -> None:
    merkle, data, tag, state = _encoded(n=1)
    with pytest.raises(HeartbeatError, match="^Challenge index out of range for tag.$"):
        merkle.prove(BytesReader(data), Challenge(b"s" * 32, 1), tag)
    with pytest.raises(HeartbeatError, match="^Challenge index out of range for tag.$"):
        merkle.prove(BytesReader(data), Challenge(b"s" * 32, -1), tag)
    merkle.gen_challenge(state)
    with pytest.raises(HeartbeatError, match="^Out of challenges.$"):
        merkle.gen_challenge(state)
    with pytest.raises(ValueError, match="^n must be >= 1$"):
        merkle.encode(BytesReader(data), n=0, timestamp=TS)
    with pytest.raises(ValueError, match="^a Merkle tree needs at least one leaf$"):
        MerkleTree.build([])


# --------------------------------------------------------------------------- defaults


def test_defaults() -> None:
    merkle = Merkle()
    assert len(merkle.key) == 32 and merkle.check_fraction is None
    assert Merkle().key != merkle.key
    data = b"d" * 20000
    tag, state = merkle.encode(BytesReader(data), timestamp=TS)
    assert (state.n, state.index, tag.chunksz, tag.filesz, len(state.seed)) == (256, 0, 8192, 20000, 32)
    assert len(tag.tree.nodes) == 512 and tag.tree.leaves == [] and state.timestamp == TS
    tag2, state2 = merkle.encode(BytesReader(data), timestamp=TS)
    assert state2.seed != state.seed  # a new random root seed each time
    tag3, state3 = encode_seeded(KEY, "70aacdc6a2f7ef0e7c1effde27299eda", 3000, root_seed=b"r" * 32, timestamp=TS)
    assert state3.n == 256 and tag3.chunksz == 8192 and tag3.filesz == 3000
    unsigned = State(index=0, seed=b"s", n=1)
    assert (unsigned.root, unsigned.hmac, unsigned.timestamp) == (b"", b"", 0.0)
    assert unsigned.signed_message() == b"0s10.0"


def test_equality_and_repr_keep_the_key_secret() -> None:
    merkle = Merkle(0.5, b"\x01" * 32)
    assert (merkle == "not a heartbeat") is False
    assert merkle.__eq__("not a heartbeat") is NotImplemented
    assert merkle == Merkle(0.5, b"\x01" * 32) and merkle != Merkle(0.25, b"\x01" * 32)
    assert merkle != Merkle(0.5, b"\x02" * 32)
    assert repr(merkle) == "Merkle(check_fraction=0.5, key=<32 bytes>)"
    assert merkle.public_dict() == {"key": "", "check_fraction": 0.5} == merkle.get_public().to_dict()


# --------------------------------------------------------------------------- FileReader's descriptor


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_file_reader_closes_its_descriptor_once(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    reader = FileReader(path)
    fd = reader._fd
    assert reader.read_at(2, 3) == b"cde" and len(reader) == 6 and reader.size == 6
    reader.close()
    assert not _is_open(fd) and reader._fd == -1
    reader.close()  # twice is harmless (and must not close a descriptor reused since)
    with FileReader(path) as second:
        fd2 = second._fd
        assert _is_open(fd2)
    assert not _is_open(fd2)
    third = FileReader(path)
    fd3 = third._fd
    third.__del__()
    assert not _is_open(fd3)


# --------------------------------------------------------------------------- smaller contracts


def test_every_from_dict_turns_a_stray_exception_into_a_format_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module's promise: from_dict on untrusted JSON raises only HeartbeatFormatError. The field
    checks raise it themselves; the wrapper on each from_dict is the safety net for anything else."""
    from downstream_tx.heartbeat import merkle as module

    valid = _valid()
    inputs = [
        (MerkleLeaf, valid["leaf"]), (MerkleBranch, valid["branch"]), (MerkleTree, valid["tree"]),
        (Challenge, valid["challenge"]), (Tag, valid["tag"]), (State, valid["state"]),
        (Proof, {"leaf": valid["leaf"], "branch": valid["branch"]}), (Merkle, valid["merkle"]),
    ]
    for error in (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError):

        def stray(d: Any, key: str, error: type[Exception] = error) -> Any:
            raise error("low level")

        monkeypatch.setattr(module, "_get", stray)
        for cls, d in inputs:
            # Proof's fast path never raises: what it does not take goes to the checked parse
            parse = cls._checked if cls is Proof else cls.from_dict
            with pytest.raises(HeartbeatFormatError, match="^malformed heartbeat data: "):
                parse(d)
    monkeypatch.undo()
    # a real one: math.isfinite() overflows on a huge integer
    with pytest.raises(HeartbeatFormatError, match="^malformed heartbeat data: int too large"):
        Merkle.from_dict({"key": "", "check_fraction": 10**400})


def test_proofs_as_farmers_send_them_take_the_fast_parse() -> None:
    """Proof.from_dict's fast path takes every well-formed proof (index 0, a blob of exactly 512
    characters or of 64 bytes, both cells of a row) and gives what the checked parse gives; a string
    over 512 characters goes to the checked parse, which refuses it, though it decodes to 3 bytes."""
    from downstream_tx.heartbeat.merkle import _fast_proof

    valid = _valid()
    assert valid["leaf"]["index"] == 0 and len(valid["branch"]["rows"]) == 1
    sent = {"leaf": valid["leaf"], "branch": valid["branch"]}
    edge = {"leaf": {"index": 0, "blob": "!" * 508 + "QUFB"}, "branch": valid["branch"]}
    largest = {"leaf": {"index": 0, "blob": _b64(b"x" * 64)}, "branch": valid["branch"]}
    for d in (sent, edge, largest):
        fast = _fast_proof(d)
        assert fast is not None and fast == Proof._checked(d)
    assert _fast_proof(edge).leaf.blob == b"AAA"
    over = {"leaf": {"index": 0, "blob": "!" * 509 + "QUFB"}, "branch": valid["branch"]}
    assert _fast_proof(over) is None
    with pytest.raises(HeartbeatFormatError, match="^blob must be a short base64 string$"):
        Proof.from_dict(over)


def test_from_dict_keeps_its_name() -> None:
    assert MerkleLeaf.from_dict.__qualname__ == "MerkleLeaf.from_dict"
    assert Tag.from_dict.__name__ == "from_dict"


def test_small_helpers() -> None:
    assert len(BytesReader(b"abc")) == 3 == BytesReader(b"abc").size
    assert hb_decode(["QUFB", "", ["QQ=="]]) == [b"AAA", b"", [b"A"]]
    assert hb_encode([b"AAA", b"", [b"A"]]) == ["QUFB", "", ["QQ=="]]
    assert MerkleBranch().rows == [] and MerkleBranch().rows is not MerkleBranch().rows
    tree = MerkleTree([b"", b""], 0)
    assert tree.leaves == [] and tree.leaves is not MerkleTree([b"", b""], 0).leaves
    with pytest.raises(IndexError, match="^leaf index out of range$"):
        MerkleTree.build([MerkleLeaf(0, b"x")]).get_branch(1)


def test_file_reader_may_get_descriptor_0(tmp_path: Path) -> None:
    """With stdin closed (a daemonised process), the file gets descriptor 0: close() must close it."""
    path = tmp_path / "f"
    path.write_bytes(b"zero")
    saved = os.dup(0)
    try:
        os.close(0)
        reader = FileReader(path)
        assert reader._fd == 0 and reader.read_at(0, 4) == b"zero"
        reader.close()
        assert not _is_open(0)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
