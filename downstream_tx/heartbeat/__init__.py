"""Proof-of-storage primitives: RandomIO data, KeyedPRF, the storj-heartbeat Merkle
scheme (protocol v1) and v0 hash challenges."""

from .hashchal import answer, answer_and_digest, batch_answers, derive_seeds, merkle_root
from .merkle import (
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
    Reader,
    State,
    Tag,
    chunk_hash,
    encode_seeded,
    hb_decode,
    hb_encode,
    next_seed,
    reader_size,
)
from .prf import keyed_prf, keyed_prf_attempts
from .randomio import RandomIO, randomio_key

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
    "RandomIO",
    "Reader",
    "State",
    "Tag",
    "answer",
    "answer_and_digest",
    "batch_answers",
    "chunk_hash",
    "derive_seeds",
    "encode_seeded",
    "hb_decode",
    "hb_encode",
    "keyed_prf",
    "keyed_prf_attempts",
    "merkle_root",
    "next_seed",
    "randomio_key",
    "reader_size",
]
