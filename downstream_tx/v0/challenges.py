"""The v0 hash challenges: batches computed from a stored file's bytes, the per-file supply kept
above a low-water mark, and the timer pass that issues them (docs/protocol-v0.md, "Timing").

A challenge's answer is ``HMAC-SHA256(key=seed, msg=the stored bytes)``; a batch of seeds is
derived from the node secret and a root seed, and hashed on a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.core.context import Blocking, Results, drain
from downstream_tx.db.challenges import ChallengeStore
from downstream_tx.db.contracts import ContractStore, TickResult
from downstream_tx.db.files import FileStore
from downstream_tx.errors import INVALID, NodeError
from downstream_tx.heartbeat import hashchal
from downstream_tx.v0.chunkstore import ChunkStore, Progress

log = Logger()

#: contracts per page of the timer pass (one transaction each)
PASS_PAGE = 5000


class ChallengeSupply:
    def __init__(self, chunks: ChunkStore, challenges: ChallengeStore, files: FileStore, contracts: ContractStore,
                 config: Config, clock: Any, blocking: Blocking, secret: bytes, results: Results):
        self.chunks = chunks
        self.challenges = challenges
        self.files = files
        self.contracts = contracts
        self.config = config
        self.clock = clock
        self.blocking = blocking
        #: the node secret the challenge seeds are derived from
        self.secret = secret
        self.results = results
        self._topping_up: set[int] = set()

    async def generate(self, file_id: int, file_hash: str, root_seed: bytes | None = None,
                       count: int | None = None, progress: Progress | None = None) -> dict:
        """Compute (worker thread) and store a challenge batch (random root seed unless given);
        ``progress(bytes read, total)`` follows the read pass over the file."""
        root_seed = os.urandom(32) if root_seed is None else root_seed
        count = self.config.challenge_batch if count is None else count
        seeds, answers, root = await self.blocking(self._compute, file_hash, root_seed, count, progress)
        batch_id = await self.challenges.add_batch(file_id, root_seed, root, seeds, answers,
                                                               self.clock.seconds())
        return {"batch_id": batch_id, "file_hash": file_hash, "root_seed": root_seed.hex(),
                "merkle_root": root.hex(), "count": count}

    def _compute(self, file_hash: str, root_seed: bytes, count: int, progress: Progress | None = None):
        seeds = hashchal.derive_seeds(self.secret, root_seed, count)
        path = self.chunks.path_for(file_hash)
        if progress is None:
            answers = hashchal.batch_answers(seeds, path)
        else:
            with open(path, "rb") as f:
                answers = hashchal.batch_answers(seeds, _ReadProgress(f, os.fstat(f.fileno()).st_size, progress))
        return seeds, answers, hashchal.merkle_root(seeds, answers)

    async def top_up(self, file_ids: Iterable[int] | None = None, low_water: int | None = None) -> int:
        """Generate a new batch for every file (of ``file_ids``, or all) under the low-water mark.
        A file already being topped up is skipped; the others still are. Returns batches made."""
        low_water = self.config.challenge_low_water if low_water is None else low_water
        low = await self.challenges.low_files(None if file_ids is None else list(file_ids), low_water)
        made = 0
        for file_id in low:
            if file_id in self._topping_up:
                continue
            self._topping_up.add(file_id)
            try:
                row = await self.files.get(file_id)
                if row is None or row.removed is not None:
                    continue
                await self.generate(file_id, row.file_hash)
                made += 1
            except Exception:
                log.failure("challenge top-up for file {file_id} failed", file_id=file_id)
            finally:
                self._topping_up.discard(file_id)
        return made

    def top_up_soon(self, file_ids: list[int], low_water: int | None = None) -> None:
        """Start a top-up without making the caller wait for it (it logs its own errors)."""
        defer.ensureDeferred(self.top_up(file_ids, low_water))

    async def issue_due(self, forgive: tuple[float, float] | None = None) -> TickResult:
        """The v0 part of a timer pass: issue due challenges, count misses (none for a deadline the
        ``forgive`` window covers), fail contracts, top up files whose challenges ran low."""
        config = self.config
        now = self.clock.seconds()
        total = await drain(lambda: self.contracts.issue_due(now, config.max_failures, PASS_PAGE, forgive),
                            TickResult())
        self.results.count("miss", total.missed)
        if total.file_ids:
            # a starved contract means its file has no unused challenge at all: top up regardless
            floor = 1 if total.starved else 0
            await self.top_up(total.file_ids, max(config.challenge_low_water, floor))
        if total.starved:
            filled = await self.contracts.fill_starved(self.clock.seconds())
            total.issued += filled
            total.starved -= filled
        return total


def check_batch_request(count: int, root_seed: bytes | None) -> None:
    """An operator's batch request (``downstream-admin challenges generate``)."""
    if not 1 <= count <= 100_000:
        raise NodeError(INVALID, "invalid_count", "count must be from 1 to 100000")
    if root_seed is not None and len(root_seed) != 32:
        raise NodeError(INVALID, "invalid_root_seed", "root seed must be 32 bytes (64 hex characters)")


class _ReadProgress:
    """A binary file whose reads report (bytes read, total) to ``progress``."""

    def __init__(self, f: Any, total: int, progress: Progress):
        self.f, self.total, self.progress, self.done = f, total, progress, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.done += len(data)
        self.progress(self.done, self.total)
        return data
