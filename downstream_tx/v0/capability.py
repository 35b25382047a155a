"""The download capability of a v0 contract (docs/protocol-v0.md, "Downloads").

A contract's download URL is ``<public url>/api/download/<file_hash>?cap=<contract id>.<key>``:
``key`` is 16 random bytes (32 lowercase hex characters) made when the contract is made. The node
stores only ``SHA-256(key)``, so a copy of the database cannot mint a capability (the node secret is
in the database too, which is why the key is not an HMAC under it); a request's key is hashed and
compared with the stored hash in constant time, after one primary-key read of the contract.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import NamedTuple

#: the query parameter that carries the capability
PARAMETER = "cap"
KEY_BYTES = 16
#: a contract id (no leading zero, at most 18 digits: it fits a signed 64-bit column) and the key
_CAPABILITY = re.compile(r"([1-9][0-9]{0,17})\.([0-9a-fA-F]{32})")


class Capability(NamedTuple):
    contract_id: int
    key: bytes

    def __str__(self) -> str:
        return f"{self.contract_id}.{self.key.hex()}"

    @property
    def key_hash(self) -> bytes:
        """What the database holds of the key."""
        return key_hash(self.key)


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def key_hash(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def parse_capability(text: str | None) -> Capability | None:
    """The capability in a ``cap`` query value, or None when it is absent or not one (the caller
    answers both like an unknown file: the reply must not tell a stored file from an unknown one)."""
    if text is None:
        return None
    m = _CAPABILITY.fullmatch(text)
    if m is None:
        return None
    return Capability(int(m.group(1)), bytes.fromhex(m.group(2)))
