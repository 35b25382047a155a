"""v0 hash challenges (docs/protocol-v0.md, Hash challenges).

* Seeds of a batch: ``seed_i = HMAC-SHA256(key=secret, msg=root_seed || be32(i))`` for
  ``i = 0 .. count-1``.  This derivation is our own definition (the API only requires
  seeds to be re-derivable from ``root_seed`` and the node secret).
* Answer: ``hex(HMAC-SHA256(key=seed, msg=whole chunk))``, lowercase.  Keying the hash
  with the seed stops a farmer from keeping a hash midstate instead of the data.
* Batch Merkle root: leaves ``SHA256(seed || answer bytes)`` in batch order, parents
  ``SHA256(left || right)``, an odd last node is promoted unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO

__all__ = ["answer", "answer_and_digest", "batch_answers", "derive_seeds", "merkle_root"]

_BUFSIZE = 1 << 20


def derive_seeds(secret: bytes, root_seed: bytes, count: int) -> list[bytes]:
    """``count`` 32-byte seeds: ``HMAC-SHA256(secret, root_seed || i.to_bytes(4, "big"))``."""
    if not 0 <= count < 1 << 32:
        raise ValueError("count out of range")
    return [
        hmac.digest(secret, root_seed + i.to_bytes(4, "big"), "sha256") for i in range(count)
    ]


def _feed(macs: Sequence[Any], source: Any, bufsize: int) -> None:
    """Feed every MAC from one pass over ``source`` (bytes, a reader with
    ``read_at``, a path, or a binary file object)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        for mac in macs:
            mac.update(source)
        return
    if hasattr(source, "read_at"):
        size = getattr(source, "size", None)
        if size is None:
            size = len(source)
        pos = 0
        while pos < size:
            buf = source.read_at(pos, min(bufsize, size - pos))
            if not buf:
                break
            for mac in macs:
                mac.update(buf)
            pos += len(buf)
        return
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb", buffering=0) as fh:
            _feed_fileobj(macs, fh, bufsize)
        return
    _feed_fileobj(macs, source, bufsize)


def _feed_fileobj(macs: Sequence[Any], fh: BinaryIO, bufsize: int) -> None:
    while True:
        buf = fh.read(bufsize)
        if not buf:
            return
        for mac in macs:
            mac.update(buf)


def answer(seed: bytes, data: Any) -> str:
    """Hex answer to one challenge over ``data`` (bytes, a ``read_at`` reader, a path or
    a binary file object)."""
    return batch_answers([seed], data)[0]


def answer_and_digest(seed: bytes, source: Any, bufsize: int = _BUFSIZE) -> tuple[str, str]:
    """The hex answer to one challenge and the hex SHA-256 of the same bytes, from ONE read pass
    (a farmer checks what it holds against the file hash while it answers)."""
    mac = hmac.new(seed, digestmod=hashlib.sha256)
    digest = hashlib.sha256()
    _feed([mac, digest], source, bufsize)
    return mac.hexdigest(), digest.hexdigest()


def batch_answers(seeds: Iterable[bytes], source: Any, bufsize: int = _BUFSIZE) -> list[str]:
    """Answers to all ``seeds`` computed in ONE read pass over ``source``."""
    if bufsize <= 0:
        raise ValueError("bufsize must be positive")
    macs = [hmac.new(seed, digestmod=hashlib.sha256) for seed in seeds]
    if macs:
        _feed(macs, source, bufsize)
    return [mac.hexdigest() for mac in macs]


def merkle_root(seeds: Sequence[bytes], answers_hex: Sequence[str]) -> bytes:
    """Root committing to a batch of (seed, answer) pairs."""
    if len(seeds) != len(answers_hex):
        raise ValueError("seeds and answers differ in length")
    if not seeds:
        raise ValueError("no leaves")
    level = [
        hashlib.sha256(seed + bytes.fromhex(ans)).digest()
        for seed, ans in zip(seeds, answers_hex)
    ]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
