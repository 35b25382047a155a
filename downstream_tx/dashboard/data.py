"""What the dashboard shows, gathered through the node's stores and services: the status API's
queries for farmers (``StatusStore``, the same rows and the same JSON fields as ``v1/status.py``),
each farmer's activity as ``downstream-admin`` shows it (``core/farmers.py``: passes, fails, misses,
last seen — one definition for both), its address's standing (``core/reputation.py``), the gauges'
counts (``db/stats.py``), the per-hour history (``db/history.py``), the jobs lease and a few bounded
extras (``OverviewStore``). Every list is a page; nothing here loads all contracts or all farmers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from downstream_tx.config import Config, overdue_grace
from downstream_tx.core.farmers import Farmers
from downstream_tx.core.reputation import ReputationService
from downstream_tx.db import overview
from downstream_tx.db.farmers import FarmerSummary
from downstream_tx.db.history import HOUR, HourRow
from downstream_tx.db.lease import JOBS, LeaseStore
from downstream_tx.db.meta import MetaStore
from downstream_tx.db.overview import OverviewStore
from downstream_tx.db.stats import StatsStore
from downstream_tx.db.status import SORT_COLUMNS, STANDING_SORTS, StatusStore
from downstream_tx.domain.rules import Rules
from downstream_tx.v1.status import Status, farmer_dict
from downstream_tx.version import full_version

DAY = 24 * HOUR
#: farmers per page unless the page asks for another number (1..MAX_LIMIT)
DEFAULT_LIMIT = 25
MAX_LIMIT = 200
#: longest address search text
MAX_SEARCH = 64
#: the farmer list's sort keys: the status list's (but ``heartbeats``, a v1-only count: the list shows
#: every farmer's passes) and the standing's
SORTS = tuple(k for k in SORT_COLUMNS if k != "heartbeats") + tuple(STANDING_SORTS)


@dataclass(frozen=True)
class Bucket:
    """Challenge results of one hour or one day (``start`` in epoch seconds)."""

    start: float
    passes: int = 0
    misses: int = 0
    fails: int = 0

    @property
    def total(self) -> int:
        return self.passes + self.misses + self.fails


@dataclass
class Overview:
    version: str
    now: float
    uptime: float  # seconds this process has served
    farmers_online: int
    farmers_active: int
    farmers_total: int
    contracts: dict[str, int]
    due: int
    overdue: int
    timer_lag: float | None  # seconds since the challenge timer last completed a pass
    pool: list[tuple[int, int, int]]  # (chunk size, ready, target)
    under_replicated: int
    under_rows: list[overview.UnderReplicated]
    countries: list[tuple[str, int]]
    hourly: list[Bucket]  # the last 24 hours, oldest first
    daily: list[Bucket]  # the last 30 days, oldest first


@dataclass
class Farmer:
    """One farmer (a token) as the dashboard shows it."""

    status: dict[str, Any]  # the status API's object
    activity: FarmerSummary | None  # as downstream-admin farmer list shows it
    standing: dict[str, Any]  # its address's reputation (core/reputation.py: ``ReputationService.of``)


@dataclass
class FarmerList:
    farmers: list[Farmer]
    sort: str = "id"
    descending: bool = False
    page: int = 0
    limit: int = DEFAULT_LIMIT
    search: str = ""
    online: bool = False
    has_next: bool = False


@dataclass
class FarmerDetail:
    farmer: dict[str, Any]  # the status API's /status/show object
    results: dict[str, int]
    at_risk: list[overview.ContractRow] = field(default_factory=list)
    now: float = 0.0
    activity: FarmerSummary | None = None
    standing: dict[str, Any] = field(default_factory=dict)
    rules: Rules = field(default_factory=Rules)


@dataclass
class NodePanel:
    """Who runs what, read at each page: the jobs lease, the database's answer time, this process."""

    now: float  # when the page was made
    instance: str  # the process that made it
    leader: str | None  # the instance holding the jobs lease (None: nobody holds it now)
    generation: int | None
    lease_age: float | None  # seconds since the holder last renewed it
    lease_ttl: float
    db_ms: float  # the database's answer to SELECT 1, in milliseconds

    @property
    def leading(self) -> bool:
        return self.leader == self.instance


def buckets(rows: list[HourRow], first_hour: int, count: int, hours_each: int) -> list[Bucket]:
    """``count`` consecutive buckets of ``hours_each`` hours from ``first_hour`` (empty ones included)."""
    sums = [[0, 0, 0] for _ in range(count)]
    for r in rows:
        i = (r.hour - first_hour) // hours_each
        if 0 <= i < count:
            sums[i][0] += r.passes
            sums[i][1] += r.misses
            sums[i][2] += r.fails
    return [Bucket((first_hour + i * hours_each) * HOUR, *s) for i, s in enumerate(sums)]


