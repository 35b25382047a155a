"""The challenge prune: every ``prune_interval`` seconds, delete the used v0 challenges no contract
points at any more (``db/challenges.py``: :func:`~downstream_tx.db.challenges.prune_txn`), walking
the files in id order, each transaction looking at up to ``PRUNE_FILES`` files and reading at most
``prune_batch`` used challenges, at most ``prune_batches`` transactions per pass. The walk goes on
where the last pass stopped (a new job, e.g. after a change of jobs leader, starts it again from the
first file); a pass that reaches the last file stops there and the next starts the walk again.

Every transaction is complete or not done at all, and deletes only challenges nothing points at and
nothing can point at again, so a retried, repeated or concurrent pass is harmless; like every job
its transactions are fenced by the jobs lease (a pass without the lease deletes nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from downstream_tx.config import Config
from downstream_tx.db.challenges import ChallengeStore
from downstream_tx.jobs.periodic import PeriodicJob

NAME = "challenge_prune"
#: where a walk starts: the first file, from its first challenge
START = (0, 0)


@dataclass
class PrunePass:
    deleted: int = 0
    batches: int = 0
    #: used challenges read (deleted or still pointed at) and files looked at
    read: int = 0
    files: int = 0
    #: the pass stopped at prune_batches before the last file
    more: bool = False

    def describe(self) -> str:
        if not self.deleted:
            return ""
        return (f"deleted {self.deleted} used challenges in {self.batches} batches"
                + (" (more waiting)" if self.more else ""))


class ChallengePrune:
    """The job's pass, with the walk's position between passes."""

    def __init__(self, store: ChallengeStore, config: Config):
        self.store = store
        self.config = config
        self.position = START

    async def __call__(self) -> PrunePass:
        done = PrunePass(more=True)
        for _ in range(self.config.prune_batches):
            batch = await self.store.prune(self.position, self.config.prune_batch)
            done.deleted += batch.deleted
            done.read += batch.read
            done.files += batch.files
            done.batches += 1
            if batch.next is None:
                self.position, done.more = START, False
                break
            self.position = batch.next
        return done


def prune_job(store: ChallengeStore, config: Config, clock: Any,
              observer: Callable[[str, float, bool], None] | None = None) -> PeriodicJob:
    return PeriodicJob(NAME, ChallengePrune(store, config), config.prune_interval, clock, observer)
