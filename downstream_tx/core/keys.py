"""Keys derived from the node secret (32 random bytes made on first start, kept in the database).

None of them is ever sent or logged."""

from __future__ import annotations

import hashlib
import hmac

from downstream_tx.core.clients import client_key


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
        """What the node keeps of a client address (never the address): a keyed hash of its client
        key (``core/clients.py``), so every spelling of one client, and every address of one IPv6
        /64, is one value (the per-IP token cap and the rate limit count by it)."""
        if not ip:
            return None
        return hmac.new(self._secret, b"ip:" + client_key(ip).encode(), hashlib.sha256).hexdigest()
