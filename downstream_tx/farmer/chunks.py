"""Chunk files on the farmer's disk and the answers computed from them. Everything here blocks (it
reads and writes files, hashes them) and runs on the farmer's worker threads, never on the reactor.

A farmer never answers with a proof it cannot back: before an answer leaves, the bytes it came from
are checked against what the contract says -- a v0 chunk's SHA-256 against its file hash, in the
same read pass as the answer; a v1 proof's leaf against the tag the node gave. A chunk that is gone
raises :class:`ChunkLost`, one whose bytes are wrong :class:`ChunkDamaged`; the caller says so and
sends nothing for that contract.

Files are read in pieces (the heartbeat module reads a v1 window, and hashes a v0 chunk, one MiB at a
time), so memory does not grow with a chunk's size.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from typing import Any

from downstream_tx.heartbeat import Challenge, FileReader, HeartbeatError, Merkle, RandomIO, Tag, answer_and_digest

from .files import atomic_write, fsync_directory
from .tagfile import TagDamaged, decode_tag, encode_tag

#: the Merkle heartbeat as a farmer holds it: no key (proving needs none)
PUBLIC_MERKLE = Merkle(None, b"")
_PIECE = 1 << 20


class ChunkProblem(Exception):
    """A contract's data cannot back an answer; ``reason`` says why, for the log and the status."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ChunkLost(ChunkProblem):
    """The chunk file (or a v1 contract's tag file) is gone."""


class ChunkDamaged(ChunkProblem):
    """The chunk's bytes (or its tag file) are not what the contract says."""


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def remove_files(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


# --- protocol v1: seeded chunks ---------------------------------------------------------------------


def write_seeded(path: str, tag_path: str, seed: str, size: int, tag: dict[str, Any]) -> None:
    """Write a v1 contract's files: the RandomIO chunk of ``seed`` and its tag. Each appears whole
    (written beside, fsynced, renamed) or not at all; a full disk raises ``OSError(ENOSPC)`` and
    leaves neither."""
    parsed = Tag.from_dict(tag)  # HeartbeatFormatError for a tag the node got wrong
    if parsed.filesz is not None and parsed.filesz != size:
        raise ChunkDamaged(f"the node's tag is for {parsed.filesz} bytes, the chunk has {size}")
    tmp = f"{path}.tmp"
    try:
        RandomIO(seed).genfile(size, tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        atomic_write(tag_path, encode_tag(parsed))
    except BaseException:
        remove_files(tmp, path, tag_path)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def prove_seeded(path: str, tag_path: str, challenge: dict[str, Any], size: int) -> dict[str, Any]:
    """The proof (its wire dict) of ``challenge`` over the stored chunk, made by the heartbeat
    module's own ``prove``, once its leaf matches the node's tag."""
    try:
        with open(tag_path, "rb") as fh:
            tag = decode_tag(fh.read())
    except FileNotFoundError:
        raise ChunkLost("the tag file is missing") from None
    except TagDamaged as e:
        raise ChunkDamaged(str(e)) from None
    parsed = Challenge.from_dict(challenge)
    try:
        reader = FileReader(path)
    except FileNotFoundError:
        raise ChunkLost("the chunk file is missing") from None
    with reader:
        if reader.size != size:
            raise ChunkDamaged(f"the chunk file has {reader.size} bytes, not {size}")
        try:
            proof = PUBLIC_MERKLE.prove(reader, parsed, tag)
        except HeartbeatError as e:
            raise ChunkDamaged(str(e)) from None
    slot = (1 << tag.tree.order) - 1 + parsed.index
    if proof.leaf.get_hash() != tag.tree.nodes[slot]:
        raise ChunkDamaged(f"the bytes of challenge {parsed.index} do not match the contract's tag")
    return proof.to_dict()


# --- protocol v0: downloaded chunks -------------------------------------------------------------------


def answer_stored(path: str, challenge_hex: str, file_hash: str, size: int) -> str:
    """The v0 answer to ``challenge_hex`` (HMAC-SHA256 keyed by it over the whole chunk), once the
    same read pass has shown the chunk's SHA-256 is still its file hash."""
    try:
        held = os.stat(path).st_size
    except FileNotFoundError:
        raise ChunkLost("the chunk file is missing") from None
    if held != size:
        raise ChunkDamaged(f"the chunk file has {held} bytes, not {size}")
    try:
        response, digest = answer_and_digest(bytes.fromhex(challenge_hex), path)
    except FileNotFoundError:
        raise ChunkLost("the chunk file is missing") from None
    if digest != file_hash.lower():
        raise ChunkDamaged("the chunk's SHA-256 is no longer its file hash")
    return response


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, read a piece at a time."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as fh:
        while piece := fh.read(_PIECE):
            digest.update(piece)
    return digest.hexdigest()


def finish_download(part: str, path: str, file_hash: str, size: int) -> None:
    """Check a finished download against its file hash and size, make it durable and give it its
    name; a mismatch removes it and raises :class:`ChunkDamaged`."""
    held = os.stat(part).st_size
    if held != size or sha256_of(part) != file_hash.lower():
        remove_files(part)
        raise ChunkDamaged(f"the downloaded bytes ({held}) are not the chunk the contract names")
    _fsync_file(part)
    os.replace(part, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
