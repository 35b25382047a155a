"""RandomIO 0.2.1-compatible seeded pseudo-random stream (docs/protocol-v1.md, RandomIO).

Byte ``i`` of the stream is byte ``i % 16`` of ``AES-256_K(be128(i // 16 + 1))`` with
``K = SHA256(seed)``; i.e. the AES-CTR keystream with a 128-bit big-endian counter
starting at 1.  Every read is random access: a fresh CTR cipher is positioned at the
block holding the first byte, so no state is carried between reads.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["RandomIO", "randomio_key"]

_PIECE = 64 * 1024


def randomio_key(seed: bytes | str | int) -> bytes:
    """AES key for a seed: SHA256 of the bytes, or of ``str(seed)`` UTF-8 encoded."""
    if isinstance(seed, (bytes, bytearray, memoryview)):
        raw = bytes(seed)
    else:
        raw = str(seed).encode("utf-8")
    return hashlib.sha256(raw).digest()


def _keystream(key: bytes, offset: int, length: int) -> bytes:
    """Keystream bytes ``[offset, offset + length)``."""
    if length <= 0:
        return b""
    block, skip = divmod(offset, 16)
    counter = ((block + 1) % (1 << 128)).to_bytes(16, "big")
    enc = Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()
    out = enc.update(bytes(skip + length))
    return out[skip:] if skip else out


class RandomIO:
    """Readable, seekable seeded stream; ``size`` (if given) bounds every read."""

    def __init__(self, seed: bytes | str | int, size: int | None = None) -> None:
        if size is not None and size < 0:
            raise ValueError("size must be >= 0")
        self._key = randomio_key(seed)
        self.size = size
        self._pos = 0

    def _clip(self, offset: int, length: int) -> int:
        if offset < 0:
            raise ValueError("negative offset")
        if length < 0:
            raise ValueError("negative length")
        if self.size is not None:
            length = max(0, min(length, self.size - offset))
        return length

    def read_at(self, offset: int, length: int) -> bytes:
        """Stream bytes ``[offset, offset + length)`` clipped to ``size``; no state change."""
        return _keystream(self._key, offset, self._clip(offset, length))

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            if self.size is None:
                raise ValueError("read() without a length needs a sized RandomIO")
            n = max(0, self.size - self._pos)
        data = self.read_at(self._pos, n)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            if self.size is None:
                raise ValueError("SEEK_END needs a sized RandomIO")
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        if self.size is None:
            raise TypeError("unsized RandomIO has no length")
        return self.size

    def genfile(self, size: int, path: str = "") -> str:
        """Write ``size`` stream bytes from the current position to ``path``.

        If ``path`` is empty or a directory, a random 32-hex file name is created in it.
        The position advances by ``size``; the ``size`` limit of the object does not apply.
        Returns the path written.
        """
        if size < 0:
            raise ValueError("size must be >= 0")
        if not path or os.path.isdir(path):
            path = os.path.join(path or ".", os.urandom(16).hex())
        pos = self._pos
        end = pos + size
        with open(path, "wb") as fh:
            while pos < end:
                step = min(_PIECE, end - pos)
                fh.write(_keystream(self._key, pos, step))
                pos += step
        self._pos = end
        return path
