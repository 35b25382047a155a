"""The outcome purge: every :data:`INTERVAL` seconds, delete the transaction ids older than
``db.outcomes.KEEP`` (``db/outcomes.py``), :data:`BATCH` at a time, each batch its own
transaction, at most :data:`BATCHES` per pass (the next pass takes the rest). Deleting ids that are
gone already changes nothing, so a retried or repeated pass is harmless. On SQLite the table stays
empty and a pass is one indexed read (and the lease's fence).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from downstream_tx.db.outcomes import KEEP, OutcomeStore
from downstream_tx.jobs.periodic import PeriodicJob

NAME = "txn_outcomes"
INTERVAL = 30.0
BATCH = 5000
BATCHES = 20


@dataclass
class OutcomePurge:
    deleted: int = 0
    batches: int = 0
    more: bool = False

    def describe(self) -> str:
        if not self.deleted:
            return ""
        return f"purged {self.deleted} transaction ids" + (" (more waiting)" if self.more else "")


async def purge_pass(store: OutcomeStore, now: float, batch: int = BATCH, batches: int = BATCHES) -> OutcomePurge:
    """Purge up to ``batches`` batches of ids older than ``now - KEEP``."""
    done = OutcomePurge()
    for _ in range(batches):
        result = await store.purge(now - KEEP, batch)
        done.deleted += result.deleted
        done.batches += 1
        done.more = result.more
        if not result.more:
            break
    return done


def outcomes_job(store: OutcomeStore, clock: Any,
                 observer: Callable[[str, float, bool], None] | None = None) -> PeriodicJob:
    return PeriodicJob(NAME, lambda: purge_pass(store, clock.seconds()), INTERVAL, clock, observer)
