"""KeyedPRF of storj-heartbeat 0.1.10 (docs/protocol-v1.md, KeyedPRF).

The original creates ONE AES-CFB-8 cipher (zero IV) per evaluation and encrypts the
same data block again and again (its nonce is reset inside the loop) until the masked
output falls below ``range``.  The carried-over CFB shift register is what makes each
retry differ, so this must be one continuous encryptor, never re-created.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47 keeps CFB8 under "decrepit"
    from cryptography.hazmat.decrepit.ciphers.modes import CFB8
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB8

__all__ = ["keyed_prf", "keyed_prf_attempts"]

_ZERO_IV = bytes(16)


def keyed_prf_attempts(key: bytes, range_: int, x: int) -> tuple[int, int]:
    """Return ``(value, attempts)``: the PRF output in ``[0, range_)`` and how many
    encryptions it took.  ``key`` is an AES key (16, 24 or 32 bytes)."""
    if range_ <= 0:
        raise ValueError("range must be positive")
    bits = range_.bit_length()
    nbytes = (bits + 7) // 8
    mask = (1 << bits) - 1
    digest = hashlib.sha256(str(x).encode("ascii")).digest()
    data = digest[:nbytes] if nbytes <= 32 else digest + bytes(nbytes - 32)
    enc = Cipher(algorithms.AES(bytes(key)), CFB8(_ZERO_IV)).encryptor()
    attempts = 0
    while True:
        attempts += 1
        num = mask & int.from_bytes(enc.update(data), "big")
        if num < range_:
            return num, attempts


def keyed_prf(key: bytes, range_: int, x: int) -> int:
    """``KeyedPRF(key, range_).eval(x)``: an integer in ``[0, range_)``."""
    return keyed_prf_attempts(key, range_, x)[0]