@dataclass(frozen=True)
class DashboardStores:
    """What the dashboard reads, beside the services it shares with the status API and the admin
    command: the overview's and the farmer page's queries, the timer's last pass, the list's rows,
    the node panel's ping and lease, and the reputation rules its pages explain."""

    overview: OverviewStore
    meta: MetaStore
    status: StatusStore
    stats: StatsStore
    leases: LeaseStore
    rules: Rules


class DashboardData:
    """The dashboard's service: one method per page part, each a few bounded transactions.

    The overview is kept for ``cache_seconds`` (it counts contracts like the stats job does), so a
    page reloaded by many browsers costs one set of queries per period."""

    def __init__(self, stores: DashboardStores, status: Status, farmers: Farmers, reputation: ReputationService,
                 config: Config, clock: Any, instance: str, started: float, cache_seconds: float = 10.0):
        self.stores = stores
        self.config = config
        self.clock = clock
        #: this process among the instances sharing the database (the node panel)
        self.instance = instance
        self.status = status
        self.farmers_service = farmers
        self.reputation = reputation
        self.started = started
        self.cache_seconds = cache_seconds
        self._cached: tuple[float, Overview] | None = None

    async def overview(self) -> Overview:
        now = self.clock.seconds()
        if self._cached is not None and 0 <= now - self._cached[0] < self.cache_seconds:
            return self._cached[1]
        config, stores = self.config, self.stores
        hour = int(now // HOUR)
        first_day_hour = (int(now // DAY) - 29) * 24
        read = await stores.overview.overview(now, overdue_grace(config), min(first_day_hour, hour - 23), hour)
        counts, rows = read.counts, read.hours
        last_alive = await stores.meta.last_alive()
        targets = dict(config.seeded_pool)
        sizes = sorted(set(targets) | set(counts.pool))
        result = Overview(
            version=full_version(), now=now, uptime=max(0.0, now - self.started),
            farmers_online=read.farmers_online, farmers_active=counts.farmers_active,
            farmers_total=read.farmers_total,
            contracts={s: counts.contracts.get(s, 0) for s in ("active", "ended", "failed")},
            due=sum(counts.due.values()), overdue=sum(counts.overdue.values()),
            timer_lag=None if last_alive is None else max(0.0, now - last_alive),
            pool=[(s, counts.pool.get(s, 0), targets.get(s, 0)) for s in sizes],
            under_replicated=read.under_replicated, under_rows=read.under_rows, countries=read.countries,
            hourly=buckets(rows, hour - 23, 24, 1),
            daily=buckets(rows, first_day_hour, 30, 24),
        )
        self._cached = (now, result)
        return result

    async def farmers(self, sort: str = "id", descending: bool = False, page: int = 0, limit: int = DEFAULT_LIMIT,
                      search: str = "", online: bool = False) -> FarmerList:
        """A page of the status list (same query, same objects), optionally searched by address."""
        rows = await self.stores.status.farmers(self.clock.seconds(), online, sort, descending, limit + 1,
                                                     page * limit, search or None)
        more, rows = len(rows) > limit, rows[:limit]
        activity = {a.farmer_id: a for a in await self.farmers_service.summaries([r.farmer_id for r in rows])}
        standing = await self.reputation.of(sorted({r.address for r in rows}))
        return FarmerList([Farmer(farmer_dict(r), activity.get(r.farmer_id), standing[r.address]) for r in rows],
                          sort, descending, page, limit, search, online, has_next=more)

    async def farmer(self, farmer_id: str) -> FarmerDetail:
        """The farmer's /status/show object (404 as there for an unknown id), its contracts, activity
        and standing."""
        shown = await self.status.farmer(farmer_id)
        results = await self.stores.overview.farmer(shown["id"])
        [activity] = await self.farmers_service.summaries([shown["id"]]) or [None]
        standing = (await self.reputation.of([shown["address"]]))[shown["address"]]
        return FarmerDetail(shown, results.results, results.at_risk, self.clock.seconds(), activity, standing,
                            self.stores.rules)

    async def node(self) -> NodePanel:
        """The node panel: read at every page (two small queries), never cached."""
        stores = self.stores
        started = time.monotonic()
        await stores.stats.ping()
        db_ms = (time.monotonic() - started) * 1000
        lease = await stores.leases.state(JOBS)
        now = self.clock.seconds()
        held = lease is not None and bool(lease.holder) and lease.expires > now
        return NodePanel(now, self.instance, lease.holder if held else None,
                         lease.generation if lease is not None else None,
                         max(0.0, now - lease.renewed) if held else None, self.config.lease_ttl, db_ms)

