"""Prometheus metrics of one node, in a registry of its own (never the global one).

Counters and histograms are fed by hooks: the HTTP site (every finished request), ``PeriodicJob``
observers (every timer pass), ``Database.observers`` (every transaction) and the node's result
observers (every pass/fail/miss). Gauges about the database's contents are set by the stats job
(``jobs/stats.py``) every ``stats_interval`` seconds, never computed on a scrape. Every metric is
documented in ``docs/operations.md`` (a test checks that).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from downstream_tx.db.downloads import SERVED
from downstream_tx.db.stats import Counts
from downstream_tx.version import full_version

CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
PROTOCOLS = {0: "v0", 1: "v1"}
STATES = ("active", "ended", "failed")
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SLOW_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    """``clock`` is the injected clock (the reactor in the daemon): every timestamp comes from it."""

    content_type = CONTENT_TYPE

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        r = self.registry = CollectorRegistry(auto_describe=True)
        Gauge("downstream_build_info", "Version of the running node (always 1).", ["version"],
              registry=r).labels(full_version()).set(1)
        Gauge("downstream_start_time_seconds", "Unix time the node started.", registry=r).set(clock.seconds())
        # HTTP
        self.requests = Counter("downstream_http_requests", "Finished HTTP requests by route pattern and status.",
                                ["method", "route", "status"], registry=r)
        self.request_seconds = Histogram("downstream_http_request_duration_seconds",
                                         "Time from request headers to the last byte of the response.",
                                         ["route"], buckets=FAST_BUCKETS, registry=r)
        self.in_flight = Gauge("downstream_http_requests_in_flight", "Requests received and not yet answered.",
                               registry=r)
        self.connections = Gauge("downstream_http_connections", "Open connections on the API listener.",
                                 registry=r)
        self.connections_stalled = Gauge("downstream_http_connections_stalled",
                                         "Connections whose answers wait for their client to read them.", registry=r)
        self.connections_closed = Counter("downstream_http_connections_closed",
                                          "Connections the node closed for a connection limit, by limit.",
                                          ["reason"], registry=r)
        # timers
        self.job_runs = Counter("downstream_timer_runs", "Passes of each periodic job.", ["job"], registry=r)
        self.job_failures = Counter("downstream_timer_failures", "Passes of each periodic job that raised.",
                                    ["job"], registry=r)
        self.job_seconds = Histogram("downstream_timer_duration_seconds", "Run time of each pass.", ["job"],
                                     buckets=SLOW_BUCKETS, registry=r)
        self.job_last_success = Gauge("downstream_timer_last_success_timestamp_seconds",
                                      "Unix time the job last finished a pass without error.", ["job"], registry=r)
        # database
        self.txn_seconds = Histogram("downstream_db_transaction_duration_seconds",
                                     "Time of each database transaction attempt, by transaction name.",
                                     ["transaction"], buckets=FAST_BUCKETS, registry=r)
        self.txn_errors = Counter("downstream_db_transaction_errors",
                                  "Transaction attempts that failed (retried or not).", ["transaction"], registry=r)
        self.db_up = Gauge("downstream_db_up", "1 if the last database statistics query succeeded, else 0.",
                           registry=r)
        self.pool_size = Gauge("downstream_db_pool_size", "Most connections the pool may open.", registry=r)
        self.pool_open = Gauge("downstream_db_pool_connections", "Connections the pool holds open.", registry=r)
        self.pool_busy = Gauge("downstream_db_pool_busy", "Pool threads running a transaction now.", registry=r)
        self.pool_waiting = Gauge("downstream_db_pool_waiting", "Transactions queued for a free pool thread.",
                                  registry=r)
        self.lost_commits = _LostCommits()
        r.register(self.lost_commits)
        # domain
        self.results = Counter("downstream_challenge_results", "Challenge outcomes: pass, late_pass, fail or miss.",
                               ["protocol", "result"], registry=r)
        self.downloads = Counter("downstream_downloads", "v0 downloads served: first, resume (inside the "
                                 "window), again (after it, with redownload on).", ["kind"], registry=r)
        self.downloads_refused = Counter("downstream_download_refused",
                                         "v0 download requests refused: window_closed (403), ended, invalid, "
                                         "missing (404).", ["reason"], registry=r)
        self.contracts = Gauge("downstream_contracts", "Contracts by state.", ["state"], registry=r)
        self.due = Gauge("downstream_challenges_due", "Outstanding challenges whose deadline is ahead.",
                         ["protocol"], registry=r)
        self.overdue = Gauge("downstream_challenges_overdue",
                             "Active contracts whose deadline passed more than the grace time ago "
                             "(the challenge timer is behind).", ["protocol"], registry=r)
        self.farmers_online = Gauge("downstream_farmers_online",
                                    "Farmers (tokens) with an active contract not in a run of misses or fails.",
                                    registry=r)
        self.farmers_active = Gauge("downstream_farmers_active", "Farmers (tokens) with any active contract.",
                                    registry=r)
        self.farmers_standing = Gauge(
            "downstream_farmer_standing",
            "Farmers (payout addresses) by reputation standing: ok, suspended, offline (suspended for being offline), "
            "disqualified; contained (a "
            "missed challenge being asked again) and unvetted (ok, fewer than vetting_audits passes) overlap ok.",
            ["standing"], registry=r)
        self.pool_chunks = Gauge("downstream_chunk_pool", "Seeded chunks ready to hand out, by size class.",
                                 ["size"], registry=r)
        self.pool_target = Gauge("downstream_chunk_pool_target", "Configured seeded chunks per size class.",
                                 ["size"], registry=r)
        # scale-out: which process this is, and whether it runs the periodic jobs
        self.instance = Gauge("downstream_instance_info",
                              "This process (always 1): its instance name (host:pid, or instance_name[/worker]) "
                              "and --workers index.", ["instance", "worker"], registry=r)
        self.jobs_leader = Gauge("downstream_jobs_leader",
                                 "1 while this process holds the jobs lease and runs the periodic jobs, else 0.",
                                 registry=r)
        self.lease_age = Gauge("downstream_jobs_lease_age_seconds",
                               "Seconds since the jobs lease's holder (any process) last renewed it, as this "
                               "process last saw it.", registry=r)
        self.stats_updated = Gauge("downstream_stats_last_update_timestamp_seconds",
                                   "Unix time the database gauges were last refreshed.", registry=r)

    # --- hooks ----------------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int | str, seconds: float) -> None:
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def count_connection_closed(self, reason: str) -> None:
        self.connections_closed.labels(reason).inc()

    def observe_job(self, name: str, seconds: float, ok: bool) -> None:
        self.job_runs.labels(name).inc()
        self.job_seconds.labels(name).observe(seconds)
        if ok:
            self.job_last_success.labels(name).set(self.clock.seconds())
        else:
            self.job_failures.labels(name).inc()

    def observe_transaction(self, desc: str, seconds: float, ok: bool) -> None:
        self.txn_seconds.labels(desc).observe(seconds)
        if not ok:
            self.txn_errors.labels(desc).inc()

    def count_result(self, result: str, n: int = 1, protocol: int = 0) -> None:
        """``result`` is "pass", "late_pass" (v0: arrived after the deadline, within late_grace; the
        timer may have counted a miss for it before), "fail" or "miss"."""
        if n:
            self.results.labels(PROTOCOLS.get(protocol, str(protocol)), result).inc(n)

    def count_download(self, outcome: str) -> None:
        """A download request's outcome (db/downloads.py): served ``first``, ``resume``, ``again``;
        anything else is the reason it was refused."""
        if outcome in SERVED:
            self.downloads.labels(outcome).inc()
        else:
            self.downloads_refused.labels(outcome).inc()

    def set_counts(self, counts: Counts | None) -> None:
        if counts is None:
            self.db_up.set(0)
            return
        self.db_up.set(1)
        for state in set(STATES) | set(counts.contracts):
            self.contracts.labels(state).set(counts.contracts.get(state, 0))
        for protocol, name in PROTOCOLS.items():
            self.due.labels(name).set(counts.due.get(protocol, 0))
            self.overdue.labels(name).set(counts.overdue.get(protocol, 0))
        self.farmers_online.set(counts.farmers_online)
        self.farmers_active.set(counts.farmers_active)
        for standing in ("ok", "suspended", "offline", "disqualified", "contained", "unvetted"):
            self.farmers_standing.labels(standing).set(counts.standing.get(standing, 0))
        for size in set(counts.pool) | {s for s, _ in self._targets}:
            self.pool_chunks.labels(str(size)).set(counts.pool.get(size, 0))
        self.stats_updated.set(self.clock.seconds())

    _targets: tuple[tuple[int, int], ...] = ()

    def set_pool_targets(self, targets: tuple[tuple[int, int], ...]) -> None:
        self._targets = tuple(targets)
        for size, count in targets:
            self.pool_target.labels(str(size)).set(count)

    def bind_db(self, db: Any, pool_size: int) -> None:
        """Read ``db``'s pool use and lost commits at each scrape (its transactions are observed by
        :meth:`observe_transaction`, given to the database when it is opened)."""
        pool = db.pool
        self.pool_size.set(getattr(pool, "max", pool_size))
        threadpool = getattr(pool, "threadpool", None)
        self.pool_open.set_function(lambda: len(getattr(pool, "connections", {}) or {}))
        if threadpool is not None:
            self.pool_busy.set_function(lambda: len(threadpool.working))
            self.pool_waiting.set_function(lambda: threadpool._queue.qsize())
        self.lost_commits.db = db

    def bind_leader(self, leader: Any, worker: int | None = None) -> None:
        """Label this process (``leader.holder``, the worker index or ``-``) and read the jobs
        lease's state from ``leader`` (a :class:`~downstream_tx.jobs.leader.JobsLeader`) at each scrape."""
        self.instance.labels(leader.holder, "-" if worker is None else str(worker)).set(1)
        self.jobs_leader.set_function(lambda: 1.0 if leader.role == "leader" else 0.0)

        def age() -> float:
            last = leader.last
            return float("nan") if last is None else max(self.clock.seconds() - last.renewed, 0.0)

        self.lease_age.set_function(age)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LostCommits:
    """``downstream_db_lost_commits_total``, read from the bound database wrapper's own counts
    (``Database.lost_commits``) at each scrape."""

    OUTCOMES = ("committed", "rolled_back", "unknown")

    def __init__(self) -> None:
        self.db: Any = None

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(
            "downstream_db_lost_commits",
            "Transactions whose COMMIT acknowledgement was lost, by what the lookup of their id found: "
            "committed, rolled_back or unknown.", labels=["outcome"])
        counts = getattr(self.db, "lost_commits", None) or {}
        for outcome in self.OUTCOMES:
            family.add_metric([outcome], counts.get(outcome, 0))
        return [family]
