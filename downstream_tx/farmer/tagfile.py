"""A v1 contract's tag on disk, in a compact form of our own that is read back whole for each proof.

The tag the node sends (about 24 KB of JSON for 256 challenges) is kept out of memory: a farmer's
memory grows with its contracts, not with their tags. Binary, so that a proof costs a read and a
checksum rather than a JSON parse and hundreds of base64 decodes:

    b"DTXTAG1\\n" | order u8 | width u8 | chunksz u64 | filesz u64 | has_filesz u8
    | 2 * 2^order slots of (length u8, node padded to width bytes) | SHA-256 of all before

A file whose checksum or shape is wrong raises :class:`TagDamaged`.
"""

from __future__ import annotations

import hashlib
import struct

from downstream_tx.heartbeat import MerkleTree, Tag

MAGIC = b"DTXTAG1\n"
_HEAD = struct.Struct(">BBQQB")
_SUM = 32


class TagDamaged(ValueError):
    """The tag file is not one this module wrote, or its bytes changed since."""


def encode_tag(tag: Tag) -> bytes:
    nodes = tag.tree.nodes
    width = max((len(n) for n in nodes), default=0)
    if width > 255:
        raise ValueError("a tag node is longer than 255 bytes")
    parts = [MAGIC, _HEAD.pack(tag.tree.order, width, tag.chunksz, tag.filesz or 0, tag.filesz is not None)]
    parts += [bytes([len(n)]) + n.ljust(width, b"\0") for n in nodes]
    body = b"".join(parts)
    return body + hashlib.sha256(body).digest()


def decode_tag(data: bytes) -> Tag:
    body, checksum = data[:-_SUM], data[-_SUM:]
    if len(data) < len(MAGIC) + _HEAD.size + _SUM or not body.startswith(MAGIC):
        raise TagDamaged("not a tag file")
    if hashlib.sha256(body).digest() != checksum:
        raise TagDamaged("the tag file's checksum does not match")
    order, width, chunksz, filesz, has_filesz = _HEAD.unpack_from(body, len(MAGIC))
    slot = width + 1
    start = len(MAGIC) + _HEAD.size
    count = 2 << order
    if len(body) != start + count * slot:
        raise TagDamaged("the tag file has the wrong length")
    view = memoryview(body)
    nodes = [bytes(view[at + 1:at + 1 + view[at]]) for at in range(start, start + count * slot, slot)]
    return Tag(MerkleTree(nodes, order, []), chunksz, filesz if has_filesz else None)
