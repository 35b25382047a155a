"""The chunk store: stored files' bytes on disk, named by their SHA-256.

Adding a file copies it into the store, encrypted by default (AES-256-CTR with a random per-file
key and nonce, kept in the database), hashing the stored bytes and the original bytes in the same
pass. All methods block: the daemon calls them on a worker thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from downstream_tx.private import make_private_dirs

BLOCK = 1 << 20
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Ingested:
    tmp_path: str
    file_hash: str
    original_hash: str
    size: int
    enc_key: bytes | None


def _cipher(enc_key: bytes) -> Cipher:
    return Cipher(algorithms.AES(enc_key[:32]), modes.CTR(enc_key[32:48]))


class ChunkStore:
    def __init__(self, root: str):
        self.root = root

    def ensure(self) -> None:
        make_private_dirs(self.root)

    def path_for(self, file_hash: str) -> str:
        if not HASH_RE.match(file_hash):
            raise ValueError("not a file hash")
        return os.path.join(self.root, file_hash[:2], file_hash)

    def exists(self, file_hash: str) -> bool:
        return os.path.isfile(self.path_for(file_hash))

    def ingest(self, source: BinaryIO, size: int, encrypt: bool, progress: Progress | None = None) -> Ingested:
        """Copy ``source`` into a temporary file in the store; the caller commits or discards it."""
        self.ensure()
        enc_key = os.urandom(48) if encrypt else None
        encryptor = _cipher(enc_key).encryptor() if enc_key else None
        stored, original = hashlib.sha256(), hashlib.sha256()
        fd, tmp_path = tempfile.mkstemp(prefix=".ingest-", dir=self.root)
        done = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    block = source.read(BLOCK)
                    if not block:
                        break
                    original.update(block)
                    if encryptor is not None:
                        block = encryptor.update(block)
                    stored.update(block)
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, size)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            os.unlink(tmp_path)
            raise
        return Ingested(tmp_path, stored.hexdigest(), original.hexdigest(), done, enc_key)

    def commit(self, ingested: Ingested) -> str:
        path = self.path_for(ingested.file_hash)
        make_private_dirs(os.path.dirname(path))
        os.replace(ingested.tmp_path, path)
        return path

    def discard(self, ingested: Ingested) -> None:
        try:
            os.unlink(ingested.tmp_path)
        except FileNotFoundError:
            pass

    def delete(self, file_hash: str) -> None:
        try:
            os.unlink(self.path_for(file_hash))
        except FileNotFoundError:
            pass

    def export(self, file_hash: str, enc_key: bytes | None, out: BinaryIO, progress: Progress | None = None) -> int:
        """Write the original bytes (decrypted when the file was stored encrypted) to ``out``."""
        decryptor = _cipher(enc_key).decryptor() if enc_key else None
        path = self.path_for(file_hash)
        size = os.path.getsize(path)
        done = 0
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                out.write(decryptor.update(block) if decryptor else block)
                done += len(block)
                if progress is not None:
                    progress(done, size)
        return done
