"""The stats job: refresh the database gauges of ``/metrics`` and warn about overdue work."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config
from downstream_tx.db.stats import Counts, StatsStore
from downstream_tx.jobs.periodic import PeriodicJob

log = Logger()


def overdue_grace(config: Config) -> float:
    """How long past its deadline a contract may wait for the challenge timer before it counts as
    overdue: five timer ticks, at least 10 s."""
    return max(5 * config.tick, 10.0)


def stats_job(stats: StatsStore, config: Config, clock: Any, metrics: Any = None) -> PeriodicJob:
    async def refresh() -> None:
        try:
            counts: Counts = await stats.counts(clock.seconds(), overdue_grace(config))
        except Exception:
            if metrics is not None:
                metrics.set_counts(None)
            raise
        if metrics is not None:
            metrics.set_counts(counts)
        overdue = sum(counts.overdue.values())
        if overdue:
            log.warn("{overdue} contracts are overdue: their deadline passed more than {grace:g}s ago and the "
                     "challenge timer has not processed them", overdue=overdue, grace=overdue_grace(config))
        return None

    return PeriodicJob("stats", refresh, config.stats_interval, clock)
