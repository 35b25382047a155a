"""The seeded pool: v1 chunks encoded ahead of time, so ``/chunk`` only hands them out.

A seeded chunk's bytes are ``RandomIO(seed, size)``: farmers regenerate them, the node keeps only
the Merkle heartbeat's tag and state. Encoding hashes every byte: it runs on a worker thread,
``POOL_PASS_BYTES`` per timer pass.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import orjson

from downstream_tx.config import Config
from downstream_tx.core.context import Blocking
from downstream_tx.db.seeded import EncodedChunk, SeededStore
from downstream_tx.heartbeat import RandomIO, encode_seeded

#: bytes of seeded data encoded per pool pass (a pass never delays a stop for long)
POOL_PASS_BYTES = 64 << 20
#: bytes hashed per read while computing a chunk's file hash
READ_BLOCK = 1 << 20


class SeededPool:
    def __init__(self, store: SeededStore, config: Config, clock: Any, blocking: Blocking, heartbeat_key: bytes):
        self.store = store
        self.config = config
        self.clock = clock
        self.blocking = blocking
        #: the key of the node's Merkle heartbeats (derived from the node secret, never sent)
        self.heartbeat_key = heartbeat_key

    def encode_chunks(self, size: int, count: int, timestamp: float) -> list[EncodedChunk]:
        """Encode ``count`` fresh seeded chunks of ``size`` bytes (CPU-heavy: a worker thread)."""
        config = self.config
        key = self.heartbeat_key
        out = []
        for _ in range(count):
            seed = os.urandom(16).hex()
            tag, state = encode_seeded(key, seed, size, n=config.seeded_challenges,
                                       check_fraction=config.seeded_check_fraction, timestamp=timestamp)
            digest = hashlib.sha256()
            stream = RandomIO(seed, size)
            for offset in range(0, size, READ_BLOCK):
                digest.update(stream.read_at(offset, min(READ_BLOCK, size - offset)))
            out.append(EncodedChunk(seed, size, digest.hexdigest(), orjson.dumps(state.to_dict()).decode(),
                                    orjson.dumps(tag.to_dict()).decode()))
        return out

    async def refill(self) -> int:
        """Encode and pool the chunks missing from ``seeded_pool``, at most ``POOL_PASS_BYTES`` per
        pass (the timer calls this again). Returns the chunks added."""
        config = self.config
        seeded = self.store
        counts = await seeded.pool_counts()
        budget = POOL_PASS_BYTES
        added = 0
        for size, want in config.seeded_pool:
            missing = want - counts.get(size, 0)
            while missing > 0 and budget > 0:
                batch = max(1, min(missing, budget // size))
                chunks = await self.blocking(self.encode_chunks, size, batch, self.clock.seconds())
                added += await seeded.pool_add(chunks, config.seeded_interval, self.clock.seconds(), cap=want)
                missing -= batch
                budget -= batch * size
        return added
