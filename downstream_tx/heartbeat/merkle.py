"""storj-heartbeat 0.1.10 "Merkle" proof-of-storage scheme, wire compatible
(docs/protocol-v1.md, Merkle heartbeat).

The server encodes ``n`` challenges up front: challenge ``k`` has seed
``s_k = HMAC(key, s_{k-1})`` (``s_0`` = root seed) and its answer is the HMAC (keyed
by ``s_k``) of a window of the file chosen by ``KeyedPRF(s_k, ...)``.  The answers are
the leaves of a Merkle tree whose root goes into the (HMAC-signed) server ``State``;
the leaf-stripped tree is the public ``Tag`` given to the farmer.

All ``from_dict`` constructors take untrusted JSON and raise only
:class:`HeartbeatFormatError` on malformed input.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from .prf import keyed_prf
from .randomio import RandomIO

__all__ = [
    "BytesReader",
    "Challenge",
    "FileReader",
    "HeartbeatError",
    "HeartbeatFormatError",
    "Merkle",
    "MerkleBranch",
    "MerkleLeaf",
    "MerkleTree",
    "Proof",
    "Reader",
    "State",
    "Tag",
    "chunk_hash",
    "encode_seeded",
    "hb_decode",
    "hb_encode",
    "next_seed",
    "reader_size",
]

DEFAULT_CHUNKSZ = 8192
MAX_BLOB = 64  # bytes in any decoded hash/seed/key field
MAX_B64_CHARS = 512  # raw string length accepted before decoding (non-strict b64)
MAX_ORDER = 20  # tree order => at most 2^20 challenges per tag
MAX_BRANCH_ROWS = 64
MAX_INDEX = 1 << 32
MAX_SIZE = 1 << 63
LEAF_SIZE = hashlib.sha256().digest_size  # a leaf's blob is an HMAC-SHA256 of its window
_READ_PIECE = 1 << 20


class HeartbeatError(Exception):
    """Protocol failure: "Signature invalid on state." / "Out of challenges."."""


class HeartbeatFormatError(ValueError):
    """A heartbeat dict (untrusted JSON) is malformed."""


# --------------------------------------------------------------------------- readers


class Reader(Protocol):
    def read_at(self, offset: int, length: int) -> bytes: ...


class BytesReader:
    """Reader over an in-memory buffer."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(bytes(data))
        self.size = len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        return bytes(self._data[offset : offset + length])

    def __len__(self) -> int:
        return self.size


