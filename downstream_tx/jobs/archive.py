"""The archive job: every ``archive_interval`` seconds, move finished contracts older than
``contract_retention`` out of the hot ``contracts`` table into their tokens' totals
(``db/archive.py``), in batches of ``archive_batch`` contracts, each its own transaction, at most
``archive_batches`` per pass, so one pass never holds the database for long and farmers' requests
run between its batches. A pass that stops early (the batch limit, an error) leaves the rest to
the next: every batch is complete or not done at all, so a retried or repeated pass is harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from downstream_tx.config import Config
from downstream_tx.db.archive import ArchiveStore
from downstream_tx.jobs.periodic import PeriodicJob

NAME = "archive"


@dataclass
class ArchivePass:
    archived: int = 0
    batches: int = 0
    #: the pass stopped at archive_batches with more waiting
    more: bool = False

    def describe(self) -> str:
        if not self.archived:
            return ""
        return (f"archived {self.archived} finished contracts in {self.batches} batches"
                + (" (more waiting)" if self.more else ""))


async def archive_pass(store: ArchiveStore, config: Config, now: float) -> ArchivePass:
    """Archive up to ``archive_batches`` batches of contracts that finished before ``now -
    contract_retention`` (nothing when the retention is 0)."""
    done = ArchivePass()
    if not config.contract_retention:
        return done
    before = now - config.contract_retention
    for _ in range(config.archive_batches):
        batch = await store.archive(before, config.archive_batch)
        done.archived += batch.archived
        done.batches += 1
        done.more = batch.more
        if not batch.more:
            break
    return done


def archive_job(store: ArchiveStore, config: Config, clock: Any,
                observer: Callable[[str, float, bool], None] | None = None) -> PeriodicJob:
    return PeriodicJob(NAME, lambda: archive_pass(store, config, clock.seconds()), config.archive_interval, clock,
                       observer)
