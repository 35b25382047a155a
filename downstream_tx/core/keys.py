"""Keys derived from the node secret (32 random bytes made on first start, kept in the database).

None of them is ever sent or logged."""

from __future__ import annotations

import hashlib
import hmac


class NodeKeys:
    def __init__(self, secret: bytes):
        self._secret = secret

    @property
    def secret(self) -> bytes:
        """The node secret itself: seeds of v0 challenge batches are derived from it."""
        return self._secret

    def heartbeat_key(self) -> bytes:
        """The v1 Merkle heartbeat key."""
        return hmac.new(self._secret, b"heartbeat-key", hashlib.sha256).digest()

    def hash_ip(self, ip: str | None) -> str | None:
        """What the node keeps of a client address (never the address)."""
        if not ip:
            return None
        return hmac.new(self._secret, b"ip:" + ip.encode(), hashlib.sha256).hexdigest()
