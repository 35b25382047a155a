"""The stats job: refresh the database gauges of ``/metrics``, warn about overdue work, and write
this process's per-hour challenge results for the dashboard (``jobs/history.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from downstream_tx.config import Config, overdue_grace
from downstream_tx.db.history import HistoryStore
from downstream_tx.db.stats import Counts, StatsStore
from downstream_tx.jobs.history import HourlyResults, write_history
from downstream_tx.jobs.periodic import PeriodicJob

log = Logger()


def stats_job(stats: StatsStore, config: Config, clock: Any, metrics: Any = None,
              history: tuple[HistoryStore, HourlyResults] | None = None,
              observer: Callable[[str, float, bool], None] | None = None) -> PeriodicJob:
    """``history``: where to write the per-hour results a recorder (observing the node's results)
    counted, every pass. ``observer``: told of each pass (metrics)."""

    async def refresh() -> None:
        try:
            counts: Counts = await stats.counts(clock.seconds(), overdue_grace(config), config.vetting_audits)
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
        if history is not None:
            store, recorder = history
            await write_history(store, recorder, config.history_retention, clock.seconds())
        return None

    return PeriodicJob("stats", refresh, config.stats_interval, clock, observer)