class FileReader:
    """Reader over a file path using ``os.pread`` (thread-safe, no shared position)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        fd = getattr(self, "_fd", -1)  # __init__ may have failed before setting it
        if fd >= 0:
            self._fd = -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()

    def __len__(self) -> int:
        return self.size


def reader_size(reader: Any) -> int:
    """Size of a reader: its ``size`` attribute, else ``len(reader)``."""
    size = getattr(reader, "size", None)
    if size is None:
        size = len(reader)
    return int(size)


# --------------------------------------------------------------------------- b64 helpers


def hb_encode(x: Any) -> Any:
    """Base64 bytes as text; lists are mapped recursively (``b''`` -> ``""``)."""
    if isinstance(x, list):
        return [hb_encode(v) for v in x]
    return base64.b64encode(x).decode("utf-8")


def hb_decode(x: Any) -> Any:
    """Non-strict base64 decode (like ``base64.b64decode``); lists mapped recursively."""
    if isinstance(x, list):
        return [hb_decode(v) for v in x]
    # what base64.b64decode does (non-strict), without its per-call argument handling: this runs
    # ~20 times per verified v1 proof
    return binascii.a2b_base64(x.encode("utf-8"))


# --------------------------------------------------------------------------- validation

_T = TypeVar("_T")


def _format_errors(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Turn any stray low-level exception of a ``from_dict`` into HeartbeatFormatError."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except HeartbeatFormatError:
            raise
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise HeartbeatFormatError(f"malformed heartbeat data: {exc}") from None

    return wrapper


def _get(d: Any, key: str) -> Any:
    if not isinstance(d, dict):
        raise HeartbeatFormatError(f"expected an object, got {type(d).__name__}")
    if key not in d:
        raise HeartbeatFormatError(f"missing field {key!r}")
    return d[key]


def _int(v: Any, name: str, lo: int = 0, hi: int = MAX_INDEX) -> int:
    if type(v) is not int:
        raise HeartbeatFormatError(f"{name} must be an integer")
    if not lo <= v <= hi:
        raise HeartbeatFormatError(f"{name} out of range")
    return v


def _blob(v: Any, name: str, sizes: tuple[int, ...] | None = None) -> bytes:
    if not isinstance(v, str) or len(v) > MAX_B64_CHARS:
        raise HeartbeatFormatError(f"{name} must be a short base64 string")
    try:
        raw = hb_decode(v)
    except ValueError as exc:  # binascii.Error, UnicodeEncodeError
        raise HeartbeatFormatError(f"{name}: bad base64 ({exc})") from None
    if len(raw) > MAX_BLOB or (sizes is not None and len(raw) not in sizes):
        raise HeartbeatFormatError(f"{name} has a bad length")
    return raw


def _list(v: Any, name: str, max_len: int) -> list[Any]:
    if not isinstance(v, list):
        raise HeartbeatFormatError(f"{name} must be a list")
    if len(v) > max_len:
        raise HeartbeatFormatError(f"{name} is too long")
    return v


def _number(v: Any, name: str) -> float | int:
    if type(v) is int:
        if abs(v) >= MAX_SIZE:
            raise HeartbeatFormatError(f"{name} out of range")
        return v
    if type(v) is float and math.isfinite(v):
        return v
    raise HeartbeatFormatError(f"{name} must be a finite number")


# --------------------------------------------------------------------------- primitives


def next_seed(key: bytes, seed: bytes) -> bytes:
    """``MerkleHelper.get_next_seed``: HMAC-SHA256(key, seed)."""
    return hmac.digest(key, seed, "sha256")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def chunk_hash(reader: Reader, seed: bytes, filesz: int, chunksz: int) -> bytes:
    """``MerkleHelper.get_chunk_hash``: HMAC(seed) of the PRF-chosen window.

    Unlike the original (which loops forever on a short file) a short read simply ends
    the window, giving a hash that will not verify.
    """
    chunksz = min(chunksz, filesz)
    offset = keyed_prf(seed, filesz - chunksz + 1, 0)
    mac = hmac.new(seed, digestmod="sha256")
    end = offset + chunksz
    pos = offset
    while pos < end:
        piece = reader.read_at(pos, min(_READ_PIECE, end - pos))
        if not piece:
            break
        mac.update(piece)
        pos += len(piece)
    return mac.digest()


def tree_order(leaves: int) -> int:
    """Levels below the root of the tree of ``leaves`` leaves: ceil(log2(leaves)) (0 for one)."""
    return (leaves - 1).bit_length()


# --------------------------------------------------------------------------- tree objects


@dataclass
class MerkleLeaf:
    index: int
    blob: bytes

    def get_hash(self) -> bytes:
        """SHA256(blob || ascii(decimal index))."""
        return _sha256(self.blob + str(self.index).encode("ascii"))

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "blob": hb_encode(self.blob)}

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> MerkleLeaf:
        return cls._parse(d)

    @classmethod
    def _parse(cls, d: Any) -> MerkleLeaf:
        """``from_dict`` without the stray-exception wrapper (for callers that have one)."""
        return cls(_int(_get(d, "index"), "index"), _blob(_get(d, "blob"), "blob"))


@dataclass
class MerkleBranch:
    """Sibling pairs from the leaf level up to the children of the root."""

    rows: list[tuple[bytes, bytes]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [[hb_encode(a), hb_encode(b)] for a, b in self.rows]}

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> MerkleBranch:
        return cls._parse(d)

    @classmethod
    def _parse(cls, d: Any) -> MerkleBranch:
        """``from_dict`` without the stray-exception wrapper (for callers that have one)."""
        rows = []
        for row in _list(_get(d, "rows"), "rows", MAX_BRANCH_ROWS):
            if not isinstance(row, list) or len(row) != 2:
                raise HeartbeatFormatError("a branch row must be a [left, right] pair")
            rows.append((_blob(row[0], "row"), _blob(row[1], "row")))
        return cls(rows)


@dataclass
class MerkleTree:
    """Flat heap layout: node k has children 2k+1, 2k+2; ``len(nodes) == 2 << order``."""

    nodes: list[bytes]
    order: int
    leaves: list[MerkleLeaf] = field(default_factory=list)

    @classmethod
    def build(cls, leaves: list[MerkleLeaf]) -> MerkleTree:
        if not leaves:
            raise ValueError("a Merkle tree needs at least one leaf")
        order = tree_order(len(leaves))
        n = 1 << order
        nodes = [b""] * (2 * n)
        for j, leaf in enumerate(leaves):
            nodes[n - 1 + j] = leaf.get_hash()
        for k in range(n - 2, -1, -1):
            # empty children contribute no bytes, so two empties give SHA256(b"")
            nodes[k] = _sha256(nodes[2 * k + 1] + nodes[2 * k + 2])
        return cls(nodes, order, list(leaves))

    @property
    def root(self) -> bytes:
        return self.nodes[0]

    def get_branch(self, index: int) -> MerkleBranch:
        n = 1 << self.order
        if not 0 <= index < n:
            raise IndexError("leaf index out of range")
        return self.path_from(index + n - 1)

    def path_from(self, node: int) -> MerkleBranch:
        """The sibling pairs from ``node``'s level up to the root's children (none for the root)."""
        rows = []
        while node > 0:
            if node % 2 == 1:
                rows.append((self.nodes[node], self.nodes[node + 1]))
            else:
                rows.append((self.nodes[node - 1], self.nodes[node]))
            node = (node + 1) // 2 - 1
        return MerkleBranch(rows)

    def stripped(self) -> MerkleTree:
        """Copy without leaves (all nodes kept), as published in a Tag."""
        return MerkleTree(list(self.nodes), self.order, [])

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": hb_encode(self.nodes),
            "order": self.order,
            "leaves": [leaf.to_dict() for leaf in self.leaves],
        }

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> MerkleTree:
        order = _int(_get(d, "order"), "order", 0, MAX_ORDER)
        size = 2 << order
        raw_nodes = _list(_get(d, "nodes"), "nodes", size)
        if len(raw_nodes) != size:
            raise HeartbeatFormatError("nodes must hold 2 * 2^order entries")
        nodes = [_blob(v, "node") for v in raw_nodes]
        leaves = [
            MerkleLeaf.from_dict(v) for v in _list(_get(d, "leaves"), "leaves", size // 2)
        ]
        return cls(nodes, order, leaves)


# --------------------------------------------------------------------------- protocol objects


@dataclass
class Challenge:
    seed: bytes
    index: int

    def to_dict(self) -> dict[str, Any]:
        return {"seed": hb_encode(self.seed), "index": self.index}

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> Challenge:
        # the seed is used as an AES key by KeyedPRF, so it must be a valid key size
        seed = _blob(_get(d, "seed"), "seed", (16, 24, 32))
        return cls(seed, _int(_get(d, "index"), "index"))


@dataclass
class Tag:
    tree: MerkleTree
    chunksz: int
    filesz: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"tree": self.tree.to_dict(), "chunksz": self.chunksz, "filesz": self.filesz}

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> Tag:
        tree = MerkleTree.from_dict(_get(d, "tree"))
        chunksz = _int(_get(d, "chunksz"), "chunksz", 0, MAX_SIZE)
        filesz = _get(d, "filesz")
        if filesz is not None:
            filesz = _int(filesz, "filesz", 0, MAX_SIZE)
        return cls(tree, chunksz, filesz)


@dataclass
class State:
    """Server-side challenge state; ``hmac`` signs all other fields."""

    index: int
    seed: bytes
    n: int
    root: bytes = b""
    hmac: bytes = b""
    timestamp: float | int = 0.0

    def signed_message(self) -> bytes:
        # str() of the float as Python 3 prints it (the original HMACs str(timestamp))
        return b"".join(
            (
                str(self.index).encode("ascii"),
                self.seed,
                str(self.n).encode("ascii"),
                self.root,
                str(self.timestamp).encode("ascii"),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seed": hb_encode(self.seed),
            "n": self.n,
            "root": hb_encode(self.root),
            "hmac": hb_encode(self.hmac),
            "timestamp": self.timestamp,
        }

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> State:
        return cls(
            index=_int(_get(d, "index"), "index"),
            seed=_blob(_get(d, "seed"), "seed"),
            n=_int(_get(d, "n"), "n"),
            root=_blob(_get(d, "root"), "root"),
            hmac=_blob(_get(d, "hmac"), "hmac"),
            timestamp=_number(_get(d, "timestamp"), "timestamp"),
        )


@dataclass
class Proof:
    leaf: MerkleLeaf
    branch: MerkleBranch

    def to_dict(self) -> dict[str, Any]:
        return {"leaf": self.leaf.to_dict(), "branch": self.branch.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> Proof:
        """A proof from its dict form. A proof as farmers send it (plain JSON objects and lists,
        short ASCII base64) takes a fast path (a node parses one per verified proof); whatever that
        path does not take, it hands to the checked parse, which accepts the same and says what is
        wrong with the rest: both give the same proof or the same error."""
        fast = _fast_proof(d)
        return fast if fast is not None else cls._checked(d)

    @classmethod
    @_format_errors
    def _checked(cls, d: Any) -> Proof:
        # one wrapper for the whole proof (it turns the same stray exceptions into the same error)
        return cls(MerkleLeaf._parse(_get(d, "leaf")), MerkleBranch._parse(_get(d, "branch")))


def _fast_b64(v: Any) -> bytes | None:
    """What ``_blob`` returns for a well-formed ASCII base64 string, else None."""
    if type(v) is not str or len(v) > MAX_B64_CHARS or not v.isascii():
        return None
    try:
        raw = binascii.a2b_base64(v)  # an ASCII str decodes as its bytes do
    except ValueError:
        return None
    return raw if len(raw) <= MAX_BLOB else None


def _fast_proof(d: Any) -> Proof | None:
    """:meth:`Proof.from_dict` for exact dicts/lists of valid fields, else None (never raises)."""
    if type(d) is not dict:
        return None
    leaf, branch = d.get("leaf"), d.get("branch")
    if type(leaf) is not dict or type(branch) is not dict:
        return None
    index, rows = leaf.get("index"), branch.get("rows")
    if type(index) is not int or not 0 <= index <= MAX_INDEX or type(rows) is not list or len(rows) > MAX_BRANCH_ROWS:
        return None
    blob = _fast_b64(leaf.get("blob"))
    if blob is None:
        return None
    pairs = []
    for row in rows:
        if type(row) is not list or len(row) != 2:
            return None
        left, right = _fast_b64(row[0]), _fast_b64(row[1])
        if left is None or right is None:
            return None
        pairs.append((left, right))
    return Proof(MerkleLeaf(index, blob), MerkleBranch(pairs))


# --------------------------------------------------------------------------- the scheme


def _check_fraction(v: Any) -> float | None:
    if v is None:
        return None
    if type(v) not in (int, float) or not (math.isfinite(v) and 0 <= v <= 1):
        raise HeartbeatFormatError("check_fraction must be null or a number in [0, 1]")
    return v


class Merkle:
    """The heartbeat object.  The server holds the key; the public copy has key ``b""``."""

    def __init__(self, check_fraction: float | None = None, key: bytes | None = None) -> None:
        self.check_fraction = check_fraction
        self.key = os.urandom(32) if key is None else bytes(key)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Merkle):
            return NotImplemented
        # the key is the node's secret: compared in constant time like every other secret
        return self.check_fraction == other.check_fraction and hmac.compare_digest(self.key, other.key)

    def __repr__(self) -> str:
        return f"Merkle(check_fraction={self.check_fraction!r}, key=<{len(self.key)} bytes>)"

    # --- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"key": hb_encode(self.key), "check_fraction": self.check_fraction}

    def public_dict(self) -> dict[str, Any]:
        return {"key": "", "check_fraction": self.check_fraction}

    def get_public(self) -> Merkle:
        return Merkle(self.check_fraction, b"")

    @classmethod
    @_format_errors
    def from_dict(cls, d: Any) -> Merkle:
        key = _blob(_get(d, "key"), "key")
        return cls(_check_fraction(_get(d, "check_fraction")), key)

    # --- state signing
    def sign_state(self, state: State) -> None:
        state.hmac = hmac.digest(self.key, state.signed_message(), "sha256")

    def check_state(self, state: State) -> bool:
        expected = hmac.digest(self.key, state.signed_message(), "sha256")
        return hmac.compare_digest(expected, state.hmac)

    def _require_valid(self, state: State) -> None:
        if not self.check_state(state):
            raise HeartbeatError("Signature invalid on state.")

    # --- protocol
    def encode(
        self,
        reader: Reader,
        n: int = 256,
        seed: bytes | None = None,
        chunksz: int | None = None,
        filesz: int | None = None,
        *,
        timestamp: float,
    ) -> tuple[Tag, State]:
        """Precompute ``n`` challenges over ``reader``; returns the public tag and the
        signed server state, made at ``timestamp`` (the caller's clock)."""
        if n < 1:
            raise ValueError("n must be >= 1")
        if filesz is None:
            filesz = reader_size(reader)
        if chunksz is None:
            if self.check_fraction is not None:
                chunksz = int(self.check_fraction * filesz)
            else:
                chunksz = DEFAULT_CHUNKSZ
        if seed is None:
            seed = os.urandom(32)
        state = State(index=0, seed=bytes(seed), n=n, timestamp=timestamp)
        leaves = []
        s = next_seed(self.key, state.seed)
        for i in range(n):
            leaves.append(MerkleLeaf(i, chunk_hash(reader, s, filesz, chunksz)))
            s = next_seed(self.key, s)
        tree = MerkleTree.build(leaves)
        state.root = tree.root
        self.sign_state(state)
        return Tag(tree.stripped(), chunksz, filesz), state

    def gen_challenge(self, state: State) -> Challenge:
        """Next challenge; advances and re-signs ``state`` in place."""
        self._require_valid(state)
        if state.index >= state.n:
            raise HeartbeatError("Out of challenges.")
        state.seed = next_seed(self.key, state.seed)
        challenge = Challenge(state.seed, state.index)
        state.index += 1
        self.sign_state(state)
        return challenge

    def prove(self, reader: Reader, challenge: Challenge, tag: Tag) -> Proof:
        """Farmer side (the key is not used)."""
        filesz = tag.filesz if tag.filesz is not None else reader_size(reader)
        try:
            branch = tag.tree.get_branch(challenge.index)
        except IndexError:
            raise HeartbeatError("Challenge index out of range for tag.") from None
        blob = chunk_hash(reader, challenge.seed, filesz, tag.chunksz)
        return Proof(MerkleLeaf(challenge.index, blob), branch)

    def verify(self, proof: Proof, challenge: Challenge, state: State) -> bool:
        """Server side: does ``proof`` answer ``challenge``, the challenge ``state`` issued last?
        Raises HeartbeatError if the state signature is bad.

        Only the holder of the bytes can pass: the proof is bound to the leaf slot the challenge
        names, not merely to some path up to the root (the tag holds every node, so a shorter path
        from an inner node whose children's bytes end in the index's digits would otherwise pass:
        docs/protocol-v1.md, Merkle heartbeat). The challenge is the state's (its seed, index + 1 =
        the state's index) and below ``n``; the leaf is of that index, with an HMAC-SHA256 blob; the
        branch has one row per level of the tree of ``n`` leaves, each holding the running hash on
        the side the index's bit at that level names."""
        self._require_valid(state)
        index = challenge.index
        if index != state.index - 1:
            return False
        if not hmac.compare_digest(challenge.seed, state.seed):
            return False
        if not index < state.n:
            return False
        leaf = proof.leaf
        if leaf.index != index:
            return False
        if len(leaf.blob) != LEAF_SIZE:
            return False
        rows = proof.branch.rows
        if len(rows) != tree_order(state.n):
            return False
        h = leaf.get_hash()
        for left, right in rows:
            if (right if index & 1 else left) != h:
                return False
            h = _sha256(left + right)
            index >>= 1
        return hmac.compare_digest(h, state.root)


def encode_seeded(
    key: bytes,
    seed_hex: str,
    size: int,
    n: int = 256,
    check_fraction: float | None = None,
    root_seed: bytes | None = None,
    *,
    timestamp: float,
) -> tuple[Tag, State]:
    """Encode the RandomIO prototype chunk ``RandomIO(seed_hex, size)`` (the 32-hex
    string itself is the RandomIO seed, as in the original node)."""
    return Merkle(check_fraction, key).encode(
        RandomIO(seed_hex, size), n=n, seed=root_seed, filesz=size, timestamp=timestamp
    )
